/**
 * What one client session holds on the bench — claimed devices, their URBs in flight, and the URB answers
 * the client has not acknowledged yet — kept apart from the connection so it can outlive it: when the link
 * drops, the devices stay claimed and the URBs keep running; a new connection that names this set's token
 * takes it over, gets every answer it missed, and learns which of its URB messages never arrived (lane
 * counts, see LaneCounts in protocol/messages.ts). No URB runs twice: the client resends only what the
 * counts say the bench never received, and a URB id already known here is refused.
 */
import { randomBytes } from 'node:crypto';
import type { BenchMessage, LaneCounts } from './protocol/messages.js';
import type { OpenedDevice } from './usb/backend.js';

export interface Claim {
  device: OpenedDevice;
  inflight: Map<number, AbortController>;
  /** URBs completed and bytes they moved (both ways), for `remote-usb-server top`. */
  urbs: number;
  bytes: number;
}

/**
 * Most bytes of unacknowledged answers kept for a resume. The client acknowledges every 100 ms, so this
 * holds about a quarter of a second of a fast stream; past it the set stops being resumable (a drop then
 * ends the session as before) rather than keep more.
 */
export const MAX_UNACKED_BYTES = 32 * 1024 * 1024;

type Lane = 0 | 1;
type UrbAnswer = Extract<BenchMessage, { t: 'complete' | 'error' }>;

export class ClaimSet {
  readonly token = randomBytes(16).toString('hex');
  readonly claims = new Map<string, Claim>();
  /** OUT data plus IN lengths of the URBs in flight, on all devices. */
  bytesInFlight = 0;
  /** URB messages received from the client, per lane (the client counts what it sent the same way). */
  readonly received: LaneCounts = [0, 0];
  /** URB answers sent (or held for sending) to the client, per lane. */
  private readonly sent: LaneCounts = [0, 0];
  private readonly unacked: [{ seq: number; m: UrbAnswer; bytes: number }[], { seq: number; m: UrbAnswer; bytes: number }[]] = [[], []];
  private unackedBytes = 0;
  /** False once more than MAX_UNACKED_BYTES went unacknowledged: a drop then ends the session. */
  resumable = true;
  /** Where answers go now; undefined while no connection carries this set (they are kept for the resume). */
  private sink?: (lane: Lane, m: UrbAnswer) => void;

  /** Sends an answer to a URB on its lane, and keeps it until the client acknowledges it. */
  answer(lane: Lane, m: UrbAnswer): void {
    const seq = ++this.sent[lane];
    if (this.resumable) {
      const bytes = 64 + (m.t === 'complete' ? (m.data?.length ?? 0) : m.message.length);
      this.unacked[lane].push({ seq, m, bytes });
      this.unackedBytes += bytes;
      if (this.unackedBytes > MAX_UNACKED_BYTES) {
        this.resumable = false;
        this.unacked[0] = [];
        this.unacked[1] = [];
        this.unackedBytes = 0;
      }
    }
    this.sink?.(lane, m);
  }

  /** The client has received `lanes` answers per lane so far. */
  ack(lanes: LaneCounts): void {
    for (const lane of [0, 1] as const) {
      const list = this.unacked[lane];
      let n = 0;
      while (n < list.length && list[n].seq <= lanes[lane]) this.unackedBytes -= list[n++].bytes;
      if (n > 0) this.unacked[lane] = list.slice(n);
    }
  }

  /** A connection carries this set now: answers the client has not got (after `acked`) go out first. */
  attach(sink: (lane: Lane, m: UrbAnswer) => void, acked: LaneCounts = [0, 0]): void {
    this.ack(acked);
    this.sink = sink;
    for (const lane of [0, 1] as const) for (const e of this.unacked[lane]) sink(lane, e.m);
  }

  /** The connection is gone: answers are only kept from now on. */
  detach(): void {
    this.sink = undefined;
  }

  /** URBs in flight on all devices. */
  get urbsInFlight(): number {
    let n = 0;
    for (const c of this.claims.values()) n += c.inflight.size;
    return n;
  }

  /** What this set keeps in memory (tests and diagnostics: it must stay bounded). */
  get unackedState(): { answers: number; bytes: number } {
    return { answers: this.unacked[0].length + this.unacked[1].length, bytes: this.unackedBytes };
  }
}
