/**
 * Telnet with the COM-PORT-OPTION (RFC 2217): the wire format a remote serial port speaks to pyserial's
 * `rfc2217://` URLs (esptool, PlatformIO). This module only turns bytes into events and values into bytes;
 * rfc2217-server.ts decides what to do with them.
 *
 * Decoding is incremental: push() takes any chunk and returns the events it completes; a command cut in
 * two by the network waits for its other half. Data comes out as slices of the input (no copy) unless it
 * holds escaped IACs. A subnegotiation longer than MAX_SUBNEGOTIATION is dropped as it arrives (never
 * buffered), so hostile input costs at most that much memory per connection.
 */
import { assertNever } from '../../server/shared/assert-never.js';

/** RFC 854 (Telnet), page 14. */
export const SE = 240;
export const NOP = 241;
export const BRK = 243;
export const AYT = 246;
export const SB = 250;
export const WILL = 251;
export const WONT = 252;
export const DO = 253;
export const DONT = 254;
export const IAC = 255;

/** Telnet options: RFC 856 (BINARY), RFC 857 (ECHO), RFC 858 (SUPPRESS-GO-AHEAD), RFC 2217 (COM-PORT-OPTION). */
export const OPT_BINARY = 0;
export const OPT_ECHO = 1;
export const OPT_SGA = 3;
export const OPT_COM_PORT = 44;

/**
 * RFC 2217 COM-PORT-OPTION commands, client to access server; the server answers each with the same
 * command + SERVER_OFFSET (SET-BAUDRATE 1 → 101).
 */
export const ComPort = {
  SIGNATURE: 0,
  SET_BAUDRATE: 1,
  SET_DATASIZE: 2,
  SET_PARITY: 3,
  SET_STOPSIZE: 4,
  SET_CONTROL: 5,
  NOTIFY_LINESTATE: 6,
  NOTIFY_MODEMSTATE: 7,
  FLOWCONTROL_SUSPEND: 8,
  FLOWCONTROL_RESUME: 9,
  SET_LINESTATE_MASK: 10,
  SET_MODEMSTATE_MASK: 11,
  PURGE_DATA: 12,
} as const;
export const SERVER_OFFSET = 100;

/** RFC 2217 SET-CONTROL values. */
export const Control = {
  REQ_FLOW: 0, FLOW_NONE: 1, FLOW_XONXOFF: 2, FLOW_HARDWARE: 3,
  REQ_BREAK: 4, BREAK_ON: 5, BREAK_OFF: 6,
  REQ_DTR: 7, DTR_ON: 8, DTR_OFF: 9,
  REQ_RTS: 10, RTS_ON: 11, RTS_OFF: 12,
  REQ_FLOW_IN: 13, FLOW_IN_NONE: 14, FLOW_IN_XONXOFF: 15, FLOW_IN_HARDWARE: 16,
  FLOW_DCD: 17, FLOW_IN_DTR: 18, FLOW_DSR: 19,
} as const;

/** RFC 2217 SET-PARITY values (0 asks for the current one). */
export const PARITY_CODES = { none: 1, odd: 2, even: 3, mark: 4, space: 5 } as const;
/** RFC 2217 SET-STOPSIZE values: 1.5 is 3. */
export const STOP_CODES = { 1: 1, 2: 2, 1.5: 3 } as const;

/** RFC 2217 modem state bits (NOTIFY-MODEMSTATE). */
export const Modem = { CD: 0x80, RI: 0x40, DSR: 0x20, CTS: 0x10, DELTA_CD: 0x08, TRAILING_RI: 0x04, DELTA_DSR: 0x02, DELTA_CTS: 0x01 } as const;
/** RFC 2217 line state bits (NOTIFY-LINESTATE). */
export const Line = { TIMEOUT: 0x80, SHIFT_EMPTY: 0x40, HOLDING_EMPTY: 0x20, BREAK: 0x10, FRAMING: 0x08, PARITY: 0x04, OVERRUN: 0x02, DATA_READY: 0x01 } as const;

/** PURGE-DATA values. */
export const Purge = { RECEIVE: 1, TRANSMIT: 2, BOTH: 3 } as const;

/** The longest subnegotiation kept: a SIGNATURE text fits; anything longer is hostile or broken. */
export const MAX_SUBNEGOTIATION = 256;

export type Verb = 'will' | 'wont' | 'do' | 'dont';
const VERBS: Record<number, Verb> = { [WILL]: 'will', [WONT]: 'wont', [DO]: 'do', [DONT]: 'dont' };
const VERB_CODES: Record<Verb, number> = { will: WILL, wont: WONT, do: DO, dont: DONT };

export type TelnetEvent =
  /** Bytes for the serial port, IAC IAC already undone. */
  | { kind: 'data'; data: Buffer }
  | { kind: 'negotiate'; verb: Verb; option: number }
  /** IAC followed by anything else (NOP, BRK, AYT, ...). */
  | { kind: 'command'; command: number }
  /** IAC SB <option> <payload> IAC SE, with IAC IAC in the payload undone. */
  | { kind: 'subnegotiation'; option: number; payload: Buffer }
  /** A subnegotiation that was dropped: longer than MAX_SUBNEGOTIATION, empty, or cut short by another command. */
  | { kind: 'bad-subnegotiation'; reason: string };

const enum State { Data, Iac, Verb, Sb, SbIac }

export class TelnetDecoder {
  private state = State.Data;
  private verb = 0;
  private sb: number[] = [];
  private sbDropped = 0;

  /** Decodes a chunk; events are complete, and a command split across chunks comes out with the chunk that ends it. */
  push(chunk: Uint8Array): TelnetEvent[] {
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    const out: TelnetEvent[] = [];
    // Data runs between commands, joined once per event (IAC IAC splits a run without ending it).
    let parts: Buffer[] = [];
    const flushData = (data: Buffer): void => {
      if (data.length > 0) parts.push(data);
    };
    const emit = (e: TelnetEvent): void => {
      if (parts.length > 0) out.push({ kind: 'data', data: parts.length === 1 ? parts[0] : Buffer.concat(parts) });
      parts = [];
      out.push(e);
    };
    let i = 0;
    while (i < buf.length) {
      switch (this.state) {
        case State.Data: {
          const at = buf.indexOf(IAC, i);
          const end = at < 0 ? buf.length : at;
          flushData(buf.subarray(i, end));
          i = end;
          if (at >= 0) { this.state = State.Iac; i++; }
          break;
        }
        case State.Iac: {
          const b = buf[i++];
          this.state = State.Data;
          if (b === IAC) {
            flushData(buf.subarray(i - 1, i));
          } else if (b in VERBS) {
            this.verb = b;
            this.state = State.Verb;
          } else if (b === SB) {
            this.sb = [];
            this.sbDropped = 0;
            this.state = State.Sb;
          } else if (b === SE) {
            emit({ kind: 'bad-subnegotiation', reason: 'IAC SE without IAC SB' });
          } else {
            emit({ kind: 'command', command: b });
          }
          break;
        }
        case State.Verb:
          emit({ kind: 'negotiate', verb: VERBS[this.verb], option: buf[i++] });
          this.state = State.Data;
          break;
        case State.Sb: {
          const at = buf.indexOf(IAC, i);
          const end = at < 0 ? buf.length : at;
          this.sbTake(buf, i, end);
          i = end;
          if (at >= 0) { this.state = State.SbIac; i++; }
          break;
        }
        case State.SbIac: {
          const b = buf[i++];
          if (b === IAC) {
            this.sbTake(buf, i - 1, i);
            this.state = State.Sb;
          } else if (b === SE) {
            this.state = State.Data;
            emit(this.sbEnd());
          } else {
            // RFC 854 leaves IAC <command> inside a subnegotiation undefined: drop the subnegotiation,
            // and take the command as the start of what follows.
            emit({ kind: 'bad-subnegotiation', reason: `IAC ${b} inside a subnegotiation` });
            this.sb = [];
            this.state = State.Iac;
            i--;
          }
          break;
        }
        default: assertNever(this.state);
      }
    }
    if (parts.length > 0) out.push({ kind: 'data', data: parts.length === 1 ? parts[0] : Buffer.concat(parts) });
    return out;
  }

  private sbTake(buf: Buffer, from: number, to: number): void {
    const room = MAX_SUBNEGOTIATION + 1 - this.sb.length; // + the option byte
    const n = Math.max(0, Math.min(room, to - from));
    for (let k = from; k < from + n; k++) this.sb.push(buf[k]);
    this.sbDropped += to - from - n;
  }

  private sbEnd(): TelnetEvent {
    const sb = this.sb;
    this.sb = [];
    if (this.sbDropped > 0) return { kind: 'bad-subnegotiation', reason: `subnegotiation of ${sb.length - 1 + this.sbDropped} bytes, limit ${MAX_SUBNEGOTIATION}` };
    if (sb.length === 0) return { kind: 'bad-subnegotiation', reason: 'empty subnegotiation' };
    return { kind: 'subnegotiation', option: sb[0], payload: Buffer.from(sb.slice(1)) };
  }
}

/** Data for the wire: every 0xFF doubled (RFC 854). Returns the input itself when there is none. */
export function escapeIac(data: Uint8Array): Buffer {
  const buf = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  let n = 0;
  for (let at = buf.indexOf(IAC); at >= 0; at = buf.indexOf(IAC, at + 1)) n++;
  if (n === 0) return buf;
  const out = Buffer.allocUnsafe(buf.length + n);
  let o = 0;
  let from = 0;
  for (let at = buf.indexOf(IAC); at >= 0; at = buf.indexOf(IAC, at + 1)) {
    o += buf.copy(out, o, from, at + 1);
    out[o++] = IAC;
    from = at + 1;
  }
  buf.copy(out, o, from);
  return out;
}

/** IAC <verb> <option>. */
export function negotiation(verb: Verb, option: number): Buffer {
  return Buffer.of(IAC, VERB_CODES[verb], option);
}

/** IAC SB <option> <payload, IAC doubled> IAC SE. */
export function subnegotiation(option: number, payload: Uint8Array): Buffer {
  return Buffer.concat([Buffer.of(IAC, SB, option), escapeIac(payload), Buffer.of(IAC, SE)]);
}

/** A COM-PORT-OPTION command: `command` as sent (a server's reply already has SERVER_OFFSET added). */
export function comPort(command: number, value: Uint8Array | number[] = []): Buffer {
  return subnegotiation(OPT_COM_PORT, Buffer.from([command, ...value]));
}

/** A 32-bit big-endian value (SET-BAUDRATE; RFC 2217 sends every multi-byte value in network order). */
export function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

/** A client's COM-PORT-OPTION request, checked: names the problem when it is not one. */
export type ComPortRequest =
  | { command: 'signature'; text: string }
  | { command: 'set-baudrate'; baud: number }
  | { command: 'set-datasize'; value: number }
  | { command: 'set-parity'; value: number }
  | { command: 'set-stopsize'; value: number }
  | { command: 'set-control'; value: number }
  | { command: 'notify-linestate' }
  | { command: 'notify-modemstate' }
  | { command: 'flowcontrol-suspend' }
  | { command: 'flowcontrol-resume' }
  | { command: 'set-linestate-mask'; mask: number }
  | { command: 'set-modemstate-mask'; mask: number }
  | { command: 'purge-data'; value: number };

/** Parses the payload of IAC SB COM-PORT-OPTION … IAC SE sent by a client; throws an Error naming what is wrong. */
export function parseComPortRequest(payload: Buffer): ComPortRequest {
  if (payload.length === 0) throw new Error('COM-PORT-OPTION subnegotiation without a command');
  const cmd = payload[0];
  const value = payload.subarray(1);
  const byte = (name: string): number => {
    if (value.length !== 1) throw new Error(`COM-PORT-OPTION ${name} takes 1 byte, got ${value.length}`);
    return value[0];
  };
  const none = (name: string): void => {
    if (value.length !== 0) throw new Error(`COM-PORT-OPTION ${name} takes no value, got ${value.length} bytes`);
  };
  switch (cmd) {
    case ComPort.SIGNATURE: return { command: 'signature', text: value.toString('latin1') };
    case ComPort.SET_BAUDRATE:
      if (value.length !== 4) throw new Error(`COM-PORT-OPTION SET-BAUDRATE takes 4 bytes, got ${value.length}`);
      return { command: 'set-baudrate', baud: value.readUInt32BE(0) };
    case ComPort.SET_DATASIZE: return { command: 'set-datasize', value: byte('SET-DATASIZE') };
    case ComPort.SET_PARITY: return { command: 'set-parity', value: byte('SET-PARITY') };
    case ComPort.SET_STOPSIZE: return { command: 'set-stopsize', value: byte('SET-STOPSIZE') };
    case ComPort.SET_CONTROL: return { command: 'set-control', value: byte('SET-CONTROL') };
    // pyserial polls with an empty NOTIFY-MODEMSTATE; tolerate a stray value byte
    case ComPort.NOTIFY_LINESTATE: return { command: 'notify-linestate' };
    case ComPort.NOTIFY_MODEMSTATE: return { command: 'notify-modemstate' };
    case ComPort.FLOWCONTROL_SUSPEND: none('FLOWCONTROL-SUSPEND'); return { command: 'flowcontrol-suspend' };
    case ComPort.FLOWCONTROL_RESUME: none('FLOWCONTROL-RESUME'); return { command: 'flowcontrol-resume' };
    case ComPort.SET_LINESTATE_MASK: return { command: 'set-linestate-mask', mask: byte('SET-LINESTATE-MASK') };
    case ComPort.SET_MODEMSTATE_MASK: return { command: 'set-modemstate-mask', mask: byte('SET-MODEMSTATE-MASK') };
    case ComPort.PURGE_DATA: return { command: 'purge-data', value: byte('PURGE-DATA') };
    default:
      throw new Error(cmd >= SERVER_OFFSET && cmd <= SERVER_OFFSET + ComPort.PURGE_DATA
        ? `COM-PORT-OPTION command ${cmd} is a server's answer, not a client's request`
        : `unknown COM-PORT-OPTION command ${cmd}`);
  }
}
