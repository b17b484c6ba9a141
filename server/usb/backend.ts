/**
 * The interface between the daemon and a USB stack. Two implementations sit behind it: the real one on
 * the `usb` package (usb-real.ts) and simulated boards (simulated.ts) for tests and the demo.
 */
import { EventEmitter } from 'node:events';
import type { DeviceInfo } from '../protocol/messages.js';
import type { UrbRequest, UrbResult } from '../protocol/urb.js';

/** A device as the backend sees it, before the daemon adds sharing and claim state. */
export type BackendDevice = Omit<DeviceInfo, 'shared' | 'claimedBy' | 'mine'>;

/** A device claimed for exclusive use: its kernel drivers are detached until close(). */
export interface OpenedDevice {
  /**
   * Runs one URB (control, bulk or interrupt). Resolves with a status, never rejects; `signal` cancels
   * the transfer for real: it then completes with -ECONNRESET and the bytes it did move. An IN result's
   * `data` may be shorter than asked, also on a timeout or cancel (the bytes that did arrive).
   */
  transfer(urb: UrbRequest, signal: AbortSignal): Promise<UrbResult>;
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
