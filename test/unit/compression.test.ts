import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as zlib from 'node:zlib';
import { inflatePayload, PayloadCompressor } from '../../server/protocol/compression.js';
import { Z_BROTLI } from '../../server/protocol/constants.js';
import { encodeFrame, FrameDecoder } from '../../server/protocol/framing.js';
import { Complete, Message, ProtocolError, Submit } from '../../server/protocol/messages.js';
import { ByteStream, MessageStream } from '../../server/protocol/stream.js';
import { firmwareLikeImage, seededBytes } from '../../server/usb/patterns.js';

const image = firmwareLikeImage(1 << 20);
const out = (id: number, data: Buffer, ep = 0x02): Submit => ({ t: 'submit', dev: 'sim-2', id, ep, type: 'bulk', data, length: data.length });
const complete = (id: number, data: Buffer): Complete => ({ t: 'complete', dev: 'sim-2', id, status: 0, actual: data.length, data });

function decodeAll(frames: Buffer): Message[] {
  const d = new FrameDecoder();
  d.push(frames);
  const got: Message[] = [];
  for (let m = d.next(); m !== undefined; m = d.next()) {
    inflatePayload(m);
    got.push(m);
  }
  return got;
}

test('a firmware-like payload goes out compressed and comes back byte for byte', async () => {
  const c = new PayloadCompressor();
  const m = out(1, image.subarray(0, 64 * 1024));
  assert.ok(c.wants(m));
  const packed = await c.compress(m);
  assert.equal(packed.z, Z_BROTLI);
  assert.ok(packed.data!.length < 64 * 1024 / 2, `compressed to ${packed.data!.length} bytes`);
  assert.equal(m.z, undefined, 'the original message is left alone');
  const [back] = decodeAll(encodeFrame(packed));
  assert.equal((back as Submit).z, undefined);
  assert.deepEqual(Buffer.from((back as Submit).data!), image.subarray(0, 64 * 1024));
  assert.equal(c.stats.compressed, 1);
});

test('random data is sent as it is, and its endpoint skips the next 16 tries; other endpoints still try', async () => {
  const c = new PayloadCompressor();
  const m = out(1, seededBytes(64 * 1024));
  assert.ok(c.wants(m));
  assert.equal(await c.compress(m), m);
  for (let i = 0; i < 16; i++) assert.equal(c.wants(out(2 + i, seededBytes(8192))), false);
  assert.equal(c.wants(out(20, seededBytes(8192))), true, 'tries again after the skips');
  assert.equal(c.wants(out(21, image.subarray(0, 8192), 0x04)), true);
});

test('small payloads, messages without data and other messages are never compressed', () => {
  const c = new PayloadCompressor();
  assert.equal(c.wants(out(1, image.subarray(0, 2047))), false);
  assert.equal(c.wants({ t: 'complete', dev: 'a', id: 1, status: 0, actual: 0 }), false);
  assert.equal(c.wants({ t: 'serial-data', sid: 1, data: image.subarray(0, 8192) }), false);
  assert.equal(c.wants({ t: 'ping', n: 1 }), false);
});

test('MessageStream keeps send() order while payloads compress, and coalesces what is ready', async () => {
  const writes: Buffer[] = [];
  const io: ByteStream = {
    write: async (b) => { writes.push(Buffer.from(b)); await new Promise((r) => setImmediate(r)); },
    read: async () => null,
    finish: async () => {},
    abort: () => {},
  };
  const s = new MessageStream(io);
  s.compressor = new PayloadCompressor();
  const sent: Message[] = [];
  for (let i = 0; i < 40; i++) {
    const kind = i % 4;
    const m: Message = kind === 0 ? complete(i, image.subarray(i * 8192, i * 8192 + 32768))
      : kind === 1 ? out(i, seededBytes(16384, i))
        : kind === 2 ? { t: 'pong', n: i }
          : complete(i, Buffer.from([i]));
    sent.push(m);
    s.send(m);
  }
  await s.drained();
  assert.equal(s.backlog, 0);
  const got = decodeAll(Buffer.concat(writes));
  assert.equal(got.length, sent.length);
  for (let i = 0; i < sent.length; i++) {
    assert.equal(got[i].t, sent[i].t, `message ${i} in order`);
    const a = sent[i] as { data?: Uint8Array };
    const b = got[i] as { data?: Uint8Array };
    if (a.data) assert.deepEqual(Buffer.from(b.data!), Buffer.from(a.data), `message ${i} data`);
  }
  assert.ok(s.compressor.stats.compressed >= 10, 'the firmware-like completions were compressed');
  assert.ok(s.bytesSent < sent.reduce((n, m) => n + ((m as { data?: Uint8Array }).data?.length ?? 0), 0));
});

test('bad compressed payloads are refused with a clear error and bounded memory', () => {
  const frame = (m: Record<string, unknown>): Message[] => decodeAll(encodeFrame(m as unknown as Message));
  const rejectsWith = (m: Record<string, unknown>, re: RegExp): void => assert.throws(() => frame(m), (e: Error) => e instanceof ProtocolError && re.test(e.message));
  const good = zlib.brotliCompressSync(image.subarray(0, 10000));
  rejectsWith({ t: 'complete', dev: 'd', id: 1, status: 0, actual: 10000, data: Buffer.from('not brotli at all'), z: 1 }, /does not inflate to 10000 bytes/);
  rejectsWith({ t: 'complete', dev: 'd', id: 1, status: 0, actual: 9999, data: good, z: 1 }, /does not inflate to 9999 bytes/);
  rejectsWith({ t: 'complete', dev: 'd', id: 1, status: 0, actual: 10001, data: good, z: 1 }, /inflates to 10000 bytes, 'actual' says 10001/);
  rejectsWith({ t: 'submit', dev: 'd', id: 1, ep: 2, type: 'bulk', length: 10000, data: good, z: 2 }, /unknown compression scheme: 2/);
  rejectsWith({ t: 'submit', dev: 'd', id: 1, ep: 0x81, type: 'bulk', length: 10000, z: 1 }, /compressed but has no data/);
  // a bomb: 4 MiB of zeros in a few bytes, claiming 100 bytes — refused without inflating it all
  const bomb = zlib.brotliCompressSync(Buffer.alloc(4 << 20));
  assert.ok(bomb.length < 100);
  const before = process.memoryUsage().arrayBuffers;
  rejectsWith({ t: 'complete', dev: 'd', id: 1, status: 0, actual: 100, data: bomb, z: 1 }, /does not inflate to 100 bytes/);
  assert.ok(process.memoryUsage().arrayBuffers - before < 1 << 20);
  // and the good one works
  const [m] = frame({ t: 'complete', dev: 'd', id: 1, status: 0, actual: 10000, data: good, z: 1 });
  assert.deepEqual(Buffer.from((m as Complete).data!), image.subarray(0, 10000));
});

test('readLoop delivers compressed and plain messages in arrival order, and stops at once on a bad one', async () => {
  // the peer's side: firmware-like and plain messages interleaved, compressed where it pays
  const sender = new PayloadCompressor();
  const frames: Buffer[] = [];
  const sent: Message[] = [];
  for (let i = 0; i < 60; i++) {
    const m: Message = i % 3 === 0 ? { t: 'pong', n: i } : complete(i, image.subarray(i * 4096, i * 4096 + (i % 3) * 16384));
    sent.push(m);
    frames.push(encodeFrame(sender.wants(m) ? await sender.compress(m) : m));
  }
  assert.ok(sender.stats.compressed > 20);
  const chunks = [Buffer.concat(frames)];
  const io: ByteStream = { write: async () => {}, read: async () => chunks.shift() ?? null, finish: async () => {}, abort: () => {} };
  const got: Message[] = [];
  await new MessageStream(io).readLoop((m) => got.push(m));
  assert.deepEqual(got.map((m) => (m.t === 'pong' ? m.n : (m as Complete).id)), sent.map((m) => (m.t === 'pong' ? m.n : (m as Complete).id)));
  for (let i = 0; i < 60; i++) if (got[i].t === 'complete') assert.deepEqual(Buffer.from((got[i] as Complete).data!), Buffer.from((sent[i] as Complete).data!));
  // a bad payload, then a peer that goes quiet: the loop fails now, naming the problem
  const quiet: ByteStream = {
    write: async () => {}, finish: async () => {}, abort: () => {},
    read: (() => { let first = true; return () => (first ? ((first = false), Promise.resolve(encodeFrame({ t: 'complete', dev: 'd', id: 7, status: 0, actual: 50, data: Buffer.from('junk'), z: 1 }))) : new Promise<Buffer | null>(() => {})); })(),
  };
  const delivered: Message[] = [];
  await assert.rejects(new MessageStream(quiet).readLoop((m) => delivered.push(m)), /compressed data of 'complete' 7 does not inflate to 50 bytes/);
  assert.equal(delivered.length, 0);
});

test('inflatePayload leaves plain messages alone', () => {
  const m = complete(1, Buffer.from('plain'));
  inflatePayload(m);
  assert.deepEqual(m.data, Buffer.from('plain'));
});
