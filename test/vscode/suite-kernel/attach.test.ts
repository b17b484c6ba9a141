/**
 * "Attach with one click", for real: this suite runs in code-server's extension host inside the qemu guest
 * of test/kernel/ (driven by test/vscode/run-kernel.mjs; the guest half is test/vscode/kernel/vscode-attach.sh).
 * Nothing is simulated: the bench is our daemon on the real `usb` backend with a configfs CDC-ACM gadget on
 * dummy_hcd (its firmware end /dev/ttyGS0 echoes), the extension attaches it through the real pkexec and our
 * helper into this kernel's vhci_hcd, cdc_acm binds the imported copy, and the serial monitor opens that
 * local tty. The clicks are real clicks in the workbench (Playwright, from the host's browser).
 *
 * From the guest, through the payload's extensionEnvironment: REMOTE_USB_KERNEL_BENCH (JSON: ticket, one-time
 * code, vidPid, the gadget's bus id on the bench, the firmware's log of what it received).
 */
import * as assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { accessSync, constants, existsSync, readFileSync, realpathSync } from 'node:fs';
import * as vscode from 'vscode';
import type { RemoteUsbApi } from '../../../extension/extension.js';
import type { SerialMonitor } from '../../../extension/serial-monitor.js';
import { BenchNode, DeviceNode, Node } from '../../../extension/tree.js';
import { isPortFree, VhciPort } from '../../../extension/core/usbip/vhci-status.js';
import { parseStatus } from '../../../helper/vhci.js';
import { activateClean, config, G } from '../suite/activate.js';
import { fromPalette, screenshot, ui } from '../suite/screenshot.js';

interface KernelBench { ticket: string; code: string; vidPid: string; busid: string; benchTty: string; firmwareLog: string }

const VHCI_STATUS = '/sys/devices/platform/vhci_hcd.0/status';

/** CPU time of this process's main thread (the extension host's; its task id is the pid), in ms. */
function threadCpuMs(): number {
  const f = readFileSync(`/proc/${process.pid}/task/${process.pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) * 10;
}

/**
 * Writes "ping N\\n" every 20 ms to the tty in argv[1] for argv[2] ms; prints when each echo came back.
 * The test sets the tty raw and `clocal` first: without `clocal`, opening a cdc_acm tty whose carrier is
 * down blocks.
 */
const PINGER = `
const fs = require('fs');
const [path, ms] = process.argv.slice(1);
const fd = fs.openSync(path, fs.constants.O_WRONLY | fs.constants.O_NOCTTY);
// cat reads: a blocking read of our own would keep this process from exiting
const reader = require('child_process').spawn('cat', [path], { stdio: ['ignore', 'pipe', 'inherit'] });
const echoed = []; let sent = 0; let buf = '';
reader.stdout.on('data', (d) => { buf += d.toString('latin1'); let i; while ((i = buf.indexOf('\\n')) >= 0) { if (/ping \\d+/.test(buf.slice(0, i))) echoed.push(Date.now()); buf = buf.slice(i + 1); } });
const t = setInterval(() => { try { fs.writeSync(fd, 'ping ' + sent + '\\n'); sent++; } catch {} }, 20);
const finish = (code) => { reader.kill(); process.stdout.write(JSON.stringify({ sent, echoed }), () => process.exit(code)); };
setTimeout(() => { clearInterval(t); setTimeout(() => finish(0), 1500); }, Number(ms));
`;const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => boolean, timeoutMs: number, what: string, detail?: () => string): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}${detail ? `: ${detail()}` : ''}`);
    await sleep(50);
  }
}

/** vhci_hcd's ports in use, read with the status parser the extension uses (the helper's). */
function vhciPortsInUse(): VhciPort[] {
  return parseStatus(readFileSync(VHCI_STATUS, 'utf8')).filter((p) => !isPortFree(p));
}

suite('Attach with one click: real VS Code, real kernel (qemu guest)', function () {
  this.timeout(180_000);
  const bench = JSON.parse(process.env.REMOTE_USB_KERNEL_BENCH ?? 'null') as KernelBench | null;
  let api: RemoteUsbApi;
  let monitor: SerialMonitor | undefined;
  const BENCH = 'ktest-bench';

  const benchNode = (): BenchNode | undefined => api.tree.getChildren().find((n): n is BenchNode => n.kind === 'bench');
  const gadgetNode = (): DeviceNode | undefined => {
    const b = benchNode();
    return b ? (api.tree.getChildren(b) as Node[]).find((n): n is DeviceNode => n.kind === 'device' && n.deviceId === bench!.busid) : undefined;
  };
  const gadgetItem = (): vscode.TreeItem | undefined => { const n = gadgetNode(); return n ? api.tree.getTreeItem(n) : undefined; };
  const describe = (): string => String(gadgetItem()?.description ?? '(no gadget in the tree)');
  const attachment = () => { const b = benchNode(); return b ? api.attachments.get(b.bench.id, bench!.busid) : undefined; };
  const lastError = (): string => api.errors.shown.map((e) => `${e.message} [${e.actions.join(', ')}]`).at(-1) ?? 'no error shown';
  /** The gadget's row in the Remote USB view. */
  const ROW = '.monaco-list-row';
  const rowText = 'ktest ACM gadget';

  suiteSetup(async () => {
    assert.ok(bench, 'REMOTE_USB_KERNEL_BENCH is set (run through test/vscode/run-kernel.mjs)');
    api = await activateClean();
    console.log(`      VS Code ${vscode.version} on Node ${process.version}, uid ${process.getuid?.()}, kernel vhci: ${existsSync(VHCI_STATUS)}`);
  });

  suiteTeardown(async () => {
    monitor?.terminal?.dispose();
    if (api) {
      await config().update('autoAttach', [], G);
      await api.attachments.detachAll().catch(() => {});
      await vscode.commands.executeCommand('remoteUsb.removeBench', { bench: BENCH }, { confirm: false }).then(undefined, () => {});
    }
  });

  test('the extension host runs unprivileged in a kernel with vhci_hcd, all ports free', () => {
    assert.notEqual(process.getuid?.(), 0, 'the extension host is not root');
    assert.ok(existsSync(VHCI_STATUS), `${VHCI_STATUS} exists`);
    assert.deepEqual(vhciPortsInUse(), [], 'no vhci port in use yet');
    assert.ok(existsSync('/usr/local/libexec/remote-usb/remote-usb-helper'), 'the helper is installed');
  });

  test('pairs with the bench (ticket + one-time code): the CDC-ACM gadget shows as available', async () => {
    await vscode.commands.executeCommand('remoteUsb.pairBench', { address: bench!.ticket, code: bench!.code });
    await until(() => gadgetNode() !== undefined, 60_000, `the gadget ${bench!.busid} in the tree`, lastError);
    assert.equal(api.tree.getTreeItem(benchNode()!).label, BENCH);
    await until(() => /available/.test(describe()), 30_000, 'the gadget available', describe);
    assert.match(describe(), new RegExp(`^available · ${bench!.vidPid} · KTEST-ACM-0001 · \\w+$`));
    assert.equal(gadgetItem()!.label, rowText);
    assert.equal(gadgetItem()!.contextValue, 'device.available.serial', 'the bench shares its tty, so the row offers a monitor');
    await vscode.commands.executeCommand('workbench.view.extension.remoteUsb');
    // a wider side bar, so the screenshot shows the whole row ("attached here (/dev/ttyACM0)")
    for (let i = 0; i < 8; i++) await vscode.commands.executeCommand('workbench.action.decreaseViewWidth');
    await api.treeView.reveal(gadgetNode()!, { select: true, focus: false });
  });

  test('one click on the plug button attaches it: pkexec + helper + vhci_hcd, the tree says "attached here (/dev/ttyACM…)"', async () => {
    const t = Date.now();
    await ui([
      { click: ROW, text: rowText },
      { click: `${ROW}.selected .action-label[aria-label^="Attach Device"]` },
    ]);
    await until(() => attachment()?.localTty !== undefined, 90_000, 'the attached copy to get a local tty', () => `${describe()}; ${lastError()}`);
    const a = attachment()!;
    console.log(`      attached in ${Date.now() - t} ms: vhci port ${a.port}, bus id ${a.localBusid}, ${a.localTty}`);
    const tty = a.localTty!.startsWith('/dev/') ? a.localTty! : `/dev/${a.localTty}`;
    assert.match(tty, /^\/dev\/ttyACM\d+$/);
    await until(() => /attached here \((\/dev\/)?ttyACM\d+\)/.test(describe()), 10_000, 'the tree to say attached here', describe);
    assert.match(describe(), new RegExp(`^attached here \\(${a.localTty}\\) · ${bench!.vidPid} · KTEST-ACM-0001 · \\w+`));
    assert.equal(gadgetItem()!.contextValue, 'device.attached.serial', 'the row offers the monitor (on its local tty)');
    // the kernel's view: a vhci port in use, the imported device under vhci_hcd with cdc_acm on it
    const ports = vhciPortsInUse();
    assert.equal(ports.length, 1, `one vhci port in use: ${JSON.stringify(ports)}`);
    assert.equal(ports[0].port, a.port);
    assert.equal(ports[0].localBusid, a.localBusid);
    const dev = realpathSync(`/sys/class/tty/${tty.slice(5)}/device`);
    assert.match(dev, /vhci_hcd/, `${tty} hangs off vhci_hcd (${dev})`);
    assert.equal(realpathSync(`${dev}/driver`).split('/').pop(), 'cdc_acm');
    assert.ok(existsSync(tty), `${tty} exists`);
  });

  test('Open Serial Monitor (command palette) opens the LOCAL tty; typed text comes back from the firmware', async () => {
    const local = attachment()!.localTty!;
    const before = new Set(api.monitors.open);
    // Through the palette here (the row's inline monitor button opens the same local tty).
    await ui([
      ...fromPalette('Open Serial Monitor'),
      { waitFor: '.quick-input-list .monaco-list-row', text: 'attached here as' },
      { press: 'Enter' },
    ]);
    await until(() => api.monitors.open.size > before.size, 30_000, 'a serial monitor to open');
    monitor = [...api.monitors.open].find((m) => !before.has(m))!;
    assert.match(monitor.title, /\(attached here\)$/, `title: ${monitor.title}`);
    await until(() => monitor!.state === 'open', 30_000, 'the local tty to open', () => monitor!.transcript.slice(-300));
    assert.equal(monitor.path, local.startsWith('/dev/') ? local : `/dev/${local}`, 'the monitor opened the local tty, not the bench stream');
    // typed in the real terminal (focused by the monitor): xterm -> pty -> /dev/ttyACM* -> vhci -> Iroh -> bench -> gadget
    const text = `hello from VS Code through vhci_hcd ${Date.now() % 100000}`;
    monitor.terminal!.show(false);
    await sleep(500);
    await ui([{ click: '.terminal-wrapper.active .xterm' }, { type: text }, { press: 'Enter' }]);
    await until(() => monitor!.transcript.includes(text), 30_000, 'the firmware echo in the monitor', () => JSON.stringify(monitor!.transcript.slice(-300)));
    // the echo of the text can reach the monitor before the firmware has logged the line end
    await until(() => readFileSync(bench!.firmwareLog, 'latin1').includes(`${text}\r\n`), 10_000, 'the firmware end to receive the line with CRLF',
      () => JSON.stringify(readFileSync(bench!.firmwareLog, 'latin1').slice(-200)));
    await api.treeView.reveal(gadgetNode()!, { select: true, focus: false });
    await sleep(300);
    await screenshot('attach-here-kernel');
  });

  test('the extension host\'s thread blocked for 2 s: the attached board keeps working (its URBs run in the byte-path worker)', async () => {
    if (monitor) {
      monitor.terminal!.dispose();
      await until(() => !api.monitors.open.has(monitor!), 10_000, 'the monitor to close');
      monitor = undefined;
    }
    const local = attachment()!.localTty!;
    const tty = local.startsWith('/dev/') ? local : `/dev/${local}`;
    execFileSync('stty', ['-F', tty, 'raw', '-echo', 'clocal', '115200']);
    // A process outside the extension host talks to the board for 4 s: a numbered line every 20 ms, and the
    // time each echo came back. Nothing of this runs on the extension host's thread.
    const child = spawn(process.execPath, ['-e', PINGER, tty, '4000'], { env: { ...process.env, ELECTRON_RUN_AS_NODE: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    const exited = new Promise<number | null>((r) => child.once('exit', r));
    const guard = setTimeout(() => child.kill('SIGKILL'), 30_000);
    await sleep(500);
    const cpu0 = threadCpuMs();
    await sleep(1000);
    const mainCpu = (threadCpuMs() - cpu0) / 1000;
    const blockedFrom = Date.now();
    while (Date.now() < blockedFrom + 2000) { /* an extension hogging the extension host */ }
    const blockedTo = Date.now();
    const code = await exited;
    clearTimeout(guard);
    assert.equal(code, 0, `the pinger failed (exit ${code}): ${err}`);
    const { sent, echoed } = JSON.parse(out) as { sent: number; echoed: number[] };
    const during = echoed.filter((t) => t >= blockedFrom && t <= blockedTo).length;
    console.log(`      extension host thread ${(100 * mainCpu).toFixed(1)} % of a core while the board echoed; blocked for 2 s: ${during} echoes came back meanwhile, ${echoed.length}/${sent} in all`);
    assert.ok(during > 0, 'echoes came back while the extension host was blocked');
    assert.equal(echoed.length, sent, 'every line came back');
    assert.ok(attachment() !== undefined, 'still attached');
  });

  test('detach frees the vhci port; the bench takes the board back', async () => {
    const { port } = attachment()!;
    if (monitor) {
      monitor.terminal!.dispose();
      await until(() => !api.monitors.open.has(monitor!), 10_000, 'the monitor to close');
      monitor = undefined;
    }
    const t = Date.now();
    await vscode.commands.executeCommand('remoteUsb.detachDevice', { bench: BENCH, device: bench!.busid });
    await until(() => attachment() === undefined, 30_000, 'the attachment to go');
    await until(() => !vhciPortsInUse().some((p) => p.port === port), 30_000, `vhci port ${port} to be free`, () => JSON.stringify(vhciPortsInUse()));
    console.log(`      detached in ${Date.now() - t} ms: vhci port ${port} free`);
    assert.deepEqual(vhciPortsInUse(), []);
    await until(() => /^available · /.test(describe()), 30_000, 'the gadget available again', describe);
    const driver = `/sys/bus/usb/devices/${bench!.busid}:1.0/driver`;
    await until(() => existsSync(driver) && realpathSync(driver).endsWith('/cdc_acm'), 30_000, 'cdc_acm back on the bench side');
    // The bench re-probing cdc_acm shows the board again: a board the user detached must stay detached
    // (auto-attach once took it for a board that re-enumerated and attached it straight back).
    await new Promise((r) => setTimeout(r, 3000));
    const b = benchNode()!.bench;
    assert.equal(attachment(), undefined, 'attached again after the user detached it');
    assert.equal(api.attachments.isAttaching(b.id, bench!.busid), false, 'attaching again after the user detached it');
    assert.deepEqual(api.autoAttach.history, []);
    await screenshot('detached-kernel');
  });

  test('the byte-path worker killed while an auto-attach rule\'s board is attached: the extension says so, restarts the worker, the board is attached again', async function () {
    this.timeout(240_000);
    // a rule that covers the gadget: it is attached at once (the bench shows it available)
    await config().update('autoAttach', [{ vidPid: bench!.vidPid, bench: BENCH }], G);
    await until(() => attachment()?.localTty !== undefined, 90_000, 'the rule to attach the gadget', () => `${describe()}; ${lastError()}`);
    const first = attachment()!;
    assert.equal(first.reason, 'rule');
    assert.equal(vhciPortsInUse().length, 1);
    const core = api.benches.core;
    const pid = core.pid!;
    assert.ok(pid !== undefined && pid !== process.pid, 'the worker runs in a process of its own');
    const b = benchNode()!.bench;
    const restarted = new Promise<void>((r) => core.once('restarted', () => r()));
    const t = Date.now();
    process.kill(pid, 'SIGKILL');
    // it says so: the bench row, the log, and a notification in the workbench
    await until(() => b.state !== 'online', 10_000, 'the bench to show the worker is gone');
    assert.match(b.detail ?? '', /the byte-path worker stopped \(killed by SIGKILL\); restarting it/);
    // (with the smoke-test driver on, VS Code shows no toasts: the notification goes to the notification centre)
    await vscode.commands.executeCommand('notifications.showList');
    await ui([{ waitFor: '.notifications-center .notification-list-item-message', text: 'byte-path worker stopped (killed by SIGKILL); restarting it' }]);
    await screenshot('worker-killed-kernel');
    await vscode.commands.executeCommand('notifications.hideList');
    // the kernel let go of the dead worker's socket: the port is freed, the attachment ended
    await until(() => attachment() !== first, 10_000, 'the old attachment to end');
    await restarted;
    assert.notEqual(core.pid, pid, 'a new worker');
    assert.ok(core.pid !== undefined && existsSync(`/proc/${core.pid}`), 'the new worker runs');
    await until(() => benchNode()?.bench.state === 'online', 60_000, 'the bench online again', () => `${benchNode()?.bench.state} ${benchNode()?.bench.detail}`);
    const tOnline = Date.now();
    // the bench drops the dead connection's claim (≤20 s), then the rule attaches the board again
    await until(() => attachment() !== undefined && attachment() !== first && attachment()!.localTty !== undefined, 120_000,
      'the board attached again with a local tty', () => `${describe()}; ${lastError()}; ${JSON.stringify(api.autoAttach.history)}`);
    const again = attachment()!;
    console.log(`      worker killed: new worker online in ${((tOnline - t) / 1000).toFixed(1)} s, board attached again in ${((Date.now() - t) / 1000).toFixed(1)} s (vhci port ${again.port}, ${again.localTty})`);
    assert.ok(api.autoAttach.history.some((h) => h.device === bench!.busid && h.outcome === 'attached'), JSON.stringify(api.autoAttach.history));
    assert.ok(!api.autoAttach.history.some((h) => h.outcome === 'failed'), `no failed auto-attach: ${JSON.stringify(api.autoAttach.history)}`);
    const ports = vhciPortsInUse();
    assert.equal(ports.length, 1, `one vhci port in use: ${JSON.stringify(ports)}`);
    assert.equal(ports[0].port, again.port);
    const tty = again.localTty!.startsWith('/dev/') ? again.localTty! : `/dev/${again.localTty}`;
    const dev = realpathSync(`/sys/class/tty/${tty.slice(5)}/device`);
    assert.match(dev, /vhci_hcd/, `${tty} hangs off vhci_hcd (${dev})`);
    assert.equal(realpathSync(`${dev}/driver`).split('/').pop(), 'cdc_acm');
    await until(() => /^attached here /.test(describe()), 10_000, 'the tree to say attached here', describe);
    // and it carries data: a line through the new worker comes back from the firmware. (The guest's stand-in
    // for udev gives a new tty to dialout a moment after the kernel makes it.)
    await until(() => { try { accessSync(tty, constants.R_OK | constants.W_OK); return true; } catch { return false; } }, 10_000, `${tty} readable and writable by this user`);
    execFileSync('stty', ['-F', tty, 'raw', '-echo', 'clocal', '115200']);
    const child = spawn(process.execPath, ['-e', PINGER, tty, '1000'], { env: { ...process.env, ELECTRON_RUN_AS_NODE: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    const guard = setTimeout(() => child.kill('SIGKILL'), 30_000);
    const code = await new Promise<number | null>((r) => child.once('exit', r));
    clearTimeout(guard);
    assert.equal(code, 0);
    const { sent, echoed } = JSON.parse(out) as { sent: number; echoed: number[] };
    assert.ok(sent > 0 && echoed.length === sent, `every line came back through the new worker: ${echoed.length}/${sent}`);
    await config().update('autoAttach', [], G);
    await vscode.commands.executeCommand('remoteUsb.detachDevice', { bench: BENCH, device: bench!.busid });
    await until(() => attachment() === undefined, 30_000, 'the attachment to go');
    await until(() => vhciPortsInUse().length === 0, 30_000, 'every vhci port free', () => JSON.stringify(vhciPortsInUse()));
  });
});
