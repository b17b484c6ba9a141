/**
 * Received bytes as a list of chunks, not concatenated as they arrive: a message's bytes are copied at
 * most once, and not at all when they lie inside one chunk. The one byte queue of the project: the
 * protocol's frame decoder (server/protocol/framing.ts), the USB/IP decoders (extension/core/usbip/codec.ts)
 * and the simulated boards' FIFOs (server/usb/sim-board.ts).
 */
export class ByteQueue {
  private chunks: Buffer[] = [];
  private head = 0; // index of the first live chunk
  private offset = 0; // bytes of chunks[head] already consumed
  /** Bytes buffered. */
  length = 0;

  /** Appends `chunk` as it is (not copied: the caller must not reuse it). */
  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  /** The first n buffered bytes (n ≤ length) without removing them: a view if they lie in one chunk. */
  peek(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    const first = this.chunks[this.head];
    if (first.length - this.offset >= n) return first.subarray(this.offset, this.offset + n);
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    let offset = this.offset;
    for (let i = this.head; filled < n; i++, offset = 0) {
      const c = this.chunks[i];
      filled += c.copy(out, filled, offset, Math.min(c.length, offset + n - filled));
    }
    return out;
  }

  /** Drops the first n buffered bytes (n ≤ length). */
  skip(n: number): void {
    this.length -= n;
    while (n > 0) {
      const left = this.chunks[this.head].length - this.offset;
      if (n < left) {
        this.offset += n;
        return;
      }
      n -= left;
      this.head++;
      this.offset = 0;
    }
    // Drop consumed chunks now and then, so the array neither grows forever nor shifts on every read.
    if (this.head === this.chunks.length) {
      this.chunks = [];
      this.head = 0;
    } else if (this.head >= 64 && this.head * 2 >= this.chunks.length) {
      this.chunks = this.chunks.slice(this.head);
      this.head = 0;
    }
  }

  /** Removes and returns the first n buffered bytes (n ≤ length); copies only when they span chunks. */
  take(n: number): Buffer {
    const out = this.peek(n);
    this.skip(n);
    return out;
  }

  clear(): void {
    this.chunks = [];
    this.head = 0;
    this.offset = 0;
    this.length = 0;
  }
}
