/**
 * A bench serial port shared with local tools as an RFC 2217 server: `rfc2217://127.0.0.1:N` works in
 * pyserial, esptool and PlatformIO on any OS, with no attach. The share owns one SerialSession (opened
 * by the caller) and serves it to one TCP client at a time:
 *
 * - Only loopback is listened on. On Linux a connection is served only when the kernel's socket table says
 *   the connecting socket belongs to this process's uid (socket-owner.ts); another user is told and closed.
 *   Elsewhere any local user could connect (SECURITY.md).
 * - A second client while one is connected is told and closed.
 * - The share ends when stop() is called or when the session closes for good (bench removed, port no longer
 *   shared). While the session is 'waiting' (board reset, bench offline) the client stays connected and
 *   sees the modem lines (DSR, CD, CTS) drop; they come back with the port.
 *
 * Ordering: what the client sends is applied in order — a baud change completes on the bench before the
 * bytes sent after it are written — through one queue per connection. Answers go out once the bench has
 * applied the change; a refused change is answered with the value still in force, which pyserial reports
 * as "remote rejected value".
 */
import { EventEmitter } from 'node:events';
import { createServer, Server, Socket } from 'node:net';
import { MAX_BAUD } from '../../server/protocol/constants.js';
import { Logger, silentLogger } from '../../server/shared/log.js';
import { printable } from '../../server/shared/text.js';
import {
  BRK, ComPort, ComPortRequest, comPort, Control, escapeIac, Line, Modem, negotiation, OPT_BINARY, OPT_COM_PORT, OPT_ECHO,
  OPT_SGA, parseComPortRequest, PARITY_CODES, Purge, SERVER_OFFSET, STOP_CODES, TelnetDecoder, TelnetEvent, u32, Verb,
} from './rfc2217.js';
import type { DataBits, Parity, SerialParams, SerialSession, SerialSetOptions, StopBits } from './serial.js';
import { Endpoint, loopbackPeerUid } from './socket-owner.js';
import { assertNever } from '../../server/shared/assert-never.js';

/** Bytes from the port held for a client that is slow or said FLOWCONTROL-SUSPEND; beyond this they are dropped (an overrun). */
const MAX_HELD_BYTES = 1024 * 1024;
/** Client bytes waiting behind a settings change before the socket stops being read. */
const MAX_QUEUED_INPUT = 256 * 1024;
/** A Telnet BRK (IAC BRK) holds the line in break this long. */
const BREAK_MS = 250;

export interface ShareOptions {
  /** TCP port on 127.0.0.1; 0 (default) picks a free one. */
  port?: number;
  /** The settings the session was opened with. */
  params: SerialParams;
  /** For messages: "sim-1 on bench 'lab'". */
  name?: string;
  log?: Logger;
  /** Who owns a connection (tests replace it); default: the kernel's socket table. */
  peerUid?: (peer: Endpoint, us: Endpoint) => Promise<number | undefined | 'unknown'>;
}

export interface ShareEvents {
  /** A client was let in. */
  client: [Endpoint];
  /** A connection was turned away; the reason as told to it. */
  refused: [string];
  /** The client left. */
  'client-gone': [];
  /** The share is over (stop(), or the session closed); the reason. */
  end: [string];
}

interface LineSettings {
  baud: number;
  dataBits: DataBits;
  parity: Parity;
  stopBits: StopBits;
  dtr: boolean;
  rts: boolean;
  brk: boolean;
}

export class Rfc2217Share extends EventEmitter<ShareEvents> {
  private client?: Rfc2217Connection;
  private _ended = false;
  /** Every socket accepted and not yet closed (refused ones linger while their refusal is sent). */
  private readonly sockets = new Set<Socket>();
  readonly settings: LineSettings;

  private constructor(
    private readonly server: Server,
    readonly session: SerialSession,
    readonly port: number,
    readonly name: string,
    readonly log: Logger,
    private readonly peerUid: NonNullable<ShareOptions['peerUid']>,
    params: SerialParams,
  ) {
    super();
    this.settings = { dtr: true, rts: true, ...params, brk: false };
    server.on('connection', (s) => void this.accept(s));
    session.on('data', this.onData);
    session.on('state', this.onState);
  }

  /** Listens on 127.0.0.1 for `session`; rejects naming the problem when the port cannot be had. */
  static async start(session: SerialSession, options: ShareOptions): Promise<Rfc2217Share> {
    const port = options.port ?? 0;
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`the RFC 2217 port must be a whole number 0..65535, got ${port}`);
    if (session.state === 'closed') throw new Error(`serial port ${session.path} is closed`);
    const server = createServer({ pauseOnConnect: true, noDelay: true });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) => reject(new Error(
        e.code === 'EADDRINUSE' ? `port ${port} on 127.0.0.1 is already in use: choose another with --port, or 0 for any free one` : `cannot listen on 127.0.0.1:${port}: ${e.message}`,
        { cause: e },
      )));
      server.listen({ host: '127.0.0.1', port, exclusive: true }, () => resolve());
    });
    const actual = (server.address() as { port: number }).port;
    return new Rfc2217Share(server, session, actual, options.name ?? session.path, options.log ?? silentLogger, options.peerUid ?? loopbackPeerUid, options.params);
  }

  get url(): string {
    return `rfc2217://127.0.0.1:${this.port}`;
  }

  get ended(): boolean {
    return this._ended;
  }

  get connected(): boolean {
    return this.client !== undefined;
  }

  /** Ends the share: the client is disconnected, the listener and the session closed. */
  async stop(reason = 'share stopped'): Promise<void> {
    if (this._ended) return;
    this._ended = true;
    this.session.off('data', this.onData);
    this.session.off('state', this.onState);
    this.client = undefined;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const s of this.sockets) s.destroy();
    await closed;
    await this.session.close().catch(() => {});
    this.log.info(`RFC 2217 share of ${this.name} at ${this.url} ended: ${reason}`);
    this.emit('end', reason);
  }

  private async accept(socket: Socket): Promise<void> {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
    const peer = { address: socket.remoteAddress ?? '', port: socket.remotePort ?? 0 };
    const us = { address: socket.localAddress ?? '', port: socket.localPort ?? 0 };
    const refuse = (why: string): void => {
      this.log.warn(`RFC 2217 share of ${this.name}: refused ${peer.address}:${peer.port}: ${why}`);
      this.emit('refused', why);
      socket.on('error', () => {});
      socket.end(`remote-usb: refused: ${why}\r\n`);
      setTimeout(() => socket.destroy(), 1000).unref();
    };
    if (this._ended) { socket.destroy(); return; }
    // Whose socket is it? Decided before anything is read from it, and before it can take the one slot.
    let owner: number | undefined | 'unknown';
    try {
      owner = await this.peerUid(peer, us);
    } catch (e) {
      refuse(`cannot tell who connected: ${(e as Error).message}`);
      return;
    }
    const mine = process.getuid?.();
    if (owner !== 'unknown' && (owner === undefined || owner !== mine)) {
      refuse(owner === undefined ? 'the kernel lists no such connection (closed already?)' : `this port is shared with user ${mine} only, not with user ${owner}`);
      return;
    }
    if (this._ended) { socket.destroy(); return; }
    if (this.client) {
      refuse(`${this.name} is in use by another local program; one at a time`);
      return;
    }
    const c = new Rfc2217Connection(socket, this);
    this.client = c;
    socket.once('close', () => {
      if (this.client !== c) return;
      this.client = undefined;
      c.stopped();
      this.log.info(`RFC 2217 share of ${this.name}: client ${peer.address}:${peer.port} left`);
      this.emit('client-gone');
    });
    this.log.info(`RFC 2217 share of ${this.name}: client ${peer.address}:${peer.port} connected${owner === 'unknown' ? '' : ` (uid ${owner})`}`);
    c.start();
    this.emit('client', peer);
  }

  private readonly onData = (d: Buffer): void => {
    this.client?.fromPort(d); // nobody connected: dropped, as a UART nobody reads
  };

  private readonly onState = (s: string, detail?: string): void => {
    if (s === 'closed') {
      void this.stop(detail ? `the serial port closed: ${detail}` : 'the serial port closed');
      return;
    }
    this.log.info(`RFC 2217 share of ${this.name}: port ${s}${detail ? ` (${detail})` : ''}`);
    this.client?.portState(s === 'open');
  };
}

/** One client: the Telnet state, the queue of its requests, and the bytes held for it. */
class Rfc2217Connection {
  private readonly decoder = new TelnetDecoder();
  /** Options in force on our side (WILL) and theirs (DO); everything else is refused. */
  private readonly us = new Set<number>();
  private readonly them = new Set<number>();
  private comPortOn = false;
  private ops: Promise<void> = Promise.resolve();
  private queuedInput = 0;
  private suspended = false;
  private held: Buffer[] = [];
  private heldBytes = 0;
  private dropped = 0;
  private modem = Modem.CTS | Modem.DSR | Modem.CD;
  private lineMask = 0;
  private modemMask = 0xff;
  private closed = false;

  constructor(private readonly socket: Socket, private readonly share: Rfc2217Share) {}

  start(): void {
    this.socket.on('error', (e) => this.share.log.debug(`RFC 2217 client socket: ${e.message}`));
    this.socket.on('data', (chunk: Buffer) => this.fromClient(chunk));
    this.socket.on('drain', () => this.release());
    if (this.share.session.state !== 'open') this.modem = 0;
    // 8-bit clean both ways; suppress go-ahead and "echo" (the board echoes, if it does) put telnet
    // clients into character mode. pyserial asks for COM-PORT-OPTION itself.
    for (const [verb, opt] of [['will', OPT_BINARY], ['do', OPT_BINARY], ['will', OPT_SGA], ['will', OPT_ECHO]] as const) {
      (verb === 'will' ? this.us : this.them).add(opt);
      this.send(negotiation(verb, opt));
    }
    this.socket.resume();
  }

  stopped(): void {
    this.closed = true;
    if (this.dropped > 0) this.share.log.warn(`RFC 2217 share of ${this.share.name}: ${this.dropped} bytes from the port were dropped because the local program did not read them in time`);
  }

  // ---- port → client ----

  fromPort(d: Buffer): void {
    if (this.closed) return;
    if (this.suspended || this.socket.writableLength > MAX_HELD_BYTES || this.held.length > 0) {
      if (this.heldBytes + d.length > MAX_HELD_BYTES) return this.overrun(d.length);
      this.held.push(d);
      this.heldBytes += d.length;
      return;
    }
    this.send(escapeIac(d));
  }

  private release(): void {
    while (!this.suspended && this.held.length > 0 && this.socket.writableLength <= MAX_HELD_BYTES) {
      const d = this.held.shift()!;
      this.heldBytes -= d.length;
      this.send(escapeIac(d));
    }
  }

  private overrun(n: number): void {
    if (this.dropped === 0) this.share.log.warn(`RFC 2217 share of ${this.share.name}: the local program is not reading; dropping bytes from the port`);
    this.dropped += n;
    if (this.comPortOn && this.lineMask & Line.OVERRUN) this.send(comPort(ComPort.NOTIFY_LINESTATE + SERVER_OFFSET, [Line.OVERRUN]));
  }

  /** The port went away ('waiting') or came back: DSR, CD and CTS follow it. */
  portState(open: boolean): void {
    const next = open ? Modem.CTS | Modem.DSR | Modem.CD : 0;
    if (next === this.modem) return;
    const delta = (next ^ this.modem) & Modem.CTS ? Modem.DELTA_CTS : 0;
    const changed = delta | ((next ^ this.modem) & Modem.DSR ? Modem.DELTA_DSR : 0) | ((next ^ this.modem) & Modem.CD ? Modem.DELTA_CD : 0);
    this.modem = next;
    this.notifyModem(changed);
  }

  private notifyModem(deltas = 0): void {
    if (this.comPortOn) this.send(comPort(ComPort.NOTIFY_MODEMSTATE + SERVER_OFFSET, [(this.modem | deltas) & this.modemMask]));
  }

  private send(b: Buffer): void {
    if (!this.closed && !this.socket.destroyed) this.socket.write(b);
  }

  // ---- client → port ----

  private fromClient(chunk: Buffer): void {
    for (const e of this.decoder.push(chunk) as TelnetEvent[]) {
      switch (e.kind) {
        case 'data': this.enqueue(e.data.length, () => this.share.session.write(e.data)); break;
        case 'negotiate': this.negotiate(e.verb, e.option); break;
        case 'command':
          if (e.command === BRK) this.enqueue(0, () => this.pulseBreak());
          else this.share.log.debug(`RFC 2217 client sent Telnet command ${e.command}: ignored`);
          break;
        case 'subnegotiation':
          if (e.option !== OPT_COM_PORT) { this.share.log.debug(`RFC 2217 client: subnegotiation of option ${e.option} ignored`); break; }
          try {
            const r = parseComPortRequest(e.payload);
            this.enqueue(0, () => this.request(r));
          } catch (err) {
            this.share.log.debug(`RFC 2217 client: ${(err as Error).message}`);
          }
          break;
        case 'bad-subnegotiation': this.share.log.debug(`RFC 2217 client: ${e.reason}; dropped`); break;
        default: assertNever(e);
      }
    }
  }

  private enqueue(bytes: number, job: () => unknown): void {
    this.queuedInput += bytes;
    if (this.queuedInput > MAX_QUEUED_INPUT) this.socket.pause();
    this.ops = this.ops.then(async () => {
      if (this.closed) return;
      try {
        await job();
      } catch (e) {
        this.share.log.warn(`RFC 2217 share of ${this.share.name}: ${(e as Error).message}`);
      } finally {
        this.queuedInput -= bytes;
        if (this.queuedInput <= MAX_QUEUED_INPUT && this.socket.isPaused()) this.socket.resume();
      }
    });
  }

  /**
   * RFC 854 option negotiation without loops: answer only what changes a state, agree to the options we
   * have (BINARY, SGA, ECHO on our side; BINARY, SGA, COM-PORT-OPTION both ways), refuse everything else.
   */
  private negotiate(verb: Verb, opt: number): void {
    const ourSide = verb === 'do' || verb === 'dont';
    const set = ourSide ? this.us : this.them;
    const supported = ourSide ? [OPT_BINARY, OPT_SGA, OPT_ECHO, OPT_COM_PORT] : [OPT_BINARY, OPT_SGA, OPT_COM_PORT];
    const [yes, no]: [Verb, Verb] = ourSide ? ['will', 'wont'] : ['do', 'dont'];
    if (verb === 'do' || verb === 'will') {
      if (!supported.includes(opt)) { this.send(negotiation(no, opt)); return; }
      if (set.has(opt)) return;
      set.add(opt);
      this.send(negotiation(yes, opt));
    } else {
      if (!set.has(opt)) return;
      set.delete(opt);
      this.send(negotiation(no, opt));
    }
    const on = this.us.has(OPT_COM_PORT) || this.them.has(OPT_COM_PORT);
    if (on && !this.comPortOn) {
      this.comPortOn = true;
      this.notifyModem(); // the first modem state, so the client can read CTS/DSR/CD at once
    }
    this.comPortOn = on;
  }

  private reply(command: number, value: Uint8Array | number[]): void {
    this.send(comPort(command + SERVER_OFFSET, value));
  }

  /** Applies a change on the bench; false (logged) when the bench refused it. */
  private async apply(what: string, change: SerialSetOptions): Promise<boolean> {
    const t0 = performance.now();
    try {
      await this.share.session.set(change);
      this.share.log.debug(`RFC 2217 share of ${this.share.name}: ${what} applied in ${(performance.now() - t0).toFixed(1)} ms`);
      return true;
    } catch (e) {
      this.share.log.warn(`RFC 2217 share of ${this.share.name}: ${what} refused: ${(e as Error).message}`);
      return false;
    }
  }

  private async request(r: ComPortRequest): Promise<void> {
    const s = this.share.settings;
    switch (r.command) {
      case 'signature':
        if (r.text === '') this.reply(ComPort.SIGNATURE, Buffer.from(`Remote USB ${printable(this.share.name)}`.slice(0, 200), 'latin1'));
        else this.share.log.info(`RFC 2217 share of ${this.share.name}: client is '${printable(r.text)}'`);
        return;
      case 'set-baudrate':
        if (r.baud >= 1 && r.baud <= MAX_BAUD && r.baud !== s.baud && await this.apply(`baud ${r.baud}`, { baud: r.baud })) s.baud = r.baud;
        return this.reply(ComPort.SET_BAUDRATE, u32(s.baud));
      case 'set-datasize':
        if (r.value >= 5 && r.value <= 8 && r.value !== s.dataBits && await this.apply(`${r.value} data bits`, { dataBits: r.value as DataBits })) s.dataBits = r.value as DataBits;
        return this.reply(ComPort.SET_DATASIZE, [s.dataBits]);
      case 'set-parity': {
        const parity = (Object.keys(PARITY_CODES) as Parity[]).find((p) => PARITY_CODES[p] === r.value);
        if (parity && parity !== s.parity && await this.apply(`parity ${parity}`, { parity })) s.parity = parity;
        return this.reply(ComPort.SET_PARITY, [PARITY_CODES[s.parity]]);
      }
      case 'set-stopsize': {
        const stop = ([1, 1.5, 2] as StopBits[]).find((b) => STOP_CODES[b] === r.value);
        if (stop && stop !== s.stopBits && await this.apply(`${stop} stop bits`, { stopBits: stop })) s.stopBits = stop;
        return this.reply(ComPort.SET_STOPSIZE, [STOP_CODES[s.stopBits]]);
      }
      case 'set-control': return this.control(r.value);
      case 'notify-linestate': return this.reply(ComPort.NOTIFY_LINESTATE, [Line.SHIFT_EMPTY | Line.HOLDING_EMPTY]);
      case 'notify-modemstate': return this.reply(ComPort.NOTIFY_MODEMSTATE, [this.modem]);
      case 'flowcontrol-suspend': this.suspended = true; return;
      case 'flowcontrol-resume': this.suspended = false; this.release(); return;
      case 'set-linestate-mask': this.lineMask = r.mask; return this.reply(ComPort.SET_LINESTATE_MASK, [r.mask]);
      case 'set-modemstate-mask': this.modemMask = r.mask; return this.reply(ComPort.SET_MODEMSTATE_MASK, [r.mask]);
      case 'purge-data':
        if (r.value < Purge.RECEIVE || r.value > Purge.BOTH) { this.share.log.debug(`RFC 2217 client: PURGE-DATA ${r.value} is not 1..3; ignored`); return; }
        // Receive buffer: what the port sent and the client has not been given yet. Transmit buffer: what the
        // client sent before this request has been handed to the bench already (the queue keeps order).
        if (r.value & Purge.RECEIVE) { this.held = []; this.heldBytes = 0; }
        return this.reply(ComPort.PURGE_DATA, [r.value]);
      default: return assertNever(r);
    }
  }

  private async control(v: number): Promise<void> {
    const s = this.share.settings;
    const signal = async (what: 'dtr' | 'rts' | 'brk', on: boolean): Promise<void> => {
      if (s[what] !== on && await this.apply(`${what.toUpperCase()} ${on ? 'on' : 'off'}`, { [what]: on })) s[what] = on;
    };
    switch (v) {
      // Flow control: the bench opens ttys without any; asking for another is answered with "none".
      case Control.REQ_FLOW: case Control.FLOW_NONE: case Control.FLOW_XONXOFF: case Control.FLOW_HARDWARE:
      case Control.FLOW_DCD: case Control.FLOW_DSR:
        return this.reply(ComPort.SET_CONTROL, [Control.FLOW_NONE]);
      case Control.REQ_FLOW_IN: case Control.FLOW_IN_NONE: case Control.FLOW_IN_XONXOFF: case Control.FLOW_IN_HARDWARE: case Control.FLOW_IN_DTR:
        return this.reply(ComPort.SET_CONTROL, [Control.FLOW_IN_NONE]);
      case Control.BREAK_ON: case Control.BREAK_OFF: case Control.REQ_BREAK:
        if (v !== Control.REQ_BREAK) await signal('brk', v === Control.BREAK_ON);
        return this.reply(ComPort.SET_CONTROL, [s.brk ? Control.BREAK_ON : Control.BREAK_OFF]);
      case Control.DTR_ON: case Control.DTR_OFF: case Control.REQ_DTR:
        if (v !== Control.REQ_DTR) await signal('dtr', v === Control.DTR_ON);
        return this.reply(ComPort.SET_CONTROL, [s.dtr ? Control.DTR_ON : Control.DTR_OFF]);
      case Control.RTS_ON: case Control.RTS_OFF: case Control.REQ_RTS:
        if (v !== Control.REQ_RTS) await signal('rts', v === Control.RTS_ON);
        return this.reply(ComPort.SET_CONTROL, [s.rts ? Control.RTS_ON : Control.RTS_OFF]);
      default: this.share.log.debug(`RFC 2217 client: SET-CONTROL ${v} is not defined; ignored`);
    }
  }

  private async pulseBreak(): Promise<void> {
    if (!(await this.apply('break', { brk: true }))) return;
    await new Promise((r) => setTimeout(r, BREAK_MS));
    await this.apply('break off', { brk: false });
    this.share.settings.brk = false;
  }
}
