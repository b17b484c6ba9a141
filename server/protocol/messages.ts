/**
 * Every message of the protocol, as a typed union with a runtime validator. Messages are msgpack maps
 * with a `t` tag. Replies to a request carry its `req` number; URB traffic is keyed by (`dev`, `id`).
 * A peer never trusts the other side's shapes: `parseMessage` checks every field it relies on.
 */
import { ErrorCode, MAX_BAUD, MAX_SERIAL_DATA, MAX_URB_DATA, Z_BROTLI } from './constants.js';
import type { UrbRequest, UrbResult } from './urb.js';

export type Speed = 'low' | 'full' | 'high' | 'super' | 'superPlus' | 'unknown';

export interface InterfaceInfo {
  number: number;
  class: number;
  subclass: number;
  protocol: number;
  /** Kernel driver bound on the bench (cdc_acm, ftdi_sio, usbfs ...), if any. */
  driver?: string;
  name?: string;
}

export interface DeviceInfo {
  /** Stable id on this bench: the kernel's bus id (`1-1.2`), or `sim-N` for simulated boards. */
  id: string;
  busnum: number;
  devnum: number;
  vendorId: number;
  productId: number;
  bcdDevice: number;
  manufacturer?: string;
  product?: string;
  serial?: string;
  speed: Speed;
  class: number;
  subclass: number;
  protocol: number;
  configuration: number;
  interfaces: InterfaceInfo[];
  /** False when the bench's config does not share this device. */
  shared: boolean;
  /** Name of the client holding it, when claimed. */
  claimedBy?: string;
  /** True when the receiving client is the holder. */
  mine?: boolean;
  /** True for a simulated board. */
  simulated?: boolean;
  /** The bench's tty for this device (`/dev/ttyACM0`, `sim:sim-1`), when it has one and nobody claimed it. */
  tty?: string;
}

/**
 * URB traffic travels on two lanes: 0, the control stream (control URBs and everything else) and 1, the
 * data stream (bulk/interrupt). Each side counts, per lane, the URB messages it sent (client: submit and
 * cancel; bench: complete, and error naming a URB) over the whole session; a stream keeps them in order,
 * so a count says exactly which arrived. That is what a resumed session needs (session.ts, bench-client.ts).
 */
export type LaneCounts = [control: number, data: number];

/** Resuming the session a dropped connection left on the bench: its token, and the bench's URB messages we got. */
export interface ResumeRequest { token: string; acked: LaneCounts }

// ---- client -> bench ----
export interface Hello { t: 'hello'; v: number; caps: string[]; name: string; pair?: string; resume?: ResumeRequest }
export interface ListRequest { t: 'list'; req: number }
export interface ClaimRequest { t: 'claim'; req: number; dev: string }
export interface ReleaseRequest { t: 'release'; req: number; dev: string }
/** One URB (urb.ts), `length` always given (for OUT, the length of `data`). */
export interface Submit extends UrbRequest {
  t: 'submit';
  dev: string;
  id: number;
  length: number;
  /** 1: `data` is Brotli-compressed and inflates to `length` bytes (capability 'brotli', compression.ts). */
  z?: number;
}
export interface Cancel { t: 'cancel'; dev: string; id: number }
export interface Ping { t: 'ping'; n: number }
/** The bench's URB messages the client has received so far, per lane: the bench may forget those. */
export interface Ack { t: 'ack'; lanes: LaneCounts }

// ---- serial ports on the bench (capability 'serial') ----
export type Parity = 'none' | 'even' | 'odd' | 'mark' | 'space';
export type DataBits = 5 | 6 | 7 | 8;
export type StopBits = 1 | 1.5 | 2;
export type SerialState = 'open' | 'waiting' | 'closed';
/** Line settings of a serial port; `dtr` / `rts` are the modem control lines (true = asserted). */
export interface SerialLine { baud: number; dataBits: DataBits; parity: Parity; stopBits: StopBits }
/**
 * `port` is a device id whose tty the bench resolves (`1-1.2`, `sim-1`) or a tty path the bench's config
 * shares (`/dev/ttyAMA0`). All serial messages of a session travel on one stream (the data stream, see
 * isDataLane), so writes, settings changes and close stay in the order the client sent them.
 */
export interface SerialOpen extends SerialLine { t: 'serial-open'; req: number; port: string; dtr?: boolean; rts?: boolean }
export interface SerialWrite { t: 'serial-write'; sid: number; data: Uint8Array }
export interface SerialSet extends Partial<SerialLine> { t: 'serial-set'; req: number; sid: number; dtr?: boolean; rts?: boolean; brk?: boolean }
export interface SerialClose { t: 'serial-close'; req: number; sid: number }

// ---- bench -> client ----
/** `ttys`: tty paths the bench's config shares besides its devices' own (e.g. the Pi's UART /dev/ttyAMA0). */
/**
 * `resume`: the token that resumes this session after a drop (its devices stay claimed and its URBs
 * keep running for the bench's grace period). `resumed`: this connection took over the session the hello
 * named; `received` counts the client's URB messages the bench got, per lane (the rest must be sent again).
 */
export interface Welcome {
  t: 'welcome'; v: number; caps: string[]; bench: string; you: string; paired?: boolean; devices: DeviceInfo[]; ttys?: string[];
  resume?: string; resumed?: { received: LaneCounts };
}
export interface DeviceList { t: 'devices'; req: number; devices: DeviceInfo[] }
export interface DeviceAdded { t: 'added'; device: DeviceInfo }
export interface DeviceRemoved { t: 'removed'; dev: string }
export interface DeviceChanged { t: 'changed'; device: DeviceInfo }
export interface Claimed { t: 'claimed'; req: number; device: DeviceInfo }
export interface Released { t: 'released'; req: number; dev: string }
/** A URB's result (urb.ts); `data` only when there are bytes. `z` as in Submit: compressed `data`, `actual` bytes once inflated. */
export interface Complete extends Pick<UrbResult, 'status' | 'actual'> { t: 'complete'; dev: string; id: number; data?: Uint8Array; z?: number }
export interface Pong { t: 'pong'; n: number }
/** `path`: the tty the bench opened (`/dev/ttyACM0`, `sim:sim-1`). */
export interface SerialOpened { t: 'serial-opened'; req: number; sid: number; port: string; path: string }
export interface SerialOk { t: 'serial-ok'; req: number }
export interface SerialData { t: 'serial-data'; sid: number; data: Uint8Array }
/** 'waiting': the tty vanished (board reset, unplug) and the bench reopens it when it returns; 'closed' is final. */
export interface SerialStateMessage { t: 'serial-state'; sid: number; state: SerialState; detail?: string }
/**
 * A refusal. `req` names the request it answers; `dev` + `id` the URB it answers (that URB is over);
 * `sid` the serial session a request-less message (serial-write) was refused for.
 */
export interface ErrorMessage { t: 'error'; req?: number; dev?: string; id?: number; sid?: number; code: ErrorCode; message: string }

export type ClientMessage =
  | Hello | ListRequest | ClaimRequest | ReleaseRequest | Submit | Cancel | Ping | Ack
  | SerialOpen | SerialWrite | SerialSet | SerialClose;
export type BenchMessage =
  | Welcome | DeviceList | DeviceAdded | DeviceRemoved | DeviceChanged | Claimed | Released | Complete | Pong
  | SerialOpened | SerialOk | SerialData | SerialStateMessage | ErrorMessage;
export type Message = ClientMessage | BenchMessage;

/** Thrown for a message that decodes as msgpack but is not a valid protocol message. */
export class ProtocolError extends Error {
  override name = 'ProtocolError';
}

type Obj = Record<string, unknown>;

function fail(what: string): never {
  throw new ProtocolError(what);
}
function uint(o: Obj, key: string, max = 0xffffffff): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) {
    fail(`field '${key}' of '${String(o.t)}' must be an integer 0..${max}, got ${describe(v)}`);
  }
  return v;
}
function int(o: Obj, key: string): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isInteger(v) || Math.abs(v) > 0x7fffffff) {
    fail(`field '${key}' of '${String(o.t)}' must be an integer, got ${describe(v)}`);
  }
  return v;
}
function str(o: Obj, key: string, maxLen = 256): string {
  const v = o[key];
  if (typeof v !== 'string' || v.length > maxLen) {
    fail(`field '${key}' of '${String(o.t)}' must be a string of at most ${maxLen} characters, got ${describe(v)}`);
  }
  return v;
}
function optStr(o: Obj, key: string, maxLen = 256): void {
  if (o[key] !== undefined) str(o, key, maxLen);
}
function bytes(o: Obj, key: string, maxLen: number): Uint8Array {
  const v = o[key];
  if (!(v instanceof Uint8Array)) fail(`field '${key}' of '${String(o.t)}' must be binary, got ${describe(v)}`);
  if (v.length > maxLen) fail(`field '${key}' of '${String(o.t)}' is ${v.length} bytes, limit ${maxLen}`);
  return v;
}
/** `z` (compression scheme) needs data to inflate; compression.ts checks the inflated size. */
function compressed(o: Obj): void {
  if (o.z === undefined) return;
  if (o.z !== Z_BROTLI) fail(`field 'z' of '${String(o.t)}' names an unknown compression scheme: ${describe(o.z)}`);
  if (o.data === undefined) fail(`'${String(o.t)}' says its data is compressed but has no data`);
}
function optBytes(o: Obj, key: string, maxLen: number): void {
  if (o[key] !== undefined) bytes(o, key, maxLen);
}
function describe(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v instanceof Uint8Array) return `${v.length} bytes`;
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v);
  if (Array.isArray(v)) return `an array of ${v.length}`;
  return typeof v === 'object' ? 'an object' : String(v);
}
function list(o: Obj, key: string, max: number): unknown[] {
  const v = o[key];
  if (!Array.isArray(v) || v.length > max) fail(`field '${key}' of '${String(o.t)}' must be a list of at most ${max}`);
  return v;
}
function lanes(o: Obj, key: string): void {
  const v = o[key];
  if (!Array.isArray(v) || v.length !== 2 || !v.every((n) => typeof n === 'number' && Number.isInteger(n) && n >= 0 && n <= Number.MAX_SAFE_INTEGER)) {
    fail(`field '${key}' of '${String(o.t)}' must be two counts, got ${describe(v)}`);
  }
}
function device(v: unknown): DeviceInfo {
  if (typeof v !== 'object' || v === null) fail('device must be an object');
  const d = v as Obj;
  str(d, 'id', 64);
  for (const k of ['busnum', 'devnum', 'vendorId', 'productId', 'bcdDevice', 'class', 'subclass', 'protocol', 'configuration']) {
    uint(d, k, 0xffff);
  }
  str(d, 'speed', 16);
  optStr(d, 'manufacturer'); optStr(d, 'product'); optStr(d, 'serial'); optStr(d, 'claimedBy'); optStr(d, 'tty', 256);
  if (typeof d.shared !== 'boolean') fail(`field 'shared' of device must be a boolean`);
  for (const i of list(d, 'interfaces', 64)) {
    if (typeof i !== 'object' || i === null) fail('interface must be an object');
    for (const k of ['number', 'class', 'subclass', 'protocol']) uint(i as Obj, k, 0xff);
  }
  return d as unknown as DeviceInfo;
}

const TRANSFER_TYPES: readonly string[] = ['control', 'bulk', 'interrupt'];
const PARITIES: readonly unknown[] = ['none', 'even', 'odd', 'mark', 'space'];
const DATA_BITS: readonly unknown[] = [5, 6, 7, 8];
const STOP_BITS: readonly unknown[] = [1, 1.5, 2];
const SERIAL_STATES: readonly unknown[] = ['open', 'waiting', 'closed'];

function oneOf(o: Obj, key: string, allowed: readonly unknown[]): void {
  if (!allowed.includes(o[key])) {
    fail(`field '${key}' of '${String(o.t)}' must be one of ${allowed.map((a) => JSON.stringify(a)).join(', ')}, got ${describe(o[key])}`);
  }
}
function optBool(o: Obj, key: string): void {
  if (o[key] !== undefined && typeof o[key] !== 'boolean') fail(`field '${key}' of '${String(o.t)}' must be a boolean, got ${describe(o[key])}`);
}
function baud(o: Obj): void {
  if (uint(o, 'baud', MAX_BAUD) === 0) fail(`field 'baud' of '${String(o.t)}' must be an integer 1..${MAX_BAUD}, got 0`);
}
/** Line settings: all required in serial-open, each optional in serial-set. */
function serialLine(o: Obj, required: boolean): void {
  if (required || o.baud !== undefined) baud(o);
  if (required || o.dataBits !== undefined) oneOf(o, 'dataBits', DATA_BITS);
  if (required || o.parity !== undefined) oneOf(o, 'parity', PARITIES);
  if (required || o.stopBits !== undefined) oneOf(o, 'stopBits', STOP_BITS);
  optBool(o, 'dtr'); optBool(o, 'rts');
}

/**
 * The check of each message type, by its `t`: every field its handlers rely on. A message type without
 * an entry here does not compile (the table is typed by Message['t']).
 */
const CHECKS: { [T in Message['t']]: (o: Obj) => void } = {
  // ---- client -> bench ----
  hello: (o) => {
    uint(o, 'v'); str(o, 'name', 128); optStr(o, 'pair', 64);
    for (const c of list(o, 'caps', 64)) if (typeof c !== 'string') fail(`capabilities must be strings`);
    if (o.resume !== undefined) {
      if (typeof o.resume !== 'object' || o.resume === null) fail(`field 'resume' of 'hello' must be a map`);
      const r = { ...(o.resume as Obj), t: 'hello.resume' }; // errors then name where the field is
      str(r, 'token', 64); lanes(r, 'acked');
    }
  },
  ack: (o) => lanes(o, 'lanes'),
  list: (o) => { uint(o, 'req'); },
  claim: (o) => { uint(o, 'req'); str(o, 'dev', 64); },
  release: (o) => { uint(o, 'req'); str(o, 'dev', 64); },
  submit: (o) => {
    str(o, 'dev', 64); uint(o, 'id'); uint(o, 'ep', 0xff); uint(o, 'length', MAX_URB_DATA);
    if (!TRANSFER_TYPES.includes(o.type as string)) fail(`unknown transfer type ${describe(o.type)}`);
    if (o.type === 'control') {
      if (bytes(o, 'setup', 8).length !== 8) fail(`control setup packet must be 8 bytes`);
    }
    optBytes(o, 'data', MAX_URB_DATA);
    if (o.timeout !== undefined) uint(o, 'timeout', 3_600_000);
    if (o.flags !== undefined) uint(o, 'flags');
    compressed(o);
  },
  cancel: (o) => { str(o, 'dev', 64); uint(o, 'id'); },
  ping: (o) => { uint(o, 'n'); },
  'serial-open': (o) => { uint(o, 'req'); str(o, 'port', 256); serialLine(o, true); },
  'serial-write': (o) => { uint(o, 'sid'); bytes(o, 'data', MAX_SERIAL_DATA); },
  'serial-set': (o) => { uint(o, 'req'); uint(o, 'sid'); serialLine(o, false); optBool(o, 'brk'); },
  'serial-close': (o) => { uint(o, 'req'); uint(o, 'sid'); },
  // ---- bench -> client ----
  welcome: (o) => {
    uint(o, 'v'); str(o, 'bench', 128); str(o, 'you', 128);
    list(o, 'caps', 64); list(o, 'devices', 1024).forEach(device);
    if (o.ttys !== undefined) for (const p of list(o, 'ttys', 64)) if (typeof p !== 'string' || p.length > 256) fail(`tty paths must be strings of at most 256 characters`);
    optStr(o, 'resume', 64);
    if (o.resumed !== undefined) {
      if (typeof o.resumed !== 'object' || o.resumed === null) fail(`field 'resumed' of 'welcome' must be a map`);
      lanes(o.resumed as Obj, 'received');
    }
  },
  devices: (o) => { uint(o, 'req'); list(o, 'devices', 1024).forEach(device); },
  added: (o) => { device(o.device); },
  changed: (o) => { device(o.device); },
  removed: (o) => { str(o, 'dev', 64); },
  claimed: (o) => { uint(o, 'req'); device(o.device); },
  released: (o) => { uint(o, 'req'); str(o, 'dev', 64); },
  complete: (o) => { str(o, 'dev', 64); uint(o, 'id'); int(o, 'status'); uint(o, 'actual', MAX_URB_DATA); optBytes(o, 'data', MAX_URB_DATA); compressed(o); },
  pong: (o) => { uint(o, 'n'); },
  'serial-opened': (o) => { uint(o, 'req'); uint(o, 'sid'); str(o, 'port', 256); str(o, 'path', 256); },
  'serial-ok': (o) => { uint(o, 'req'); },
  'serial-data': (o) => { uint(o, 'sid'); bytes(o, 'data', MAX_SERIAL_DATA); },
  'serial-state': (o) => { uint(o, 'sid'); oneOf(o, 'state', SERIAL_STATES); optStr(o, 'detail', 4096); },
  error: (o) => {
    if (o.req !== undefined) uint(o, 'req');
    if (o.id !== undefined) uint(o, 'id');
    if (o.sid !== undefined) uint(o, 'sid');
    optStr(o, 'dev', 64);
    str(o, 'code', 64); str(o, 'message', 4096);
  },
};

/** Checks a decoded value is a well-formed message; throws ProtocolError naming the first problem. */
export function parseMessage(value: unknown): Message {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(`message must be a map, got ${describe(value)}`);
  const o = value as Obj;
  if (typeof o.t !== 'string' || !Object.hasOwn(CHECKS, o.t)) fail(`unknown message type ${describe(o.t)}`);
  CHECKS[o.t as Message['t']](o);
  return o as unknown as Message;
}

/**
 * Messages that carry bulk/interrupt or serial data travel on the data stream, so control traffic never
 * queues behind them. Every serial message rides there too: a session's open, writes, settings and close
 * then stay in order (a baud change never overtakes the bytes written before it), and the bench sends
 * the session's data and state on the stream its open came on.
 */
export function isDataLane(m: Message): boolean {
  return (m.t === 'submit' && m.type !== 'control') || m.t.startsWith('serial-');
}
