/**
 * A message stream over one byte stream (a QUIC stream in production, an in-memory pipe in tests).
 * Writes are serialised — one write in flight per stream, because concurrent writes on one Iroh stream
 * can reorder bytes (seen with @number0/iroh: server/net/number0-binding.ts) — and frames queued meanwhile are coalesced into one write, which
 * matters because every write crosses the N-API binding. With a `compressor`, URB payloads are
 * compressed on the thread pool while earlier frames are written; frames still go out in send() order.
 */
import { inflatePayload, PayloadCompressor } from './compression.js';
import { encodeFrame, FrameDecoder } from './framing.js';
import { Message } from './messages.js';

/** The byte-level operations a transport must offer. */
export interface ByteStream {
  /** Resolves once the bytes are handed to the transport. Never called concurrently. */
  write(data: Buffer): Promise<void>;
  /** Next chunk of bytes, or null at a clean end of stream. */
  read(): Promise<Buffer | null>;
  /** Finishes the send side (peer reads EOF). */
  finish(): Promise<void>;
  /** Aborts both directions. */
  abort(): void;
}

/** How `readLoop` reads: see there. */
export interface ReadOptions {
  admit?: (m: Message) => boolean;
  maxBacklog?: number;
  maxFrameBytes?: () => number;
}

/** Upper bound for one coalesced write: big enough to amortise the binding, small enough to keep latency. */
const MAX_COALESCED_WRITE = 256 * 1024;

/** A queued frame; `ready` while its payload is still being compressed. `bytes` is what it added to the backlog. */
interface Queued {
  frame?: Buffer;
  ready?: Promise<Buffer>;
  bytes: number;
}

export class MessageStream {
  private readonly queue: Queued[] = [];
  private queuedBytes = 0;
  private pumping = false;
  private closed = false;
  private idleWaiters: (() => void)[] = [];
  /** Bytes handed to the transport and received (for throughput display). */
  bytesSent = 0;
  bytesReceived = 0;
  /** How often readLoop paused for the peer to read its replies (see readLoop's `maxBacklog`). */
  readPauses = 0;
  /** True while readLoop waits for the backlog to drain. */
  readPaused = false;

  /** Set once the peer said it speaks compressed payloads (capability 'brotli'). */
  compressor?: PayloadCompressor;

  constructor(private readonly io: ByteStream, private readonly onWriteError: (e: Error) => void = () => {}) {}

  /** Queues a message; never blocks. Throws if the message cannot be encoded (too large). */
  send(message: Message): void {
    if (this.closed) return;
    let entry: Queued;
    if (this.compressor?.wants(message)) {
      // Encoding the original now reports an oversized message to the caller, as without compression.
      const plain = encodeFrame(message);
      entry = { bytes: plain.length, ready: this.compressor.compress(message).then((m) => (m === message ? plain : encodeFrame(m))) };
    } else {
      const frame = encodeFrame(message);
      entry = { frame, bytes: frame.length };
    }
    this.queue.push(entry);
    this.queuedBytes += entry.bytes;
    if (!this.pumping) void this.pump();
  }

  /** Bytes waiting to be written; callers use it for back-pressure. */
  get backlog(): number {
    return this.queuedBytes;
  }

  /** Resolves when everything queued so far has been written. */
  drained(): Promise<void> {
    if (!this.pumping && this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private async pump(): Promise<void> {
    this.pumping = true;
    try {
      while (this.queue.length > 0 && !this.closed) {
        const head = this.queue[0];
        if (!head.frame) head.frame = await head.ready!;
        if (this.closed) break;
        // Coalesce the frames that are ready behind the head, up to MAX_COALESCED_WRITE.
        const parts: Buffer[] = [];
        let size = 0;
        let bytes = 0;
        while (this.queue.length > 0) {
          const next = this.queue[0];
          if (!next.frame || (parts.length > 0 && size + next.frame.length > MAX_COALESCED_WRITE)) break;
          this.queue.shift();
          parts.push(next.frame);
          size += next.frame.length;
          bytes += next.bytes;
        }
        const chunk = parts.length === 1 ? parts[0] : Buffer.concat(parts, size);
        this.queuedBytes -= bytes;
        await this.io.write(chunk);
        this.bytesSent += chunk.length;
      }
    } catch (e) {
      this.closed = true;
      this.queue.length = 0;
      this.queuedBytes = 0;
      this.onWriteError(e as Error);
    } finally {
      this.pumping = false;
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  /**
   * Reads messages until the stream ends. Resolves on a clean end (EOF between frames), or as soon as
   * `admit` turns a message away; rejects with ProtocolError on malformed input or with the transport's
   * error.
   *
   * `admit` sees each message before its payload is inflated, so a peer the reader does not trust yet
   * cannot make it inflate anything, and one turned away is not read any further.
   *
   * With `maxBacklog`, reading pauses while more than that many bytes wait to be written, until they
   * are: a peer that sends requests but does not read the replies stops being read (QUIC flow control
   * then holds it back) instead of growing our memory. Only the bench passes it; the client always
   * reads, so the two sides can never end up waiting on each other. `maxFrameBytes` overrides the frame
   * size limit (checked per frame).
   */
  async readLoop(onMessage: (m: Message) => void, options: ReadOptions = {}): Promise<void> {
    const { admit, maxBacklog, maxFrameBytes } = options;
    const decoder = new FrameDecoder(maxFrameBytes);
    for (;;) {
      const chunk = await this.io.read();
      if (chunk === null) {
        if (decoder.pendingBytes > 0) {
          throw new Error(`stream ended in the middle of a frame (${decoder.pendingBytes} bytes left over)`);
        }
        return;
      }
      this.bytesReceived += chunk.length;
      decoder.push(chunk);
      for (let m = decoder.next(); m !== undefined; m = decoder.next()) {
        if (this.closed || (admit && !admit(m))) return;
        inflatePayload(m);
        onMessage(m);
        if (maxBacklog !== undefined && this.queuedBytes > maxBacklog) {
          this.readPauses++;
          this.readPaused = true;
          await this.drained();
          this.readPaused = false;
        }
      }
    }
  }

  /** Flushes queued frames, then finishes the send side. */
  async end(): Promise<void> {
    await this.drained();
    this.closed = true;
    await this.io.finish().catch(() => {});
  }

  abort(): void {
    this.closed = true;
    this.queue.length = 0;
    this.queuedBytes = 0;
    this.io.abort();
  }
}
