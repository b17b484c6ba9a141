/**
 * The benches this VS Code knows: one BenchClient each, all on one Iroh endpoint whose secret key lives
 * in VS Code's secret storage. The client core (and with it the native Iroh binding) loads on first use,
 * so activation stays fast. Benches come from the `remoteUsb.benches` setting; editing it by hand works
 * too (the manager follows the setting).
 */
import { hostname, userInfo } from 'node:os';
import * as vscode from 'vscode';
import type { DeviceInfo } from '../server/protocol/messages.js';
import type { Logger } from '../server/log.js';
import type { BenchClient, BenchState } from './core/bench-client.js';
import type { IrohEndpoint, PeerAddress } from '../server/net/iroh.js';
import { BenchSetting, benchSettings, clientName, relayChoice, saveBenchSettings } from './settings.js';

const SECRET_KEY = 'remoteUsb.secretKey';

/** The client core, loaded on demand (it pulls in the native Iroh binding). */
export type Core = typeof import('./core/bench-client.js') & typeof import('../server/net/iroh.js');
let corePromise: Promise<Core> | undefined;
export function loadCore(): Promise<Core> {
  corePromise ??= Promise.all([import('./core/bench-client.js'), import('../server/net/iroh.js')]).then(([a, b]) => ({ ...a, ...b }));
  return corePromise;
}

export class Bench {
  client?: BenchClient;
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
}

export interface DeviceChange {
  bench: Bench;
  /** undefined: the bench's own node (state, name, rtt) and its list of children changed. */
  deviceId?: string;
}

export class BenchManager implements vscode.Disposable {
  private readonly benches = new Map<string, Bench>();
  private endpoint?: Promise<IrohEndpoint>;
  private secretKey?: Uint8Array;
  private readonly changed = new vscode.EventEmitter<DeviceChange | undefined>();
  /** A bench or device changed; undefined = the list of benches itself changed. */
  readonly onDidChange = this.changed.event;
  private readonly disposables: vscode.Disposable[] = [this.changed];

  constructor(
    private readonly secrets: vscode.SecretStorage,
    private readonly log: Logger,
  ) {
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
        addr = (await loadCore()).parsePeerAddress(setting.address);
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
    void vscode.commands.executeCommand('setContext', 'remoteUsb.hasBenches', this.benches.size > 0);
    this.changed.fire(undefined);
  }

  private async startClient(bench: Bench, addr: PeerAddress, pairingCode?: string): Promise<BenchClient> {
    const core = await loadCore();
    const client = new core.BenchClient({
      secretKey: await this.key(),
      bench: addr,
      clientName: clientName(`${userInfo().username}@${hostname()}`),
      relay: relayChoice(),
      endpoint: await this.sharedEndpoint(),
      pairingCode,
      log: this.log,
    });
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

  /** Our identity: created once and kept in secret storage. */
  async key(): Promise<Uint8Array> {
    if (this.secretKey) return this.secretKey;
    const stored = await this.secrets.get(SECRET_KEY);
    if (stored && /^[0-9a-f]{64}$/.test(stored)) {
      this.secretKey = Uint8Array.from(Buffer.from(stored, 'hex'));
    } else {
      if (stored) this.log.warn('the stored client key was not 32 bytes of hex; made a new one (benches must pair this client again)');
      this.secretKey = (await loadCore()).generateSecretKey();
      await this.secrets.store(SECRET_KEY, Buffer.from(this.secretKey).toString('hex'));
    }
    return this.secretKey;
  }

  /** This machine's endpoint id, which a bench admin passes to `remote-usb-server allow`. */
  async clientId(): Promise<string> {
    return (await loadCore()).endpointIdOf(await this.key());
  }

  private async sharedEndpoint(): Promise<IrohEndpoint> {
    this.endpoint ??= (async () => {
      const core = await loadCore();
      return core.IrohEndpoint.bind({ secretKey: await this.key(), relay: relayChoice() });
    })();
    return this.endpoint;
  }

  /**
   * Adds a bench: connects (pairing with the code if given), and saves it in the setting only once the
   * bench has let us in. Throws BenchError (unauthorized, pairing-failed, timeout …) otherwise.
   */
  async add(address: string, options: { name?: string; pairingCode?: string; token?: vscode.CancellationToken } = {}): Promise<Bench> {
    const core = await loadCore();
    const addr = core.parsePeerAddress(address.trim());
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
    const rest = benchSettings().filter((b) => {
      try { return core.parsePeerAddress(b.address).id !== addr.id; } catch { return true; }
    });
    await saveBenchSettings([...rest, setting]); // sync() then finds it running
    this.changed.fire(undefined);
    return bench;
  }

  async rename(bench: Bench, name: string): Promise<void> {
    const core = await loadCore();
    await saveBenchSettings(benchSettings().map((b) => {
      try { return core.parsePeerAddress(b.address).id === bench.id ? { ...b, name } : b; } catch { return b; }
    }));
  }

  async remove(bench: Bench): Promise<void> {
    const core = await loadCore();
    await saveBenchSettings(benchSettings().filter((b) => {
      if (bench.problem) return b.address !== bench.setting.address;
      try { return core.parsePeerAddress(b.address).id !== bench.id; } catch { return true; }
    }));
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
    const ep = this.endpoint;
    this.endpoint = undefined;
    await (await ep?.catch(() => undefined))?.close();
    await this.sync();
  }

  private disposed?: Promise<void>;

  /** Closes every connection (releasing what they hold) and the endpoint. Safe to call twice. */
  dispose(): Promise<void> {
    this.disposed ??= (async () => {
      for (const d of this.disposables) d.dispose();
      await Promise.all(this.list().map((b) => b.client?.close()));
      await (await this.endpoint?.catch(() => undefined))?.close();
    })();
    return this.disposed;
  }
}

export function isOnline(b: Bench): boolean {
  return b.state === 'online';
}
