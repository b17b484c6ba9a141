/**
 * One serial port kept open for one user, across the tty coming and going. It opens the tty, batches
 * what it reads, queues writes in order, applies settings, and when the tty vanishes (board reset or
 * unplugged) it says 'waiting' and reopens it — with the same line settings and control lines — once
 * `resolve` finds it again (the owner calls check() on hot-plug events and on a poll).
 *
 * Used on the bench for every serial session, and by the client core for a locally attached board.
 *
 * Ordering: writes, settings changes and reopens run one at a time on one queue, so a baud change never
 * overtakes bytes written before it and no write lands on a half-reopened tty. Writes while 'waiting'
 * are dropped: a board that just reset should not receive keystrokes typed at the one before.
 */
import { EventEmitter } from 'node:events';
import type { SerialLine, SerialState } from '../../protocol/messages.js';
import { MAX_SERIAL_DATA } from '../../protocol/constants.js';
import type { SerialBackend, SerialPortHandle, SerialSignals } from './backend.js';

/** Where the tty is now; `final` ends the channel (e.g. the device is no longer shared). */
export type Resolution = { path: string } | { missing: string; final?: boolean };

export interface SerialSettings extends SerialLine {
  dtr: boolean;
  rts: boolean;
}

export type SerialChange = Partial<SerialLine> & SerialSignals;

export interface ChannelOptions {
  /** Read data is flushed once this much is buffered ... */
  batchBytes?: number;
  /** ... or this long after the first unflushed byte. */
  batchMs?: number;
  /** Writes beyond this many queued bytes are refused (a client flooding a 9600-baud port). */
  maxQueuedWriteBytes?: number;
}

export interface ChannelEvents {
  data: [Buffer];
  /** Changes after the first open: 'waiting' (tty gone), 'open' (reopened), 'closed' (final). */
  state: [SerialState, string | undefined];
}

export class SerialChannel extends EventEmitter<ChannelEvents> {
  private handle?: SerialPortHandle;
  private _state: SerialState | 'new' = 'new';
  private _path = '';
  private brk = false;
  private ops: Promise<unknown> = Promise.resolve();
  private queuedWriteBytes = 0;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private flushTimer?: NodeJS.Timeout;
  private reopening = false;
  private paused = false;
  private readonly batchBytes: number;
  private readonly batchMs: number;
  private readonly maxQueuedWriteBytes: number;

  constructor(
    private readonly backend: SerialBackend,
    private readonly resolve: () => Resolution,
    private settings: SerialSettings,
    options: ChannelOptions = {},
  ) {
    super();
    this.batchBytes = Math.min(options.batchBytes ?? 16 * 1024, MAX_SERIAL_DATA);
    this.batchMs = options.batchMs ?? 5;
    this.maxQueuedWriteBytes = options.maxQueuedWriteBytes ?? 1024 * 1024;
  }

  get state(): SerialState {
    return this._state === 'new' ? 'closed' : this._state;
  }

  /** The tty opened last (`/dev/ttyACM0`, `sim:sim-1`). */
  get path(): string {
    return this._path;
  }

  get line(): SerialSettings {
    return { ...this.settings };
  }

  /** First open: rejects with a readable Error when the tty is not there or cannot be opened. */
  async open(): Promise<void> {
    const where = this.resolve();
    if (!('path' in where)) throw new Error(where.missing);
    this._path = where.path;
    await this.openHandle(where.path);
    this._state = 'open';
    // What the board said on open (a banner on DTR) waits for the owner to subscribe: flush on a timer.
    if (this.pendingBytes > 0) this.flushTimer ??= setTimeout(() => this.flush(), this.batchMs);
  }

  /** Opens the tty and listens to it at once (a board may answer the DTR edge immediately). */
  private async openHandle(path: string): Promise<void> {
    const h = await this.backend.open(path, this.settings);
    this.attach(h);
    try {
      await h.setSignals({ dtr: this.settings.dtr, rts: this.settings.rts, brk: false });
    } catch (e) {
      if (this.handle === h) this.handle = undefined;
      await h.close().catch(() => {});
      throw new Error(`cannot set the control lines of ${path}: ${(e as Error).message}`, { cause: e });
    }
  }

  private attach(h: SerialPortHandle): void {
    this.handle = h;
    this.brk = false;
    h.on('data', (d) => { if (this.handle === h) this.onData(d); });
    h.once('vanished', (why) => { if (this.handle === h) this.vanished(why); });
    if (this.paused) h.pause();
  }

  private onData(d: Buffer): void {
    this.pending.push(d);
    this.pendingBytes += d.length;
    if (this.pendingBytes >= this.batchBytes) this.flush();
    else this.flushTimer ??= setTimeout(() => this.flush(), this.batchMs);
  }

  private flush(): void {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    // Until the port is (re)opened, data waits: the owner hears 'open' first, then what the board said.
    if (this.pendingBytes === 0 || this._state === 'new' || (this._state === 'waiting' && this.handle)) return;
    const all = this.pending.length === 1 ? this.pending[0] : Buffer.concat(this.pending, this.pendingBytes);
    this.pending = [];
    this.pendingBytes = 0;
    for (let i = 0; i < all.length; i += this.batchBytes) this.emit('data', all.subarray(i, i + this.batchBytes));
  }

  private vanished(why: string): void {
    if (this._state !== 'open') return;
    this.flush();
    const h = this.handle;
    this.handle = undefined;
    void h?.close().catch(() => {});
    this.setState('waiting', `${this._path} went away (${why}); waiting for it to come back`);
  }

  private setState(s: SerialState, detail?: string): void {
    this._state = s;
    this.emit('state', s, detail);
  }

  /** Queues bytes for the tty. False when they were dropped (not open, or too much already queued). */
  write(data: Uint8Array): boolean {
    if (this._state !== 'open' || data.length === 0) return false;
    if (this.queuedWriteBytes + data.length > this.maxQueuedWriteBytes) return false;
    this.queuedWriteBytes += data.length;
    void this.enqueue(async () => {
      this.queuedWriteBytes -= data.length;
      await this.handle?.write(data);
    }).catch(() => {}); // a failed write means the tty is going away; 'vanished' reports that
    return true;
  }

  /** Changes line settings and control lines. Data bits / parity / stop bits reopen the tty. */
  set(change: SerialChange): Promise<void> {
    return this.enqueue(async () => {
      const next: SerialSettings = {
        baud: change.baud ?? this.settings.baud, dataBits: change.dataBits ?? this.settings.dataBits,
        parity: change.parity ?? this.settings.parity, stopBits: change.stopBits ?? this.settings.stopBits,
        dtr: change.dtr ?? this.settings.dtr, rts: change.rts ?? this.settings.rts,
      };
      const reopen = next.dataBits !== this.settings.dataBits || next.parity !== this.settings.parity || next.stopBits !== this.settings.stopBits;
      const prev = this.settings;
      this.settings = next;
      const h = this.handle;
      if (this._state !== 'open' || !h) return; // applied when the tty comes back
      try {
        if (reopen) {
          this.handle = undefined;
          await h.close();
          await this.openHandle(this._path);
          return;
        }
        if (next.baud !== prev.baud) await h.setBaud(next.baud);
        const brk = change.brk ?? this.brk;
        if (next.dtr !== prev.dtr || next.rts !== prev.rts || brk !== this.brk) {
          await h.setSignals({ dtr: next.dtr, rts: next.rts, brk });
          this.brk = brk;
        }
      } catch (e) {
        if (reopen && !this.handle) this.vanished(`reopening with new settings failed: ${(e as Error).message}`);
        throw e;
      }
    });
  }

  /** Hot-plug or poll: notices a tty that went away silently, and reopens one that came back. */
  check(): void {
    if (this._state === 'open' && this._path && !this.backend.exists(this._path)) {
      this.vanished('no longer there');
      return;
    }
    if (this._state !== 'waiting' || this.reopening) return;
    const where = this.resolve();
    if (!('path' in where)) {
      if (where.final) void this.close(where.missing);
      return;
    }
    this.reopening = true;
    void this.enqueue(async () => {
      if (this._state !== 'waiting') return;
      try {
        await this.openHandle(where.path);
        this._path = where.path;
        this.setState('open', `reopened ${where.path}`);
        this.flush();
      } catch {
        // not ready yet (udev still setting permissions, board still booting): try again on the next check
      }
    }).finally(() => { this.reopening = false; });
  }

  /** Back-pressure from the consumer: stop reading the tty until resume(). */
  pause(): void {
    this.paused = true;
    this.handle?.pause();
  }

  resume(): void {
    this.paused = false;
    this.handle?.resume();
  }

  /** Closes for good; emits 'closed' with `detail` (unless it was already closed). */
  async close(detail?: string): Promise<void> {
    if (this._state === 'closed') return;
    const wasNew = this._state === 'new';
    this.flush();
    this._state = 'closed';
    const h = this.handle;
    this.handle = undefined;
    await h?.close().catch(() => {});
    if (!wasNew) this.emit('state', 'closed', detail);
  }

  private enqueue<T>(job: () => Promise<T>): Promise<T> {
    const run = this.ops.then(job);
    this.ops = run.catch(() => {});
    return run;
  }
}
