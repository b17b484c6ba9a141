/**
 * How failures reach the user: one short sentence that says what to do, and a button that does it
 * (Show Logs / Retry / Install Helper / Pair). The full story goes to the log.
 */
import * as vscode from 'vscode';
import type { Logger } from '../server/shared/log.js';

export type ErrorAction = 'Show Logs' | 'Retry' | 'Install Helper' | 'Load vhci-hcd' | 'Pair with Code' | 'Copy Client Id';

export interface UserError {
  message: string;
  actions: ErrorAction[];
}

/** Turns any error from the core, the bench or the helper into words and actions for the user. */
export function describeError(e: unknown, what: string): UserError {
  const err = e as { name?: string; code?: string; message?: string; hint?: string; action?: string };
  const message = err?.message ?? String(e);
  if (err?.name === 'AttachError') {
    const actions: ErrorAction[] = [];
    if (err.action === 'install-helper') actions.push('Install Helper');
    if (err.action === 'load-vhci') actions.push('Load vhci-hcd');
    if (err.action === 'retry') actions.push('Retry');
    actions.push('Show Logs');
    return { message: `${what}: ${message} ${err.hint ?? ''}`.trim(), actions };
  }
  if (err?.name === 'BenchError') {
    switch (err.code) {
      case 'unauthorized':
        return { message: `${what}: the bench does not know this machine. Pair with a one-time code from 'remote-usb-server pair', or have the bench admin run 'remote-usb-server allow <your client id>'.`, actions: ['Pair with Code', 'Copy Client Id'] };
      case 'pairing-failed':
        return { message: `${what}: ${message}. Ask for a new code ('remote-usb-server pair' on the bench) and try again.`, actions: ['Pair with Code'] };
      case 'in-use':
      case 'busy':
        return { message: `${what}: ${message}.`, actions: ['Retry'] };
      case 'timeout':
      case 'offline':
        return { message: `${what}: ${message}. Check that remote-usb-server runs on the bench and the network reaches it.`, actions: ['Retry', 'Show Logs'] };
      case 'version':
        return { message: `${what}: ${message}.`, actions: ['Show Logs'] };
    }
  }
  return { message: `${what}: ${message}`, actions: ['Show Logs'] };
}

export class ErrorReporter {
  /** Every message shown, for the tests (and nothing else). */
  readonly shown: UserError[] = [];

  constructor(
    private readonly log: Logger,
    private readonly run: (action: ErrorAction) => Thenable<unknown> | void,
  ) {}

  /** Logs the error, shows it, runs the chosen action. `retry` is called for Retry. */
  async show(e: unknown, what: string, retry?: () => unknown): Promise<void> {
    if (e instanceof vscode.CancellationError) return;
    const user = describeError(e, what);
    if (!retry) user.actions = user.actions.filter((a) => a !== 'Retry');
    this.log.error(`${user.message}${(e as Error)?.stack ? `\n${(e as Error).stack}` : ''}`);
    this.shown.push(user);
    const choice = await vscode.window.showErrorMessage(user.message, ...user.actions);
    if (choice === 'Retry') await retry?.();
    else if (choice) await this.run(choice);
  }
}
