/**
 * The bench's "tty" for a simulated serial board: a small host-side CDC-ACM driver (what the kernel's
 * cdc_acm does for a real board) that talks to the very board object the USB path uses, through its
 * USB transfers — line coding and control-line requests on endpoint 0, bulk IN/OUT for data. So the
 * board behaves the same whether a client claims it over USB or streams its serial port.
 */
import { EventEmitter } from 'node:events';
import { encodeSetup, UrbRequest, UrbStatus } from '../protocol/urb.js';
import type { SerialLine } from '../protocol/messages.js';
import type { SimulatedBackend } from '../usb/simulated.js';
import { SERIAL_EP_IN, SERIAL_EP_OUT, SimSerialBoard } from '../usb/sim-serial-board.js';
import type { SerialBackend, SerialPortEvents, SerialPortHandle, SerialSignals } from '../shared/serial/backend.js';

/** CDC PSTN 1.2, table 13 / table 17. */
const SET_LINE_CODING = 0x20;
const SET_CONTROL_LINE_STATE = 0x22;
const SEND_BREAK = 0x23;
const CHAR_FORMAT: Record<number, number> = { 1: 0, 1.5: 1, 2: 2 };
const PARITY_TYPE: Record<string, number> = { none: 0, odd: 1, even: 2, mark: 3, space: 4 };
const READ_SIZE = 4096;

export const SIM_TTY_PREFIX = 'sim:';

class SimSerialPort extends EventEmitter<SerialPortEvents> implements SerialPortHandle {
  private readonly stop = new AbortController();
  private closed = false;
  private paused?: { promise: Promise<void>; resume: () => void };
  private line: SerialLine;

  constructor(private readonly board: SimSerialBoard, line: SerialLine) {
    super();
    this.line = { ...line };
  }

  async start(): Promise<void> {
    await this.control(SET_LINE_CODING, 0, lineCoding(this.line));
    void this.readLoop();
  }

  private async control(request: number, value: number, data?: Uint8Array): Promise<void> {
    const r = await this.board.transfer({
      type: 'control', ep: 0, setup: encodeSetup({ bmRequestType: 0x21, bRequest: request, wValue: value, wIndex: 0, wLength: data?.length ?? 0 }),
      data, timeout: 1000,
    }, this.stop.signal);
    if (r.status === UrbStatus.ENODEV) throw new Error('board unplugged');
    if (r.status !== UrbStatus.OK) throw new Error(`board refused CDC request 0x${request.toString(16)} (status ${r.status})`);
  }

  private async readLoop(): Promise<void> {
    while (!this.closed) {
      if (this.paused) await this.paused.promise;
      const req: UrbRequest = { type: 'bulk', ep: SERIAL_EP_IN, length: READ_SIZE };
      const r = await this.board.transfer(req, this.stop.signal);
      if (this.closed) return;
      if (r.status === UrbStatus.OK) {
        if (r.data.length > 0) this.emit('data', Buffer.from(r.data));
        continue;
      }
      this.emit('vanished', r.status === UrbStatus.ENODEV ? 'board unplugged' : `read failed (status ${r.status})`);
      return;
    }
  }

  async write(data: Uint8Array): Promise<void> {
    const r = await this.board.transfer({ type: 'bulk', ep: SERIAL_EP_OUT, data }, this.stop.signal);
    if (r.status !== UrbStatus.OK) throw new Error(r.status === UrbStatus.ENODEV ? 'board unplugged' : `write failed (status ${r.status})`);
  }

  async setBaud(baud: number): Promise<void> {
    this.line = { ...this.line, baud };
    await this.control(SET_LINE_CODING, 0, lineCoding(this.line));
  }

  async setSignals(s: Required<SerialSignals>): Promise<void> {
    await this.control(SET_CONTROL_LINE_STATE, (s.dtr ? 1 : 0) | (s.rts ? 2 : 0));
    await this.control(SEND_BREAK, s.brk ? 0xffff : 0);
  }

  pause(): void {
    if (this.paused) return;
    let resume!: () => void;
    const promise = new Promise<void>((r) => { resume = r; });
    this.paused = { promise, resume };
  }

  resume(): void {
    const p = this.paused;
    this.paused = undefined;
    p?.resume();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.resume();
    this.stop.abort();
    // Like cdc_acm on close: drop DTR/RTS, so the next open's rising DTR greets the new host again.
    if (!this.board.unplugged) {
      await this.board.transfer({
        type: 'control', ep: 0, setup: encodeSetup({ bmRequestType: 0x21, bRequest: SET_CONTROL_LINE_STATE, wValue: 0, wIndex: 0, wLength: 0 }),
        timeout: 1000,
      }, new AbortController().signal);
    }
  }
}

/** CDC line coding: dwDTERate (LE), bCharFormat, bParityType, bDataBits. */
function lineCoding(l: SerialLine): Buffer {
  const b = Buffer.alloc(7);
  b.writeUInt32LE(l.baud, 0);
  b[4] = CHAR_FORMAT[l.stopBits];
  b[5] = PARITY_TYPE[l.parity];
  b[6] = l.dataBits;
  return b;
}

/** `sim:<id>` paths open the simulated boards; any other path (a config-shared tty) goes to `other`. */
export class SimSerialBackend implements SerialBackend {
  constructor(private readonly usb: SimulatedBackend, private readonly other?: SerialBackend) {}

  async open(path: string, line: SerialLine): Promise<SerialPortHandle> {
    if (!path.startsWith(SIM_TTY_PREFIX) && this.other) return this.other.open(path, line);
    const board = this.usb.board(path.slice(SIM_TTY_PREFIX.length));
    if (!this.exists(path) || !(board instanceof SimSerialBoard)) throw new Error(`cannot open ${path}: no such tty`);
    const port = new SimSerialPort(board, line);
    await port.start();
    return port;
  }

  exists(path: string): boolean {
    if (!path.startsWith(SIM_TTY_PREFIX)) return this.other?.exists(path) ?? false;
    return this.usb.ttyOf(path.slice(SIM_TTY_PREFIX.length)) === path;
  }
}
