/**
 * Compression of URB payloads (capability 'brotli'). Every byte that crosses the Iroh binding costs
 * one N-API call on the JS thread with @number0/iroh (see server/net/bytes.ts), so fewer bytes on the wire is the cheapest speed-up
 * there is: Brotli at quality 1 packs a firmware image ≈3× at ≈300 MB/s either way, and recognises
 * random data at ≈1.6 GB/s (measured in `npm run bench`). Compression runs on libuv's thread pool,
 * off the JS thread that does the conversions; a payload is sent compressed only when that saves
 * at least an eighth, and after a payload that did not, its endpoint skips the next few tries.
 *
 * On the wire: a `submit` or `complete` with `z: 1` carries Brotli bytes in `data`; its `length` (submit)
 * or `actual` (complete) is the uncompressed length. The receiver inflates with that as a hard output
 * limit, so a hostile peer cannot make it allocate more than a plain message of that size would.
 */
import { promisify } from 'node:util';
import * as zlib from 'node:zlib';
import { Z_BROTLI } from './constants.js';
import { ProtocolError } from './messages.js';
import type { Complete, Message, Submit } from './messages.js';


/** Smaller payloads are not worth a trip to the thread pool (control transfers, serial-sized bulk). */
const MIN_PAYLOAD = 2048;

/** After an incompressible payload, this many further payloads on that endpoint go out as they are. */
const SKIP_AFTER_MISS = 16;

const BROTLI_OPTIONS: zlib.BrotliOptions = {
  params: {
    [zlib.constants.BROTLI_PARAM_QUALITY]: 1,
    [zlib.constants.BROTLI_PARAM_LGWIN]: 18, // 256 KiB window: a 64 KiB URB fits, memory stays small
  },
};
const brotliCompress = promisify(zlib.brotliCompress) as (b: Uint8Array, o: zlib.BrotliOptions) => Promise<Buffer>;

type Payload = Submit | Complete;

/** Statistics for the bench and the logs. */
export interface CompressionStats {
  payloads: number;
  compressed: number;
  bytesIn: number;
  bytesOut: number;
}

export class PayloadCompressor {
  private readonly skips = new Map<string, number>();
  readonly stats: CompressionStats = { payloads: 0, compressed: 0, bytesIn: 0, bytesOut: 0 };

  /** True for a message worth trying to compress. */
  wants(m: Message): m is Payload {
    if ((m.t !== 'submit' && m.t !== 'complete') || m.data === undefined || m.data.length < MIN_PAYLOAD || m.z !== undefined) return false;
    const key = keyOf(m);
    const skip = this.skips.get(key);
    if (skip !== undefined) {
      if (skip <= 1) this.skips.delete(key);
      else this.skips.set(key, skip - 1);
      return false;
    }
    return true;
  }

  /** The message with its payload compressed, or the message itself when that does not pay. */
  async compress(m: Payload): Promise<Payload> {
    const data = m.data!;
    this.stats.payloads++;
    this.stats.bytesIn += data.length;
    let packed: Buffer;
    try {
      packed = await brotliCompress(data, BROTLI_OPTIONS);
    } catch {
      this.stats.bytesOut += data.length;
      return m;
    }
    if (packed.length > data.length - (data.length >> 3)) {
      if (this.skips.size > 1024) this.skips.clear();
      this.skips.set(keyOf(m), SKIP_AFTER_MISS);
      this.stats.bytesOut += data.length;
      return m;
    }
    this.stats.compressed++;
    this.stats.bytesOut += packed.length;
    return { ...m, data: packed, z: Z_BROTLI };
  }
}

/**
 * Replaces a compressed payload (checked by parseMessage) by its original bytes, in place. Throws
 * ProtocolError when the bytes are not Brotli or do not inflate to exactly `length` / `actual` bytes.
 */
export function inflatePayload(m: Message): void {
  if ((m.t !== 'submit' && m.t !== 'complete') || m.z === undefined || m.data === undefined) return; // parseMessage checked z
  const [field, size] = m.t === 'submit' ? ['length', m.length] : ['actual', m.actual];
  let plain: Buffer;
  try {
    plain = zlib.brotliDecompressSync(m.data, { maxOutputLength: Math.max(1, size) });
  } catch (e) {
    throw new ProtocolError(`compressed data of '${m.t}' ${m.id} does not inflate to ${size} bytes: ${(e as Error).message}`);
  }
  if (plain.length !== size) throw new ProtocolError(`compressed data of '${m.t}' ${m.id} inflates to ${plain.length} bytes, '${field}' says ${size}`);
  m.data = plain;
  delete m.z;
}

function keyOf(m: Payload): string {
  // A completion does not carry its endpoint; its device stands in (one bulk stream per device is typical).
  return m.t === 'submit' ? `${m.dev}/${m.ep}` : `${m.dev}/in`;
}
