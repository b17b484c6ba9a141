/**
 * One client connection on the bench: authentication, then requests. What the client holds — claimed
 * devices, URBs in flight, answers not yet acknowledged — is its ClaimSet (claim-set.ts). When the
 * connection drops (silence, network), a session holding devices is *detached*: devices stay claimed and
 * URBs keep running for `resumeGraceMs`, and a new connection from the same client that names the set's
 * token takes it over (lossless resume). A client that closes, is refused or never comes back ends the
 * session: everything is cancelled and every device released (its kernel drivers given back).
 *
 * URB / cancel strategy: every submit gets exactly one answer — a `complete` (status -ECONNRESET if the
 * cancel won the race) or an `error` naming that URB. A cancel for a URB that already completed is
 * ignored, because its completion is already on the way; the client must not expect a second reply.
 */
import { CAPABILITIES, COMPRESSION_CAPABILITY, ErrorCode, MAX_FRAME_BYTES, MAX_URB_BYTES_IN_FLIGHT, MAX_URBS_IN_FLIGHT, PROTOCOL_VERSION } from './protocol/constants.js';
import type { BenchMessage, DeviceInfo, Hello, Message, SerialClose, SerialOpen, SerialSet, SerialWrite, Submit } from './protocol/messages.js';
import { ProtocolError } from './protocol/messages.js';
import { isIn, UrbStatus } from './protocol/urb.js';
import { assertNever } from './shared/assert-never.js';
import { MessageStream } from './protocol/stream.js';
import { PayloadCompressor } from './protocol/compression.js';
import { CloseCode, IrohConnection, peerCloseCode } from './net/iroh.js';
import type { Logger } from './shared/log.js';
import type { OpenedDevice } from './usb/backend.js';
import { ClaimSet } from './claim-set.js';
import { executeUrb } from './usb/standard-requests.js';
import type { SerialChannel } from './shared/serial/channel.js';
import type { SerialOpenResult } from './serial/registry.js';

/** What a session needs from the daemon. */
export interface SessionHost {
  readonly benchName: string;
  readonly log: Logger;
  authorize(clientId: string, hello: Hello): { ok: true; name: string; paired: boolean } | { ok: false; code: ErrorCode; message: string };
  devicesFor(session: Session): DeviceInfo[];
  claim(session: Session, dev: string): Promise<{ ok: true; device: OpenedDevice } | { ok: false; code: ErrorCode; message: string }>;
  release(session: Session, dev: string): Promise<void>;
  deviceInfoFor(session: Session, dev: string): DeviceInfo | undefined;
  sessionEnded(session: Session): void;
  /** The connection under a session holding devices dropped: keep it for a resume until the grace ends. */
  sessionDetached(session: Session): void;
  /**
   * A hello asked to resume `token`: the ClaimSet of this client's session that holds it (detached, or
   * still live on a connection that is about to be found dead), moved to `session`; undefined if none.
   */
  resumeSession(session: Session, token: string): ClaimSet | undefined;
  /** Tty paths the config shares (sent in the welcome). */
  readonly sharedTtys: readonly string[];
  serialOpen(session: Session, m: SerialOpen): Promise<SerialOpenResult>;
  /** Closes a serial session; its channel emits 'closed' with `detail`. */
  serialClose(sid: number, detail?: string): Promise<void>;
}

const MAX_STREAMS = 8;
/** Frame size limit before a client has said hello (a hello is a few hundred bytes). */
const MAX_HELLO_FRAME_BYTES = 4096;
/**
 * A client pings every 5 s; one silent for this long is gone (crashed, killed, network down), and its
 * devices go back to the bench's kernel instead of waiting for QUIC's much longer idle timeout.
 */
export const CLIENT_SILENCE_LIMIT_MS = 20_000;
/** How long a refused peer gets to read our error before we close the connection on it. */
const REFUSAL_GRACE_MS = 1000;
/** A peer that has not said hello this long after connecting is dropped (a client says it at once). */
export const HELLO_TIMEOUT_MS = 10_000;

/** How long a detached session keeps its devices and URBs for a resume (config `resume_grace_s`). */
export const RESUME_GRACE_MS = 40_000;

/** What `remote-usb-server top` shows of one client (admin-socket.ts). */
export interface SessionView {
  name: string;
  id: string;
  rttMs?: number;
  /** 'direct' (UDP to the client) or 'relay', as Iroh's selected path says; undefined before one is chosen. */
  path?: 'direct' | 'relay';
  claims: { dev: string; urbs: number; bytes: number; inFlight: number }[];
  serial: { sid: number; path: string; state: string }[];
  backlog: number;
}

/** A serial port this client has open; its data and state go out on the stream its open came on. */
interface SerialUse {
  channel: SerialChannel;
  stream: MessageStream;
  /** Set while the client is told its writes are being dropped (queue full), so it is told once. */
  overflowing: boolean;
}

/** Bytes queued towards the client past which a serial port stops being read until the stream drains. */
const SERIAL_BACKLOG_LIMIT = 1024 * 1024;
/**
 * Bytes queued towards the client past which its stream stops being read until they are written: a
 * client that floods requests and never reads the answers holds itself back, not the bench's memory.
 */
export const REPLY_BACKLOG_LIMIT = 8 * 1024 * 1024;

export class Session {
  clientName = '?';
  authenticated = false;
  private control?: MessageStream;
  /** Compresses URB payloads to this client once its hello listed 'brotli'. */
  private compressor?: PayloadCompressor;
  private readonly streams = new Set<MessageStream>();
  /** The client's second stream, where bulk/interrupt URBs and serial traffic travel (lane 1). */
  private dataStream?: MessageStream;
  /** Lane-1 answers of a resumed session waiting for the client to open its new data stream. */
  private dataQueue: BenchMessage[] = [];
  private urbs = new ClaimSet();
  /** True while the connection is gone and the session waits for a resume. */
  detached = false;
  /** Claims still opening their device, by device. */
  private readonly claiming = new Map<string, Promise<{ ok: true } | { ok: false; code: ErrorCode; message: string }>>();
  private readonly serials = new Map<number, SerialUse>();
  private ended = false;
  private lastHeard = performance.now();
  private lastSent = 0;
  private silenceTimer?: NodeJS.Timeout;

  constructor(
    readonly conn: IrohConnection,
    private readonly host: SessionHost,
    private readonly silenceLimitMs = CLIENT_SILENCE_LIMIT_MS,
    readonly resumeGraceMs = RESUME_GRACE_MS,
  ) {}

  private get claims(): ClaimSet['claims'] {
    return this.urbs.claims;
  }

  get clientId(): string {
    return this.conn.remoteId;
  }

  get label(): string {
    return `${this.clientName} (${this.clientId.slice(0, 10)})`;
  }

  claimedDevices(): string[] {
    return [...this.claims.keys()];
  }

  /** The token a new connection uses to resume this session. */
  get resumeToken(): string {
    return this.urbs.token;
  }

  /** False once it kept more unacknowledged answers than it may (claim-set.ts): a drop then ends it. */
  get resumable(): boolean {
    return this.urbs.resumable;
  }

  /** Who this is and what it holds; undefined before its hello was accepted. */
  view(): SessionView | undefined {
    if (!this.authenticated) return undefined;
    return {
      name: this.detached ? `${this.clientName} (reconnecting)` : this.clientName,
      id: this.clientId,
      rttMs: this.detached ? undefined : this.conn.rttMs(),
      path: this.detached ? undefined : this.conn.pathKind(),
      claims: [...this.claims].map(([dev, c]) => ({ dev, urbs: c.urbs, bytes: c.bytes, inFlight: c.inflight.size })),
      serial: [...this.serials].map(([sid, u]) => ({ sid, path: u.channel.path, state: u.channel.state })),
      backlog: this.pendingState().backlog,
    };
  }

  /** What this session holds in memory now (tests and diagnostics: it must stay bounded). */
  pendingState(): { urbs: number; urbBytes: number; backlog: number; readPauses: number; unacked: number } {
    const urbs = this.urbs.urbsInFlight;
    let backlog = 0;
    let readPauses = 0;
    for (const s of this.streams) {
      backlog += s.backlog;
      readPauses += s.readPauses;
    }
    return { urbs, urbBytes: this.urbs.bytesInFlight, backlog, readPauses, unacked: this.urbs.unackedState.bytes };
  }

  private bytesSent(): number {
    let n = 0;
    for (const s of this.streams) n += s.bytesSent;
    return n;
  }

  async run(): Promise<void> {
    // A client that closes its connection means it (ours releases its devices first), unless it says it
    // gave a silent connection up to resume on a new one; anything else (timed out, reset, the network)
    // is a drop the client may come back from.
    void this.conn.closed().then((why) => {
      const code = peerCloseCode(why);
      if (code === undefined || code === CloseCode.abandoned) this.dropped(`connection closed: ${why}`);
      else void this.end(`connection closed: ${why}`);
    });
    this.silenceTimer = setInterval(() => {
      // A client whose stream we stopped reading (see REPLY_BACKLOG_LIMIT) cannot be heard: it is
      // alive while it reads what we send.
      const sent = this.bytesSent();
      if (sent !== this.lastSent && [...this.streams].some((s) => s.readPaused)) this.lastHeard = performance.now();
      this.lastSent = sent;
      const silent = performance.now() - this.lastHeard;
      if (silent > this.silenceLimitMs) this.dropped(`nothing heard for ${Math.round(silent / 1000)} s`);
    }, Math.min(5000, this.silenceLimitMs / 2));
    this.silenceTimer.unref();
    const helloTimer = setTimeout(() => { if (!this.authenticated) void this.end(`no hello within ${HELLO_TIMEOUT_MS / 1000} s`); }, HELLO_TIMEOUT_MS);
    helloTimer.unref();
    void this.conn.closed().then(() => clearTimeout(helloTimer));
    for (let n = 0; !this.ended; n++) {
      const io = await this.conn.acceptStream();
      if (io === null) break;
      if (n >= MAX_STREAMS || (n > 0 && !this.authenticated)) {
        // Said on that stream, unread; then it is torn down (a peer opening streams in a loop costs
        // us one small frame and one timer each, and QUIC bounds how many it can have open at once).
        const extra = new MessageStream(io);
        extra.send({
          t: 'error', code: 'bad-message',
          message: this.authenticated ? `too many streams: a client may open at most ${MAX_STREAMS}` : `say 'hello' on the first stream before opening another`,
        });
        void extra.end();
        setTimeout(() => extra.abort(), REFUSAL_GRACE_MS).unref();
        continue;
      }
      const stream = new MessageStream(io, (e) => this.dropped(`write failed: ${e.message}`));
      stream.compressor = this.compressor;
      this.streams.add(stream);
      if (!this.control) {
        this.control = stream;
      } else if (!this.dataStream) {
        this.dataStream = stream;
        for (const m of this.dataQueue.splice(0)) this.trySend(stream, m);
      }
      // Until hello, frames are small: an unknown peer cannot make us buffer megabytes.
      const frameLimit = (): number => (this.authenticated ? MAX_FRAME_BYTES : MAX_HELLO_FRAME_BYTES);
      const admit = (m: Message): boolean => this.admit(m);
      void stream.readLoop((m) => this.onMessage(m, stream), { admit, maxBacklog: REPLY_BACKLOG_LIMIT, maxFrameBytes: frameLimit }).then(
        () => { if (stream === this.control) void this.end('client closed its stream'); },
        (e: Error) => this.onStreamError(e),
      );
    }
    this.dropped('connection closed');
  }

  /** Sends an unsolicited message (device events) on the control stream. */
  notify(m: BenchMessage): void {
    if (this.authenticated && !this.ended) this.trySend(this.control!, m);
  }

  private trySend(stream: MessageStream, m: BenchMessage): void {
    try {
      stream.send(m);
    } catch (e) {
      this.host.log.error(`cannot send '${m.t}' to ${this.label}: ${(e as Error).message}`);
    }
  }

  private onStreamError(e: Error): void {
    if (this.ended) return;
    if (e instanceof ProtocolError) {
      this.host.log.warn(`client ${this.label} sent a bad message: ${e.message}; dropping the connection`);
      this.refuse('bad-message', `bad message: ${e.message}`, CloseCode.protocol);
    } else {
      this.dropped(`stream failed: ${e.message}`);
    }
  }

  /**
   * Decides, before a message's payload is inflated, whether it is read at all. An unknown peer gets
   * exactly one message, which must be `hello`: it is then either authenticated or refused, and a
   * refused or ended session reads nothing more. So an unauthenticated peer costs one small frame's
   * decoding (MAX_HELLO_FRAME_BYTES), never an inflation.
   */
  private admit(m: Message): boolean {
    if (this.ended) return false;
    if (this.authenticated || m.t === 'hello') return true;
    this.refuse('bad-message', `expected 'hello' first, got '${m.t}'`, CloseCode.protocol);
    return false;
  }

  private onMessage(m: Message, stream: MessageStream): void {
    if (this.ended) return;
    this.lastHeard = performance.now();
    // The handshake: admit() lets nothing but a hello through before it succeeds.
    if (m.t === 'hello') {
      if (this.authenticated) return this.trySend(stream, { t: 'error', code: 'bad-message', message: 'already said hello' });
      return this.onHello(m);
    }
    if (!this.authenticated) return;
    switch (m.t) {
      case 'list': return this.trySend(stream, { t: 'devices', req: m.req, devices: this.host.devicesFor(this) });
      case 'claim': void this.onClaim(m.req, m.dev, stream); return;
      case 'release': void this.onRelease(m.req, m.dev, stream); return;
      case 'submit': return this.onSubmit(m, this.laneOf(stream));
      case 'cancel':
        this.urbs.received[this.laneOf(stream)]++;
        this.claims.get(m.dev)?.inflight.get(m.id)?.abort();
        return;
      case 'ack': this.urbs.ack(m.lanes); return;
      case 'ping': return this.trySend(stream, { t: 'pong', n: m.n });
      case 'serial-open': void this.onSerialOpen(m, stream); return;
      case 'serial-write': return this.onSerialWrite(m, stream);
      case 'serial-set': void this.onSerialSet(m, stream); return;
      case 'serial-close': void this.onSerialClose(m, stream); return;
      case 'welcome': case 'devices': case 'added': case 'removed': case 'changed': case 'claimed': case 'released':
      case 'complete': case 'pong': case 'serial-opened': case 'serial-ok': case 'serial-data': case 'serial-state': case 'error':
        return this.trySend(stream, { t: 'error', code: 'bad-message', message: `'${m.t}' is not a request a client can send` });
      default: return assertNever(m);
    }
  }

  private laneOf(stream: MessageStream): 0 | 1 {
    return stream === this.control ? 0 : 1;
  }

  /** Where the ClaimSet's answers go while this connection carries it. */
  private readonly sendAnswer = (lane: 0 | 1, m: BenchMessage): void => {
    // while ending, URBs cut short still get their -ESHUTDOWN answer on a connection that lives
    if (this.detached) return;
    if (lane === 0) this.trySend(this.control!, m);
    else if (this.dataStream) this.trySend(this.dataStream, m);
    else this.dataQueue.push(m);
  };

  private onHello(m: Hello): void {
    if (m.v !== PROTOCOL_VERSION) {
      return this.refuse('version', `this bench speaks protocol version ${PROTOCOL_VERSION}, the client speaks ${m.v}: update the ${m.v < PROTOCOL_VERSION ? 'extension' : 'bench daemon'}`, CloseCode.version);
    }
    const auth = this.host.authorize(this.clientId, m);
    if (!auth.ok) return this.refuse(auth.code, auth.message, CloseCode.unauthorized);
    this.clientName = auth.name;
    this.authenticated = true;
    if (m.caps.includes(COMPRESSION_CAPABILITY)) {
      this.compressor = new PayloadCompressor();
      for (const s of this.streams) s.compressor = this.compressor;
    }
    const resumed = m.resume ? this.host.resumeSession(this, m.resume.token) : undefined;
    if (resumed) this.urbs = resumed;
    this.host.log.info(`client ${this.label} connected${auth.paired ? ' (newly paired)' : ''}${resumed ? `, resuming its session (${resumed.claims.size} device(s), ${resumed.urbsInFlight} URB(s) in flight)` : ''}`);
    this.trySend(this.control!, {
      t: 'welcome', v: PROTOCOL_VERSION, caps: [...CAPABILITIES], bench: this.host.benchName, you: this.clientId,
      paired: auth.paired || undefined, devices: this.host.devicesFor(this),
      ttys: this.host.sharedTtys.length > 0 ? [...this.host.sharedTtys] : undefined,
      resume: this.urbs.token, resumed: resumed ? { received: [...resumed.received] } : undefined,
    });
    // answers the client missed go out first (lane 1 once its new data stream opens)
    this.urbs.attach(this.sendAnswer, m.resume?.acked);
  }

  /**
   * Gives this session's ClaimSet to a session resuming it on a new connection and ends this one
   * without releasing anything (the devices and URBs now belong to the other).
   */
  handOver(): ClaimSet {
    const urbs = this.urbs;
    urbs.detach();
    this.urbs = new ClaimSet();
    void this.end('resumed on a new connection');
    return urbs;
  }

  /**
   * The connection is gone without a goodbye. A session holding devices waits `resumeGraceMs` for its
   * client to resume it (the daemon ends it after that); any other session ends now.
   */
  dropped(why: string): void {
    if (this.ended || this.detached) return;
    if (!this.authenticated || this.claims.size === 0 || !this.urbs.resumable || this.resumeGraceMs <= 0) {
      void this.end(why);
      return;
    }
    this.detached = true;
    clearInterval(this.silenceTimer);
    this.urbs.detach();
    this.host.log.info(`client ${this.label} dropped (${why}): keeping ${[...this.claims.keys()].join(', ')} and ${this.urbs.urbsInFlight} URB(s) for ${Math.round(this.resumeGraceMs / 1000)} s for it to resume`);
    const sids = [...this.serials.keys()];
    this.serials.clear();
    for (const sid of sids) void this.host.serialClose(sid);
    for (const st of this.streams) st.abort();
    this.conn.close(CloseCode.normal, 'dropped');
    this.host.sessionDetached(this);
  }

  private async onClaim(req: number, dev: string, stream: MessageStream): Promise<void> {
    // A claim while the same device's claim is still opening shares it: the two must not both ask the
    // daemon, or the second's "already open" failure would drop the first's reservation.
    let claiming = this.claiming.get(dev);
    if (!claiming) {
      claiming = this.claimDevice(dev).finally(() => this.claiming.delete(dev));
      this.claiming.set(dev, claiming);
    }
    const res = await claiming;
    if (!res.ok) return this.trySend(stream, { t: 'error', req, code: res.code, message: res.message });
    if (!this.ended) this.trySend(stream, { t: 'claimed', req, device: this.host.deviceInfoFor(this, dev)! });
  }

  /** Claims `dev` unless this session holds it already; on success the claim is recorded. */
  private async claimDevice(dev: string): Promise<{ ok: true } | { ok: false; code: ErrorCode; message: string }> {
    if (this.claims.has(dev)) return { ok: true };
    const res = await this.host.claim(this, dev);
    if (!res.ok) return res;
    if (this.ended) {
      await res.device.close();
      await this.host.release(this, dev);
      return { ok: false, code: 'internal', message: 'connection ended' };
    }
    this.claims.set(dev, { device: res.device, inflight: new Map(), urbs: 0, bytes: 0 });
    this.host.log.info(`${this.label} claimed ${dev}`);
    return { ok: true };
  }

  private async onRelease(req: number, dev: string, stream: MessageStream): Promise<void> {
    if (!this.claims.has(dev)) {
      return this.trySend(stream, { t: 'error', req, code: 'not-claimed', message: `device ${dev} is not claimed by this client` });
    }
    await this.releaseDevice(dev);
    this.trySend(stream, { t: 'released', req, dev });
  }

  /** Cancels the device's URBs, gives it back to the bench's kernel, and tells the daemon. */
  private async releaseDevice(dev: string, why: 'released' | 'shutdown' = 'released'): Promise<void> {
    const claim = this.claims.get(dev);
    if (!claim) return;
    this.claims.delete(dev);
    for (const c of claim.inflight.values()) c.abort(why);
    try {
      await claim.device.close();
    } catch (e) {
      this.host.log.warn(`releasing ${dev}: ${(e as Error).message}`);
    }
    await this.host.release(this, dev);
    this.host.log.info(`${this.label} released ${dev}`);
  }

  /** The bench lost the device (unplugged): its URBs fail with -ENODEV from the backend; forget the claim. */
  deviceGone(dev: string): void {
    const claim = this.claims.get(dev);
    if (!claim) return;
    this.claims.delete(dev);
    for (const c of claim.inflight.values()) c.abort();
    void claim.device.close().catch(() => {});
  }

  private onSubmit(m: Submit, lane: 0 | 1): void {
    const urbs = this.urbs;
    urbs.received[lane]++;
    const claim = this.claims.get(m.dev);
    const refuseUrb = (code: ErrorCode, message: string): void => urbs.answer(lane, { t: 'error', dev: m.dev, id: m.id, code, message });
    if (!claim) return refuseUrb('not-claimed', `URB ${m.id} for device ${m.dev}, which this client has not claimed`);
    if (claim.inflight.has(m.id)) return refuseUrb('bad-message', `URB id ${m.id} is already in flight on ${m.dev}`);
    if (claim.inflight.size >= MAX_URBS_IN_FLIGHT) return refuseUrb('busy', `more than ${MAX_URBS_IN_FLIGHT} URBs in flight on ${m.dev}`);
    const urbIn = isIn(m);
    if (!urbIn && m.data === undefined && m.length > 0) return refuseUrb('bad-message', `OUT URB ${m.id} has no data`);
    const bytes = urbIn ? m.length : (m.data?.length ?? 0);
    if (urbs.bytesInFlight + bytes > MAX_URB_BYTES_IN_FLIGHT) {
      const mib = (n: number): string => `${(n / 1048576).toFixed(1)} MiB`;
      return refuseUrb('busy', `URB ${m.id} on ${m.dev} (${bytes} bytes) would put ${mib(urbs.bytesInFlight + bytes)} in flight for this client, over the ${mib(MAX_URB_BYTES_IN_FLIGHT)} limit`);
    }
    urbs.bytesInFlight += bytes;
    const abort = new AbortController();
    claim.inflight.set(m.id, abort);
    const log = this.host.log;
    const { type, ep, setup, data, length, timeout, flags } = m;
    void executeUrb(claim.device, { type, ep, setup, data, length, timeout, flags }, abort.signal).then(
      (r) => {
        claim.inflight.delete(m.id);
        urbs.bytesInFlight -= bytes;
        claim.urbs++;
        claim.bytes += r.actual;
        if (r.error) log.debug(`URB ${m.id} on ${m.dev} ep 0x${m.ep.toString(16)}: ${r.error} (status ${r.status})`);
        // URBs cut short because the session is ending fail as "shut down", not as "cancelled by you".
        const status = r.status === UrbStatus.ECONNRESET && abort.signal.reason === 'shutdown' ? UrbStatus.ESHUTDOWN : r.status;
        urbs.answer(lane, { t: 'complete', dev: m.dev, id: m.id, status, actual: r.actual, data: r.data.length > 0 ? r.data : undefined });
      },
      (e: Error) => {
        claim.inflight.delete(m.id);
        urbs.bytesInFlight -= bytes;
        refuseUrb('usb-error', `URB ${m.id} on ${m.dev}: ${e.message}`);
      },
    );
  }

  // ---- serial ports ----
  private async onSerialOpen(m: SerialOpen, stream: MessageStream): Promise<void> {
    const res = await this.host.serialOpen(this, m);
    if (!res.ok) return this.trySend(stream, { t: 'error', req: m.req, code: res.code, message: res.message });
    const { sid, channel } = res;
    if (this.ended) return void this.host.serialClose(sid);
    const use: SerialUse = { channel, stream, overflowing: false };
    this.serials.set(sid, use);
    channel.on('data', (data) => {
      if (this.serials.get(sid) !== use) return;
      this.trySend(stream, { t: 'serial-data', sid, data });
      // Back-pressure: a client that reads slower than the tty talks stops the tty being read.
      if (stream.backlog > SERIAL_BACKLOG_LIMIT) {
        channel.pause();
        void stream.drained().then(() => channel.resume());
      }
    });
    channel.on('state', (state, detail) => {
      if (this.serials.get(sid) !== use) return;
      if (state === 'closed') this.serials.delete(sid);
      this.trySend(stream, { t: 'serial-state', sid, state, detail });
    });
    this.host.log.info(`${this.label} opened serial port ${m.port} (${channel.path}, ${m.baud} ${m.dataBits}${m.parity[0].toUpperCase()}${m.stopBits}) as session ${sid}`);
    this.trySend(stream, { t: 'serial-opened', req: m.req, sid, port: m.port, path: channel.path });
  }

  private notOpen(stream: MessageStream, sid: number, req?: number): void {
    this.trySend(stream, { t: 'error', req, sid: req === undefined ? sid : undefined, code: 'not-open', message: `serial session ${sid} is not open by this client` });
  }

  private onSerialWrite(m: SerialWrite, stream: MessageStream): void {
    const use = this.serials.get(m.sid);
    if (!use) return this.notOpen(stream, m.sid);
    if (use.channel.write(m.data)) {
      use.overflowing = false;
    } else if (use.channel.state === 'open' && m.data.length > 0 && !use.overflowing) {
      use.overflowing = true;
      this.trySend(stream, { t: 'error', sid: m.sid, code: 'busy', message: `serial session ${m.sid}: the tty is not keeping up; writes are dropped until it catches up` });
    }
  }

  private async onSerialSet(m: SerialSet, stream: MessageStream): Promise<void> {
    const use = this.serials.get(m.sid);
    if (!use) return this.notOpen(stream, m.sid, m.req);
    try {
      await use.channel.set(m);
      this.trySend(stream, { t: 'serial-ok', req: m.req });
    } catch (e) {
      this.trySend(stream, { t: 'error', req: m.req, code: 'serial-error', message: `serial session ${m.sid}: ${(e as Error).message}` });
    }
  }

  private async onSerialClose(m: SerialClose, stream: MessageStream): Promise<void> {
    if (!this.serials.has(m.sid)) return this.notOpen(stream, m.sid, m.req);
    this.serials.delete(m.sid); // the client asked: no 'closed' state message, just the reply
    await this.host.serialClose(m.sid);
    this.host.log.info(`${this.label} closed serial session ${m.sid}`);
    this.trySend(stream, { t: 'serial-ok', req: m.req });
  }

  /** Sends an error, gives the peer a moment to read it, then closes. */
  private refuse(code: ErrorCode, message: string, closeCode: bigint): void {
    if (this.ended) return;
    this.host.log.info(`refusing ${this.clientId.slice(0, 10)}: ${message}`);
    const stream = this.control;
    if (stream) {
      stream.send({ t: 'error', code, message });
      void stream.end();
    }
    const timer = setTimeout(() => this.conn.close(closeCode, `${code}: ${message}`), REFUSAL_GRACE_MS);
    void this.conn.closed().then(() => clearTimeout(timer));
    void this.end(`refused (${code})`, false);
  }

  /** Ends the session: cancels URBs, releases every device. Idempotent. */
  async end(why: string, closeConnection = true): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    clearInterval(this.silenceTimer);
    if (this.authenticated) this.host.log.info(`client ${this.label} gone: ${why}`);
    const sids = [...this.serials.keys()];
    this.serials.clear();
    await Promise.all([...sids.map((sid) => this.host.serialClose(sid)), ...[...this.claims.keys()].map((d) => this.releaseDevice(d, 'shutdown'))]);
    if (closeConnection) {
      for (const s of this.streams) void s.end();
      this.conn.close(CloseCode.normal, 'bye');
    }
    this.host.sessionEnded(this);
  }

  /** Daemon shutdown: tell the peer why. */
  async shutdown(): Promise<void> {
    // 'shutting-down': the session will not be resumable, so the client fails its URBs at once
    if (this.authenticated && this.control) this.control.send({ t: 'error', code: 'shutting-down', message: 'bench daemon is shutting down' });
    await this.control?.drained();
    await this.end('bench shutting down', false);
    this.conn.close(CloseCode.shutdown, 'bench daemon is shutting down');
  }
}
