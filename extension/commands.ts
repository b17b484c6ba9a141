/**
 * Every `remoteUsb.*` command's handler: one factory `(ctx) => handler` per command id (contributions.ts),
 * registered in one place (registerCommands). Each works from the palette (asking with quick picks and
 * input boxes) and from the tree (the node is its argument); tests and tasks pass plain arguments
 * instead, so no command needs a dialog when it is told what to do.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import * as vscode from 'vscode';
import type { DeviceInfo } from '../server/protocol/messages.js';
import { AttachManager } from './attachments.js';
import { Command, CommandHandler, CommandId, SerialCommandId } from './contributions.js';
import { Bench, BenchManager } from './benches.js';
import { vidPidOf } from './core/auto-attach-rules.js';
import { ErrorReporter } from './errors.js';
import { SerialMonitors } from './serial-monitors.js';
import { SerialShares, SharedPort } from './serial-shares.js';
import { TaskRunner } from './tasks.js';
import { BenchNode, DeviceNode, deviceLabel, deviceState, TtyNode } from './tree.js';

export interface CommandContext {
  extensionPath: string;
  benches: BenchManager;
  attachments: AttachManager;
  monitors: SerialMonitors;
  shares: SerialShares;
  tasks: TaskRunner;
  errors: ErrorReporter;
  log: vscode.LogOutputChannel;
}

/** A device as commands take it: a tree node, or { bench (name or id), device (bus id) } from tests/tasks. */
type DeviceArg = DeviceNode | { bench: string; device: string } | undefined;
type BenchArg = BenchNode | { bench: string } | undefined;
/** Makes a command's handler from the extension's context. */
type Factory = (ctx: CommandContext) => CommandHandler;

const PAIRING_CODE = /^[A-Z0-9]{5}-?[A-Z0-9]{5}$/i;

/** Daemon bundles (`npm run package:server`): `remoteUsb.serverBundles`, else out/package in this checkout. */
function serverBundlesDir(extensionPath: string): string {
  return vscode.workspace.getConfiguration('remoteUsb').get<string>('serverBundles')?.trim() || join(extensionPath, 'out', 'package');
}

async function benchOf({ benches }: CommandContext, arg: BenchArg, placeHolder: string): Promise<Bench | undefined> {
  if (arg instanceof BenchNode) return arg.bench;
  if (arg && 'bench' in arg) {
    const b = benches.find(arg.bench);
    if (!b) throw new Error(`no bench named '${arg.bench}'`);
    return b;
  }
  const all = benches.list();
  if (all.length <= 1) return all[0];
  const pick = await vscode.window.showQuickPick(all.map((b) => ({ label: b.name, description: b.state, bench: b })), { placeHolder });
  return pick?.bench;
}

async function deviceOf({ benches, attachments }: CommandContext, arg: DeviceArg, placeHolder: string, filter: (b: Bench, d: DeviceInfo) => boolean): Promise<[Bench, DeviceInfo] | undefined> {
  if (arg instanceof DeviceNode) {
    const d = arg.bench.device(arg.deviceId);
    return d ? [arg.bench, d] : undefined;
  }
  if (arg && 'device' in arg) {
    const b = benches.find(arg.bench);
    const d = b?.device(arg.device);
    if (!b || !d) throw new Error(`bench '${arg.bench}' has no device '${arg.device}'`);
    return [b, d];
  }
  const items = benches.list().flatMap((b) => b.devices.filter((d) => filter(b, d)).map((d) => ({
    label: `$(${d.tty ? 'terminal' : 'plug'}) ${deviceLabel(d)}`,
    description: `${vidPidOf(d)}${d.serial ? ` · ${d.serial}` : ''}`,
    detail: `${b.name} · ${d.id} · ${d.speed} · ${deviceState(d, attachments, b.id).replace('-', ' ')}${d.claimedBy && !d.mine ? ` by ${d.claimedBy}` : ''}`,
    pair: [b, d] as [Bench, DeviceInfo],
  })));
  if (items.length === 0) {
    void vscode.window.showInformationMessage(benches.list().length === 0 ? 'No bench yet: add one first.' : 'No device to choose from right now.', ...(benches.list().length === 0 ? ['Add Bench'] : [])).then((c) => {
      if (c) void vscode.commands.executeCommand(Command.addBench);
    });
    return undefined;
  }
  return (await vscode.window.showQuickPick(items, { placeHolder, matchOnDescription: true, matchOnDetail: true }))?.pair;
}

async function askAddress({ benches }: CommandContext, value?: string): Promise<string | undefined> {
  return vscode.window.showInputBox({
    title: 'Remote USB: bench address',
    prompt: "The ticket from 'remote-usb-server ticket' on the bench (or its endpoint id when relays are on)",
    value,
    ignoreFocusOut: true,
    validateInput: (v) => benches.parseAddress(v.trim()).then(() => undefined, (e: Error) => e.message),
  });
}

async function connect(ctx: CommandContext, title: string, address: string, options: { name?: string; pairingCode?: string }): Promise<Bench | undefined> {
  const { benches, errors } = ctx;
  try {
    const bench = await vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title, cancellable: true }, (_p, token) => benches.add(address, { ...options, token }));
    void vscode.window.showInformationMessage(`Remote USB: connected to bench '${bench.name}' (${bench.devices.length} device${bench.devices.length === 1 ? '' : 's'}).`);
    return bench;
  } catch (e) {
    void errors.show(e, `Cannot add the bench`, () => connect(ctx, title, address, options));
    return undefined;
  }
}

const addBench: Factory = (ctx) => async (arg?: { address: string; name?: string }) => {
  const address = arg?.address ?? (await askAddress(ctx));
  if (!address) return undefined;
  const name = arg ? arg.name : await vscode.window.showInputBox({ title: 'Remote USB: bench name (optional)', prompt: 'Shown in the Remote USB view; leave empty to use the name the bench reports', ignoreFocusOut: true });
  if (name === undefined && !arg) return undefined;
  return connect(ctx, 'Connecting to the bench…', address, { name: name || undefined });
};

const pairBench: Factory = (ctx) => async (arg?: BenchNode | { address: string; code: string; name?: string }) => {
  const address = arg instanceof BenchNode ? arg.bench.setting.address : arg?.address ?? (await askAddress(ctx));
  if (!address) return undefined;
  const code = arg && !(arg instanceof BenchNode) ? arg.code : await vscode.window.showInputBox({
    title: 'Remote USB: pairing code',
    prompt: "The one-time code printed by 'remote-usb-server pair' on the bench",
    placeHolder: 'ABCDE-FGHIJ',
    ignoreFocusOut: true,
    validateInput: (v) => (PAIRING_CODE.test(v.trim()) ? undefined : 'A pairing code looks like ABCDE-FGHIJ (letters and digits)'),
  });
  if (!code) return undefined;
  return connect(ctx, 'Pairing with the bench…', address, { pairingCode: code.trim().toUpperCase(), name: arg && !(arg instanceof BenchNode) ? arg.name : undefined });
};

const deployBench: Factory = (ctx) => {
  const { benches, errors, log } = ctx;
  return async (arg?: { target: string; port?: number; sshArgs?: string[]; bundlesDir?: string; name?: string }) => {
    const target = arg?.target ?? (await vscode.window.showInputBox({
      title: 'Remote USB: deploy the server to a bench over ssh',
      prompt: 'ssh destination: user@host, or a Host from your ~/.ssh/config (your own ssh, keys and agent are used; the user needs sudo without a password, or be root)',
      placeHolder: 'pi@bench.local',
      ignoreFocusOut: true,
      validateInput: (v) => (/^[^\s-][^\s]*$/.test(v.trim()) ? undefined : 'One ssh destination, like pi@bench.local'),
    }))?.trim();
    if (!target) return undefined;
    const { deployBench, DEPLOY_STEP_TITLES } = await import('./core/deploy.js');
    try {
      return await vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title: `Deploying the Remote USB server to ${target}`, cancellable: true }, async (progress, token) => {
        const abort = new AbortController();
        token.onCancellationRequested(() => abort.abort());
        const r = await deployBench(target, {
          port: arg?.port, sshArgs: arg?.sshArgs, signal: abort.signal,
          bundlesDir: arg?.bundlesDir ?? serverBundlesDir(ctx.extensionPath),
          onStep: (step, detail) => {
            progress.report({ message: `${DEPLOY_STEP_TITLES[step]}${detail ? ` — ${detail}` : ''}` });
            log.info(`deploy to ${target}: ${DEPLOY_STEP_TITLES[step]}${detail ? ` — ${detail}` : ''}`);
          },
        });
        for (const line of r.lines) log.info(`deploy to ${target}: ${line}`);
        for (const w of r.warnings) log.warn(`deploy to ${target}: ${w}`);
        progress.report({ message: 'pairing with the new bench…' });
        const bench = await benches.add(r.ticket, { pairingCode: r.pairingCode, name: arg?.name, token });
        void vscode.window.showInformationMessage(`Remote USB: the server runs on ${target} (${r.arch}, ${r.version}) and this machine is paired with it as '${bench.name}'.`);
        return r;
      });
    } catch (e) {
      const manual = (e as { manualCommand?: string }).manualCommand;
      if (manual) {
        log.error(`deploy to ${target}: ${(e as Error).message}\n${manual}`);
        errors.shown.push({ message: (e as Error).message, actions: ['Show Logs'] });
        const choice = await vscode.window.showErrorMessage(`Deploy to ${target}: ${(e as Error).message} Run the install yourself in a terminal (the command is in the log).`, 'Copy Command', 'Show Logs');
        if (choice === 'Copy Command') await vscode.env.clipboard.writeText(manual);
        if (choice === 'Show Logs') log.show(true);
      } else {
        void errors.show(e, `Deploy to ${target} failed`, () => vscode.commands.executeCommand(Command.deployBench, arg));
      }
      return undefined;
    }
  };
};

const renameBench: Factory = (ctx) => {
  const { benches } = ctx;
  return async (arg?: BenchArg, newName?: string) => {
    const b = await benchOf(ctx, arg, 'Rename which bench?');
    if (!b) return;
    const name = newName ?? (await vscode.window.showInputBox({ title: `Rename bench '${b.name}'`, value: b.name, validateInput: (v) => (v.trim() === '' || v.length > 64 ? 'A name of 1 to 64 characters' : undefined) }));
    if (name) await benches.rename(b, name.trim());
  };
};

const removeBench: Factory = (ctx) => {
  const { benches, attachments } = ctx;
  return async (arg?: BenchArg, options?: { confirm?: boolean }) => {
    const b = await benchOf(ctx, arg, 'Remove which bench?');
    if (!b) return;
    if (options?.confirm !== false) {
      const ok = await vscode.window.showWarningMessage(`Remove bench '${b.name}'? Devices attached from it are detached.`, { modal: true }, 'Remove');
      if (ok !== 'Remove') return;
    }
    await Promise.all(attachments.list().filter((a) => a.bench === b).map((a) => attachments.detach(b.id, a.deviceId)));
    await benches.remove(b);
  };
};

const attachDevice: Factory = (ctx) => {
  const { attachments, errors } = ctx;
  const attach = async (arg?: DeviceArg): Promise<unknown> => {
    const picked = await deviceOf(ctx, arg, 'Attach which device to this machine?', (b, d) => ['available', 'mine'].includes(deviceState(d, attachments, b.id)));
    if (!picked) return undefined;
    const [b, d] = picked;
    try {
      const title = `Attaching ${deviceLabel(d)} from ${b.name}…`;
      const a = await vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title, cancellable: true }, (_p, token) => {
        const attaching = attachments.attach(b, d.id);
        // The helper (and its password dialog) cannot be interrupted half-way: a cancelled attach is
        // undone as soon as it completes, and the user is free at once.
        return new Promise<Awaited<typeof attaching>>((resolve, reject) => {
          token.onCancellationRequested(() => {
            reject(new vscode.CancellationError());
            void attaching.then(() => attachments.detach(b.id, d.id), () => {});
          });
          attaching.then(resolve, reject);
        });
      });
      void vscode.window.showInformationMessage(`Remote USB: ${deviceLabel(d)} is attached to this machine (vhci port ${a.port}).`);
      return { port: a.port };
    } catch (e) {
      void errors.show(e, `Cannot attach ${deviceLabel(d)}`, () => attach({ bench: b.id, device: d.id }));
      return undefined;
    }
  };
  return attach;
};

const detachDevice: Factory = (ctx) => {
  const { benches, attachments } = ctx;
  return async (arg?: DeviceArg) => {
    let target: [string, string] | undefined;
    if (arg instanceof DeviceNode) target = [arg.bench.id, arg.deviceId];
    else if (arg && 'device' in arg) target = [benches.find(arg.bench)?.id ?? arg.bench, arg.device];
    else {
      const all = attachments.list();
      if (all.length === 0) { void vscode.window.showInformationMessage('Remote USB: nothing is attached.'); return; }
      const pick = all.length === 1 ? { a: all[0] } : await vscode.window.showQuickPick(all.map((a) => ({ label: a.bench.device(a.deviceId)?.product ?? a.deviceId, description: `${a.bench.name} · ${a.deviceId}${a.localTty ? ` · ${a.localTty}` : ''}`, a })), { placeHolder: 'Detach which device?' });
      if (!pick) return;
      target = [pick.a.bench.id, pick.a.deviceId];
    }
    await attachments.detach(...target);
  };
};

const detachAll: Factory = (ctx) => {
  const { attachments } = ctx;
  return async () => {
    const n = await attachments.detachAll();
    void vscode.window.showInformationMessage(n === 0 ? 'Remote USB: nothing was attached.' : `Remote USB: detached ${n} device${n === 1 ? '' : 's'}.`);
    return n;
  };
};

const openSerialMonitor: Factory = (ctx) => {
  const { benches, attachments, monitors } = ctx;
  return async (arg?: DeviceArg | TtyNode | { bench: string; port: string }) => {
    if (arg instanceof TtyNode) return monitors.openBench(arg.bench, arg.path);
    if (arg && 'port' in arg) {
      const b = benches.find(arg.bench);
      if (!b) throw new Error(`no bench named '${arg.bench}'`);
      return monitors.openBench(b, arg.port);
    }
    if (!arg) {
      const ttys = benches.list().flatMap((b) => b.ttys.map((t) => ({ label: `$(terminal) ${t}`, description: b.name, detail: 'serial port shared by the bench', b, t })));
      const devs = benches.list().flatMap((b) => b.devices.filter((d) => d.tty !== undefined || attachments.get(b.id, d.id)?.localTty).map((d) => ({
        label: `$(plug) ${deviceLabel(d)}`, description: `${vidPidOf(d)}${d.serial ? ` · ${d.serial}` : ''}`,
        detail: `${b.name} · ${attachments.get(b.id, d.id)?.localTty ? `attached here as ${attachments.get(b.id, d.id)?.localTty}` : d.tty}`, b, d,
      })));
      const all = [...devs, ...ttys];
      if (all.length === 0) { void vscode.window.showInformationMessage('Remote USB: no bench shows a serial port right now.'); return undefined; }
      const pick = await vscode.window.showQuickPick<(typeof all)[number]>(all, { placeHolder: 'Open a serial monitor on…', matchOnDescription: true, matchOnDetail: true });
      if (!pick) return undefined;
      return 'd' in pick ? monitors.openDevice(pick.b, pick.d) : monitors.openBench(pick.b, pick.t);
    }
    const picked = await deviceOf(ctx, arg, '', () => true);
    return picked ? monitors.openDevice(...picked) : undefined;
  };
};

const shareSerialPort: Factory = (ctx) => {
  const { benches, shares, errors } = ctx;
  return async (arg?: DeviceArg | TtyNode | { bench: string; port: string; tcpPort?: number }) => {
    let target: [Bench, string, string] | undefined;
    if (arg instanceof TtyNode) {
      target = [arg.bench, arg.path, `${arg.path} on ${arg.bench.name}`];
    } else if (arg && 'port' in arg) {
      const b = benches.find(arg.bench);
      if (!b) throw new Error(`no bench named '${arg.bench}'`);
      const d = b.device(arg.port);
      target = [b, arg.port, `${d ? deviceLabel(d) : arg.port} on ${b.name}`];
    } else if (arg) {
      const picked = await deviceOf(ctx, arg, '', () => true);
      if (picked) target = [picked[0], picked[1].id, `${deviceLabel(picked[1])} on ${picked[0].name}`];
    } else {
      const items = benches.list().flatMap((b) => [
        ...b.devices.filter((d) => d.tty !== undefined).map((d) => ({ label: `$(plug) ${deviceLabel(d)}`, description: `${vidPidOf(d)}${d.serial ? ` · ${d.serial}` : ''}`, detail: `${b.name} · ${d.tty}`, t: [b, d.id, `${deviceLabel(d)} on ${b.name}`] as [Bench, string, string] })),
        ...b.ttys.map((t) => ({ label: `$(terminal) ${t}`, description: b.name, detail: 'serial port shared by the bench', t: [b, t, `${t} on ${b.name}`] as [Bench, string, string] })),
      ]);
      if (items.length === 0) { void vscode.window.showInformationMessage('Remote USB: no bench shows a serial port right now.'); return undefined; }
      target = (await vscode.window.showQuickPick(items, { placeHolder: 'Share which serial port with local tools (esptool, pyserial, PlatformIO)?', matchOnDescription: true, matchOnDetail: true }))?.t;
    }
    if (!target) return undefined;
    try {
      const s = await shares.start(...target, arg && 'tcpPort' in arg ? arg.tcpPort : undefined);
      shares.announce(s);
      return { url: s.share.url, port: s.share.port };
    } catch (e) {
      void errors.show(e, `Cannot share ${target[2]}`);
      return undefined;
    }
  };
};

const stopSerialShare: Factory = (ctx) => {
  const { shares } = ctx;
  return async (arg?: DeviceNode | TtyNode | { bench: string; port: string }) => {
    const all = [...shares.open.values()];
    let chosen: SharedPort[];
    if (arg instanceof TtyNode) chosen = all.filter((s) => s.bench === arg.bench && s.port === arg.path);
    else if (arg instanceof DeviceNode) chosen = all.filter((s) => s.bench === arg.bench && s.port === arg.deviceId);
    else if (arg) chosen = all.filter((s) => (s.bench.name === arg.bench || s.bench.id === arg.bench) && s.port === arg.port);
    else if (all.length <= 1) chosen = all;
    else {
      const pick = await vscode.window.showQuickPick(all.map((s) => ({ label: s.label, description: s.share.url, s })), { placeHolder: 'Stop sharing which serial port?' });
      chosen = pick ? [pick.s] : [];
    }
    if (all.length === 0) void vscode.window.showInformationMessage('Remote USB: no serial port is shared.');
    await Promise.all(chosen.map((s) => shares.stop(s)));
    return chosen.length;
  };
};

const copyDeviceInfo: Factory = (ctx) => {
  const { attachments } = ctx;
  return async (arg?: DeviceArg) => {
    const picked = await deviceOf(ctx, arg, 'Copy the details of which device?', () => true);
    if (!picked) return undefined;
    const [b, d] = picked;
    const a = attachments.get(b.id, d.id);
    const text = [
      `${deviceLabel(d)}${d.manufacturer ? ` (${d.manufacturer})` : ''}`,
      `VID:PID ${vidPidOf(d)}`,
      `serial ${d.serial ?? '-'}`,
      `bench ${b.name}, bus id ${d.id}, speed ${d.speed}`,
      ...(d.tty ? [`serial port on bench ${d.tty}`] : []),
      ...(a ? [`attached here: vhci port ${a.port}${a.localBusid ? `, bus id ${a.localBusid}` : ''}${a.localTty ? `, ${a.localTty}` : ''}`] : []),
    ].join('\n');
    await vscode.env.clipboard.writeText(text);
    return text;
  };
};

const showLogs: Factory = ({ log }) => () => log.show(true);

const installHelper: Factory = (ctx) => () => {
  const helperJs = join(ctx.extensionPath, 'dist', 'helper.js');
  const node = existsSync('/usr/bin/node') ? '/usr/bin/node' : process.execPath;
  const env = process.versions.electron && node === process.execPath ? 'env ELECTRON_RUN_AS_NODE=1 ' : '';
  const term = vscode.window.createTerminal({ name: 'Remote USB: Install Helper' });
  term.show();
  term.sendText(`sudo ${env}"${node}" "${helperJs}" install --node "${node}"`);
  return helperJs;
};

const refresh: Factory = ({ benches }) => () => benches.refresh();

const showActions: Factory = (ctx) => {
  const { attachments } = ctx;
  return async () => {
    const actions: [string, CommandId, string][] = [
      ['$(plug) Attach Device…', Command.attachDevice, ''],
      ['$(debug-disconnect) Detach Device…', Command.detachDevice, `${attachments.list().length} attached`],
      ['$(terminal) Open Serial Monitor…', Command.openSerialMonitor, ''],
      ['$(radio-tower) Share Serial Port with Local Tools…', Command.shareSerialPort, 'rfc2217:// for esptool, pyserial, PlatformIO'],
      ['$(add) Add Bench…', Command.addBench, ''],
      ['$(key) Pair with Bench…', Command.pairBench, ''],
      ['$(refresh) Refresh', Command.refresh, 'reconnect offline benches now'],
      ['$(output) Show Logs', Command.showLogs, ''],
    ];
    const pick = await vscode.window.showQuickPick(actions.map(([label, command, description]) => ({ label, description, command })), { placeHolder: 'Remote USB' });
    if (pick) await vscode.commands.executeCommand(pick.command);
  };
};

const devicePath: Factory = (ctx) => {
  const { attachments } = ctx;
  return () => {
    const a = ctx.tasks.lastAttached ?? (attachments.list().length === 1 ? attachments.list()[0] : undefined);
    if (!a) throw new Error('no device attached by Remote USB: run an attach task first');
    return a.localTty ?? a.localBusid ?? '';
  };
};

/** One handler factory per command id: a command without a handler, or a handler without a command, does not compile. */
const FACTORIES: Record<Exclude<CommandId, SerialCommandId>, Factory> = {
  [Command.addBench]: addBench,
  [Command.pairBench]: pairBench,
  [Command.deployBench]: deployBench,
  [Command.renameBench]: renameBench,
  [Command.removeBench]: removeBench,
  [Command.attachDevice]: attachDevice,
  [Command.detachDevice]: detachDevice,
  [Command.detachAll]: detachAll,
  [Command.openSerialMonitor]: openSerialMonitor,
  [Command.shareSerialPort]: shareSerialPort,
  [Command.stopSerialShare]: stopSerialShare,
  [Command.copyDeviceInfo]: copyDeviceInfo,
  [Command.showLogs]: showLogs,
  [Command.installHelper]: installHelper,
  [Command.refresh]: refresh,
  [Command.showActions]: showActions,
  [Command.devicePath]: devicePath,
};

/** Registers every command: the table above, and the serial monitor's (SerialMonitors.commandHandlers). */
export function registerCommands(ctx: CommandContext): vscode.Disposable[] {
  const handlers: Record<CommandId, CommandHandler> = { ...ctx.monitors.commandHandlers() } as Record<CommandId, CommandHandler>;
  for (const id of Object.keys(FACTORIES) as (keyof typeof FACTORIES)[]) handlers[id] = FACTORIES[id](ctx);
  return (Object.keys(handlers) as CommandId[]).map((id) => vscode.commands.registerCommand(id, handlers[id]));
}
