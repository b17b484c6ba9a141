/**
 * VS Code entry point: the Remote USB view, status bar item, commands, serial monitors, auto-attach and
 * tasks. Activation only wires things up; the client core and the native Iroh binding load when the
 * first bench connects (benches.ts), so VS Code starts as fast as without us.
 */
import * as vscode from 'vscode';
import { createLogger, LogLevel } from '../server/shared/log.js';
import { printable } from '../server/shared/text.js';
import { AttachManager } from './attachments.js';
import { AutoAttach } from './auto-attach.js';
import { BenchManager } from './benches.js';
import { registerCommands } from './commands.js';
import { ErrorAction, ErrorReporter } from './errors.js';
import { SerialMonitors } from './serial-monitors.js';
import { SerialShares } from './serial-shares.js';
import { logLevel } from './settings.js';
import { StatusBar } from './status-bar.js';
import { TASK_TYPE, TaskRunner } from './tasks.js';
import { BenchTreeProvider } from './tree.js';
import { Command, ContextKey, VIEW_ID } from './contributions.js';
import { assertNever } from '../server/shared/assert-never.js';
import { WalkthroughProgress } from './walkthrough.js';

/** What activate() returns: the parts, for the extension's own tests in VS Code. */
export interface RemoteUsbApi {
  benches: BenchManager;
  attachments: AttachManager;
  monitors: SerialMonitors;
  shares: SerialShares;
  autoAttach: AutoAttach;
  errors: ErrorReporter;
  tasks: TaskRunner;
  tree: BenchTreeProvider;
  treeView: vscode.TreeView<unknown>;
  statusBar: StatusBar;
  /** The Getting Started walkthrough's events reached so far. */
  walkthrough: WalkthroughProgress;
  /** ms from activate() being called until it returned. */
  activationMs: number;
  /** Resolves once the benches in the settings have clients (and the core is loaded if there are any). */
  ready: Promise<void>;
}

/** Set by activate: gives everything back before the extension host goes (window reload, quit). */
let shutdown: (() => Promise<void>) | undefined;

export function activate(context: vscode.ExtensionContext): RemoteUsbApi {
  const t0 = performance.now();
  const channel = vscode.window.createOutputChannel('Remote USB', { log: true });
  const log = channelLogger(channel);

  const benches = new BenchManager(context.secrets, log, context.extensionPath);
  const attachments = new AttachManager(log);
  const monitors = new SerialMonitors(attachments, log);
  const walkthrough = new WalkthroughProgress();
  const shares = new SerialShares(log, () => walkthrough.reached('shared'));
  const tasks = new TaskRunner(benches, attachments);
  const errors = new ErrorReporter(log, (action) => runErrorAction(action, benches));
  const autoAttach = new AutoAttach(benches, attachments, errors, log);
  const tree = new BenchTreeProvider(benches, attachments);
  const treeView = vscode.window.createTreeView(VIEW_ID, { treeDataProvider: tree, showCollapseAll: true });
  const statusBar = new StatusBar(benches, attachments);

  context.subscriptions.push(
    channel, benches, attachments, monitors, shares, autoAttach, tree, treeView, statusBar,
    vscode.tasks.registerTaskProvider(TASK_TYPE, tasks.provider()),
    vscode.window.onDidCloseTerminal((t) => { for (const m of monitors.open) if (m.terminal === t) m.close(); }),
    // the Getting Started walkthrough's steps complete on these events (walkthrough.ts)
    benches.onDidChange(() => {
      if (benches.list().length > 0) walkthrough.reached('benchAdded');
      if (benches.list().some((b) => b.state === 'online')) walkthrough.reached('benchOnline');
    }),
    attachments.onDidChange(() => { if (attachments.list().length > 0) walkthrough.reached('attached'); }),
    vscode.window.onDidOpenTerminal((t) => { if ([...monitors.open].some((m) => m.terminal === t)) walkthrough.reached('monitorOpened'); }),
    vscode.tasks.onDidStartTask((e) => { if (e.execution.task.definition.type === TASK_TYPE) walkthrough.reached('flashTask'); }),
    ...registerCommands({ extensionPath: context.extensionPath, benches, attachments, monitors, shares, tasks, errors, log: channel }),
  );
  void vscode.commands.executeCommand('setContext', ContextKey.hasBenches, false);
  const ready = benches.sync().catch((e: Error) => log.error(`starting the benches: ${e.stack ?? e.message}`));
  shutdown = async () => {
    // Serial ports and attached devices first (the bench frees them at once instead of after 20 s of
    // silence, the kernel frees the vhci ports), then the connections.
    monitors.dispose();
    await shares.dispose();
    await attachments.detachAll();
    await benches.dispose();
  };
  const activationMs = performance.now() - t0;
  log.info(`Remote USB ${context.extension.packageJSON.version} activated in ${activationMs.toFixed(1)} ms`);
  return { benches, attachments, monitors, shares, autoAttach, errors, tasks, tree, treeView: treeView as vscode.TreeView<unknown>, statusBar, walkthrough, activationMs, ready };
}

export function deactivate(): Promise<void> | undefined {
  const done = shutdown?.();
  shutdown = undefined;
  return done;
}

/** The core's Logger on the output channel, filtered by `remoteUsb.logLevel`. */
function channelLogger(channel: vscode.LogOutputChannel): ReturnType<typeof createLogger> {
  const levels: LogLevel[] = ['error', 'warn', 'info', 'debug'];
  const on = (l: LogLevel): boolean => levels.indexOf(l) <= levels.indexOf(logLevel());
  // printable(): text from a bench (its name, its error messages) cannot forge lines in the channel
  return {
    error: (m) => on('error') && channel.error(printable(m)),
    warn: (m) => on('warn') && channel.warn(printable(m)),
    info: (m) => on('info') && channel.info(printable(m)),
    // the channel's own level hides debug by default; ours decides whether it is written at all
    debug: (m) => on('debug') && channel.info(`[debug] ${printable(m)}`),
  } as ReturnType<typeof createLogger>;
}

async function runErrorAction(action: ErrorAction, benches: BenchManager): Promise<void> {
  switch (action) {
    case 'Show Logs': return void vscode.commands.executeCommand(Command.showLogs);
    case 'Install Helper': return void vscode.commands.executeCommand(Command.installHelper);
    case 'Pair with Code': return void vscode.commands.executeCommand(Command.pairBench);
    case 'Load vhci-hcd': {
      const { loadVhci } = await import('./core/usbip/attach.js');
      await loadVhci().then(
        () => vscode.window.showInformationMessage('Remote USB: vhci-hcd is loaded; attach again.'),
        (e: Error) => vscode.window.showErrorMessage(`Remote USB: could not load vhci-hcd: ${e.message}`),
      );
      return;
    }
    case 'Copy Client Id': {
      const id = await benches.clientId();
      await vscode.env.clipboard.writeText(id);
      void vscode.window.showInformationMessage(`Remote USB: copied this machine's client id ${id.slice(0, 12)}… — on the bench run: remote-usb-server allow ${id}`);
      return;
    }
    case 'Retry': return;
    default: return assertNever(action);
  }
}
