/**
 * The extension in a real VS Code (code-server's extension host, or desktop VS Code through
 * @vscode/test-electron), against a real daemon with simulated boards over real Iroh on loopback.
 * The daemon runs in this process (the test drives hot-plug on its simulated backend); the extension
 * reaches it through its own endpoint exactly as it would reach a Pi.
 */
import * as assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as vscode from 'vscode';
import { BenchFixture, until } from '../../helpers/bench-fixture.js';
import { endpointIdOf, generateSecretKey, ticketFor } from '../../../server/net/iroh.js';
import { simLoopbackBoard, simSerialBoard } from '../../../server/usb/simulated.js';
import type { BenchClient } from '../../../extension/core/bench-client.js';
import type { RemoteUsbApi } from '../../../extension/extension.js';
import { BenchNode, DeviceNode, Node } from '../../../extension/tree.js';
import { activateClean, config, G } from './activate.js';
import { fromPalette, hasRunner, screenshot, ui } from './screenshot.js';


suite('Remote USB in real VS Code', function () {
  this.timeout(60_000);
  let api: RemoteUsbApi;
  let fixture: BenchFixture;
  let ticket: string;
  let other: BenchClient | undefined;
  const scratch = mkdtempSync(join(tmpdir(), 'remote-usb-vscode-'));

  const benchNode = (): BenchNode | undefined => api.tree.getChildren().find((n): n is BenchNode => n.kind === 'bench');
  const deviceNodes = (): DeviceNode[] => {
    const b = benchNode();
    return b ? (api.tree.getChildren(b) as Node[]).filter((n): n is DeviceNode => n.kind === 'device') : [];
  };
  const item = (n: Node): vscode.TreeItem => api.tree.getTreeItem(n);
  const deviceItem = (id: string): vscode.TreeItem | undefined => {
    const n = deviceNodes().find((d) => d.deviceId === id);
    return n ? item(n) : undefined;
  };

  suiteSetup(async () => {
    api = await activateClean();
    fixture = await new BenchFixture().start();
    ticket = ticketFor(fixture.daemon.address());
  });

  suiteTeardown(async () => {
    await other?.close();
    await vscode.commands.executeCommand('remoteUsb.removeBench', { bench: 'test-bench' }, { confirm: false }).then(undefined, () => {});
    await fixture?.stop();
    rmSync(scratch, { recursive: true, force: true });
  });

  test('activates quickly, registers every command, shows the welcome view and the status bar', async () => {
    console.log(`      activation took ${api.activationMs.toFixed(1)} ms`);
    const pkg = vscode.extensions.getExtension('remote-usb.remote-usb')!.packageJSON as { contributes: { commands: { command: string }[] } };
    const registered = new Set(await vscode.commands.getCommands(true));
    for (const c of pkg.contributes.commands) assert.ok(registered.has(c.command), `${c.command} is registered`);
    assert.deepEqual(api.tree.getChildren(), [], 'no bench yet');
    assert.equal(api.statusBar.item.text, '$(plug) Remote USB');
    await vscode.commands.executeCommand('workbench.view.extension.remoteUsb');
    await screenshot('welcome');
    assert.deepEqual(api.walkthrough.done, [], 'no walkthrough step reached before a bench is added');
    if (hasRunner()) {
      // a fresh profile: the walkthrough shows its first step not done yet
      const ext = vscode.extensions.getExtension('remote-usb.remote-usb')!;
      await vscode.commands.executeCommand('workbench.action.openWalkthrough', `${ext.id}#gettingStarted`, false);
      await ui([{ waitFor: `button.getting-started-step[aria-checked="false"][data-step-id="${ext.id}#gettingStarted#bench"]`, text: 'Set up or deploy a bench' }]);
      await vscode.commands.executeCommand('workbench.action.closeActiveEditor');
    }
  });

  test('a wrong pairing code is refused with a message that offers to pair again', async () => {
    const before = api.errors.shown.length;
    await vscode.commands.executeCommand('remoteUsb.pairBench', { address: ticket, code: 'AAAAA-BBBBB' });
    await until(() => api.errors.shown.length > before, 15_000, 'an error message');
    const shown = api.errors.shown.at(-1)!;
    assert.match(shown.message, /pair/i);
    assert.ok(shown.actions.includes('Pair with Code'), `actions: ${shown.actions}`);
    assert.equal(api.benches.list().length, 0, 'a refused bench is not added');
  });

  test('pairing with a one-time code adds the bench: tree, setting and status bar', async () => {
    const { code } = fixture.daemon.trust.createPairingCode(5);
    await vscode.commands.executeCommand('remoteUsb.pairBench', { address: ticket, code });
    await until(() => benchNode() !== undefined && deviceNodes().length === 2, 15_000, 'the bench and its two boards in the tree');
    const saved = config().get<{ address: string }[]>('benches')!;
    assert.equal(saved.length, 1);
    assert.equal(saved[0].address, ticket);
    const b = item(benchNode()!);
    assert.equal(b.label, 'test-bench');
    assert.match(String(b.description), /^online/);
    assert.equal(b.contextValue, 'bench.online');
    const serial = deviceItem('sim-1')!;
    assert.equal(serial.label, 'Simulated Serial Board');
    assert.match(String(serial.description), /^available · 1209:0001 · SIM0001 · full/);
    assert.match(String(serial.contextValue), /^device\.available\.serial$/);
    assert.match(String(deviceItem('sim-2')!.description), /^available · 1209:0002 · LOOP0002 · high/);
    await until(() => /1\/1 bench/.test(api.statusBar.item.text), 5000, 'status bar to count the bench');
    assert.equal(api.statusBar.item.backgroundColor, undefined, 'no error colour while online');
    const tip = api.statusBar.item.tooltip as vscode.MarkdownString;
    assert.match(tip.value, /test-bench: online/);
    assert.match(tip.value, /command:remoteUsb\.attachDevice/);
    assert.deepEqual(api.walkthrough.done, ['benchAdded', 'benchOnline'], 'the walkthrough\'s first two steps: a bench added, and online');
    await until(() => /ms/.test(String(item(benchNode()!).description)), 15_000, 'a measured round trip on the bench node');
    await vscode.commands.executeCommand('workbench.view.extension.remoteUsb');
    // a wider side bar, so the screenshots show the device descriptions
    // (the resize commands act on the editor area here: a narrower editor is a wider side bar)
    for (let i = 0; i < 3; i++) await vscode.commands.executeCommand('workbench.action.decreaseViewWidth');
    await api.treeView.reveal(deviceNodes()[0], { select: true, focus: false });
    await screenshot('tree-and-status-bar');
  });

  test('the bench at a glance: path (direct / relayed), round trip and who holds what, in the tooltips', async () => {
    // loopback: Iroh's selected path is direct; the path comes across from the worker with the round trip
    await until(() => benchNode()?.bench.path === 'direct', 15_000, 'the path in the bench snapshot');
    other ??= await fixture.connect({ clientName: 'alice@lab' });
    const held = await other.claim('sim-2');
    try {
      await until(() => /in use by alice@lab/.test(String(deviceItem('sim-2')?.description)), 10_000, 'in use by alice');
      const tip = (item(benchNode()!).tooltip as vscode.MarkdownString).value;
      assert.match(tip, /^Connection: direct \(peer to peer\), round trip \d+(\.\d)? ms$/m);
      assert.match(tip, /^Held: Simulated Loopback Board \(sim-2\) by alice@lab$/m);
      await until(() => /held: Simulated Loopback Board/.test((api.statusBar.item.tooltip as vscode.MarkdownString).value), 10_000, 'the holder in the status bar tooltip');
      const bar = (api.statusBar.item.tooltip as vscode.MarkdownString).value;
      assert.match(bar, /test-bench: online · direct · \d+(\.\d)? ms · 2 device\(s\)/);
      assert.match(bar, /\$\(lock\) held: Simulated Loopback Board \(sim-2\) by alice@lab/);
      // (no screenshot of the hovers: with the smoke-test driver on, the workbench showed no tooltip on hover)
    } finally {
      await held.release();
    }
    await until(() => /available/.test(String(deviceItem('sim-2')?.description)), 10_000, 'available again');
  });

  test('hot-plug adds and removes a board live', async () => {
    fixture.backend.plug(simLoopbackBoard(7));
    await until(() => deviceItem('sim-7') !== undefined, 10_000, 'sim-7 in the tree');
    fixture.backend.unplug('sim-7');
    await until(() => deviceItem('sim-7') === undefined, 10_000, 'sim-7 gone from the tree');
  });

  test('a board held by another client shows who has it', async () => {
    other ??= await fixture.connect({ clientName: 'alice@lab' });
    const held = await other.claim('sim-2');
    await until(() => /in use by alice@lab/.test(String(deviceItem('sim-2')?.description)), 10_000, 'in use by alice');
    assert.equal(deviceItem('sim-2')!.contextValue, 'device.in-use');
    await held.release();
    await until(() => /available/.test(String(deviceItem('sim-2')?.description)), 10_000, 'available again');
  });

  test('copy device info puts the details on the clipboard', async () => {
    const text = await vscode.commands.executeCommand<string>('remoteUsb.copyDeviceInfo', { bench: 'test-bench', device: 'sim-1' });
    assert.match(text, /VID:PID 1209:0001/);
    assert.equal(await vscode.env.clipboard.readText(), text);
  });

  test('from the command palette: Copy Device Info offers the real boards in a quick pick', async function () {
    if (!hasRunner()) this.skip(); // desktop runner: no browser to drive
    await vscode.env.clipboard.writeText('');
    await ui([
      ...fromPalette('Copy Device Info'),
      { waitFor: '.quick-input-list .monaco-list-row', text: 'Simulated Loopback Board' },
    ]);
    await screenshot('palette-device-pick');
    await ui([{ type: 'LOOP0002' }, { press: 'Enter' }]);
    const deadline = Date.now() + 10_000;
    while (!(await vscode.env.clipboard.readText()).includes('serial LOOP0002')) {
      if (Date.now() > deadline) assert.fail('the picked board was not copied');
      await new Promise((r) => setTimeout(r, 100));
    }
  });

  test('clicking the status bar item opens the actions', async function () {
    if (!hasRunner()) this.skip();
    await ui([
      { click: '.statusbar-item', text: '1/1 bench' },
      { waitFor: '.quick-input-list .monaco-list-row', text: 'Attach Device' },
    ]);
    await screenshot('status-bar-actions');
    await ui([{ press: 'Escape' }]);
  });

  test('serial monitor: banner, typed text echoed, hex view, log to file with the exact bytes', async () => {
    const monitor = await vscode.commands.executeCommand<import('../../../extension/serial-monitor.js').SerialMonitor>('remoteUsb.openSerialMonitor', { bench: 'test-bench', device: 'sim-1' });
    assert.ok(monitor, 'a monitor opened');
    await until(() => monitor.transcript.includes('Remote USB simulated serial board SIM0001'), 15_000, 'the board banner in the terminal');
    const log = join(scratch, 'serial.log');
    await vscode.commands.executeCommand('remoteUsb.serial.logToFile', log);
    monitor.terminal!.show();
    monitor.terminal!.sendText('hello from vscode', true);
    await until(() => monitor.transcript.includes('hello from vscode'), 10_000, 'the echo of typed text');
    await vscode.commands.executeCommand('remoteUsb.serial.logToFile', null);
    assert.equal(readFileSync(log, 'latin1'), 'hello from vscode\r\n', 'the log holds exactly the bytes received');
    await screenshot('serial-monitor');
    await vscode.commands.executeCommand('remoteUsb.serial.toggleHex');
    monitor.terminal!.sendText('AB', false);
    await until(() => monitor.transcript.includes('41 42 '), 10_000, 'hex view of the echo');
    await vscode.commands.executeCommand('remoteUsb.serial.toggleHex');
    await vscode.commands.executeCommand('remoteUsb.serial.changeSettings', { baud: 9600 });
    assert.equal(monitor.settings.baud, 9600);
    // DTR off and on again: the board greets again (as an Arduino resets on DTR)
    const banners = (): number => monitor.transcript.split('board SIM0001').length - 1;
    const before = banners();
    await vscode.commands.executeCommand('remoteUsb.serial.toggleDtr');
    await vscode.commands.executeCommand('remoteUsb.serial.toggleDtr');
    await until(() => banners() === before + 1, 10_000, 'a new banner after DTR rose again');
    // send a file: its bytes come back as the echo
    const file = join(scratch, 'send.txt');
    writeFileSync(file, 'line one\nline two\n');
    const sent = await vscode.commands.executeCommand<number>('remoteUsb.serial.sendFile', file);
    assert.equal(sent, 18);
    await until(() => monitor.transcript.includes('line two'), 10_000, 'the file echoed back');
    monitor.terminal!.dispose();
    await until(() => !api.monitors.open.has(monitor), 5000, 'the monitor to close with its terminal');
  });

  test('share a serial port with local tools: an rfc2217:// URL on loopback, answered, stopped by the command', async () => {
    const r = await vscode.commands.executeCommand<{ url: string; port: number }>('remoteUsb.shareSerialPort', { bench: 'test-bench', port: 'sim-1' });
    assert.match(r.url, /^rfc2217:\/\/127\.0\.0\.1:\d+$/);
    assert.equal(api.shares.open.size, 1);
    // a raw Telnet peer asks for the DTR state (IAC SB COM-PORT SET-CONTROL 7 IAC SE): DTR is on (105 8)
    const sock = connect({ host: '127.0.0.1', port: r.port });
    const got: Buffer[] = [];
    sock.on('data', (d: Buffer) => got.push(d));
    sock.write(Buffer.from([255, 250, 44, 5, 7, 255, 240]));
    await until(() => Buffer.concat(got).includes(Buffer.from([255, 250, 44, 105, 8, 255, 240])), 10_000, 'the DTR state answered');
    if (hasRunner()) {
      // the URL as the user sees it (the smoke-test driver shows no toasts: the notification centre has it)
      await vscode.commands.executeCommand('notifications.showList');
      await ui([{ waitFor: '.notifications-center .notification-list-item-message', text: r.url }]);
    }
    await screenshot('serial-share');
    await vscode.commands.executeCommand('notifications.hideList');
    sock.destroy();
    assert.equal(await vscode.commands.executeCommand('remoteUsb.stopSerialShare', { bench: 'test-bench', port: 'sim-1' }), 1);
    assert.equal(api.shares.open.size, 0);
  });

  test('serial settings are respected: a new monitor opens with the configured baud rate and view', async () => {
    await config().update('serial.baudRate', 57600, G);
    await config().update('serial.hexView', true, G);
    try {
      const monitor = await vscode.commands.executeCommand<import('../../../extension/serial-monitor.js').SerialMonitor>('remoteUsb.openSerialMonitor', { bench: 'test-bench', device: 'sim-1' });
      assert.equal(monitor.settings.baud, 57600);
      await until(() => monitor.state === 'open', 10_000, 'the port open');
      assert.match(monitor.transcript, /57600 8N1/);
      monitor.terminal!.sendText('Z', false);
      await until(() => monitor.transcript.includes('5a '), 10_000, 'hex view of the echo');
      monitor.terminal!.dispose();
    } finally {
      await config().update('serial.baudRate', undefined, G);
      await config().update('serial.hexView', undefined, G);
    }
  });

  test('several monitors at once; a board reset shows waiting, then the monitor carries on', async () => {
    fixture.backend.plug(simSerialBoard(3));
    await until(() => deviceItem('sim-3') !== undefined, 10_000, 'sim-3 in the tree');
    type Monitor = import('../../../extension/serial-monitor.js').SerialMonitor;
    const a = await vscode.commands.executeCommand<Monitor>('remoteUsb.openSerialMonitor', { bench: 'test-bench', device: 'sim-1' });
    const b = await vscode.commands.executeCommand<Monitor>('remoteUsb.openSerialMonitor', { bench: 'test-bench', device: 'sim-3' });
    try {
      await until(() => a.transcript.includes('board SIM0001') && b.transcript.includes('board SIM0003'), 15_000, 'both banners');
      fixture.backend.unplug('sim-3');
      await until(() => b.transcript.includes('[waiting: '), 10_000, 'the monitor to say it waits');
      fixture.backend.plug(simSerialBoard(3));
      await until(() => b.transcript.includes('[connected again') && b.transcript.split('board SIM0003').length === 3, 15_000, 'reopened with a new banner');
      b.terminal!.sendText('after reset', true);
      await until(() => b.transcript.includes('after reset'), 10_000, 'echo after the reset');
      a.terminal!.sendText('still here', true);
      await until(() => a.transcript.includes('still here'), 10_000, 'the other monitor unaffected');
      await screenshot('serial-reset');
    } finally {
      a.terminal!.dispose();
      b.terminal!.dispose();
      fixture.backend.unplug('sim-3');
    }
  });

  test('a wait task finds a board by VID:PID', async () => {
    const task = new vscode.Task({ type: 'remote-usb', action: 'wait', device: '1209:*' }, vscode.TaskScope.Workspace, 'wait for board', 'remote-usb');
    const resolved = await api.tasks.provider().resolveTask!(task, new vscode.CancellationTokenSource().token);
    const code = await runTask(resolved as vscode.Task);
    assert.equal(code, 0);
  });

  test('tasks.json: a task that dependsOn a remote-usb task sees ${command:…} resolved after it ran', async () => {
    const folder = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
    assert.ok(folder, 'the runner opens a workspace folder');
    let waitsDone = 0;
    const probe = vscode.commands.registerCommand('remoteUsbTest.waitsDone', () => String(waitsDone));
    const ended = vscode.tasks.onDidEndTaskProcess((e) => { if (e.execution.task.name === 'wait for board') waitsDone++; });
    const out = join(scratch, 'probe.txt');
    mkdirSync(join(folder, '.vscode'), { recursive: true });
    writeFileSync(join(folder, '.vscode', 'tasks.json'), JSON.stringify({
      version: '2.0.0',
      tasks: [
        { label: 'wait for board', type: 'remote-usb', action: 'wait', device: '1209:0001', timeout: 20 },
        { label: 'flash', type: 'shell', dependsOn: 'wait for board', command: `echo waits=\${command:remoteUsbTest.waitsDone} > ${out}` },
      ],
    }));
    try {
      let flash: vscode.Task | undefined;
      const deadline = Date.now() + 15_000;
      while (!(flash = (await vscode.tasks.fetchTasks()).find((t) => t.name === 'flash'))) {
        if (Date.now() > deadline) assert.fail('tasks.json was not picked up');
        await new Promise((r) => setTimeout(r, 250));
      }
      assert.equal(await runTask(flash), 0);
      assert.equal(readFileSync(out, 'utf8').trim(), 'waits=1', 'the variable was resolved after the remote-usb task finished');
    } finally {
      probe.dispose();
      ended.dispose();
      rmSync(join(folder, '.vscode'), { recursive: true, force: true });
    }
  });

  test('the Getting Started walkthrough: each step completes on its real event (bench added, paired, monitor or share open, a remote-usb task ran)', async function () {
    const ext = vscode.extensions.getExtension('remote-usb.remote-usb')!;
    const [w] = (ext.packageJSON as { contributes: { walkthroughs: { id: string; steps: { id: string; title: string; media: { markdown: string }; completionEvents: string[] }[] }[] } }).contributes.walkthroughs;
    assert.deepEqual(w.steps.map((s) => s.id), ['bench', 'pair', 'use', 'flash']);
    for (const s of w.steps) {
      assert.ok(existsSync(join(ext.extensionPath, s.media.markdown)), `${s.media.markdown} is there`);
      assert.ok(s.completionEvents.length > 0, `${s.id} completes on an event`);
    }
    // the events the tests above caused, in the order they happened (no attach here: no helper in this suite)
    assert.deepEqual(api.walkthrough.done, ['benchAdded', 'benchOnline', 'monitorOpened', 'shared', 'flashTask']);
    await vscode.commands.executeCommand('workbench.action.closePanel');
    await vscode.commands.executeCommand('workbench.action.openWalkthrough', `${ext.id}#${w.id}`, false);
    if (hasRunner()) {
      // the walkthrough page itself: every step ticked (VS Code's own record of the completion events)
      await ui(w.steps.map((s) => ({ waitFor: `button.getting-started-step[aria-checked="true"][data-step-id="${ext.id}#${w.id}#${s.id}"]`, text: s.title })));
    }
    await new Promise((r) => setTimeout(r, 1000)); // let the page settle before the screenshot
    await screenshot('walkthrough');
    await vscode.commands.executeCommand('workbench.action.closeActiveEditor');
  });

  test('auto-attach: a matching rule attaches the board; without the helper the user is told to install it', async () => {
    await config().update('autoAttach', [{ vidPid: 'dead:*' }, { vidPid: '1209:0002', bench: 'test-bench' }], G);
    try {
      await until(() => api.autoAttach.history.length > 0, 20_000, 'an auto-attach attempt');
      const h = api.autoAttach.history[0];
      assert.equal(h.device, 'sim-2', 'only the matching board');
      assert.equal(h.why, 'rule');
      if (h.outcome === 'failed') {
        // This machine has no installed helper (or no vhci_hcd): the real attach path says what to do.
        const shown = api.errors.shown.at(-1)!;
        assert.match(shown.message, /Auto-attach of Simulated Loopback Board failed/);
        assert.ok(shown.actions.some((a) => a === 'Install Helper' || a === 'Load vhci-hcd'), `actions: ${shown.actions}`);
        console.log(`      attach refused as expected here: ${h.error}`);
      }
      assert.equal(api.autoAttach.history.filter((x) => x.device !== 'sim-2').length, 0);
    } finally {
      await config().update('autoAttach', [], G);
    }
  });

  test('Deploy Server to Bench: an unreachable ssh destination is named, with the logs offered', async () => {
    const before = api.errors.shown.length;
    const r = await vscode.commands.executeCommand('remoteUsb.deployBench', { target: 'root@127.0.0.1', port: 9, sshArgs: ['-o', 'ConnectTimeout=5'] });
    assert.equal(r, undefined);
    await until(() => api.errors.shown.length > before, 15_000, 'the error');
    const shown = api.errors.shown.at(-1)!;
    assert.match(shown.message, /Deploy to root@127\.0\.0\.1 failed: .*(refused|reach)/i);
    assert.ok(shown.actions.includes('Show Logs'));
  });

  test('Install Helper opens a terminal with the install command (the user types their sudo password there)', async () => {
    const helperJs = await vscode.commands.executeCommand<string>('remoteUsb.installHelper');
    assert.match(helperJs, /dist\/helper\.js$/);
    const term = vscode.window.terminals.find((t) => t.name === 'Remote USB: Install Helper');
    assert.ok(term, 'the terminal is open');
    term.dispose();
  });

  test('rename; a bench that cannot be reached turns the status bar red', async () => {
    await vscode.commands.executeCommand('remoteUsb.renameBench', { bench: 'test-bench' }, 'lab pi');
    await until(() => item(benchNode()!).label === 'lab pi', 5000, 'the new name in the tree');
    await vscode.commands.executeCommand('remoteUsb.renameBench', { bench: 'lab pi' }, 'test-bench');
    await until(() => item(benchNode()!).label === 'test-bench', 5000, 'the name back');
    // a second bench nobody runs: a real endpoint id with a dead address
    const dead = ticketFor({ id: endpointIdOf(generateSecretKey()), addrs: ['127.0.0.1:9'] });
    await config().update('benches', [...config().get<object[]>('benches')!, { name: 'gone', address: dead }], G);
    try {
      await until(() => api.statusBar.item.backgroundColor !== undefined, 30_000, 'the error colour');
      assert.match(api.statusBar.item.text, /\$\(warning\) 1\/2 benches/);
      const gone = api.tree.getChildren().find((n) => n.kind === 'bench' && n.bench.name === 'gone')!;
      assert.match(String(item(gone).description), /offline|connecting/);
      await screenshot('bench-offline');
    } finally {
      await vscode.commands.executeCommand('remoteUsb.removeBench', { bench: 'gone' }, { confirm: false });
    }
    await until(() => api.statusBar.item.backgroundColor === undefined, 10_000, 'the colour back to normal');
  });

  test('the byte-path worker killed: the extension says so, restarts it, and the bench comes back online', async () => {
    const core = api.benches.core;
    const pid = core.pid;
    assert.ok(pid !== undefined, 'the worker runs');
    assert.notEqual(pid, process.pid, 'in a process of its own, not the extension host');
    const b = benchNode()!.bench;
    assert.equal(b.state, 'online');
    const restarted = new Promise<void>((r) => core.once('restarted', () => r()));
    process.kill(pid, 'SIGKILL');
    await until(() => b.state !== 'online', 10_000, 'the bench to show the worker is gone');
    assert.match(String(item(benchNode()!).description), /connecting/);
    assert.match(b.detail ?? '', /the byte-path worker stopped \(killed by SIGKILL\); restarting it/);
    await restarted;
    await until(() => benchNode()?.bench.state === 'online', 30_000, 'the bench online again');
    assert.notEqual(core.pid, pid, 'a new worker');
    assert.equal(deviceNodes().length, 2);
  });

  test('deactivation (window reload, quit) gives the bench its ports back at once', async () => {
    type Monitor = import('../../../extension/serial-monitor.js').SerialMonitor;
    const monitor = await vscode.commands.executeCommand<Monitor>('remoteUsb.openSerialMonitor', { bench: 'test-bench', device: 'sim-1' });
    await until(() => monitor.state === 'open', 10_000, 'the port open');
    other ??= await fixture.connect({ clientName: 'alice@lab' });
    await assert.rejects(other.openSerial('sim-1'), /busy|already open|in use/i, 'held by the extension');
    const ext = vscode.extensions.getExtension('remote-usb.remote-usb')!;
    // the module instance the extension host loaded (same require cache)
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const mod = require(join(ext.extensionPath, 'dist', 'extension.js')) as { deactivate(): Promise<void> | undefined };
    const t0 = Date.now();
    const done = mod.deactivate();
    assert.ok(done, 'deactivate returns the clean-up to wait for');
    await done;
    const session = await other.openSerial('sim-1');
    console.log(`      the port was free again ${Date.now() - t0} ms after deactivate() began`);
    await session.close();
  });
});

function runTask(task: vscode.Task): Promise<number | undefined> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('task did not finish in 30 s')), 30_000);
    const sub = vscode.tasks.onDidEndTaskProcess((e) => {
      if (e.execution.task.name !== task.name) return;
      clearTimeout(timer);
      sub.dispose();
      resolve(e.exitCode);
    });
    void vscode.tasks.executeTask(task);
  });
}
