/**
 * Bench serial ports shared with local tools as rfc2217://127.0.0.1:N (Remote USB: Share Serial Port
 * with Local Tools…): esptool, pyserial and PlatformIO reach the board from any OS without attach. The
 * share itself lives in the client core (core/rfc2217-server.ts); this keeps the open ones, tells the user
 * the URL (with Copy / Stop buttons) and stops them on request or when VS Code closes.
 */
import * as vscode from 'vscode';
import type { Logger } from '../server/shared/log.js';
import type { Rfc2217Share } from './core/rfc2217-server.js';
import { DEFAULT_SERIAL_PARAMS } from './core/serial.js';
import type { Bench } from './benches.js';
import { serialDefaults } from './settings.js';
import { ContextKey } from './contributions.js';

export interface SharedPort {
  bench: Bench;
  port: string;
  label: string;
  share: Rfc2217Share;
}

export class SerialShares implements vscode.Disposable {
  readonly open = new Map<string, SharedPort>();

  /** `onShared`: a port was shared (the walkthrough's step). */
  constructor(private readonly log: Logger, private readonly onShared: () => void = () => {}) {}

  private key(bench: Bench, port: string): string {
    return `${bench.id}/${port}`;
  }

  get(bench: Bench, port: string): SharedPort | undefined {
    return this.open.get(this.key(bench, port));
  }

  /** Opens `port` on the bench and serves it on loopback; an existing share of it is returned as is. */
  async start(bench: Bench, port: string, label: string, tcpPort = 0): Promise<SharedPort> {
    const existing = this.get(bench, port);
    if (existing) return existing;
    const client = bench.client;
    if (!client || client.state !== 'online') throw new Error(`bench ${bench.name} is ${bench.state}`);
    const params = { ...DEFAULT_SERIAL_PARAMS, baud: serialDefaults().baudRate };
    const session = await client.openSerial(port, params);
    const { Rfc2217Share } = await import('./core/rfc2217-server.js');
    let share: Rfc2217Share;
    try {
      share = await Rfc2217Share.start(session, { port: tcpPort, params, name: `${label}`, log: this.log });
    } catch (e) {
      await session.close();
      throw e;
    }
    const shared = { bench, port, label, share };
    const key = this.key(bench, port);
    this.open.set(key, shared);
    this.changed();
    share.once('end', (why) => {
      if (this.open.get(key) === shared) this.open.delete(key);
      this.changed();
      if (why !== 'share stopped') void vscode.window.showWarningMessage(`Remote USB: the share of ${label} ended: ${why}`);
    });
    this.log.info(`sharing ${label} with local programs at ${share.url}`);
    return shared;
  }

  /** Tells the user the URL, with Copy URL and Stop Sharing. */
  announce(s: SharedPort): void {
    void vscode.window.showInformationMessage(
      `Remote USB: ${s.label} is shared with local programs at ${s.share.url} (one at a time, this user only) — e.g. esptool --port ${s.share.url} flash_id`,
      'Copy URL', 'Stop Sharing',
    ).then(async (choice) => {
      if (choice === 'Copy URL') await vscode.env.clipboard.writeText(s.share.url);
      if (choice === 'Stop Sharing') await s.share.stop();
    });
  }

  async stop(s: SharedPort): Promise<void> {
    await s.share.stop();
  }

  private changed(): void {
    void vscode.commands.executeCommand('setContext', ContextKey.serialShared, this.open.size > 0);
    if (this.open.size > 0) this.onShared();
  }

  dispose(): Promise<void> {
    const all = [...this.open.values()];
    this.open.clear();
    return Promise.all(all.map((s) => s.share.stop())).then(() => undefined);
  }
}
