/**
 * The client half of a resumable bench session (server/claim-set.ts is the bench half). Per lane (0: the
 * control stream, 1: the data stream) it counts the URB messages sent (submit, cancel) and the URB answers
 * received (complete, error naming a URB), and keeps each sent message until its URB is answered. After a
 * dropped connection the bench says how many it received; exactly the ones after that are sent again, in
 * their order, so no URB is lost and none runs twice. Messages made while offline wait here the same way.
 */
import type { LaneCounts, Message } from '../../server/protocol/messages.js';

export type Lane = 0 | 1;
type UrbMessage = Extract<Message, { t: 'submit' | 'cancel' }>;

interface Entry {
  /** Its number on the lane; undefined: made while offline, not sent yet. */
  seq?: number;
  m: UrbMessage;
}

export class UrbLanes {
  /** The bench's token for the session (its welcome); undefined: nothing to resume. */
  token?: string;
  /** Answers received per lane, over the whole session (what `ack` and a resume's `acked` say). */
  readonly received: LaneCounts = [0, 0];
  private readonly sent: LaneCounts = [0, 0];
  private readonly log: [Entry[], Entry[]] = [[], []];

  /** Notes a URB message: sent now (`sentNow`), or waiting for the connection to come back. */
  record(lane: Lane, m: UrbMessage, sentNow: boolean): void {
    this.log[lane].push({ seq: sentNow ? ++this.sent[lane] : undefined, m });
  }

  /** Forgets messages whose URB is answered (called now and then; the log holds only URBs in flight). */
  prune(pending: (dev: string, id: number) => boolean): void {
    for (const lane of [0, 1] as const) {
      if (this.log[lane].length < 64) continue;
      this.log[lane] = this.log[lane].filter((e) => pending(e.m.dev, e.m.id));
    }
  }

  /**
   * The bench resumed the session and got `received` of our messages per lane: returns, in order, the
   * ones it did not get (and those made offline) whose URB still waits, numbered on from there.
   */
  resend(received: LaneCounts, pending: (dev: string, id: number) => boolean): { lane: Lane; m: UrbMessage }[] {
    const out: { lane: Lane; m: UrbMessage }[] = [];
    for (const lane of [0, 1] as const) {
      const keep: Entry[] = [];
      this.sent[lane] = received[lane];
      for (const e of this.log[lane]) {
        if (!pending(e.m.dev, e.m.id)) continue;
        if (e.seq !== undefined && e.seq <= received[lane]) continue; // the bench has it
        e.seq = ++this.sent[lane];
        out.push({ lane, m: e.m });
        keep.push(e);
      }
      this.log[lane] = keep;
    }
    return out;
  }

  /** A new session (the bench did not resume ours): nothing carries over. */
  reset(token?: string): void {
    this.token = token;
    this.received[0] = this.received[1] = 0;
    this.sent[0] = this.sent[1] = 0;
    this.log[0] = [];
    this.log[1] = [];
  }
}
