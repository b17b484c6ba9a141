/**
 * Buffer <-> Array<number> for the Iroh binding, which accepts and returns bytes only as Array<number>
 * (one N-API call per byte, on the JS thread; a Buffer throws "Failed to get Array length"). Conversions
 * measured between two processes on loopback (`npm run bench` prints the same, "conversions" row): a reused,
 * preallocated Array filled by a loop unrolled ×4 sends at ≈1.2 GB/s (Array.from: ≈25 MB/s); a plain
 * loop into Buffer.allocUnsafe receives at ≈500-700 MB/s (Buffer.from(array): ≈50 MB/s).
 */

/**
 * Writes are cut into pieces of this size so one preallocated Array serves almost every write. Reads
 * ask for the same size (iroh.ts): each event-loop turn then converts at most this much in either
 * direction — the binding's conversion runs on the JS thread (≈0.08 µs a byte), so under bulk load a
 * control completion waits about one piece's conversion on each side. Measured with `npm run bench`
 * (a control URB on a 9th device while 8 stream bulk, p50 / p99, two runs each):
 *   64 KiB writes, 1 MiB reads:  0.35 / 77-79 ms; and a two-way stream gave its sending side under 10 %
 *   64 / 64 KiB (this):          5.1 / 10 ms both runs; bulk within the noise of the others
 *   128 / 128 KiB:               9.5 / 15-16 ms
 *   256 / 256 KiB:               0.35-19 / 26-34 ms
 */
export const WIRE_CHUNK = 64 * 1024;

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
