/**
 * The interface between the daemon and a USB stack. Two implementations sit behind it: the real one on
 * the `usb` package (usb-real.ts) and simulated boards (simulated.ts) for tests and the demo.
 */
import { EventEmitter } from 'node:events';
import type { DeviceInfo, SetupPacket, TransferType } from '../protocol/messages.js';

/** A device as the backend sees it, before the daemon adds sharing and claim state. */
export type BackendDevice = Omit<DeviceInfo, 'shared' | 'claimedBy' | 'mine'>;

export interface TransferResult {
  /** 0 or a negative errno (UrbStatus). */
  status: number;
  /** IN data (may be shorter than asked; also on a timeout or cancel: the bytes that did arrive). */
  data?: Uint8Array;
  /** Bytes transferred (OUT: bytes written, also when timed out or cancelled part way). */
  actual: number;
  /** The USB stack's own words for a failure, for the bench's debug log. */
  error?: string;
}

export interface TransferRequest {
  type: TransferType;
  /** Endpoint address including the direction bit (0x80 = IN). */
  ep: number;
  setup?: SetupPacket;
  data?: Uint8Array;
  /** IN: buffer size. */
  length: number;
  /** ms; 0 = none: an IN transfer then waits for as long as the device takes, like the kernel's URB. */
  timeout: number;
  /** The URB's transfer flags that matter on the bench (UrbFlag: zero packet, short-not-ok). */
  flags?: number;
  /** Cancels the transfer for real; it then completes with -ECONNRESET and the bytes it did move. */
  signal: AbortSignal;
}

/** A device claimed for exclusive use: its kernel drivers are detached until close(). */
export interface OpenedDevice {
  /** Control/bulk/interrupt transfer. Resolves with a status, never rejects. */
  transfer(request: TransferRequest): Promise<TransferResult>;
  setConfiguration(value: number): Promise<void>;
  setInterface(iface: number, alternate: number): Promise<void>;
  clearHalt(ep: number): Promise<void>;
  /** Releases interfaces, gives kernel drivers back, closes. Safe to call twice. */
  close(): Promise<void>;
}

export interface BackendEvents {
  attach: [BackendDevice];
  detach: [string];
}

export interface UsbBackend extends EventEmitter<BackendEvents> {
  readonly kind: 'usb' | 'simulated';
  list(): Promise<BackendDevice[]>;
  /** Opens and claims every interface; throws a readable Error when the device cannot be had. */
  open(id: string): Promise<OpenedDevice>;
  /**
   * The bench's tty for a device right now (read fresh: a driver binds its tty a moment after the device
   * appears, and it is gone while the device is claimed), or undefined.
   */
  ttyOf(id: string): string | undefined;
  close(): Promise<void>;
}
