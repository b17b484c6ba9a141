/**
 * The kernel's side of a USB/IP connection, for tests of the bridge: it submits and unlinks URBs the
 * way vhci_hcd (vhci_tx.c) does and checks every reply the way vhci_rx.c would, recording what the
 * real kernel would punish:
 * - a RET_SUBMIT for a seqnum it has no URB for (never sent, already answered, or given back by a
 *   RET_UNLINK): vhci drops the device ("cannot find a urb of seqnum");
 * - actual_length above transfer_buffer_length: vhci drops the device;
 * - a RET_UNLINK(0) while the URB is still outstanding: vhci gives the URB back with status 0 and no
 *   data, so the driver silently loses a transfer;
 * - a RET_UNLINK for an unlink it never sent (vhci only logs this).
 * Also an in-memory duplex pair with real back-pressure, for unit tests.
 */
import { Duplex } from 'node:stream';
import {
  encodeCmdSubmit,
  encodeCmdUnlink,
  UsbipDirection,
  UsbipReply,
  UsbipReplyDecoder,
  UsbipRetSubmit,
  UsbipRetUnlink,
} from '../../extension/core/usbip/codec.js';
import { encodeSetup, SetupPacket } from '../../server/protocol/urb.js';
import { USBIP_DIR_IN, USBIP_DIR_OUT, USBIP_URB_DIR_IN } from '../../extension/core/usbip/constants.js';

export type Answer =
  | { kind: 'submitted'; ret: UsbipRetSubmit }
  /** Given back by a RET_UNLINK (status as the RET_UNLINK carried it). */
  | { kind: 'unlinked'; status: number };

export interface SubmitArgs {
  /** Endpoint number 0..15 */
  ep: number;
  dir: 'in' | 'out';
  /** IN: transfer_buffer_length. OUT: ignored (data.length). */
  length?: number;
  data?: Buffer;
  setup?: SetupPacket;
  flags?: number;
  /** Iso packets (each `length / n` bytes) for an isochronous URB. */
  isoPackets?: number;
}

export interface Submitted {
  seqnum: number;
  done: Promise<Answer>;
}

interface Outstanding {
  direction: UsbipDirection;
  length: number;
  resolve: (a: Answer) => void;
}

export class FakeVhci {
  private nextSeqnum = 1;
  private readonly outstanding = new Map<number, Outstanding>();
  private readonly unlinks = new Map<number, { target: number; resolve: (r: UsbipRetUnlink) => void }>();
  private readonly decoder: UsbipReplyDecoder;
  /** Everything vhci would have punished (see the file comment); tests assert it stays empty. */
  readonly violations: string[] = [];
  readonly replies: UsbipReply[] = [];
  /** seqnum of each CMD_SUBMIT → how many answers it got (must end at exactly 1). */
  readonly answers = new Map<number, number>();
  readonly ended: Promise<void>;
  submitted = 0;

  constructor(
    readonly socket: Duplex,
    readonly devid: number,
  ) {
    this.decoder = new UsbipReplyDecoder({ directionOf: (seqnum) => this.outstanding.get(seqnum)?.direction });
    socket.on('data', (chunk: Buffer) => {
      this.decoder.push(chunk);
      try {
        for (let m = this.decoder.next(); m; m = this.decoder.next()) this.onReply(m);
      } catch (e) {
        this.violations.push((e as Error).message);
        socket.destroy();
      }
    });
    socket.on('error', () => {});
    this.ended = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.resume();
  }

  private onReply(m: UsbipReply): void {
    this.replies.push(m);
    if (m.kind === 'retSubmit') {
      const o = this.outstanding.get(m.seqnum)!;
      this.outstanding.delete(m.seqnum);
      if (m.actual_length > o.length) this.violations.push(`RET_SUBMIT seqnum ${m.seqnum}: actual_length ${m.actual_length} > transfer_buffer_length ${o.length}`);
      this.answered(m.seqnum);
      o.resolve({ kind: 'submitted', ret: m });
      return;
    }
    const u = this.unlinks.get(m.seqnum);
    if (!u) {
      this.violations.push(`RET_UNLINK for unknown unlink seqnum ${m.seqnum}`);
      return;
    }
    this.unlinks.delete(m.seqnum);
    const target = this.outstanding.get(u.target);
    if (target) {
      if (m.status === 0) this.violations.push(`RET_UNLINK(0) for seqnum ${u.target} while it was still outstanding (its data would be lost)`);
      this.outstanding.delete(u.target);
      this.answered(u.target);
      target.resolve({ kind: 'unlinked', status: m.status });
    }
    u.resolve(m);
  }

  private answered(seqnum: number): void {
    this.answers.set(seqnum, (this.answers.get(seqnum) ?? 0) + 1);
  }

  get pending(): number {
    return this.outstanding.size;
  }

  /** Writes raw bytes (for malformed-input tests). */
  write(buf: Buffer): void {
    this.socket.write(buf);
  }

  /** Builds a CMD_SUBMIT as vhci_tx.c does and sends it (or returns it unsent with `send: false`). */
  submit(a: SubmitArgs, options: { devid?: number; seqnum?: number } = {}): Submitted {
    const seqnum = options.seqnum ?? this.nextSeqnum++;
    const direction = a.dir === 'in' ? USBIP_DIR_IN : USBIP_DIR_OUT;
    const data = a.dir === 'out' ? (a.data ?? Buffer.alloc(0)) : undefined;
    const length = a.dir === 'out' ? data!.length : (a.length ?? 0);
    const iso = a.isoPackets
      ? Array.from({ length: a.isoPackets }, (_, i) => ({ offset: i * Math.floor(length / a.isoPackets!), length: Math.floor(length / a.isoPackets!), actual_length: 0, status: 0 }))
      : undefined;
    const buf = encodeCmdSubmit({
      seqnum,
      devid: options.devid ?? this.devid,
      direction,
      ep: a.ep,
      transfer_flags: (a.flags ?? 0) | (direction === USBIP_DIR_IN ? USBIP_URB_DIR_IN : 0),
      transfer_buffer_length: length,
      number_of_packets: iso ? iso.length : 0,
      setup: a.setup ? encodeSetup(a.setup) : undefined,
      data,
      iso_packet_descriptor: iso,
    });
    const done = new Promise<Answer>((resolve) => this.outstanding.set(seqnum, { direction, length, resolve }));
    this.submitted++;
    this.socket.write(buf);
    return { seqnum, done };
  }

  /** CMD_UNLINK of `target`; resolves with the RET_UNLINK. */
  unlink(target: number): { seqnum: number; done: Promise<UsbipRetUnlink> } {
    const seqnum = this.nextSeqnum++;
    const done = new Promise<UsbipRetUnlink>((resolve) => this.unlinks.set(seqnum, { target, resolve }));
    this.socket.write(encodeCmdUnlink({ seqnum, devid: this.devid, unlink_seqnum: target }));
    return { seqnum, done };
  }

  /** A control URB on endpoint 0; the USB/IP direction follows the setup packet (OUT when wLength is 0). */
  control(setup: SetupPacket, data?: Buffer): Submitted {
    const isIn = (setup.bmRequestType & 0x80) !== 0 && setup.wLength > 0;
    return this.submit(isIn ? { ep: 0, dir: 'in', length: setup.wLength, setup } : { ep: 0, dir: 'out', data: data ?? Buffer.alloc(0), setup });
  }

  /** Submits and waits; fails the test if the URB was unlinked instead. */
  async run(a: SubmitArgs): Promise<UsbipRetSubmit> {
    const answer = await this.submit(a).done;
    if (answer.kind !== 'submitted') throw new Error(`URB was given back by RET_UNLINK(${answer.status})`);
    return answer.ret;
  }

  async runControl(setup: SetupPacket, data?: Buffer): Promise<UsbipRetSubmit> {
    const answer = await this.control(setup, data).done;
    if (answer.kind !== 'submitted') throw new Error(`control URB was given back by RET_UNLINK(${answer.status})`);
    return answer.ret;
  }

  close(): void {
    this.socket.end();
  }
}

export const GET_DESCRIPTOR = (type: number, index: number, length: number, langid = 0): SetupPacket => ({
  bmRequestType: 0x80,
  bRequest: 6,
  wValue: (type << 8) | index,
  wIndex: langid,
  wLength: length,
});

/**
 * Two Duplex ends wired to each other in memory. A write completes only once the other end has
 * room (its readable buffer below `highWaterMark`), so a reader that stops reading makes the writer's
 * write() return false, as a full socket would.
 */
export function memoryDuplexPair(highWaterMark = 64 * 1024): [Duplex, Duplex] {
  class End extends Duplex {
    peer!: End;
    private waiting?: (e?: Error | null) => void;
    constructor() {
      super({ allowHalfOpen: false, highWaterMark, readableHighWaterMark: highWaterMark, writableHighWaterMark: highWaterMark });
    }
    override _write(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
      if (this.peer.destroyed || this.peer.readableEnded) return cb(new Error('EPIPE: the other end is closed'));
      if (this.peer.push(chunk)) cb();
      else this.peer.waiting = cb;
    }
    override _read(): void {
      const w = this.waiting;
      this.waiting = undefined;
      w?.();
    }
    override _final(cb: (e?: Error | null) => void): void {
      if (!this.peer.destroyed) this.peer.push(null);
      cb();
    }
    override _destroy(err: Error | null, cb: (e?: Error | null) => void): void {
      if (!this.peer.destroyed && !this.peer.readableEnded) this.peer.push(null);
      const w = this.waiting;
      this.waiting = undefined;
      w?.(new Error('destroyed'));
      cb(err);
    }
  }
  const a = new End();
  const b = new End();
  a.peer = b;
  b.peer = a;
  return [a, b];
}
