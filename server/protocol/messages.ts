/**
 * Every message of the protocol, as a typed union with a runtime validator. Messages are msgpack maps
 * with a `t` tag. Replies to a request carry its `req` number; URB traffic is keyed by (`dev`, `id`).
 * A peer never trusts the other side's shapes: `parseMessage` checks every field it relies on.
 */
import { ErrorCode, MAX_URB_DATA } from './constants.js';

export type Speed = 'low' | 'full' | 'high' | 'super' | 'superPlus' | 'unknown';
export type TransferType = 'control' | 'bulk' | 'interrupt';

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
}

export interface SetupPacket {
  bmRequestType: number;
  bRequest: number;
  wValue: number;
  wIndex: number;
  wLength: number;
}

// ---- client -> bench ----
export interface Hello { t: 'hello'; v: number; caps: string[]; name: string; pair?: string }
export interface ListRequest { t: 'list'; req: number }
export interface ClaimRequest { t: 'claim'; req: number; dev: string }
export interface ReleaseRequest { t: 'release'; req: number; dev: string }
/** One URB. `ep` carries the direction bit (0x80 = IN); `len` is the IN buffer size; `data` the OUT bytes. */
export interface Submit {
  t: 'submit';
  dev: string;
  id: number;
  ep: number;
  type: TransferType;
  setup?: Uint8Array;
  data?: Uint8Array;
  len: number;
  timeout?: number;
}
export interface Cancel { t: 'cancel'; dev: string; id: number }
export interface Ping { t: 'ping'; n: number }

// ---- bench -> client ----
export interface Welcome { t: 'welcome'; v: number; caps: string[]; bench: string; you: string; paired?: boolean; devices: DeviceInfo[] }
export interface DeviceList { t: 'devices'; req: number; devices: DeviceInfo[] }
export interface DeviceAdded { t: 'added'; device: DeviceInfo }
export interface DeviceRemoved { t: 'removed'; dev: string }
export interface DeviceChanged { t: 'changed'; device: DeviceInfo }
export interface Claimed { t: 'claimed'; req: number; device: DeviceInfo }
export interface Released { t: 'released'; req: number; dev: string }
export interface Complete { t: 'complete'; dev: string; id: number; status: number; len: number; data?: Uint8Array }
export interface Pong { t: 'pong'; n: number }
/** A refusal. `req` names the request it answers; `dev` + `id` the URB it answers (that URB is over). */
export interface ErrorMessage { t: 'error'; req?: number; dev?: string; id?: number; code: ErrorCode; message: string }

export type ClientMessage = Hello | ListRequest | ClaimRequest | ReleaseRequest | Submit | Cancel | Ping;
export type BenchMessage =
  | Welcome | DeviceList | DeviceAdded | DeviceRemoved | DeviceChanged | Claimed | Released | Complete | Pong
  | ErrorMessage;
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
function device(v: unknown): DeviceInfo {
  if (typeof v !== 'object' || v === null) fail('device must be an object');
  const d = v as Obj;
  str(d, 'id', 64);
  for (const k of ['busnum', 'devnum', 'vendorId', 'productId', 'bcdDevice', 'class', 'subclass', 'protocol', 'configuration']) {
    uint(d, k, 0xffff);
  }
  str(d, 'speed', 16);
  optStr(d, 'manufacturer'); optStr(d, 'product'); optStr(d, 'serial'); optStr(d, 'claimedBy');
  if (typeof d.shared !== 'boolean') fail(`field 'shared' of device must be a boolean`);
  for (const i of list(d, 'interfaces', 64)) {
    if (typeof i !== 'object' || i === null) fail('interface must be an object');
    for (const k of ['number', 'class', 'subclass', 'protocol']) uint(i as Obj, k, 0xff);
  }
  return d as unknown as DeviceInfo;
}

const TRANSFER_TYPES: readonly string[] = ['control', 'bulk', 'interrupt'];

/** Checks a decoded value is a well-formed message; throws ProtocolError naming the first problem. */
export function parseMessage(value: unknown): Message {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(`message must be a map, got ${describe(value)}`);
  const o = value as Obj;
  switch (o.t) {
    case 'hello':
      uint(o, 'v'); str(o, 'name', 128); optStr(o, 'pair', 64);
      for (const c of list(o, 'caps', 64)) if (typeof c !== 'string') fail(`capabilities must be strings`);
      break;
    case 'list': uint(o, 'req'); break;
    case 'claim': case 'release': uint(o, 'req'); str(o, 'dev', 64); break;
    case 'submit': {
      str(o, 'dev', 64); uint(o, 'id'); uint(o, 'ep', 0xff); uint(o, 'len', MAX_URB_DATA);
      if (!TRANSFER_TYPES.includes(o.type as string)) fail(`unknown transfer type ${describe(o.type)}`);
      if (o.type === 'control') {
        if (bytes(o, 'setup', 8).length !== 8) fail(`control setup packet must be 8 bytes`);
      }
      optBytes(o, 'data', MAX_URB_DATA);
      if (o.timeout !== undefined) uint(o, 'timeout', 3_600_000);
      break;
    }
    case 'cancel': str(o, 'dev', 64); uint(o, 'id'); break;
    case 'ping': case 'pong': uint(o, 'n'); break;
    case 'welcome':
      uint(o, 'v'); str(o, 'bench', 128); str(o, 'you', 128);
      list(o, 'caps', 64); list(o, 'devices', 1024).forEach(device);
      break;
    case 'devices': uint(o, 'req'); list(o, 'devices', 1024).forEach(device); break;
    case 'added': case 'changed': device(o.device); break;
    case 'removed': str(o, 'dev', 64); break;
    case 'claimed': uint(o, 'req'); device(o.device); break;
    case 'released': uint(o, 'req'); str(o, 'dev', 64); break;
    case 'complete': str(o, 'dev', 64); uint(o, 'id'); int(o, 'status'); uint(o, 'len', MAX_URB_DATA); optBytes(o, 'data', MAX_URB_DATA); break;
    case 'error':
      if (o.req !== undefined) uint(o, 'req');
      if (o.id !== undefined) uint(o, 'id');
      optStr(o, 'dev', 64);
      str(o, 'code', 64); str(o, 'message', 4096);
      break;
    default:
      fail(`unknown message type ${describe(o.t)}`);
  }
  return o as unknown as Message;
}

/** Parses the 8-byte USB setup packet (little-endian, as on the USB wire). */
export function parseSetup(setup: Uint8Array): SetupPacket {
  const b = Buffer.from(setup.buffer, setup.byteOffset, setup.byteLength);
  return { bmRequestType: b[0], bRequest: b[1], wValue: b.readUInt16LE(2), wIndex: b.readUInt16LE(4), wLength: b.readUInt16LE(6) };
}

export function encodeSetup(s: SetupPacket): Buffer {
  const b = Buffer.alloc(8);
  b[0] = s.bmRequestType; b[1] = s.bRequest;
  b.writeUInt16LE(s.wValue, 2); b.writeUInt16LE(s.wIndex, 4); b.writeUInt16LE(s.wLength, 6);
  return b;
}

/** Messages that carry bulk/interrupt data travel on the data stream, so control traffic never queues behind them. */
export function isDataLane(m: Message): boolean {
  return m.t === 'submit' && m.type !== 'control';
}
