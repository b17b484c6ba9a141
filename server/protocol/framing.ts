/**
 * Length-framed msgpack: each frame is a 4-byte big-endian body length, then a msgpack map.
 * The decoder is incremental (`push(chunk)`, `next()` → message or undefined for "not yet") and copes
 * with any split of the byte stream; it checks a frame's length against the limit before buffering it.
 * Compressed URB payloads come out as they arrived: the reader inflates them once it has decided to
 * accept the message (MessageStream.readLoop, compression.ts).
 */
import { Packr } from 'msgpackr';
import { ByteQueue } from '../shared/byte-queue.js';
import { FRAME_HEADER_BYTES, MAX_FRAME_BYTES } from './constants.js';
import { Message, parseMessage, ProtocolError } from './messages.js';

// Plain MessagePack (no msgpackr records/structures), so any MessagePack implementation can talk to us.
const packr = new Packr({ useRecords: false, moreTypes: false, mapsAsObjects: true, variableMapSize: true });

/** Encodes one message as a complete frame (length prefix + body) in a single Buffer. */
export function encodeFrame(message: Message): Buffer {
  const body = packr.pack(message);
  if (body.length > MAX_FRAME_BYTES) {
    throw new ProtocolError(`message '${message.t}' is ${body.length} bytes, over the ${MAX_FRAME_BYTES}-byte frame limit`);
  }
  const frame = Buffer.allocUnsafe(FRAME_HEADER_BYTES + body.length);
  frame.writeUInt32BE(body.length, 0);
  body.copy(frame, FRAME_HEADER_BYTES);
  return frame;
}

export class FrameDecoder {
  private readonly queue = new ByteQueue();

  /** `maxFrameBytes` may be a function: the bench allows only small frames until a client said hello. */
  constructor(private readonly maxFrameBytes: number | (() => number) = MAX_FRAME_BYTES) {}

  /** Bytes received but not yet returned as messages (a clean end of stream has none). */
  get pendingBytes(): number {
    return this.queue.length;
  }

  push(chunk: Buffer): void {
    this.queue.push(chunk);
  }

  /** The next complete message, or undefined when more bytes are needed. Throws ProtocolError on bad input. */
  next(): Message | undefined {
    if (this.queue.length < FRAME_HEADER_BYTES) return undefined;
    const length = this.queue.peek(FRAME_HEADER_BYTES).readUInt32BE(0);
    const limit = typeof this.maxFrameBytes === 'number' ? this.maxFrameBytes : this.maxFrameBytes();
    if (length > limit) {
      throw new ProtocolError(`frame length ${length} exceeds the limit of ${limit} bytes`);
    }
    if (length === 0) throw new ProtocolError('empty frame (length 0)');
    if (this.queue.length < FRAME_HEADER_BYTES + length) return undefined;
    this.queue.skip(FRAME_HEADER_BYTES);
    const body = this.queue.take(length);
    let value: unknown;
    try {
      value = packr.unpack(body);
    } catch (e) {
      throw new ProtocolError(`frame body is not valid MessagePack: ${(e as Error).message}`);
    }
    return parseMessage(value);
  }
}
