/**
 * One URB, in one shape from end to end: the client core builds a UrbRequest (ClaimedDevice.start, or
 * the USB/IP bridge from a kernel's CMD_SUBMIT), it travels as a `submit` message (messages.ts), and the
 * bench's USB backend runs that same UrbRequest (usb/backend.ts) and answers a UrbResult, which travels
 * back as a `complete` and is what the client's promise resolves with. Statuses are the kernel's errnos,
 * named as the kernel names them, and the 8 setup bytes are never re-encoded on the way.
 */

export type TransferType = 'control' | 'bulk' | 'interrupt';

/** One URB to run. */
export interface UrbRequest {
  type: TransferType;
  /** bEndpointAddress, direction bit included (0x80 = IN); 0x00 / 0x80 for control. */
  ep: number;
  /** Control: the 8-byte setup packet as on the bus (encodeSetup builds one, parseSetup reads one). */
  setup?: Uint8Array;
  /** OUT: the bytes to send. */
  data?: Uint8Array;
  /**
   * The requested length (the kernel's transfer_buffer_length): IN, the bytes wanted; OUT, the length
   * of `data` (ClaimedDevice fills that in).
   */
  length?: number;
  /** ms; 0 or absent: none (an IN transfer then waits as long as the device takes, like the kernel's URB). */
  timeout?: number;
  /** The kernel's transfer flags the bench honours (UrbFlag); the client drops the others. */
  flags?: number;
}

/** How a URB ended. */
export interface UrbResult {
  /** 0 or a negative errno (UrbStatus). */
  status: number;
  /** Bytes moved: IN, received (the length of `data`); OUT, written. Also set when timed out or cancelled part way. */
  actual: number;
  /** IN: the bytes received; empty for OUT. */
  data: Buffer;
  /** Why it failed, in words: the USB stack's (bench log), or the bench's refusal (client). */
  error?: string;
}

/** The `data` of a result that carries none. */
export const NO_DATA: Buffer = Buffer.alloc(0);

/**
 * Whether a URB moves data from the device. A control URB's setup packet says (bmRequestType bit 7),
 * any other URB's endpoint address (bit 7). The one place direction is worked out.
 */
export function isIn(urb: { type: TransferType; ep: number; setup?: Uint8Array }): boolean {
  return ((urb.type === 'control' && urb.setup ? urb.setup[0] : urb.ep) & 0x80) !== 0;
}

/**
 * URB status values: 0 or a negative errno, as the kernel's urb->status holds them and USB/IP's
 * RET_SUBMIT / RET_UNLINK carry them. Documentation/driver-api/usb/error-codes.rst says what each means.
 * kernel: include/uapi/asm-generic/errno-base.h, include/uapi/asm-generic/errno.h. vhci_hcd copies a
 * status straight into urb->status, which the local driver compares with its own kernel's values: right
 * on x86, arm, arm64, riscv, powerpc and s390 (asm-generic), wrong on mips, sparc, alpha and parisc,
 * which number the errno.h ones differently.
 */
export const UrbStatus = {
  OK: 0,
  /** Cancelled before it completed. */
  ENOENT: -2,
  EIO: -5,
  /** The device is gone. */
  ENODEV: -19,
  /** Refused: a request the bench or the bridge will not run. */
  EINVAL: -22,
  /** The endpoint stalled. */
  EPIPE: -32,
  /** A transfer error (bitstuff, CRC, or one the USB stack does not name). */
  EPROTO: -71,
  /** The device sent more than asked. */
  EOVERFLOW: -75,
  /** Unlinked (cancelled) by its submitter; also RET_UNLINK's status for a URB we cancelled. */
  ECONNRESET: -104,
  /** The connection to the bench is gone, or the bench's session is ending. */
  ESHUTDOWN: -108,
  ETIMEDOUT: -110,
  /** A short IN transfer with URB_SHORT_NOT_OK. */
  EREMOTEIO: -121,
} as const;

/**
 * The URB transfer flags the bench honours, with the kernel's values (USB/IP carries the kernel's
 * transfer_flags as they are). kernel: include/linux/usb.h
 */
export const UrbFlag = {
  /** Treat a short IN transfer as an error (-EREMOTEIO). */
  shortNotOk: 0x0001,
  /** After OUT data that ends on a packet boundary, send a zero-length packet (usbnet, usb_wwan, cdc-acm quirks). */
  zeroPacket: 0x0040,
} as const;

/** The fields of a setup packet (kernel: struct usb_ctrlrequest; USB 2.0 §9.3). */
export interface SetupPacket {
  bmRequestType: number;
  bRequest: number;
  wValue: number;
  wIndex: number;
  wLength: number;
}

/** The 8-byte setup packet for these fields (little-endian words, as on the USB bus). */
export function encodeSetup(s: SetupPacket): Buffer {
  const b = Buffer.alloc(8);
  b[0] = s.bmRequestType;
  b[1] = s.bRequest;
  b.writeUInt16LE(s.wValue, 2);
  b.writeUInt16LE(s.wIndex, 4);
  b.writeUInt16LE(s.wLength, 6);
  return b;
}

/** The fields of an 8-byte setup packet, for code that must look at them (standard requests, boards). */
export function parseSetup(setup: Uint8Array): SetupPacket {
  if (setup.length !== 8) throw new RangeError(`a setup packet is 8 bytes, not ${setup.length}`);
  const b = Buffer.from(setup.buffer, setup.byteOffset, setup.byteLength);
  return { bmRequestType: b[0], bRequest: b[1], wValue: b.readUInt16LE(2), wIndex: b.readUInt16LE(4), wLength: b.readUInt16LE(6) };
}
