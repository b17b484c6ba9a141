/**
 * Buffer <-> Array<number> for the Iroh binding, which accepts and returns bytes only as Array<number>
 * (one N-API call per byte; FACTS.md). Conversions measured in shared/recipes/iroh-perf: a reused,
 * preallocated Array filled by a loop unrolled ×4 sends at ≈1.2 GB/s (Array.from: ≈25 MB/s); a plain
 * loop into Buffer.allocUnsafe receives at ≈500-700 MB/s (Buffer.from(array): ≈50 MB/s).
 */

/**
 * Writes are cut into pieces of this size so one preallocated Array serves almost every write. Reads
 * ask for the same size (iroh.ts): each event-loop turn then converts at most this much in either
 * direction, which keeps a stream that sends and receives at once balanced (with 64 KiB writes and
 * 1 MiB reads the sending side got under 10 % of the bandwidth) and bounds how long a control
 * completion waits behind bulk data (≈10 ms; 1 MiB reads made it ≈80 ms). Measured in `npm run bench`.
 */
export const WIRE_CHUNK = 128 * 1024;

const pool = new Map<number, number[]>();
const POOL_SIZES = 16;

/**
 * Returns an Array holding `buf`'s bytes. The Array is reused by the next call of the same size, which
 * is safe because the binding copies it into Rust memory synchronously, inside the write call.
 */
export function toWireArray(buf: Uint8Array): number[] {
  const n = buf.length;
  let a = pool.get(n);
  if (a === undefined) {
    a = new Array<number>(n).fill(0); // PACKED_SMI elements: the fast kind for the binding to read
    if (pool.size >= POOL_SIZES) {
      for (const k of pool.keys()) {
        if (k !== WIRE_CHUNK) { pool.delete(k); break; }
      }
    }
    pool.set(n, a);
  }
  let i = 0;
  for (; i + 3 < n; i += 4) {
    a[i] = buf[i]; a[i + 1] = buf[i + 1]; a[i + 2] = buf[i + 2]; a[i + 3] = buf[i + 3];
  }
  for (; i < n; i++) a[i] = buf[i];
  return a;
}

/** Copies an Array returned by the binding into a new Buffer. */
export function fromWireArray(a: number[]): Buffer {
  const n = a.length;
  const b = Buffer.allocUnsafe(n);
  let i = 0;
  for (; i + 3 < n; i += 4) {
    b[i] = a[i]; b[i + 1] = a[i + 1]; b[i + 2] = a[i + 2]; b[i + 3] = a[i + 3];
  }
  for (; i < n; i++) b[i] = a[i];
  return b;
}
