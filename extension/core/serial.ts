/**
 * The serial monitor's view of a port, the same whether the port is on the bench (streamed over the
 * protocol, serial-session.ts) or a board attached to this machine (local-serial.ts).
 */
import type { EventEmitter } from 'node:events';
import type { DataBits, Parity, SerialState, StopBits } from '../../server/protocol/messages.js';

export type { DataBits, Parity, SerialState, StopBits };

/** How to open a port; `dtr` / `rts` default to asserted, as an OS does when a program opens a tty. */
export interface SerialParams {
  baud: number;
  dataBits: DataBits;
  parity: Parity;
  stopBits: StopBits;
  dtr?: boolean;
  rts?: boolean;
}

/** 115200 8N1. */
export const DEFAULT_SERIAL_PARAMS: Readonly<SerialParams> = { baud: 115200, dataBits: 8, parity: 'none', stopBits: 1 };

/** A change of settings; `brk` holds a break condition on the line while true. */
export interface SerialSetOptions {
  baud?: number;
  dataBits?: DataBits;
  parity?: Parity;
  stopBits?: StopBits;
  dtr?: boolean;
  rts?: boolean;
  brk?: boolean;
}

export interface SerialSessionEvents {
  data: [Buffer];
  /** 'waiting': the port is gone for now (board reset or unplugged, bench offline) and will be reopened; 'closed' is final. */
  state: [SerialState, string | undefined];
}

export interface SerialSession extends EventEmitter<SerialSessionEvents> {
  readonly state: SerialState;
  /** The tty behind it: `/dev/ttyACM0` (on the bench or here), `sim:sim-1`. */
  readonly path: string;
  /** Queues bytes for the port; dropped while the port is not open. */
  write(data: Uint8Array): void;
  set(opts: SerialSetOptions): Promise<void>;
  close(): Promise<void>;
}
