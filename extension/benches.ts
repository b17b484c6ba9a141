/**
 * The benches this VS Code knows: one connection each, all on one Iroh endpoint whose secret key lives in
 * VS Code's secret storage. The connections live in the byte-path worker (core/worker/): this thread
 * holds their snapshots and sends commands. The worker, and with it the native Iroh binding, starts on
 * first use, so activation stays fast and loads no native module. Benches come from the
 * `remoteUsb.benches` setting; editing it by hand works too (the manager follows the setting).
 */
import { randomBytes } from 'node:crypto';
import { hostname, userInfo } from 'node:os';
import { join } from 'node:path';
import * as vscode from 'vscode';
import type { DeviceInfo } from '../server/protocol/messages.js';
import type { Logger } from '../server/shared/log.js';
import type { BenchState } from './core/bench-client.js';
import type { PeerAddress } from '../server/net/iroh.js';
import { CoreHost, RemoteBench } from './core/worker/core-host.js';
import { BenchSetting, benchSettings, clientName, relayChoice, saveBenchSettings } from './settings.js';
import { Command, ContextKey } from './contributions.js';

const SECRET_KEY = 'remoteUsb.secretKey';

export class Bench {
  client?: RemoteBench;
  /** Set when the address in the setting cannot be parsed. */
  problem?: string;

  constructor(
    /** The bench's endpoint id (its identity). */
    readonly id: string,
    public setting: BenchSetting,
  ) {}

  get name(): string {
    return this.setting.name || this.client?.benchName || `bench ${this.id.slice(0, 8)}`;
  }

  get state(): BenchState | 'invalid' {
    if (this.problem) return 'invalid';
    return this.client?.state ?? 'connecting';
  }

  get detail(): string | undefined {
    return this.problem ?? this.client?.detail;
  }

  get devices(): DeviceInfo[] {
    return this.client?.state === 'online' ? this.client.devices : [];
  }

  get ttys(): string[] {
    return this.client?.state === 'online' ? (this.client.ttys ?? []) : [];
  }

  device(id: string): DeviceInfo | undefined {
    return this.client?.device(id);
  }

  get rttMs(): number | undefined {
    return this.client?.state === 'online' ? this.client.rttMs : undefined;
  }

  /** 'direct' or 'relay' while online, when Iroh has chosen a path. */
  get path(): 'direct' | 'relay' | undefined {
    return this.client?.state === 'online' ? this.client.path : undefined;
  }
}

export interface DeviceChange {
  bench: Bench;
  /** undefined: the bench's own node (state, name, rtt) and its list of children changed. */
  deviceId?: string;
}

export class BenchManager implements vscode.Disposable {
  private readonly benches = new Map<string, Bench>();
  /** The byte-path worker (started on first use). */
  readonly core: CoreHost;
  private configured?: Promise<void>;
  private secretKey?: Uint8Array;
  private readonly changed = new vscode.EventEmitter<DeviceChange | undefined>();
  /** A bench or device changed; undefined = the list of benches itself changed. */
  readonly onDidChange = this.changed.event;
  private readonly disposables: vscode.Disposable[] = [this.changed];

  constructor(
    private readonly secrets: vscode.SecretStorage,
    private readonly log: Logger,
    /** The extension's folder: the worker is dist/core-worker.js in it. */
    extensionPath: string,
  ) {
    this.core = new CoreHost(join(extensionPath, 'dist', 'core-worker.js'), log);
    this.core.on('crashed', (reason) => {
      this.changed.fire(undefined);
      void vscode.window.showWarningMessage(`Remote USB: ${reason}; restarting it. Devices attached here were detached; auto-attach rules attach them again.`, 'Show Logs').then((c) => {
        if (c) void vscode.commands.executeCommand(Command.showLogs);
      });
    });
    this.disposables.push(vscode.workspace.onDidChangeConfiguration((e) => {
      if (e.affectsConfiguration('remoteUsb.benches')) void this.sync();
      if (e.affectsConfiguration('remoteUsb.relay') || e.affectsConfiguration('remoteUsb.relayUrls') || e.affectsConfiguration('remoteUsb.clientName')) void this.restartAll();
    }));
  }

  list(): Bench[] {
    return [...this.benches.values()];
  }

  get(id: string): Bench | undefined {
    return this.benches.get(id);
  }

  /** By name (as tasks and rules give it), else by id. */
  find(nameOrId: string): Bench | undefined {
    return this.list().find((b) => b.name === nameOrId) ?? this.benches.get(nameOrId);
  }

  /** Starts clients for the benches in the setting (loads the core only if there are any). */
  async sync(): Promise<void> {
    const wanted = benchSettings();
    const seen = new Set<string>();
    for (const setting of wanted) {
      let addr: PeerAddress;
      try {
        addr = await this.core.parseAddress(setting.address);
      } catch (e) {
        const id = `invalid:${setting.address}`;
        seen.add(id);
        if (!this.benches.has(id)) {
          const b = new Bench(id, setting);
          b.problem = `The address in remoteUsb.benches is not a ticket or endpoint id: ${(e as Error).message}`;
          this.benches.set(id, b);
          this.log.warn(`${b.problem} ('${setting.address.slice(0, 40)}')`);
        }
        continue;
      }
      seen.add(addr.id);
      const existing = this.benches.get(addr.id);
      if (existing) {
        const renamed = existing.setting.name !== setting.name;
        existing.setting = setting;
        if (renamed) this.changed.fire({ bench: existing });
        continue;
      }
      const bench = new Bench(addr.id, setting);
      this.benches.set(addr.id, bench);
      await this.startClient(bench, addr);
    }
    for (const [id, bench] of this.benches) {
      if (seen.has(id)) continue;
      this.benches.delete(id);
      void bench.client?.close();
    }
    void vscode.commands.executeCommand('setContext', ContextKey.hasBenches, this.benches.size > 0);
    this.changed.fire(undefined);
  }

  private async startClient(bench: Bench, addr: PeerAddress, pairingCode?: string): Promise<RemoteBench> {
    await this.configure();
    const client = this.core.bench(addr.id, addr, pairingCode);
    bench.client = client;
    client.on('state', (state, detail) => {
      this.log.info(`bench ${bench.name}: ${state}${detail ? ` (${detail})` : ''}`);
      this.changed.fire({ bench });
    });
    client.on('devices', () => this.changed.fire({ bench }));
    client.on('changed', (d) => this.changed.fire({ bench, deviceId: d.id }));
    client.on('rtt', () => this.changed.fire({ bench }));
    if (!pairingCode) client.startInBackground();
    return client;
  }

  /** Tells the worker who we are (once, and again after a change of relay or name). */
  private configure(): Promise<void> {
    this.configured ??= (async () => {
      await this.core.configure({ secretKey: await this.key(), clientName: clientName(`${userInfo().username}@${hostname()}`), relay: relayChoice() });
    })();
    return this.configured;
  }

  /** Parses a ticket, an endpoint id or `id@host:port`; rejects with a readable error. */
  parseAddress(address: string): Promise<PeerAddress> {
    return this.core.parseAddress(address);
  }

  /** The endpoint id in `address`, or undefined when it is not a valid address. */
  private async idOf(address: string): Promise<string | undefined> {
    try { return (await this.core.parseAddress(address)).id; } catch { return undefined; }
  }

  /** Our identity: created once and kept in secret storage. */
  async key(): Promise<Uint8Array> {
    if (this.secretKey) return this.secretKey;
    const stored = await this.secrets.get(SECRET_KEY);
    if (stored && /^[0-9a-f]{64}$/.test(stored)) {
      this.secretKey = Uint8Array.from(Buffer.from(stored, 'hex'));
    } else {
      if (stored) this.log.warn('the stored client key was not 32 bytes of hex; made a new one (benches must pair this client again)');
      this.secretKey = new Uint8Array(randomBytes(32));
      await this.secrets.store(SECRET_KEY, Buffer.from(this.secretKey).toString('hex'));
    }
    return this.secretKey;
  }

  /** This machine's endpoint id, which a bench admin passes to `remote-usb-server allow`. */
  async clientId(): Promise<string> {
    return this.core.endpointId(await this.key());
  }

  /**
   * Adds a bench: connects (pairing with the code if given), and saves it in the setting only once the
   * bench has let us in. Throws BenchError (unauthorized, pairing-failed, timeout …) otherwise.
   */
  async add(address: string, options: { name?: string; pairingCode?: string; token?: vscode.CancellationToken } = {}): Promise<Bench> {
    const addr = await this.core.parseAddress(address.trim());
    const existing = this.benches.get(addr.id);
    if (existing?.client?.state === 'online' && !options.pairingCode) return existing;
    if (existing) {
      this.benches.delete(addr.id);
      await existing.client?.close();
    }
    const setting: BenchSetting = { address: address.trim(), ...(options.name ? { name: options.name } : {}) };
    const bench = new Bench(addr.id, setting);
    const client = await this.startClient(bench, addr, options.pairingCode);
    const cancelled = new Promise<never>((_, reject) => {
      options.token?.onCancellationRequested(() => reject(new vscode.CancellationError()));
    });
    try {
      await Promise.race([client.start(), cancelled]);
    } catch (e) {
      await client.close();
      throw e;
    }
    this.benches.set(addr.id, bench);
    const ids = await Promise.all(benchSettings().map((b) => this.idOf(b.address)));
    const rest = benchSettings().filter((_, i) => ids[i] !== addr.id);
    await saveBenchSettings([...rest, setting]); // sync() then finds it running
    this.changed.fire(undefined);
    return bench;
  }

  async rename(bench: Bench, name: string): Promise<void> {
    const settings = benchSettings();
    const ids = await Promise.all(settings.map((b) => this.idOf(b.address)));
    await saveBenchSettings(settings.map((b, i) => (ids[i] === bench.id ? { ...b, name } : b)));
  }

  async remove(bench: Bench): Promise<void> {
    const settings = benchSettings();
    const ids = await Promise.all(settings.map((b) => this.idOf(b.address)));
    await saveBenchSettings(settings.filter((b, i) => (bench.problem ? b.address !== bench.setting.address : ids[i] !== bench.id)));
  }

  /** Reconnects every offline bench now. */
  refresh(): void {
    for (const b of this.benches.values()) b.client?.reconnectNow();
    this.changed.fire(undefined);
  }

  private async restartAll(): Promise<void> {
    const old = this.list();
    this.benches.clear();
    await Promise.all(old.map((b) => b.client?.close()));
    // the worker's endpoint goes with the old relay choice and name; the next bench binds a new one
    await this.core.request({ op: 'shutdown' }).catch(() => {});
    this.configured = undefined;
    await this.sync();
  }

  private disposed?: Promise<void>;

  /** Closes every connection (releasing what they hold) and the endpoint. Safe to call twice. */
  dispose(): Promise<void> {
    this.disposed ??= (async () => {
      for (const d of this.disposables) d.dispose();
      await Promise.all(this.list().map((b) => b.client?.close()));
      await this.core.stop();
    })();
    return this.disposed;
  }
}

export function isOnline(b: Bench): boolean {
  return b.state === 'online';
}
