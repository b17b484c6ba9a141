/**
 * The interface between the daemon's serial sessions and a tty. Two implementations sit behind it, as
 * for USB: the real one on `serialport` (serial-real.ts) and a host-side CDC-ACM driver for the
 * simulated serial board (serial-sim.ts). The client core's local serial monitor uses the real one too.
 */
import { EventEmitter } from 'node:events';
import type { SerialLine } from '../../protocol/messages.js';

/** Modem control lines and break; undefined = leave as is. */
export interface SerialSignals {
  dtr?: boolean;
  rts?: boolean;
  brk?: boolean;
}

export interface SerialPortEvents {
  data: [Buffer];
  /** The tty went away under us (unplug, board reset): reads failed. Not emitted after close(). */
  vanished: [string];
}

/** One open tty. */
export interface SerialPortHandle extends EventEmitter<SerialPortEvents> {
  /** Resolves once the bytes are handed to the OS (or the board); writes complete in call order. */
  write(data: Uint8Array): Promise<void>;
  /** Changes the baud rate without reopening. Data bits / parity / stop bits need a reopen. */
  setBaud(baud: number): Promise<void>;
  /** Sets DTR / RTS / break; lines a tty does not have (ptys) are ignored. */
  setSignals(signals: Required<SerialSignals>): Promise<void>;
  /** Stops reading (back-pressure) / starts again. */
  pause(): void;
  resume(): void;
  /** Safe to call twice. */
  close(): Promise<void>;
}

export interface SerialBackend {
  /** Opens `path` exclusively with `line`; throws a readable Error when it cannot (missing, locked, denied). */
  open(path: string, line: SerialLine): Promise<SerialPortHandle>;
  /** Whether `path` is there to be opened (polled while waiting for a board to come back). */
  exists(path: string): boolean;
}

/** 115200 8N1: what almost every board's firmware speaks. */
export const DEFAULT_LINE: SerialLine = { baud: 115200, dataBits: 8, parity: 'none', stopBits: 1 };
