/**
 * The bench daemon: one Iroh endpoint, the device table, who holds what, and a Session per client.
 * It watches the USB backend for hot-plug and tells every connected client.
 */
import type { ErrorCode } from './protocol/constants.js';
import type { DeviceInfo, Hello } from './protocol/messages.js';
import { BindingName, IrohEndpoint, PeerAddress } from './net/iroh.js';
import type { ServerConfig } from './config.js';
import { isShared } from './config.js';
import type { Logger } from './shared/log.js';
import { TrustStore } from './trust.js';
import type { BackendDevice, OpenedDevice, UsbBackend } from './usb/backend.js';
import { SimulatedBackend } from './usb/simulated.js';
import { Session, SessionHost } from './session.js';
import type { ClaimSet } from './claim-set.js';
import type { SerialOpen } from './protocol/messages.js';
import type { SerialBackend } from './shared/serial/backend.js';
import type { ChannelOptions } from './shared/serial/channel.js';
import { SerialOpenResult, SerialRegistry } from './serial/registry.js';
import { RealSerialBackend } from './shared/serial/serial-real.js';
import { AdminSocket, TopSnapshot } from './admin-socket.js';
import { SimSerialBackend } from './serial/serial-sim.js';

export interface DaemonOptions {
  config: ServerConfig;
  backend: UsbBackend;
  secretKey: Uint8Array;
  log: Logger;
  /** How long a silent client keeps its devices (default: the config's, else CLIENT_SILENCE_LIMIT_MS; tests shorten it). */
  clientSilenceLimitMs?: number;
  /** Opens ttys (default: `serialport`, plus the simulated boards' with a simulated USB backend). */
  serial?: SerialBackend;
  /** How often ttys are checked: gone while open, back while waiting, appeared on a device (default 1 s). */
  serialPollMs?: number;
  serialChannel?: ChannelOptions;
  /** Which Iroh binding (default: server/net/iroh.ts's choice; the interop tests pick one). */
  irohBinding?: BindingName;
  /** Serve `remote-usb-server top` on <state_dir>/admin.sock (default true). */
  adminSocket?: boolean;
}

export class Daemon implements SessionHost {
  private endpoint?: IrohEndpoint;
  private readonly sessions = new Set<Session>();
  private readonly devices = new Map<string, BackendDevice>();
  private readonly holders = new Map<string, Session>();
  readonly trust: TrustStore;
  private stopping = false;
  private acceptLoop?: Promise<void>;
  private readonly serial: SerialRegistry;
  private serialTimer?: NodeJS.Timeout;
  /** Each device's tty at the last look, to tell clients when a driver binds or drops one. */
  private readonly lastTty = new Map<string, string | undefined>();
  private admin?: AdminSocket;
  private readonly startedAt = performance.now();

  constructor(private readonly options: DaemonOptions) {
    this.trust = new TrustStore(options.config.allowlistFile, options.config.stateDir);
    const { backend } = options;
    const serialBackend = options.serial ?? (backend instanceof SimulatedBackend ? new SimSerialBackend(backend, new RealSerialBackend()) : new RealSerialBackend());
    this.serial = new SerialRegistry(serialBackend, options.config.serialPorts, (id) => {
      const d = this.devices.get(id);
      if (!d) return undefined;
      return { label: describeDevice(d), shared: isShared(options.config.sharing, d), claimedBy: this.holders.get(id), tty: backend.ttyOf(id) };
    }, options.config.name, options.serialChannel);
  }

  get log(): Logger {
    return this.options.log;
  }

  get benchName(): string {
    return this.options.config.name;
  }

  get id(): string {
    return this.endpoint!.id;
  }

  /** Our address with every local socket address, for tickets and tests. */
  address(): PeerAddress {
    const a = this.endpoint!.address();
    const addrs = new Set(a.addrs);
    for (const s of this.endpoint!.boundSockets) if (!s.startsWith('0.0.0.0') && !s.startsWith('[::]')) addrs.add(s);
    return { ...a, addrs: [...addrs] };
  }

  /** The UDP port the endpoint listens on (the IPv4 socket's). */
  get port(): number {
    const s = this.endpoint!.boundSockets.find((x) => !x.startsWith('[')) ?? this.endpoint!.boundSockets[0];
    return Number(s.split(':').pop());
  }

  /** Throws (TrustError, naming file, line and key) before serving anything when the allowlist is broken. */
  async start(): Promise<void> {
    const { backend, config } = this.options;
    this.trust.check();
    for (const d of await backend.list()) this.devices.set(d.id, d);
    backend.on('attach', this.onAttach);
    backend.on('detach', this.onDetach);
    for (const d of this.devices.values()) this.lastTty.set(d.id, backend.ttyOf(d.id));
    this.serialTimer = setInterval(() => this.checkTtys(), this.options.serialPollMs ?? 1000);
    this.serialTimer.unref();
    this.endpoint = await IrohEndpoint.bind({ secretKey: this.options.secretKey, relay: config.relay, bindAddr: config.listen, accept: true, binding: this.options.irohBinding });
    if (this.options.adminSocket !== false) {
      this.admin = new AdminSocket(AdminSocket.pathIn(config.stateDir), () => this.snapshot(), this.log);
      await this.admin.start();
    }
    this.log.info(`bench '${config.name}' serving as ${this.endpoint.id} on ${this.endpoint.boundSockets.join(', ')} (relay: ${config.relay.mode}); ${this.devices.size} device(s), backend: ${backend.kind}`);
    this.acceptLoop = this.accept();
  }

  private async accept(): Promise<void> {
    for (;;) {
      const conn = await this.endpoint!.accept().catch(() => null);
      if (conn === null) return;
      if (this.stopping) { conn.close(); continue; }
      const session = new Session(conn, this, this.options.clientSilenceLimitMs ?? this.options.config.clientSilenceLimitMs, this.options.config.resumeGraceMs);
      this.sessions.add(session);
      void session.run().catch((e: Error) => this.log.error(`session ${session.label}: ${e.message}`));
    }
  }

  private readonly onAttach = (d: BackendDevice): void => {
    this.devices.set(d.id, d);
    this.log.info(`device plugged in: ${describeDevice(d)}`);
    this.lastTty.set(d.id, this.options.backend.ttyOf(d.id));
    for (const s of this.sessions) s.notify({ t: 'added', device: this.view(d, s) });
    this.serial.check();
  };

  private readonly onDetach = (id: string): void => {
    const d = this.devices.get(id);
    if (!d) return;
    this.devices.delete(id);
    this.log.info(`device unplugged: ${describeDevice(d)}`);
    const holder = this.holders.get(id);
    this.holders.delete(id);
    holder?.deviceGone(id);
    this.lastTty.delete(id);
    for (const s of this.sessions) s.notify({ t: 'removed', dev: id });
    this.serial.check();
  };

  /**
   * The poll behind serial: channels notice ttys that went or came back, and clients hear when a device's
   * tty appears or goes (a driver binds a moment after the device enumerates, and again after a release).
   */
  private checkTtys(): void {
    this.serial.check();
    for (const d of this.devices.values()) {
      const tty = this.options.backend.ttyOf(d.id);
      if (this.lastTty.get(d.id) === tty) continue;
      this.lastTty.set(d.id, tty);
      this.broadcastChange(d.id);
    }
  }

  private view(d: BackendDevice, s: Session): DeviceInfo {
    const holder = this.holders.get(d.id);
    return {
      ...d,
      shared: isShared(this.options.config.sharing, d),
      claimedBy: holder?.clientName,
      mine: holder ? holder === s : undefined,
      tty: this.options.backend.ttyOf(d.id),
    };
  }

  /** Who is connected and what they hold, for `remote-usb-server top` (admin-socket.ts; rates are filled there). */
  snapshot(): TopSnapshot {
    const views = [...this.sessions].map((s) => s.view()).filter((v) => v !== undefined);
    const held = new Map<string, { urbs: number; bytes: number; inFlight: number }>();
    for (const v of views) for (const c of v.claims) held.set(c.dev, c);
    const pending = this.trust.pendingPairing();
    return {
      v: 1,
      bench: this.options.config.name,
      id: this.endpoint?.id ?? '',
      time: new Date().toISOString(),
      uptimeS: Math.round((performance.now() - this.startedAt) / 1000),
      clients: views.map((v) => ({
        name: v.name, id: v.id, path: v.path ?? 'unknown', rttMs: v.rttMs === undefined ? null : Math.round(v.rttMs * 100) / 100,
        claims: v.claims.map((c) => c.dev), serial: v.serial, backlogBytes: v.backlog,
      })),
      devices: [...this.devices.values()].map((d) => {
        const c = held.get(d.id);
        return {
          id: d.id, label: describeDevice(d), shared: isShared(this.options.config.sharing, d),
          claimedBy: this.holders.get(d.id)?.clientName ?? null, tty: this.options.backend.ttyOf(d.id) ?? null,
          urbs: c?.urbs ?? 0, bytes: c?.bytes ?? 0, inFlight: c?.inFlight ?? 0, urbsPerS: null, mbPerS: null,
        };
      }),
      pairing: { pending: pending.length, nextExpires: pending[0]?.toISOString() ?? null },
    };
  }

  // ---- SessionHost ----
  get sharedTtys(): readonly string[] {
    return this.serial.sharedTtys;
  }

  serialOpen(s: Session, m: SerialOpen): Promise<SerialOpenResult> {
    return this.serial.open(s, m);
  }

  serialClose(sid: number, detail?: string): Promise<void> {
    return this.serial.close(sid, detail);
  }

  authorize(clientId: string, hello: Hello): { ok: true; name: string; paired: boolean } | { ok: false; code: ErrorCode; message: string } {
    try {
      if (this.trust.isAllowed(clientId)) return { ok: true, name: this.trust.nameOf(clientId) ?? hello.name, paired: false };
      if (hello.pair) {
        const r = this.trust.redeemPairingCode(hello.pair, clientId, hello.name);
        if (r.ok) {
          this.log.info(`paired new client '${hello.name}' (${clientId})`);
          return { ok: true, name: hello.name, paired: true };
        }
        this.log.warn(`pairing attempt by ${clientId.slice(0, 10)} ('${hello.name}') failed: ${r.reason}`);
        return { ok: false, code: 'pairing-failed', message: r.reason };
      }
    } catch (e) {
      this.log.error((e as Error).message);
      return { ok: false, code: 'internal', message: 'the bench cannot read its allowlist; see its log' };
    }
    return {
      ok: false, code: 'unauthorized',
      message: `this client (${clientId.slice(0, 10)}…) is not allowed on bench '${this.benchName}'; pair with a code from 'remote-usb-server pair'`,
    };
  }

  devicesFor(s: Session): DeviceInfo[] {
    return [...this.devices.values()].map((d) => this.view(d, s));
  }

  deviceInfoFor(s: Session, dev: string): DeviceInfo | undefined {
    const d = this.devices.get(dev);
    return d && this.view(d, s);
  }

  async claim(s: Session, dev: string): Promise<{ ok: true; device: OpenedDevice } | { ok: false; code: ErrorCode; message: string }> {
    const d = this.devices.get(dev);
    if (!d) return { ok: false, code: 'no-such-device', message: `no device '${dev}' on bench '${this.benchName}'` };
    if (!isShared(this.options.config.sharing, d)) return { ok: false, code: 'not-shared', message: `${describeDevice(d)} is not shared by this bench's config` };
    let holder = this.holders.get(dev);
    if (holder && holder !== s && holder.detached && holder.clientId === s.clientId) {
      // the same client came back without resuming (restarted): the session it left behind is moot
      await holder.end('its client reconnected without resuming');
      holder = this.holders.get(dev);
    }
    if (holder && holder !== s) return { ok: false, code: 'in-use', message: `${describeDevice(d)} is in use by ${holder.clientName}` };
    const serialHolder = this.serial.holderOf(dev);
    if (serialHolder && serialHolder !== s) {
      return { ok: false, code: 'busy', message: `the serial port of ${describeDevice(d)} is open by ${serialHolder.clientName}` };
    }
    this.holders.set(dev, s); // reserve before the await, so two claims cannot both win
    try {
      // The claimer's own serial session on it ends first: once attached, its tty lives on the client.
      const sid = this.serial.sidOf(dev);
      if (sid !== undefined) await this.serial.close(sid, 'you claimed (attached) the device: use its tty on your machine');
      const device = await this.options.backend.open(dev);
      this.broadcastChange(dev);
      return { ok: true, device };
    } catch (e) {
      this.holders.delete(dev);
      return { ok: false, code: 'usb-error', message: (e as Error).message };
    }
  }

  async release(s: Session, dev: string): Promise<void> {
    if (this.holders.get(dev) === s) {
      this.holders.delete(dev);
      this.broadcastChange(dev);
    }
  }

  private broadcastChange(dev: string): void {
    const d = this.devices.get(dev);
    if (!d) return;
    for (const s of this.sessions) s.notify({ t: 'changed', device: this.view(d, s) });
  }

  sessionDetached(s: Session): void {
    const timer = setTimeout(() => {
      if (this.sessions.has(s) && s.detached) void s.end(`did not come back within ${Math.round(s.resumeGraceMs / 1000)} s`);
    }, s.resumeGraceMs);
    timer.unref();
  }

  resumeSession(s: Session, token: string): ClaimSet | undefined {
    const old = [...this.sessions].find((o) => o !== s && o.authenticated && o.clientId === s.clientId && o.resumeToken === token);
    if (!old) {
      this.log.info(`${s.label} asked to resume a session this bench does not have (it restarted, or the session ended): starting afresh`);
      return undefined;
    }
    if (!old.resumable) {
      void old.end('cannot be resumed (too many unacknowledged answers)');
      return undefined;
    }
    // its devices change hands first, so ending the old session releases none of them
    for (const [dev, holder] of this.holders) if (holder === old) this.holders.set(dev, s);
    return old.handOver();
  }

  sessionEnded(s: Session): void {
    this.sessions.delete(s);
    for (const [dev, holder] of this.holders) {
      if (holder === s) {
        this.holders.delete(dev);
        this.broadcastChange(dev);
      }
    }
  }

  /** Number of connected, authenticated clients. */
  get clientCount(): number {
    return [...this.sessions].filter((s) => s.authenticated).length;
  }

  /** Releases every device (kernel drivers back), closes every connection and the endpoint. */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.options.backend.off('attach', this.onAttach);
    this.options.backend.off('detach', this.onDetach);
    clearInterval(this.serialTimer);
    await Promise.all([...this.sessions].map((s) => s.shutdown()));
    await this.serial.closeAll();
    await this.admin?.stop();
    await this.endpoint?.close();
    await this.acceptLoop;
    this.log.info('bench daemon stopped');
  }
}

export function describeDevice(d: { id: string; vendorId: number; productId: number; product?: string }): string {
  const hex = (n: number): string => n.toString(16).padStart(4, '0');
  return `${d.product ?? 'USB device'} ${hex(d.vendorId)}:${hex(d.productId)} at ${d.id}`;
}
