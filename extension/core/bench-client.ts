/**
 * The client core's connection to one bench (no `vscode` import: tests, the CLI and the extension's
 * worker all use it). It authenticates, keeps the device table live from hot-plug events, claims
 * devices, runs URBs with many in flight, and reconnects with backoff after the daemon restarts or the
 * network drops — re-claiming what it held.
 *
 * When the connection drops, the session is resumed on the next connection (urb-lanes.ts): URBs in flight
 * stay pending and complete after it, URBs started meanwhile wait, nothing is lost or run twice. Only when
 * the bench cannot resume (it restarted, or the drop outlasted its grace) do the URBs in flight complete
 * with -ESHUTDOWN and the devices get claimed again; the caller decides whether to retry after `resumed`.
 * A refusal (not allowed, wrong protocol version, bad pairing code) is final:
 * the client stops and reports it instead of hammering the bench.
 */
import { EventEmitter } from 'node:events';
import { CAPABILITIES, COMPRESSION_CAPABILITY, ErrorCode, PROTOCOL_VERSION } from '../../server/protocol/constants.js';
import type { BenchMessage, DeviceInfo, Message, Welcome } from '../../server/protocol/messages.js';
import { isDataLane } from '../../server/protocol/messages.js';
import { isIn, NO_DATA, UrbRequest, UrbResult, UrbStatus } from '../../server/protocol/urb.js';
import { MessageStream } from '../../server/protocol/stream.js';
import { PayloadCompressor } from '../../server/protocol/compression.js';
import { BindingName, CloseCode, IrohConnection, IrohEndpoint, PeerAddress, RelayChoice } from '../../server/net/iroh.js';
import { Logger, silentLogger } from '../../server/shared/log.js';
import { Backoff } from './backoff.js';
import { DEFAULT_SERIAL_PARAMS, SerialParams, SerialSession } from './serial.js';
import { RemoteSerialSession, SerialLink } from './serial-session.js';
import { Lane, UrbLanes } from './urb-lanes.js';
import { assertNever } from '../../server/shared/assert-never.js';

export type BenchState = 'connecting' | 'online' | 'offline' | 'refused' | 'closed';

export interface BenchClientOptions {
  /** The client's persistent 32-byte identity (the extension keeps it in secret storage). */
  secretKey: Uint8Array;
  bench: PeerAddress;
  /** Shown on the bench (allowlist, "in use by …"). */
  clientName: string;
  relay?: RelayChoice;
  /** One-time code from `remote-usb-server pair`, used on the first connection only. */
  pairingCode?: string;
  log?: Logger;
  reconnect?: { initialDelayMs?: number; maxDelayMs?: number };
  /** Liveness: a ping every `pingIntervalMs`; no answer for `deadAfterMs` means the connection is dead. */
  pingIntervalMs?: number;
  deadAfterMs?: number;
  /** How long to wait for the bench's welcome. */
  handshakeTimeoutMs?: number;
  /** How long a connection attempt may take before it counts as failed (default 10 s). */
  connectTimeoutMs?: number;
  /** Reuse an endpoint (several benches from one process). */
  endpoint?: IrohEndpoint;
  /** Compress URB payloads when the bench can (default true; the bench turns it off to compare). */
  compression?: boolean;
  /** Which Iroh binding (default: server/net/iroh.ts's choice; the interop tests pick one). */
  irohBinding?: BindingName;
}

export class BenchError extends Error {
  override name = 'BenchError';
  constructor(readonly code: ErrorCode | 'offline' | 'timeout' | 'closed', message: string) {
    super(message);
  }
}

/** A URB started on a claimed device (urb.ts has its request and result). */
export interface PendingUrb {
  id: number;
  done: Promise<UrbResult>;
}

interface PendingRequest<T = BenchMessage> {
  resolve: (m: T) => void;
  reject: (e: Error) => void;
}

export interface BenchClientEvents {
  state: [BenchState, string | undefined];
  devices: [DeviceInfo[]];
  added: [DeviceInfo];
  removed: [string];
  changed: [DeviceInfo];
  rtt: [number];
}

/** How long a re-claim waits for the bench to drop our own previous connection (its 20 s silence limit, checked every 5 s). */
const RECLAIM_OWN_STALE_MS = 27_000;
/** How soon after an answer arrives the bench hears that we have it (it keeps answers until then). */
const ACK_DELAY_MS = 100;

export class BenchClient extends EventEmitter<BenchClientEvents> implements SerialLink {
  private endpoint?: IrohEndpoint;
  private readonly ownsEndpoint: boolean;
  private conn?: IrohConnection;
  private control?: MessageStream;
  private data?: MessageStream;
  private readonly requests = new Map<number, PendingRequest>();
  /** The handshake in progress: our hello waits for the bench's welcome (or its refusal). */
  private handshake?: PendingRequest<Welcome>;
  private nextReq = 1;
  private readonly deviceTable = new Map<string, DeviceInfo>();
  private readonly claimed = new Map<string, ClaimedDevice>();
  private readonly claiming = new Map<string, Promise<ClaimedDevice>>();
  private readonly backoff: Backoff;
  private _state: BenchState = 'offline';
  private stateDetail?: string;
  private closed = false;
  private pingTimer?: NodeJS.Timeout;
  private reconnectTimer?: NodeJS.Timeout;
  private lastHeard = 0;
  private pingSeq = 0;
  private readonly pings = new Map<number, { sent: number; resolve: (ms: number) => void }>();
  private connectionGeneration = 0;
  private pairingCode?: string;
  benchName = '';
  /** Tty paths the bench's config shares besides its devices' own (serial ports to open by path). */
  ttys: string[] = [];
  private readonly serialSessions = new Set<RemoteSerialSession>();
  /** URB messages and answers counted per lane, for resuming the session after a drop. */
  private readonly lanes = new UrbLanes();
  private ackTimer?: NodeJS.Timeout;
  private readonly serialBySid = new Map<number, RemoteSerialSession>();
  /** Our endpoint id as the bench sees it. */
  clientId = '';
  /** Last measured application-level round trip, ms. */
  rttMs?: number;
  /** How the connection reaches the bench now: 'direct' (UDP) or 'relay'; undefined while offline or before Iroh chose a path. */
  get path(): 'direct' | 'relay' | undefined {
    return this.state === 'online' ? this.conn?.pathKind() : undefined;
  }
  /** Compresses the URB payloads we send (when the bench speaks 'brotli'); its stats show what it saved. */
  readonly compressor = new PayloadCompressor();

  /** Bytes the current connection moved on the wire, after compression (bench, tests). */
  get wireBytes(): { sent: number; received: number } {
    const streams = [this.control, this.data].filter((x): x is MessageStream => x !== undefined);
    return { sent: streams.reduce((n, x) => n + x.bytesSent, 0), received: streams.reduce((n, x) => n + x.bytesReceived, 0) };
  }
  private readonly log: Logger;

  constructor(private readonly options: BenchClientOptions) {
    super();
    this.log = options.log ?? silentLogger;
    this.backoff = new Backoff(options.reconnect?.initialDelayMs ?? 250, options.reconnect?.maxDelayMs ?? 10_000);
    this.pairingCode = options.pairingCode;
    this.endpoint = options.endpoint;
    this.ownsEndpoint = !options.endpoint;
  }

  /** Connects (and keeps reconnecting until close()). Resolves once online; rejects on refusal. */
  static async connect(options: BenchClientOptions): Promise<BenchClient> {
    const c = new BenchClient(options);
    try {
      await c.start();
    } catch (e) {
      await c.close();
      throw e;
    }
    return c;
  }

  get state(): BenchState {
    return this._state;
  }

  get detail(): string | undefined {
    return this.stateDetail;
  }

  get devices(): DeviceInfo[] {
    return [...this.deviceTable.values()];
  }

  device(id: string): DeviceInfo | undefined {
    return this.deviceTable.get(id);
  }

  /** First connection: resolves when online, rejects with BenchError if refused or unreachable. */
  async start(): Promise<void> {
    await this.connectOnce();
  }

  /**
   * Connects in the background and keeps trying until online, refused or closed (the extension's
   * benches: one that is down at start-up comes online by itself later).
   */
  startInBackground(): void {
    this.connectOnce().catch((e: Error) => this.connectFailed(e));
  }

  /** Skips the backoff wait: tries to reconnect now (Refresh). No-op when online or refused. */
  reconnectNow(): void {
    if (this.closed || this._state === 'online' || this._state === 'connecting') return;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    this.backoff.reset();
    this.connectOnce().catch((e: Error) => this.connectFailed(e));
  }

  private connectFailed(e: Error): void {
    if (this.closed || (e instanceof BenchError && ['unauthorized', 'version', 'pairing-failed'].includes(e.code))) {
      if (this._state !== 'closed') this.setState('refused', e.message);
      return;
    }
    this.setState('offline', e.message);
    this.scheduleReconnect();
  }

  private setState(s: BenchState, detail?: string): void {
    if (this._state === s && this.stateDetail === detail) return;
    this._state = s;
    this.stateDetail = detail;
    this.emit('state', s, detail);
  }

  private async connectOnce(): Promise<void> {
    const generation = ++this.connectionGeneration;
    this.setState('connecting');
    if (!this.endpoint) {
      this.endpoint = await IrohEndpoint.bind({ secretKey: this.options.secretKey, relay: this.options.relay ?? { mode: 'default' }, binding: this.options.irohBinding });
    }
    const conn = await this.connectWithin(this.options.connectTimeoutMs ?? 10_000);
    if (this.closed) { conn.close(); throw new BenchError('closed', 'client closed'); }
    this.conn = conn;
    const control = new MessageStream(await conn.openStream(), (e) => this.connectionLost(generation, `write failed: ${e.message}`));
    this.control = control;
    this.data = undefined;
    const welcome = new Promise<Welcome>((resolve, reject) => { this.handshake = { resolve, reject }; });
    const timeoutMs = this.options.handshakeTimeoutMs ?? 10_000;
    const timer = setTimeout(() => this.handshake?.reject(new BenchError('timeout', `bench did not answer within ${timeoutMs} ms`)), timeoutMs);
    this.readFrom(control, generation);
    void conn.closed().then((why) => this.connectionLost(generation, why));
    // Without 'brotli' in our hello the bench sends its payloads plain too.
    const caps = CAPABILITIES.filter((c) => c !== COMPRESSION_CAPABILITY || this.options.compression !== false);
    // Resume the session we left on the bench when we hold devices there (their URBs may still run).
    const resume = this.lanes.token && this.claimed.size > 0 ? { token: this.lanes.token, acked: [...this.lanes.received] as [number, number] } : undefined;
    control.send({ t: 'hello', v: PROTOCOL_VERSION, caps, name: this.options.clientName, pair: this.pairingCode, resume });
    let w: Welcome;
    try {
      w = await welcome;
    } catch (e) {
      conn.close();
      throw e;
    } finally {
      clearTimeout(timer);
      this.handshake = undefined;
    }
    if (w.v !== PROTOCOL_VERSION) {
      conn.close();
      this.closed = true;
      this.setState('refused', `bench speaks protocol version ${w.v}, this client ${PROTOCOL_VERSION}`);
      throw new BenchError('version', `the bench speaks protocol version ${w.v}, this client speaks ${PROTOCOL_VERSION}: update the ${w.v > PROTOCOL_VERSION ? 'extension' : 'bench daemon'}`);
    }
    // The data stream carries bulk/interrupt URBs. Opening it is local (QUIC announces it with its
    // first frame), so it costs nothing until used.
    const data = new MessageStream(await conn.openStream(), (e) => this.connectionLost(generation, `write failed: ${e.message}`));
    this.data = data;
    if (this.options.compression !== false && w.caps.includes(COMPRESSION_CAPABILITY)) {
      control.compressor = this.compressor;
      data.compressor = this.compressor;
    }
    this.readFrom(data, generation);
    const resumed = resume !== undefined && w.resumed !== undefined;
    if (resumed) {
      // what the bench never got goes again, in order; the ack opens the new data stream on the bench,
      // which sends the answers we missed there
      for (const { lane, m } of this.lanes.resend(w.resumed!.received, this.urbPending)) {
        (lane === 1 ? data : control).send(m);
      }
      this.lanes.token = w.resume;
      data.send({ t: 'ack', lanes: [...this.lanes.received] });
    } else {
      this.lanes.reset(w.resume);
    }
    this.pairingCode = undefined;
    this.benchName = w.bench;
    this.ttys = w.ttys ?? [];
    this.clientId = w.you;
    this.deviceTable.clear();
    for (const d of w.devices) this.deviceTable.set(d.id, d);
    this.lastHeard = performance.now();
    this.backoff.reset();
    this.startPinging(generation);
    this.setState('online');
    this.emit('devices', this.devices);
    this.log.info(`connected to bench '${w.bench}' (${this.options.bench.id.slice(0, 10)}), ${w.devices.length} device(s)`);
    for (const dev of this.claimed.values()) {
      if (resumed) dev.resumeSession();
      else void dev.reclaim();
    }
    for (const s of this.serialSessions) s.resume();
  }

  /**
   * Iroh keeps trying a dead address for about 30 s; we give up sooner so the user hears about it (and
   * the backoff retries). A connection that still arrives late is closed.
   */
  private async connectWithin(timeoutMs: number): Promise<IrohConnection> {
    const connecting = this.endpoint!.connect(this.options.bench);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        void connecting.then((late) => late.close(), () => {});
        reject(new BenchError('timeout', `no answer from the bench within ${Math.round(timeoutMs / 1000)} s (is remote-usb-server running, and is its address reachable?)`));
      }, timeoutMs);
    });
    try {
      return await Promise.race([connecting, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  private readFrom(stream: MessageStream, generation: number): void {
    const lane: Lane = stream === this.control ? 0 : 1;
    stream.readLoop((m) => this.onMessage(m as BenchMessage, lane)).then(
      () => this.connectionLost(generation, 'bench closed the stream'),
      (e: Error) => this.connectionLost(generation, `bad data from bench: ${e.message}`),
    );
  }

  private onMessage(m: BenchMessage, lane: Lane): void {
    this.lastHeard = performance.now();
    switch (m.t) {
      case 'welcome': this.handshake?.resolve(m); return;
      case 'complete':
        this.answered(lane);
        this.claimed.get(m.dev)?.completed(m.id, { status: m.status, actual: m.actual, data: m.data ? Buffer.from(m.data.buffer, m.data.byteOffset, m.data.byteLength) : NO_DATA });
        return;
      case 'pong': {
        const p = this.pings.get(m.n);
        if (p) {
          this.pings.delete(m.n);
          const ms = performance.now() - p.sent;
          this.rttMs = ms;
          p.resolve(ms);
          this.emit('rtt', ms);
        }
        return;
      }
      case 'devices': case 'claimed': case 'released': this.settle(m.req, m); return;
      case 'added': case 'changed':
        this.deviceTable.set(m.device.id, m.device);
        this.emit(m.t, m.device);
        this.emit('devices', this.devices);
        return;
      case 'removed':
        this.deviceTable.delete(m.dev);
        this.claimed.get(m.dev)?.markLost('unplugged from the bench');
        this.emit('removed', m.dev);
        this.emit('devices', this.devices);
        return;
      case 'serial-opened': case 'serial-ok': this.settle(m.req, m); return;
      case 'serial-data': this.serialBySid.get(m.sid)?.onData(Buffer.from(m.data.buffer, m.data.byteOffset, m.data.byteLength)); return;
      case 'serial-state': this.serialBySid.get(m.sid)?.onState(m.state, m.detail); return;
      case 'error': return this.onError(m, lane);
      default: return assertNever(m);
    }
  }

  /** Whether URB `id` on `dev` still waits for its answer (what UrbLanes keeps and sends again). */
  private readonly urbPending = (dev: string, id: number): boolean => this.claimed.get(dev)?.isPending(id) ?? false;

  /** One more URB answer on `lane`; the bench hears of it shortly (one ack covers many). */
  private answered(lane: Lane): void {
    this.lanes.received[lane]++;
    if (this.ackTimer) return;
    this.ackTimer = setTimeout(() => {
      this.ackTimer = undefined;
      if (this._state === 'online') this.control?.send({ t: 'ack', lanes: [...this.lanes.received] });
      this.lanes.prune(this.urbPending);
    }, ACK_DELAY_MS);
    this.ackTimer.unref();
  }

  private onError(m: Extract<BenchMessage, { t: 'error' }>, lane: Lane): void {
    if (m.dev !== undefined && m.id !== undefined) {
      this.answered(lane);
      const status = m.code === 'not-claimed' ? UrbStatus.ENODEV : UrbStatus.EINVAL;
      this.claimed.get(m.dev)?.completed(m.id, { status, actual: 0, data: NO_DATA, error: m.message });
      return;
    }
    if (m.req !== undefined && this.requests.has(m.req)) {
      const r = this.requests.get(m.req)!;
      this.requests.delete(m.req);
      r.reject(new BenchError(m.code, m.message));
      return;
    }
    const handshake = this.handshake;
    if (handshake) {
      // refused before welcome: final, never retried automatically
      this.closed = m.code === 'unauthorized' || m.code === 'version' || m.code === 'pairing-failed' ? true : this.closed;
      if (this.closed) this.setState('refused', m.message);
      handshake.reject(new BenchError(m.code, m.message));
      return;
    }
    // the bench stops: our session there ends, nothing to resume (URBs in flight fail when the connection goes)
    if (m.code === 'shutting-down') {
      this.lanes.token = undefined;
      for (const d of this.claimed.values()) d.failInFlight();
    }
    this.log.warn(`bench says: ${m.message} (${m.code})`);
  }

  private settle(req: number, m: BenchMessage): void {
    const r = this.requests.get(req);
    if (!r) return;
    this.requests.delete(req);
    r.resolve(m);
  }

  /** `onReply` runs as the reply is read, before any later message (a serial session binds its id there). */
  private request<T extends BenchMessage>(build: (req: number) => Message, timeoutMs = 15_000, onDataStream = false, onReply?: (m: T) => void): Promise<T> {
    const stream = onDataStream ? this.data : this.control;
    if (this._state !== 'online' || !stream) return Promise.reject(new BenchError('offline', `bench is ${this._state}`));
    const req = this.nextReq++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.requests.delete(req);
        reject(new BenchError('timeout', `bench did not answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.requests.set(req, {
        resolve: (m) => { clearTimeout(timer); onReply?.(m as T); resolve(m as T); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      });
      stream.send(build(req));
    });
  }

  async list(): Promise<DeviceInfo[]> {
    const m = await this.request<Extract<BenchMessage, { t: 'devices' }>>((req) => ({ t: 'list', req }));
    return m.devices;
  }

  /** Claims a device for exclusive use. Rejects with BenchError('in-use', "… in use by alice") etc. */
  async claim(dev: string): Promise<ClaimedDevice> {
    const existing = this.claimed.get(dev);
    if (existing && !existing.lost) return existing;
    // Two calls at once share one request and one handle (each with its own handle, the first
    // one's release would free the device under the second).
    let pending = this.claiming.get(dev);
    if (!pending) {
      pending = this.sendClaim(dev).then((info) => {
        const handle = new ClaimedDevice(this, info);
        this.claimed.set(dev, handle);
        return handle;
      }).finally(() => this.claiming.delete(dev));
      this.claiming.set(dev, pending);
    }
    return pending;
  }

  /** @internal used by ClaimedDevice */
  async sendClaim(dev: string): Promise<DeviceInfo> {
    const m = await this.request<Extract<BenchMessage, { t: 'claimed' }>>((req) => ({ t: 'claim', req, dev }));
    return m.device;
  }

  /** @internal */
  async sendRelease(dev: string): Promise<void> {
    this.claimed.delete(dev);
    if (this._state !== 'online') return;
    await this.request((req) => ({ t: 'release', req, dev }));
  }

  /**
   * @internal queues a URB message on its stream: bulk/interrupt on the data stream, so control traffic
   * never waits behind bulk data. A cancel travels on the stream of the URB it cancels, so it can never
   * overtake that URB's submit.
   */
  sendUrb(m: Extract<Message, { t: 'submit' | 'cancel' }>, dataLane = isDataLane(m)): boolean {
    const lane: Lane = dataLane ? 1 : 0;
    if (this._state === 'online' && this.control && this.data) {
      (dataLane ? this.data : this.control).send(m);
      this.lanes.record(lane, m, true);
      return true;
    }
    // offline with a session to resume: the message waits and goes out after the resume
    if (this.lanes.token === undefined || !this.claimed.has(m.dev) || this.closed) return false;
    this.lanes.record(lane, m, false);
    return true;
  }

  /**
   * Opens a serial port on the bench: a device id with a tty (`1-1.2`, `sim-1`; see DeviceInfo.tty) or
   * a tty the bench shares (`ttys`). Rejects with BenchError ('busy', 'no-such-port', 'not-shared', …).
   */
  async openSerial(port: string, params: SerialParams = DEFAULT_SERIAL_PARAMS): Promise<SerialSession> {
    const s = new RemoteSerialSession(this, port, params);
    await s.open();
    this.serialSessions.add(s);
    return s;
  }

  /** @internal SerialLink */
  get online(): boolean {
    return this._state === 'online';
  }

  /** @internal SerialLink */
  serialRequest<T extends BenchMessage>(build: (req: number) => Message, onReply?: (m: T) => void): Promise<T> {
    return this.request<T>(build, 15_000, true, onReply);
  }

  /** @internal SerialLink */
  sendSerial(m: Message): boolean {
    if (this._state !== 'online' || !this.data) return false;
    this.data.send(m);
    return true;
  }

  /** @internal SerialLink */
  bindSerial(sid: number, session: RemoteSerialSession | undefined): void {
    if (session) this.serialBySid.set(sid, session);
    else this.serialBySid.delete(sid);
  }

  /** @internal SerialLink */
  forgetSerial(session: RemoteSerialSession): void {
    this.serialSessions.delete(session);
  }

  /** Measures an application-level round trip (ms). */
  ping(timeoutMs = 5000): Promise<number> {
    if (this._state !== 'online' || !this.control) return Promise.reject(new BenchError('offline', `bench is ${this._state}`));
    const n = ++this.pingSeq >>> 0;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { this.pings.delete(n); reject(new BenchError('timeout', 'no pong')); }, timeoutMs);
      this.pings.set(n, { sent: performance.now(), resolve: (ms) => { clearTimeout(timer); resolve(ms); } });
      this.control!.send({ t: 'ping', n });
    });
  }

  private startPinging(generation: number): void {
    clearInterval(this.pingTimer);
    const interval = this.options.pingIntervalMs ?? 5000;
    const deadAfter = this.options.deadAfterMs ?? 15_000;
    this.pingTimer = setInterval(() => {
      if (generation !== this.connectionGeneration) return;
      if (performance.now() - this.lastHeard > deadAfter) {
        // said so, in case the bench hears it: it then keeps our session for the resume
        this.conn?.close(CloseCode.abandoned, 'no answer: resuming on a new connection');
        this.connectionLost(generation, `no answer from the bench for ${Math.round(deadAfter / 1000)} s`);
        return;
      }
      this.ping(deadAfter).catch(() => {});
    }, interval);
    this.pingTimer.unref();
  }

  private connectionLost(generation: number, why: string): void {
    if (generation !== this.connectionGeneration || this._state === 'offline' || this._state === 'refused' || this._state === 'closed') return;
    this.connectionGeneration++;
    clearInterval(this.pingTimer);
    this.conn?.close(CloseCode.abandoned, 'connection lost: resuming on a new one');
    this.conn = undefined;
    this.control = undefined;
    this.data = undefined;
    // Every pending request fails, and a handshake in progress (connectOnce then forgets it).
    const lost = new BenchError('offline', `connection to the bench lost: ${why}`);
    this.handshake?.reject(lost);
    for (const r of this.requests.values()) r.reject(lost);
    this.requests.clear();
    for (const p of this.pings.values()) p.resolve(NaN);
    this.pings.clear();
    for (const d of this.claimed.values()) d.suspend(this.lanes.token !== undefined);
    this.serialBySid.clear();
    for (const s of this.serialSessions) s.suspend();
    if (this.closed) return;
    this.setState('offline', why);
    this.log.warn(`bench ${this.benchName || this.options.bench.id.slice(0, 10)} offline: ${why}`);
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.closed || this.reconnectTimer) return;
    const delay = this.backoff.next();
    this.log.debug(`reconnecting in ${delay} ms`);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      if (this.closed) return;
      this.connectOnce().catch((e: Error) => this.connectFailed(e));
    }, delay);
  }

  /** Releases every device, closes the connection, stops reconnecting. */
  async close(): Promise<void> {
    if (this._state === 'closed') return;
    const wasOnline = this._state === 'online';
    this.closed = true;
    clearTimeout(this.reconnectTimer);
    clearInterval(this.pingTimer);
    clearTimeout(this.ackTimer);
    if (wasOnline) {
      // the 2 s bound's timer is cleared once the releases are done: left running, it held every
      // `remote-usb list` open for 2 s after its table was printed
      let bound: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.all([...[...this.claimed.values()].map((d) => d.release().catch(() => {})), ...[...this.serialSessions].map((s) => s.close())]),
        new Promise((r) => { bound = setTimeout(r, 2000); }),
      ]);
      clearTimeout(bound);
      await this.control?.drained();
    }
    this.connectionGeneration++;
    this.conn?.close();
    for (const d of this.claimed.values()) d.markLost('client closed');
    for (const s of [...this.serialSessions]) void s.close(); // offline ones: 'closed', nothing to send
    this.setState('closed');
    if (this.ownsEndpoint) await this.endpoint?.close();
  }
}

/** A device this client holds. URB ids are allocated here; completions are matched by id. */
export class ClaimedDevice extends EventEmitter<{ lost: [string]; suspended: []; resumed: [] }> {
  private nextId = 1;
  private readonly pending = new Map<number, (r: UrbResult) => void>();
  /** URBs in flight on the data stream (bulk/interrupt), whose cancels must follow them there. */
  private readonly onDataLane = new Set<number>();
  lost = false;
  lostReason?: string;
  /** Bytes moved and URBs completed since the claim (the UI shows rates from these). */
  readonly traffic = { bytesIn: 0, bytesOut: 0, urbs: 0 };

  constructor(private readonly client: BenchClient, public info: DeviceInfo) {
    super();
  }

  get id(): string {
    return this.info.id;
  }

  get inFlight(): number {
    return this.pending.size;
  }

  /** Submits a URB; `id` can be passed to cancel(). */
  start(urb: UrbRequest): PendingUrb {
    const id = this.nextId;
    this.nextId = this.nextId >= 0xffffffff ? 1 : this.nextId + 1;
    if (this.lost) return { id, done: Promise.resolve({ status: UrbStatus.ENODEV, actual: 0, data: NO_DATA, error: this.lostReason }) };
    const urbIn = isIn(urb);
    const done = new Promise<UrbResult>((resolve) => this.pending.set(id, (r) => {
      if (urbIn) this.traffic.bytesIn += r.actual;
      else this.traffic.bytesOut += r.actual;
      this.traffic.urbs++;
      resolve(r);
    }));
    if (urb.type !== 'control') this.onDataLane.add(id);
    const sent = this.client.sendUrb({
      t: 'submit', dev: this.id, id, ep: urb.ep, type: urb.type, setup: urb.setup,
      data: urbIn ? undefined : urb.data ?? NO_DATA,
      length: urbIn ? urb.length ?? 0 : urb.data?.length ?? 0,
      timeout: urb.timeout || undefined,
      flags: urb.flags || undefined,
    });
    if (!sent) this.completed(id, { status: UrbStatus.ESHUTDOWN, actual: 0, data: NO_DATA, error: 'bench offline' });
    return { id, done };
  }

  submit(urb: UrbRequest): Promise<UrbResult> {
    return this.start(urb).done;
  }

  /** Asks the bench to cancel a URB; its completion (status -ECONNRESET if the cancel won) still arrives. */
  cancel(id: number): void {
    if (this.pending.has(id)) this.client.sendUrb({ t: 'cancel', dev: this.id, id }, this.onDataLane.has(id));
  }

  /** @internal */
  completed(id: number, r: UrbResult): void {
    const resolve = this.pending.get(id);
    if (!resolve) return;
    this.pending.delete(id);
    this.onDataLane.delete(id);
    resolve(r);
  }

  /** @internal */
  isPending(id: number): boolean {
    return this.pending.has(id);
  }

  /**
   * @internal connection lost. `resumable`: the URBs in flight stay pending (the session is resumed on
   * the next connection); otherwise they end with -ESHUTDOWN.
   */
  suspend(resumable: boolean): void {
    if (!resumable) this.failInFlight();
    if (!this.lost) this.emit('suspended');
  }

  /** @internal the URBs in flight are over (the bench's session is gone): they end with -ESHUTDOWN. */
  failInFlight(): void {
    for (const [id] of this.pending) this.completed(id, { status: UrbStatus.ESHUTDOWN, actual: 0, data: NO_DATA, error: 'connection to the bench lost' });
  }

  /** @internal the bench resumed our session: nothing was lost, the device is ours as before. */
  resumeSession(): void {
    if (!this.lost) this.emit('resumed');
  }

  /**
   * @internal after a reconnect: claim again. The bench may still hold the device for our previous
   * connection: we give a silent connection up sooner (deadAfterMs, 15 s) than the bench does (20 s),
   * and when the link was down, our close never reached it. While the holder is us (the name the bench
   * gave our claim), we wait for the bench to let that connection go rather than call the device lost.
   */
  async reclaim(): Promise<void> {
    // the bench did not resume our session: what ran for it is over
    this.failInFlight();
    const ours = this.info.claimedBy;
    const deadline = performance.now() + RECLAIM_OWN_STALE_MS;
    while (!this.lost) {
      try {
        this.info = await this.client.sendClaim(this.id);
        this.emit('resumed');
        return;
      } catch (e) {
        if (this.lost) return;
        if (e instanceof BenchError && e.code === 'offline') return; // the next reconnect claims again
        const holder = this.client.device(this.id);
        if (e instanceof BenchError && e.code === 'in-use' && ours !== undefined && holder?.claimedBy === ours && !holder.mine && performance.now() < deadline) {
          await new Promise((r) => setTimeout(r, 250));
          continue;
        }
        this.markLost(`could not claim it again after reconnecting: ${(e as Error).message}`);
      }
    }
  }

  /** @internal */
  markLost(reason: string): void {
    if (this.lost) return;
    this.lost = true;
    this.lostReason = reason;
    for (const [id] of this.pending) this.completed(id, { status: UrbStatus.ENODEV, actual: 0, data: NO_DATA, error: reason });
    this.emit('lost', reason);
  }

  /** Gives the device back to the bench. Emits 'lost' ('released') so users of the handle stop. */
  async release(): Promise<void> {
    this.markLost('released');
    await this.client.sendRelease(this.id);
  }
}
