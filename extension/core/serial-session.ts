/**
 * A serial port on the bench, streamed over the protocol (no attach needed, works from any OS). The
 * bench opens the tty and keeps it across board resets ('waiting', then 'open' again); this side keeps
 * the session across connection losses: 'waiting' while the bench is offline, then it opens the port
 * again with the same settings and says 'open'.
 *
 * Reopening after a reconnect can meet the previous connection's session still holding the port (the
 * bench only drops a silent client after 20 s), so 'busy' and other transient refusals are retried for
 * a while; a refusal that cannot change by waiting ('not-shared', 'unauthorized') ends the session.
 */
import { EventEmitter } from 'node:events';
import { MAX_SERIAL_DATA } from '../../server/protocol/constants.js';
import type { BenchMessage, Message, SerialOpened, SerialState } from '../../server/protocol/messages.js';
import type { SerialParams, SerialSession, SerialSessionEvents, SerialSetOptions } from './serial.js';

/** What a session needs from its BenchClient. */
export interface SerialLink {
  readonly online: boolean;
  /**
   * Sends a serial request on the data stream (where writes go, so order holds) and waits for its reply;
   * `onReply` runs as the reply is read, before the messages after it.
   */
  serialRequest<T extends BenchMessage>(build: (req: number) => Message, onReply?: (m: T) => void): Promise<T>;
  /** Sends a message without a reply on the data stream; false when offline. */
  sendSerial(m: Message): boolean;
  /** Routes the bench's serial-data / serial-state for `sid` to `session` (undefined: stop). */
  bindSerial(sid: number, session: RemoteSerialSession | undefined): void;
  forgetSerial(session: RemoteSerialSession): void;
}

const RETRY_MS = 1000;
const RETRY_FOR_MS = 60_000;
/** Refusals that waiting cannot fix. */
const FINAL_CODES: readonly string[] = ['not-shared', 'unauthorized', 'version', 'bad-message', 'closed'];

export class RemoteSerialSession extends EventEmitter<SerialSessionEvents> implements SerialSession {
  private _state: SerialState = 'closed';
  private _path = '';
  private sid?: number;
  private params: Required<SerialParams>;
  private closed = false;
  private retryTimer?: NodeJS.Timeout;
  private resuming = false;

  constructor(private readonly link: SerialLink, readonly port: string, params: SerialParams) {
    super();
    this.params = { dtr: true, rts: true, ...params };
  }

  get state(): SerialState {
    return this._state;
  }

  get path(): string {
    return this._path;
  }

  /** @internal first open; rejects with the bench's refusal (BenchError). */
  async open(): Promise<void> {
    await this.sendOpen();
    this._state = 'open';
  }

  private async sendOpen(): Promise<void> {
    // Bind the id as the reply is read: the board's first bytes (a banner) follow it in the same read.
    await this.link.serialRequest<SerialOpened>((req) => ({ t: 'serial-open', req, port: this.port, ...this.params }), (m) => {
      if (this.closed) {
        // closed while the open was on its way: give the port back
        void this.link.serialRequest((req) => ({ t: 'serial-close', req, sid: m.sid })).catch(() => {});
        return;
      }
      this.sid = m.sid;
      this._path = m.path;
      this.link.bindSerial(m.sid, this);
    });
  }

  write(data: Uint8Array): void {
    const sid = this.sid;
    if (this._state !== 'open' || sid === undefined) return;
    for (let i = 0; i < data.length; i += MAX_SERIAL_DATA) {
      this.link.sendSerial({ t: 'serial-write', sid, data: data.subarray(i, i + MAX_SERIAL_DATA) });
    }
  }

  /** Applies settings; while 'waiting' they are kept and applied when the port is opened again. */
  async set(opts: SerialSetOptions): Promise<void> {
    if (this.closed) throw new Error(`serial port ${this.port} is closed`);
    const { brk, ...kept } = opts;
    for (const [k, v] of Object.entries(kept)) if (v !== undefined) (this.params as unknown as Record<string, unknown>)[k] = v;
    const sid = this.sid;
    if (this._state !== 'open' || sid === undefined) return;
    try {
      await this.link.serialRequest((req) => ({ t: 'serial-set', req, sid, ...kept, brk }));
    } catch (e) {
      if (!this.link.online) return; // connection lost meanwhile: the reopen applies the settings
      throw e;
    }
  }

  close(): Promise<void> {
    return this.end(undefined);
  }

  private async end(detail: string | undefined): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.retryTimer);
    const sid = this.sid;
    this.sid = undefined;
    this.link.forgetSerial(this);
    this.setState('closed', detail);
    if (sid === undefined) return;
    this.link.bindSerial(sid, undefined);
    if (this.link.online) await this.link.serialRequest((req) => ({ t: 'serial-close', req, sid })).catch(() => {});
  }

  private setState(s: SerialState, detail?: string): void {
    this._state = s;
    this.emit('state', s, detail);
  }

  // ---- from the BenchClient (@internal) ----
  onData(data: Buffer): void {
    this.emit('data', data);
  }

  onState(s: SerialState, detail: string | undefined): void {
    if (this.closed) return;
    if (s === 'closed') {
      this.closed = true;
      if (this.sid !== undefined) this.link.bindSerial(this.sid, undefined);
      this.sid = undefined;
      this.link.forgetSerial(this);
    }
    this.setState(s, detail);
  }

  /** Connection lost. */
  suspend(): void {
    if (this.closed) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.sid = undefined; // the bench forgets it with the connection
    this.setState('waiting', 'bench offline, reconnecting');
  }

  /** Connected again: open the port again with the same settings, retrying transient refusals. */
  resume(deadline = Date.now() + RETRY_FOR_MS): void {
    if (this.closed || this.resuming) return;
    this.resuming = true;
    this.sendOpen().then(
      () => {
        this.resuming = false;
        if (!this.closed) this.setState('open', `reopened ${this._path}`);
      },
      (e: Error & { code?: string }) => {
        this.resuming = false;
        if (this.closed) return;
        if (FINAL_CODES.includes(e.code ?? '') || Date.now() > deadline) {
          void this.end(`could not open ${this.port} again after reconnecting: ${e.message}`);
          return;
        }
        if (e.code === 'offline') return; // connection lost again: the next reconnect resumes
        this.setState('waiting', `reopening after reconnect: ${e.message}`);
        this.retryTimer = setTimeout(() => this.resume(deadline), RETRY_MS);
      },
    );
  }
}
