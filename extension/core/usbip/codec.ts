/**
 * The USB/IP URB protocol as vhci_hcd speaks it once a device is attached: it sends CMD_SUBMIT and
 * CMD_UNLINK, we answer RET_SUBMIT and RET_UNLINK. This module is the only place that reads or writes
 * these bytes (all big-endian; the setup packet inside is USB's little-endian).
 *
 * Sources: Documentation/usb/usbip_protocol.rst, drivers/usb/usbip/usbip_common.{h,c}, vhci_tx.c
 * (what the kernel sends), vhci_rx.c (what it accepts back), stub_rx.c / stub_tx.c (the kernel's own
 * server side, the behaviour vhci is written against).
 *
 * Every message starts with the same 48-byte header (struct usbip_header):
 *
 *   off  size  struct usbip_header_basic
 *   0x00  4    command     u32   1 CMD_SUBMIT, 2 CMD_UNLINK, 3 RET_SUBMIT, 4 RET_UNLINK
 *   0x04  4    seqnum      u32   per connection; RET_SUBMIT echoes the CMD_SUBMIT's, RET_UNLINK the CMD_UNLINK's
 *   0x08  4    devid       u32   (busnum << 16) | devnum as given to `attach`; 0 in replies
 *   0x0c  4    direction   u32   0 USBIP_DIR_OUT, 1 USBIP_DIR_IN; 0 in replies
 *   0x10  4    ep          u32   endpoint number 0..15; 0 in replies and in CMD_UNLINK
 *
 *   off  size  CMD_SUBMIT                  RET_SUBMIT                CMD_UNLINK          RET_UNLINK
 *   0x14  4    transfer_flags u32          status s32                unlink_seqnum u32   status s32
 *   0x18  4    transfer_buffer_length u32  actual_length u32         padding             padding
 *   0x1c  4    start_frame s32             start_frame s32           padding             padding
 *   0x20  4    number_of_packets s32       number_of_packets s32     padding             padding
 *   0x24  4    interval s32                error_count s32           padding             padding
 *   0x28  8    setup[8] (USB, little-end.) padding                   padding             padding
 *
 * then, for CMD_SUBMIT OUT, transfer_buffer_length bytes of data; for RET_SUBMIT of an IN URB,
 * actual_length bytes; then, for an isochronous URB, number_of_packets descriptors of 16 bytes
 * (struct usbip_iso_packet_descriptor: offset, length, actual_length u32, status s32).
 *
 * The kernel declares the length fields `__s32`; we read them as u32 so that a corrupt length shows as
 * the huge number it is and fails the limit check (we never allocate from an unchecked length).
 */
import {
  MAX_TRANSFER_BUFFER_LENGTH,
  USB_SETUP_PACKET_SIZE,
  USBIP_CMD_SUBMIT,
  USBIP_CMD_UNLINK,
  USBIP_DIR_IN,
  USBIP_DIR_OUT,
  USBIP_HEADER_SIZE,
  USBIP_ISO_PACKET_DESCRIPTOR_SIZE,
  USBIP_MAX_ISO_PACKETS,
  USBIP_NUMBER_OF_PACKETS_NON_ISO,
  USBIP_RET_SUBMIT,
  USBIP_RET_UNLINK,
  usbipCommandName,
} from './constants.js';
import { ByteQueue } from '../../../server/shared/byte-queue.js';

// ---------------------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------------------

export type UsbipDirection = typeof USBIP_DIR_OUT | typeof USBIP_DIR_IN;

/** A malformed or unexpected USB/IP stream; the connection cannot be resynchronised after one. */
export class UsbipProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsbipProtocolError';
  }
}

/** struct usbip_header_basic, less `command` (each message type below implies it). */
export interface UsbipHeaderBasic {
  seqnum: number;
  devid: number;
  direction: UsbipDirection;
  ep: number;
}

/** struct usbip_iso_packet_descriptor */
export interface UsbipIsoPacketDescriptor {
  offset: number;
  length: number;
  actual_length: number;
  status: number;
}

interface CmdSubmitBase extends UsbipHeaderBasic {
  transfer_flags: number;
  transfer_buffer_length: number;
  start_frame: number;
  /** As sent: 0 or -1 (0xffffffff) for a non-ISO URB, the packet count for an ISO one. */
  number_of_packets: number;
  interval: number;
  /** The 8-byte setup packet (zeros unless ep 0), as the kernel sent it; parseSetup reads its fields. */
  setup: Buffer;
  /** OUT: the transfer_buffer_length bytes to send to the device. IN: empty. */
  data: Buffer;
}

/** USBIP_CMD_SUBMIT of a control, bulk or interrupt URB. */
export interface UsbipCmdSubmit extends CmdSubmitBase {
  kind: 'submit';
}

/**
 * USBIP_CMD_SUBMIT of an isochronous URB: fully decoded (so the stream stays in step), but a kind of
 * its own so a backend without isochronous transfers can refuse it in one place (see encodeRetSubmit).
 */
export interface UsbipCmdSubmitIso extends CmdSubmitBase {
  kind: 'isoSubmit';
  iso_packet_descriptor: UsbipIsoPacketDescriptor[];
}

/** USBIP_CMD_UNLINK: cancel the URB whose CMD_SUBMIT had seqnum `unlink_seqnum`. */
export interface UsbipCmdUnlink extends UsbipHeaderBasic {
  kind: 'unlink';
  unlink_seqnum: number;
}

/** What vhci_hcd sends us. */
export type UsbipCommand = UsbipCmdSubmit | UsbipCmdSubmitIso | UsbipCmdUnlink;

/** USBIP_RET_SUBMIT as decoded (by tests and fake kernels). */
export interface UsbipRetSubmit extends UsbipHeaderBasic {
  kind: 'retSubmit';
  status: number;
  actual_length: number;
  start_frame: number;
  number_of_packets: number;
  error_count: number;
  /** IN: actual_length bytes. OUT: empty. */
  data: Buffer;
  iso_packet_descriptor: UsbipIsoPacketDescriptor[];
}

/** USBIP_RET_UNLINK as decoded (by tests and fake kernels). */
export interface UsbipRetUnlink extends UsbipHeaderBasic {
  kind: 'retUnlink';
  status: number;
}

/** What we send vhci_hcd. */
export type UsbipReply = UsbipRetSubmit | UsbipRetUnlink;

// ---------------------------------------------------------------------------------------------------
// Layout
// ---------------------------------------------------------------------------------------------------

// struct usbip_header_basic
const OFF_COMMAND = 0x00;
const OFF_SEQNUM = 0x04;
const OFF_DEVID = 0x08;
const OFF_DIRECTION = 0x0c;
const OFF_EP = 0x10;
// struct usbip_header_cmd_submit
const OFF_TRANSFER_FLAGS = 0x14;
const OFF_TRANSFER_BUFFER_LENGTH = 0x18;
const OFF_START_FRAME = 0x1c; // also RET_SUBMIT
const OFF_NUMBER_OF_PACKETS = 0x20; // also RET_SUBMIT
const OFF_INTERVAL = 0x24;
const OFF_SETUP = 0x28;
// struct usbip_header_ret_submit
const OFF_STATUS = 0x14; // also RET_UNLINK
const OFF_ACTUAL_LENGTH = 0x18;
const OFF_ERROR_COUNT = 0x24;
// struct usbip_header_cmd_unlink
const OFF_UNLINK_SEQNUM = 0x14;
// struct usbip_iso_packet_descriptor
const ISO_OFF_OFFSET = 0x0;
const ISO_OFF_LENGTH = 0x4;
const ISO_OFF_ACTUAL_LENGTH = 0x8;
const ISO_OFF_STATUS = 0xc;

/** Highest endpoint number (usb_pipeendpoint() has four bits; stub_rx.c refuses more). */
const MAX_EP = 15;

const EMPTY = Buffer.alloc(0);

function hex32(value: number): string {
  return `0x${value.toString(16).padStart(8, '0')}`;
}

// ---------------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------------

/** Writes a 32-bit field; accepts either signed or unsigned spelling (-1 and 0xffffffff are the same). */
function put32(buf: Buffer, offset: number, value: number, field: string): void {
  if (!Number.isInteger(value) || value < -0x80000000 || value > 0xffffffff) {
    throw new RangeError(`${field} ${value} does not fit in 32 bits`);
  }
  buf.writeUInt32BE(value >>> 0, offset);
}

function putBasic(buf: Buffer, command: number, h: UsbipHeaderBasic): void {
  put32(buf, OFF_COMMAND, command, 'command');
  put32(buf, OFF_SEQNUM, h.seqnum, 'seqnum');
  put32(buf, OFF_DEVID, h.devid, 'devid');
  put32(buf, OFF_DIRECTION, h.direction, 'direction');
  put32(buf, OFF_EP, h.ep, 'ep');
}

function putIsoDescriptors(buf: Buffer, offset: number, descriptors: readonly UsbipIsoPacketDescriptor[]): void {
  for (const d of descriptors) {
    put32(buf, offset + ISO_OFF_OFFSET, d.offset, 'iso offset');
    put32(buf, offset + ISO_OFF_LENGTH, d.length, 'iso length');
    put32(buf, offset + ISO_OFF_ACTUAL_LENGTH, d.actual_length, 'iso actual_length');
    put32(buf, offset + ISO_OFF_STATUS, d.status, 'iso status');
    offset += USBIP_ISO_PACKET_DESCRIPTOR_SIZE;
  }
}

/** One buffer for header + payload, allocated once; the header (and its padding) starts zeroed. */
function allocMessage(payloadLength: number): Buffer {
  const buf = Buffer.allocUnsafe(USBIP_HEADER_SIZE + payloadLength);
  buf.fill(0, 0, USBIP_HEADER_SIZE);
  return buf;
}

function checkIsoCount(number_of_packets: number, descriptors: readonly UsbipIsoPacketDescriptor[]): void {
  if (descriptors.length > 0 && descriptors.length !== number_of_packets) {
    throw new RangeError(
      `number_of_packets ${number_of_packets} does not match ${descriptors.length} iso packet descriptors`,
    );
  }
}

export interface RetSubmitInput extends UsbipHeaderBasic {
  /** 0 or a negative errno (UrbStatus). */
  status: number;
  /** Bytes transferred: for IN, the length of `data`; for OUT, how many bytes the device took. */
  actual_length: number;
  start_frame?: number;
  /** 0 for every non-ISO URB (what Linux's stub sends); defaults to 0. */
  number_of_packets?: number;
  error_count?: number;
  /** IN only: exactly actual_length bytes. Omit (or leave empty) for OUT and for errors. */
  data?: Buffer;
  iso_packet_descriptor?: readonly UsbipIsoPacketDescriptor[];
}

/**
 * USBIP_RET_SUBMIT: the result of the CMD_SUBMIT with the same seqnum, as one Buffer.
 *
 * What vhci_rx.c does with it (so what the bridge must get right):
 * - It finds the URB by seqnum alone; devid, direction and ep are not looked at (Linux's stub sends 0).
 *   A seqnum it does not know (never submitted, already answered, or already given back by a
 *   RET_UNLINK) makes vhci drop the whole device ("cannot find a urb of seqnum").
 * - It reads actual_length bytes of data only if the URB is IN (by its own pipe, not by our
 *   `direction` field), and drops the device if actual_length > the URB's transfer_buffer_length.
 * - status becomes urb->status as is (0 or a negative errno, UrbStatus).
 * - number_of_packets is copied into the URB: send 0 for non-ISO URBs, as Linux's stub does.
 * - It reads iso descriptors only for ISO URBs with number_of_packets != 0. To refuse an ISO URB
 *   cleanly: status < 0, actual_length 0, number_of_packets 0, no descriptors.
 */
export function encodeRetSubmit(r: RetSubmitInput): Buffer {
  const data = r.data ?? EMPTY;
  const iso = r.iso_packet_descriptor ?? [];
  const number_of_packets = r.number_of_packets ?? 0;
  if (data.length > 0 && data.length !== r.actual_length) {
    throw new RangeError(`RET_SUBMIT data is ${data.length} bytes but actual_length is ${r.actual_length}`);
  }
  checkIsoCount(number_of_packets, iso);
  const buf = allocMessage(data.length + iso.length * USBIP_ISO_PACKET_DESCRIPTOR_SIZE);
  putBasic(buf, USBIP_RET_SUBMIT, r);
  put32(buf, OFF_STATUS, r.status, 'status');
  put32(buf, OFF_ACTUAL_LENGTH, r.actual_length, 'actual_length');
  put32(buf, OFF_START_FRAME, r.start_frame ?? 0, 'start_frame');
  put32(buf, OFF_NUMBER_OF_PACKETS, number_of_packets, 'number_of_packets');
  put32(buf, OFF_ERROR_COUNT, r.error_count ?? 0, 'error_count');
  data.copy(buf, USBIP_HEADER_SIZE);
  putIsoDescriptors(buf, USBIP_HEADER_SIZE + data.length, iso);
  return buf;
}

export interface RetUnlinkInput extends UsbipHeaderBasic {
  /** UrbStatus.ECONNRESET if we cancelled the URB, 0 if it had already completed. */
  status: number;
}

/**
 * USBIP_RET_UNLINK, answering the CMD_UNLINK whose seqnum this carries (not the unlinked URB's).
 *
 * vhci_rx.c: it looks up its pending unlink by this seqnum (unknown ones are logged and ignored), then
 * the target URB by unlink_seqnum. If that URB is still waiting, it is given back with *this* status
 * — so send -ECONNRESET (UrbStatus.ECONNRESET) and never a RET_SUBMIT for it afterwards (that
 * unknown seqnum would drop the device). If its RET_SUBMIT already went out, send status 0; vhci has
 * given the URB back and ignores this reply. Documentation/usb/usbip_protocol.rst shows both cases.
 */
export function encodeRetUnlink(r: RetUnlinkInput): Buffer {
  const buf = allocMessage(0);
  putBasic(buf, USBIP_RET_UNLINK, r);
  put32(buf, OFF_STATUS, r.status, 'status');
  return buf;
}

export interface CmdSubmitInput extends UsbipHeaderBasic {
  transfer_flags: number;
  transfer_buffer_length: number;
  start_frame?: number;
  /** Defaults to 0 (what Linux's vhci sends for non-ISO URBs), or the descriptor count if given. */
  number_of_packets?: number;
  interval?: number;
  /** 8 bytes; zeros if omitted. */
  setup?: Buffer;
  /** OUT only: exactly transfer_buffer_length bytes. */
  data?: Buffer;
  iso_packet_descriptor?: readonly UsbipIsoPacketDescriptor[];
}

/** USBIP_CMD_SUBMIT as vhci_tx.c builds it (for tests and fake kernels). */
export function encodeCmdSubmit(c: CmdSubmitInput): Buffer {
  const data = c.data ?? EMPTY;
  const iso = c.iso_packet_descriptor ?? [];
  const number_of_packets = c.number_of_packets ?? iso.length;
  if (c.direction === USBIP_DIR_OUT ? data.length !== c.transfer_buffer_length : data.length !== 0) {
    throw new RangeError(
      `CMD_SUBMIT ${c.direction === USBIP_DIR_OUT ? 'OUT' : 'IN'} with ${data.length} data bytes ` +
        `and transfer_buffer_length ${c.transfer_buffer_length}`,
    );
  }
  const setup = c.setup ?? Buffer.alloc(USB_SETUP_PACKET_SIZE);
  if (setup.length !== USB_SETUP_PACKET_SIZE) throw new RangeError(`setup is ${setup.length} bytes, not 8`);
  checkIsoCount(number_of_packets, iso);
  const buf = allocMessage(data.length + iso.length * USBIP_ISO_PACKET_DESCRIPTOR_SIZE);
  putBasic(buf, USBIP_CMD_SUBMIT, c);
  put32(buf, OFF_TRANSFER_FLAGS, c.transfer_flags, 'transfer_flags');
  put32(buf, OFF_TRANSFER_BUFFER_LENGTH, c.transfer_buffer_length, 'transfer_buffer_length');
  put32(buf, OFF_START_FRAME, c.start_frame ?? 0, 'start_frame');
  put32(buf, OFF_NUMBER_OF_PACKETS, number_of_packets, 'number_of_packets');
  put32(buf, OFF_INTERVAL, c.interval ?? 0, 'interval');
  setup.copy(buf, OFF_SETUP);
  data.copy(buf, USBIP_HEADER_SIZE);
  putIsoDescriptors(buf, USBIP_HEADER_SIZE + data.length, iso);
  return buf;
}

export interface CmdUnlinkInput {
  seqnum: number;
  devid: number;
  /** vhci_tx.c sends 0 for both. */
  direction?: UsbipDirection;
  ep?: number;
  unlink_seqnum: number;
}

/** USBIP_CMD_UNLINK as vhci_tx.c builds it (for tests and fake kernels). */
export function encodeCmdUnlink(c: CmdUnlinkInput): Buffer {
  const buf = allocMessage(0);
  putBasic(buf, USBIP_CMD_UNLINK, { seqnum: c.seqnum, devid: c.devid, direction: c.direction ?? USBIP_DIR_OUT, ep: c.ep ?? 0 });
  put32(buf, OFF_UNLINK_SEQNUM, c.unlink_seqnum, 'unlink_seqnum');
  return buf;
}

// ---------------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------------

function readIsoDescriptors(buf: Buffer, count: number): UsbipIsoPacketDescriptor[] {
  const out: UsbipIsoPacketDescriptor[] = [];
  for (let i = 0, o = 0; i < count; i++, o += USBIP_ISO_PACKET_DESCRIPTOR_SIZE) {
    out.push({
      offset: buf.readUInt32BE(o + ISO_OFF_OFFSET),
      length: buf.readUInt32BE(o + ISO_OFF_LENGTH),
      actual_length: buf.readUInt32BE(o + ISO_OFF_ACTUAL_LENGTH),
      status: buf.readInt32BE(o + ISO_OFF_STATUS),
    });
  }
  return out;
}

function isNonIsoCount(number_of_packets: number): boolean {
  return number_of_packets === 0 || number_of_packets === USBIP_NUMBER_OF_PACKETS_NON_ISO;
}

/** How many iso descriptors follow, after checking number_of_packets against USBIP_MAX_ISO_PACKETS. */
function isoDescriptorCount(number_of_packets: number): number {
  if (number_of_packets === USBIP_NUMBER_OF_PACKETS_NON_ISO) return 0;
  if (number_of_packets < 0) throw new UsbipProtocolError(`number_of_packets ${number_of_packets} is negative`);
  if (number_of_packets > USBIP_MAX_ISO_PACKETS) {
    throw new UsbipProtocolError(`number_of_packets ${number_of_packets} exceeds limit ${USBIP_MAX_ISO_PACKETS}`);
  }
  return number_of_packets;
}

function checkLength(field: string, value: number, limit: number): void {
  if (value > limit) throw new UsbipProtocolError(`${field} ${value} exceeds limit ${limit}`);
}

/** A message whose header has been read and checked: how many bytes it has in all, and how to finish it. */
interface Frame<T> {
  /** Header + payload bytes. */
  total: number;
  /** Bytes of data after the header (the rest of the payload is iso descriptors). */
  dataLength: number;
  isoCount: number;
  build(data: Buffer, iso: UsbipIsoPacketDescriptor[]): T;
}

/** Common framing of both decoders: header first, checks, then wait for the whole message. */
abstract class UsbipFramer<T> {
  private readonly queue = new ByteQueue();
  private pending: Frame<T> | undefined;
  private failure: UsbipProtocolError | undefined;

  /** Bytes received and not yet returned in a message (0 at a clean end of stream). */
  get bufferedBytes(): number {
    return this.queue.length;
  }

  /** Adds bytes as they arrived. The decoder keeps (views of) the chunk: do not modify it afterwards. */
  push(chunk: Buffer): void {
    this.queue.push(chunk);
  }

  /**
   * The next whole message, or undefined until enough bytes have arrived. Throws UsbipProtocolError
   * as soon as a header is bad — and again on every later call: a USB/IP stream cannot resynchronise.
   */
  next(): T | undefined {
    const frame = this.frame();
    if (!frame || this.queue.length < frame.total) return undefined;
    this.pending = undefined;
    this.queue.skip(USBIP_HEADER_SIZE);
    const data = frame.dataLength > 0 ? this.queue.take(frame.dataLength) : EMPTY;
    const iso =
      frame.isoCount > 0
        ? readIsoDescriptors(this.queue.take(frame.isoCount * USBIP_ISO_PACKET_DESCRIPTOR_SIZE), frame.isoCount)
        : [];
    return frame.build(data, iso);
  }

  /**
   * Call when the stream ends, after next() has returned undefined. A clean end (nothing buffered)
   * returns; a message cut short throws UsbipProtocolError saying how much of it arrived.
   */
  end(): void {
    const have = this.queue.length;
    const frame = this.frame();
    if (have === 0) return;
    if (frame && have >= frame.total) throw new Error('UsbipDecoder.end() called before next() returned every message');
    const what = frame ? `${frame.total}-byte message` : `${USBIP_HEADER_SIZE}-byte header`;
    this.failure = new UsbipProtocolError(`stream ended inside a ${what}: ${have} bytes arrived`);
    throw this.failure;
  }

  /** The checked header of the message at the front, once its 48 bytes are here. */
  private frame(): Frame<T> | undefined {
    if (this.failure) throw this.failure;
    if (!this.pending && this.queue.length >= USBIP_HEADER_SIZE) {
      try {
        this.pending = this.parseHeader(this.queue.peek(USBIP_HEADER_SIZE));
      } catch (e) {
        if (e instanceof UsbipProtocolError) this.failure = e;
        throw e;
      }
    }
    return this.pending;
  }

  protected abstract parseHeader(header: Buffer): Frame<T>;
}

function readBasic(h: Buffer): UsbipHeaderBasic & { command: number; rawDirection: number } {
  const rawDirection = h.readUInt32BE(OFF_DIRECTION);
  return {
    command: h.readUInt32BE(OFF_COMMAND),
    seqnum: h.readUInt32BE(OFF_SEQNUM),
    devid: h.readUInt32BE(OFF_DEVID),
    direction: (rawDirection === USBIP_DIR_IN ? USBIP_DIR_IN : USBIP_DIR_OUT) as UsbipDirection,
    rawDirection,
    ep: h.readUInt32BE(OFF_EP),
  };
}

function basicOf(b: UsbipHeaderBasic): UsbipHeaderBasic {
  return { seqnum: b.seqnum, devid: b.devid, direction: b.direction, ep: b.ep };
}

export interface UsbipDecoderOptions {
  /** Largest transfer_buffer_length accepted (default MAX_TRANSFER_BUFFER_LENGTH). */
  maxTransferBufferLength?: number;
  /**
   * Whether an endpoint of the attached device is isochronous, if the caller knows its descriptors.
   * vhci_tx.c sends iso descriptors by the URB's pipe type, which is not on the wire; without this we
   * infer it as the kernel's own server cannot: number_of_packets not 0 / -1, on an endpoint other
   * than 0. (No in-tree driver sets number_of_packets on a non-ISO URB; usb_alloc_urb zeroes it.)
   */
  isIsochronous?: (ep: number, direction: UsbipDirection) => boolean;
}

function checkLimitOption(limit: number): number {
  if (!Number.isInteger(limit) || limit < 0 || limit > 0x7fffffff) {
    throw new RangeError(`maxTransferBufferLength ${limit} is not an integer in 0..2147483647`);
  }
  return limit;
}

/**
 * Incremental decoder of what vhci_hcd sends (CMD_SUBMIT, CMD_UNLINK): `push(chunk)` as bytes
 * arrive, then `next()` until it returns undefined ("not yet"); copes with any split of the stream.
 */
export class UsbipDecoder extends UsbipFramer<UsbipCommand> {
  private readonly maxTransferBufferLength: number;
  private readonly isIsochronous: ((ep: number, direction: UsbipDirection) => boolean) | undefined;

  constructor(options: UsbipDecoderOptions = {}) {
    super();
    this.maxTransferBufferLength = checkLimitOption(options.maxTransferBufferLength ?? MAX_TRANSFER_BUFFER_LENGTH);
    this.isIsochronous = options.isIsochronous;
  }

  protected parseHeader(h: Buffer): Frame<UsbipCommand> {
    const b = readBasic(h);
    if (b.command !== USBIP_CMD_SUBMIT && b.command !== USBIP_CMD_UNLINK) {
      const name = usbipCommandName(b.command);
      throw new UsbipProtocolError(
        name ? `unexpected USB/IP command ${hex32(b.command)} (${name})` : `unknown USB/IP command ${hex32(b.command)}`,
      );
    }
    if (b.rawDirection !== USBIP_DIR_OUT && b.rawDirection !== USBIP_DIR_IN) {
      throw new UsbipProtocolError(`direction ${b.rawDirection} is neither USBIP_DIR_OUT (0) nor USBIP_DIR_IN (1)`);
    }
    if (b.ep > MAX_EP) throw new UsbipProtocolError(`ep ${b.ep} is out of range 0..${MAX_EP}`);
    const basic = basicOf(b);

    if (b.command === USBIP_CMD_UNLINK) {
      const unlink_seqnum = h.readUInt32BE(OFF_UNLINK_SEQNUM);
      return {
        total: USBIP_HEADER_SIZE,
        dataLength: 0,
        isoCount: 0,
        build: () => ({ kind: 'unlink', ...basic, unlink_seqnum }),
      };
    }

    const transfer_flags = h.readUInt32BE(OFF_TRANSFER_FLAGS);
    const transfer_buffer_length = h.readUInt32BE(OFF_TRANSFER_BUFFER_LENGTH);
    const start_frame = h.readInt32BE(OFF_START_FRAME);
    const number_of_packets = h.readInt32BE(OFF_NUMBER_OF_PACKETS);
    const interval = h.readInt32BE(OFF_INTERVAL);
    checkLength('transfer_buffer_length', transfer_buffer_length, this.maxTransferBufferLength);
    const iso = this.isIsochronous
      ? this.isIsochronous(b.ep, b.direction)
      : b.ep !== 0 && !isNonIsoCount(number_of_packets);
    const isoCount = iso ? isoDescriptorCount(number_of_packets) : 0;
    const dataLength = b.direction === USBIP_DIR_OUT ? transfer_buffer_length : 0;
    const setup = Buffer.from(h.subarray(OFF_SETUP, OFF_SETUP + USB_SETUP_PACKET_SIZE));
    const fields = { ...basic, transfer_flags, transfer_buffer_length, start_frame, number_of_packets, interval, setup };
    return {
      total: USBIP_HEADER_SIZE + dataLength + isoCount * USBIP_ISO_PACKET_DESCRIPTOR_SIZE,
      dataLength,
      isoCount,
      build: (data, iso_packet_descriptor) =>
        iso ? { kind: 'isoSubmit', ...fields, data, iso_packet_descriptor } : { kind: 'submit', ...fields, data },
    };
  }
}

export interface UsbipReplyDecoderOptions {
  /** Largest actual_length accepted (default MAX_TRANSFER_BUFFER_LENGTH). */
  maxTransferBufferLength?: number;
  /**
   * The direction of the URB a RET_SUBMIT answers (IN replies carry data), as the kernel knows it from
   * its own URB; undefined for a seqnum it never sent, which is an error as in vhci_rx.c. Without
   * this, the reply's own `direction` field is trusted (encodeRetSubmit writes what it is given).
   */
  directionOf?: (seqnum: number) => UsbipDirection | undefined;
}

/**
 * Incremental decoder of what we send vhci_hcd (RET_SUBMIT, RET_UNLINK): the kernel's side of the
 * conversation, for tests and fake kernels. Same contract as UsbipDecoder.
 */
export class UsbipReplyDecoder extends UsbipFramer<UsbipReply> {
  private readonly maxTransferBufferLength: number;
  private readonly directionOf: ((seqnum: number) => UsbipDirection | undefined) | undefined;

  constructor(options: UsbipReplyDecoderOptions = {}) {
    super();
    this.maxTransferBufferLength = checkLimitOption(options.maxTransferBufferLength ?? MAX_TRANSFER_BUFFER_LENGTH);
    this.directionOf = options.directionOf;
  }

  protected parseHeader(h: Buffer): Frame<UsbipReply> {
    const b = readBasic(h);
    if (b.command !== USBIP_RET_SUBMIT && b.command !== USBIP_RET_UNLINK) {
      const name = usbipCommandName(b.command);
      throw new UsbipProtocolError(
        name ? `unexpected USB/IP command ${hex32(b.command)} (${name})` : `unknown USB/IP command ${hex32(b.command)}`,
      );
    }
    const status = h.readInt32BE(OFF_STATUS);
    const basic = basicOf(b);
    if (b.command === USBIP_RET_UNLINK) {
      return { total: USBIP_HEADER_SIZE, dataLength: 0, isoCount: 0, build: () => ({ kind: 'retUnlink', ...basic, status }) };
    }

    let direction: UsbipDirection;
    if (this.directionOf) {
      const known = this.directionOf(b.seqnum);
      if (known === undefined) throw new UsbipProtocolError(`USBIP_RET_SUBMIT for unknown seqnum ${b.seqnum}`);
      direction = known;
    } else {
      if (b.rawDirection !== USBIP_DIR_OUT && b.rawDirection !== USBIP_DIR_IN) {
        throw new UsbipProtocolError(`direction ${b.rawDirection} is neither USBIP_DIR_OUT (0) nor USBIP_DIR_IN (1)`);
      }
      direction = b.direction;
    }
    const actual_length = h.readUInt32BE(OFF_ACTUAL_LENGTH);
    const start_frame = h.readInt32BE(OFF_START_FRAME);
    const number_of_packets = h.readInt32BE(OFF_NUMBER_OF_PACKETS);
    const error_count = h.readInt32BE(OFF_ERROR_COUNT);
    checkLength('actual_length', actual_length, this.maxTransferBufferLength);
    const isoCount = isoDescriptorCount(number_of_packets);
    const dataLength = direction === USBIP_DIR_IN ? actual_length : 0;
    return {
      total: USBIP_HEADER_SIZE + dataLength + isoCount * USBIP_ISO_PACKET_DESCRIPTOR_SIZE,
      dataLength,
      isoCount,
      build: (data, iso_packet_descriptor) => ({
        kind: 'retSubmit',
        ...basic,
        status,
        actual_length,
        start_frame,
        number_of_packets,
        error_count,
        data,
        iso_packet_descriptor,
      }),
    };
  }
}

function decodeOne(buf: Buffer, decoder: UsbipReplyDecoder, expected: string): UsbipReply {
  decoder.push(buf);
  const message = decoder.next();
  if (!message) throw new UsbipProtocolError(`${expected} truncated: ${buf.length} bytes`);
  if (decoder.bufferedBytes > 0) {
    throw new UsbipProtocolError(`${expected} followed by ${decoder.bufferedBytes} stray bytes`);
  }
  return message;
}

/** Decodes exactly one RET_SUBMIT; `direction` is the submitted URB's (IN replies carry data). */
export function decodeRetSubmit(buf: Buffer, direction: UsbipDirection): UsbipRetSubmit {
  const message = decodeOne(buf, new UsbipReplyDecoder({ directionOf: () => direction }), 'USBIP_RET_SUBMIT');
  if (message.kind !== 'retSubmit') throw new UsbipProtocolError(`expected USBIP_RET_SUBMIT, got USBIP_RET_UNLINK`);
  return message;
}

/** Decodes exactly one RET_UNLINK. */
export function decodeRetUnlink(buf: Buffer): UsbipRetUnlink {
  const message = decodeOne(buf, new UsbipReplyDecoder(), 'USBIP_RET_UNLINK');
  if (message.kind !== 'retUnlink') throw new UsbipProtocolError(`expected USBIP_RET_UNLINK, got USBIP_RET_SUBMIT`);
  return message;
}
