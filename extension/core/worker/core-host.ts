/**
 * The extension host's side of the byte-path worker process (core-worker.ts): starts it, supervises it (a
 * worker that dies is noticed, reported and restarted with backoff, and every bench is connected again), and
 * gives the VS Code layer small stand-ins with the shape it used before: RemoteBench for a BenchClient,
 * RemoteSerial for a SerialSession, RemoteAttachment for an attached device.
 *
 * After a restart, attached devices are cleanly ended, not kept: the dead worker's sockets to vhci_hcd
 * closed with it, so the kernel has already let go of them. Each one reports 'closed' ('socket-error'),
 * and auto-attach rules attach them again once the bench has dropped the dead connection's claim.
 */
import { EventEmitter } from 'node:events';
import { ChildProcess, fork } from 'node:child_process';
import type { Logger } from '../../../server/shared/log.js';
import type { PeerAddress } from '../../../server/net/iroh.js';
import type { DeviceInfo } from '../../../server/protocol/messages.js';
import { Backoff } from '../backoff.js';
import type { BenchState } from '../bench-client.js';
import type { SerialParams, SerialSession, SerialSessionEvents, SerialSetOptions, SerialState } from '../serial.js';
import type { BridgeCloseReason } from '../usbip/bridge.js';
import { AttachSettings, BenchSnapshot, Command, FromWorker, fromWireError, Identity, Results, Traffic } from './messages.js';
import { assertNever } from '../../../server/shared/assert-never.js';

/** A worker that lived this long before dying starts the backoff from the beginning again. */
const STABLE_MS = 60_000;
/** How long shutdown waits for the worker to detach and release before it is terminated. */
const SHUTDOWN_MS = 8000;

export interface CoreHostEvents {
  /** The worker died; it is restarted after `restartInMs`. */
  crashed: [reason: string, restartInMs: number];
  restarted: [];
}

export class CoreHost extends EventEmitter<CoreHostEvents> {
  private worker?: ChildProcess;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private nextId = 1;
  private nextSid = 1;
  private identity?: Identity;
  private readonly benches = new Map<string, RemoteBench>();
  private readonly serials = new Map<number, RemoteSerial>();
  private readonly attachments = new Map<string, RemoteAttachment>();
  private readonly backoff = new Backoff(500, 30_000);
  private startedAt = 0;
  private restartTimer?: NodeJS.Timeout;
  private stopped = false;
  /** How many times the worker was started (tests and the log). */
  starts = 0;

  constructor(private readonly workerFile: string, private readonly log: Logger) {
    super();
  }

  /** The worker's process id while it runs (tests). */
  get pid(): number | undefined {
    return this.worker?.pid;
  }

  private spawn(): ChildProcess {
    // In VS Code, process.execPath is Electron: ELECTRON_RUN_AS_NODE makes it plain Node, as language
    // servers are started. 'advanced' serialization carries Uint8Arrays as they are.
    const w = fork(this.workerFile, [], {
      env: { ...process.env, ELECTRON_RUN_AS_NODE: '1', REMOTE_USB_CORE_WORKER: '1' },
      serialization: 'advanced',
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    });
    this.worker = w;
    this.starts++;
    this.startedAt = performance.now();
    let stderr = '';
    w.stderr?.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-2000); });
    w.on('message', (m: FromWorker) => this.onMessage(m));
    w.on('error', (e) => this.log.error(`byte-path worker: ${e.message}`));
    w.on('exit', (code, signal) => this.onExit(w, signal ? `killed by ${signal}` : `exit code ${code}`, stderr));
    if (this.identity) this.post({ op: 'configure', identity: this.identity });
    return w;
  }

  /** Sends a command; resolves with its result, or rejects with the worker's error. */
  request<K extends Command['op']>(command: Extract<Command, { op: K }>): Promise<Results[K]> {
    if (this.stopped) return Promise.reject(new Error('Remote USB is shutting down'));
    const w = this.worker ?? this.spawn();
    const id = this.nextId++;
    return new Promise<Results[K]>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      w.send({ id, command }, (e) => {
        if (e && this.pending.delete(id)) reject(new Error(`the byte-path worker is gone: ${e.message}`));
      });
    });
  }

  /** Sends a command whose reply nobody waits for (its failure is logged). */
  private post(command: Command): void {
    this.request(command).catch((e: Error) => this.log.debug(`${command.op}: ${e.message}`));
  }

  configure(identity: Identity): Promise<void> {
    this.identity = identity;
    return this.request({ op: 'configure', identity });
  }

  parseAddress(address: string): Promise<PeerAddress> {
    return this.request({ op: 'parse-address', address });
  }

  endpointId(secretKey: Uint8Array): Promise<string> {
    return this.request({ op: 'endpoint-id', secretKey });
  }

  /** The stand-in for a BenchClient; `start` / `startInBackground` connect it. */
  bench(id: string, address: PeerAddress, pairingCode?: string): RemoteBench {
    const b = new RemoteBench(this, id, address, pairingCode);
    this.benches.set(id, b);
    return b;
  }

  /** @internal RemoteBench.close */
  forget(b: RemoteBench): void {
    if (this.benches.get(b.id) === b) this.benches.delete(b.id);
  }

  /** @internal */
  newSerial(bench: RemoteBench, port: string): RemoteSerial {
    const s = new RemoteSerial(this, bench, port, this.nextSid++);
    this.serials.set(s.sid, s);
    return s;
  }

  /** @internal */
  dropSerial(s: RemoteSerial): void {
    this.serials.delete(s.sid);
  }

  /** @internal */
  trackAttachment(a: RemoteAttachment): void {
    this.attachments.set(`${a.bench}/${a.device}`, a);
  }

  private onMessage(m: FromWorker): void {
    if ('id' in m) {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.ok) p.resolve(m.value);
      else p.reject(fromWireError(m.error));
      return;
    }
    switch (m.event) {
      case 'log': return this.log[m.level](m.message);
      case 'bench': return this.benches.get(m.bench)?.apply(m.snapshot, m.deviceId);
      case 'serial-data': return this.serials.get(m.sid)?.deliver(() => this.serials.get(m.sid)?.emit('data', Buffer.from(m.data.buffer, m.data.byteOffset, m.data.byteLength)));
      case 'serial-state': {
        const s = this.serials.get(m.sid);
        return s?.deliver(() => s.setState(m.state, m.detail));
      }
      case 'traffic':
        for (const i of m.items) this.attachments.get(`${i.bench}/${i.device}`)?.setTraffic(i.traffic);
        return;
      case 'attachment-closed': {
        const key = `${m.bench}/${m.device}`;
        const a = this.attachments.get(key);
        this.attachments.delete(key);
        return a?.end(m.reason, m.message);
      }
      default: return assertNever(m);
    }
  }

  private onExit(w: ChildProcess, how: string, stderr: string): void {
    if (w !== this.worker) return;
    this.worker = undefined;
    const reason = `the byte-path worker stopped (${how})`;
    if (stderr.trim() && !this.stopped) this.log.error(`byte-path worker's last words: ${stderr.trim().split('\n').slice(-5).join(' | ')}`);
    for (const p of this.pending.values()) p.reject(new Error(reason));
    this.pending.clear();
    for (const a of this.attachments.values()) a.end('socket-error', reason);
    this.attachments.clear();
    for (const s of this.serials.values()) s.setState('closed', reason);
    this.serials.clear();
    if (this.stopped) return;
    if (performance.now() - this.startedAt > STABLE_MS) this.backoff.reset();
    const delay = this.backoff.next();
    for (const b of this.benches.values()) b.apply({ ...b.snapshot, state: 'connecting', detail: `${reason}; restarting it`, rttMs: undefined, path: undefined });
    this.log.error(`${reason}; restarting it in ${(delay / 1000).toFixed(1)} s`);
    this.emit('crashed', reason, delay);
    this.restartTimer = setTimeout(() => {
      this.spawn();
      for (const b of this.benches.values()) this.post({ op: 'add-bench', bench: b.id, address: b.address, wait: false });
      this.emit('restarted');
    }, delay);
  }

  /** Tests: ends the worker the way a crash would. */
  kill(): void {
    this.worker?.kill('SIGKILL');
  }

  /** Asks the worker to detach, release and close (up to 8 s), then ends it. Idempotent. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    const w = this.worker;
    const shutdown = w ? this.request({ op: 'shutdown' }).catch(() => {}) : undefined;
    this.stopped = true;
    clearTimeout(this.restartTimer);
    if (!w) return;
    await Promise.race([shutdown, new Promise((r) => setTimeout(r, SHUTDOWN_MS).unref())]);
    if (w.exitCode === null && w.signalCode === null) {
      const exited = new Promise((r) => w.once('exit', r));
      w.kill('SIGTERM');
      await exited;
    }
  }
}

export interface RemoteBenchEvents {
  state: [BenchState, string | undefined];
  devices: [DeviceInfo[]];
  changed: [DeviceInfo];
  rtt: [number];
}

/** A bench as the main thread sees it: the latest snapshot from the worker, and commands to it. */
export class RemoteBench extends EventEmitter<RemoteBenchEvents> {
  snapshot: BenchSnapshot = { state: 'connecting', benchName: '', devices: [], ttys: [] };

  constructor(private readonly host: CoreHost, readonly id: string, readonly address: PeerAddress, private readonly pairingCode?: string) {
    super();
  }

  get state(): BenchState { return this.snapshot.state; }
  get detail(): string | undefined { return this.snapshot.detail; }
  get benchName(): string { return this.snapshot.benchName; }
  get devices(): DeviceInfo[] { return this.snapshot.devices; }
  get ttys(): string[] { return this.snapshot.ttys; }
  get rttMs(): number | undefined { return this.snapshot.rttMs; }
  get path(): 'direct' | 'relay' | undefined { return this.snapshot.path; }

  device(id: string): DeviceInfo | undefined {
    return this.snapshot.devices.find((d) => d.id === id);
  }

  /** @internal a snapshot from the worker */
  apply(s: BenchSnapshot, deviceId?: string): void {
    const old = this.snapshot;
    this.snapshot = s;
    if (old.state !== s.state || old.detail !== s.detail) this.emit('state', s.state, s.detail);
    if (deviceId !== undefined) {
      const d = this.device(deviceId);
      if (d) this.emit('changed', d);
    } else if (old.devices !== s.devices) {
      this.emit('devices', s.devices);
    }
    if (s.rttMs !== undefined && (s.rttMs !== old.rttMs || s.path !== old.path)) this.emit('rtt', s.rttMs);
  }

  /** Connects and resolves once the bench let us in (pairing with the code, if one was given). */
  start(): Promise<void> {
    return this.host.request({ op: 'add-bench', bench: this.id, address: this.address, pairingCode: this.pairingCode, wait: true });
  }

  startInBackground(): void {
    this.host.request({ op: 'add-bench', bench: this.id, address: this.address, wait: false }).catch(() => {});
  }

  reconnectNow(): void {
    this.host.request({ op: 'reconnect', bench: this.id }).catch(() => {});
  }

  async close(): Promise<void> {
    this.host.forget(this);
    await this.host.request({ op: 'remove-bench', bench: this.id }).catch(() => {});
    this.apply({ ...this.snapshot, state: 'closed', detail: undefined });
  }

  async openSerial(port: string, params: SerialParams): Promise<SerialSession> {
    const s = this.host.newSerial(this, port);
    try {
      const { path } = await this.host.request({ op: 'serial-open', bench: this.id, port, params, sid: s.sid });
      s.opened(path);
      return s;
    } catch (e) {
      this.host.dropSerial(s);
      throw e;
    }
  }

  /** Claims the device on the bench and attaches it to this machine's vhci_hcd, in the worker. */
  async attach(device: string, settings: AttachSettings): Promise<RemoteAttachment> {
    const { port, devid } = await this.host.request({ op: 'attach', bench: this.id, device, settings });
    const a = new RemoteAttachment(this.host, this.id, device, port, devid);
    this.host.trackAttachment(a);
    return a;
  }
}

/** A bench serial session served by the worker. */
export class RemoteSerial extends EventEmitter<SerialSessionEvents> implements SerialSession {
  private _state: SerialState = 'closed';
  private _path = '';
  /**
   * Events that arrive before the open's reply has reached the caller (a board's banner comes at once):
   * held, and given out once the caller has the session and its listeners.
   */
  private early?: (() => void)[] = [];

  constructor(private readonly host: CoreHost, readonly bench: RemoteBench, readonly port: string, readonly sid: number) {
    super();
  }

  /** @internal an event from the worker */
  deliver(event: () => void): void {
    if (this.early) this.early.push(event);
    else event();
  }

  get state(): SerialState { return this._state; }
  get path(): string { return this._path; }

  /** @internal */
  opened(path: string): void {
    this._path = path;
    this._state = 'open';
    setImmediate(() => {
      const held = this.early ?? [];
      this.early = undefined;
      for (const e of held) e();
    });
  }

  /** @internal */
  setState(state: SerialState, detail?: string): void {
    if (state === 'closed') this.host.dropSerial(this);
    if (this._state === state && state === 'closed') return;
    this._state = state;
    this.emit('state', state, detail);
  }

  write(data: Uint8Array): void {
    if (this._state !== 'open') return;
    this.host.request({ op: 'serial-write', sid: this.sid, data }).catch(() => {});
  }

  set(opts: SerialSetOptions): Promise<void> {
    return this.host.request({ op: 'serial-set', sid: this.sid, opts });
  }

  async close(): Promise<void> {
    if (this._state === 'closed') return;
    this._state = 'closed';
    this.host.dropSerial(this);
    await this.host.request({ op: 'serial-close', sid: this.sid }).catch(() => {});
  }
}

export interface AttachmentEnd {
  reason: BridgeCloseReason;
  message?: string;
}

/** A device attached here through the worker's bridge. */
export class RemoteAttachment {
  /** Bytes and URBs through the bench since the claim, as of the worker's last report (every 2 s). */
  traffic: Traffic = { bytesIn: 0, bytesOut: 0, urbs: 0 };
  readonly closed: Promise<AttachmentEnd>;
  private resolveClosed!: (e: AttachmentEnd) => void;
  private ended = false;

  constructor(private readonly host: CoreHost, readonly bench: string, readonly device: string, readonly port: number, readonly devid: number) {
    this.closed = new Promise((r) => { this.resolveClosed = r; });
  }

  /** @internal */
  setTraffic(t: Traffic): void {
    this.traffic = t;
  }

  /** @internal */
  end(reason: BridgeCloseReason, message?: string): void {
    if (this.ended) return;
    this.ended = true;
    this.resolveClosed({ reason, message });
  }

  /** Detaches (the kernel lets go, the bench gets the device back); resolves once it is closed. */
  async detach(): Promise<void> {
    if (this.ended) return;
    await this.host.request({ op: 'detach', bench: this.bench, device: this.device }).catch((e: Error) => {
      if (!this.ended) throw e;
    });
    await this.closed;
  }
}
