/**
 * Fuzzing the two decoders that read bytes from outside: the protocol framer (from a remote peer) and
 * the USB/IP decoder (from the kernel). ≥ 100,000 generated and mutated inputs each. Every input must
 * either decode or be rejected with the decoder's own error type and a message — no other exception,
 * no hang, and nothing buffered beyond the frame limit.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { brotliCompressSync } from 'node:zlib';
import { inflatePayload } from '../../server/protocol/compression.js';
import { encodeFrame, FrameDecoder } from '../../server/protocol/framing.js';
import { ProtocolError, Message } from '../../server/protocol/messages.js';
import { MAX_FRAME_BYTES } from '../../server/protocol/constants.js';
import { encodeCmdSubmit, encodeCmdUnlink, UsbipDecoder, UsbipProtocolError } from '../../extension/core/usbip/codec.js';
import { firmwareLikeImage, seededBytes } from '../../server/usb/patterns.js';
import { PROTOCOL_VERSION } from '../../server/protocol/constants.js';

const INPUTS = 100_000;

/** Deterministic PRNG so a failure reproduces. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x / 0x100000000; };
}

function mutate(base: Buffer, r: () => number): Buffer {
  const b = Buffer.from(base);
  switch (Math.floor(r() * 6)) {
    case 0: return b.subarray(0, Math.floor(r() * b.length)); // truncation
    case 1: { const n = 1 + Math.floor(r() * 4); for (let i = 0; i < n; i++) b[Math.floor(r() * b.length)] ^= 1 << Math.floor(r() * 8); return b; } // bit flips
    case 2: { const i = Math.floor(r() * Math.max(1, b.length - 4)); b.writeUInt32BE(Math.floor(r() * 0x100000000), i); return b; } // huge/odd 32-bit field
    case 3: return Buffer.concat([b, seededBytes(Math.floor(r() * 64), Math.floor(r() * 1e9))]); // trailing junk
    case 4: return seededBytes(Math.floor(r() * 200), Math.floor(r() * 1e9)); // pure noise
    default: { const i = Math.floor(r() * b.length); return Buffer.concat([b.subarray(0, i), b.subarray(i, i + 16), b.subarray(i)]); } // duplication
  }
}

const protocolSeeds: Message[] = [
  { t: 'hello', v: PROTOCOL_VERSION, caps: ['urb', 'hotplug'], name: 'fuzz' },
  { t: 'submit', dev: 'sim-2', id: 77, ep: 0x81, type: 'bulk', length: 512 },
  { t: 'submit', dev: 'sim-1', id: 3, ep: 0x00, type: 'control', setup: Buffer.from([0x80, 6, 0, 1, 0, 0, 18, 0]), length: 18 },
  { t: 'submit', dev: 'sim-2', id: 9, ep: 0x01, type: 'bulk', data: seededBytes(300), length: 300 },
  { t: 'complete', dev: 'sim-2', id: 9, status: -32, actual: 0 },
  // compressed payloads (compression.ts): mutations hit the Brotli stream, its length and `actual` / `length`
  { t: 'complete', dev: 'sim-2', id: 10, status: 0, actual: 4096, data: brotliCompressSync(firmwareLikeImage(4096)), z: 1 },
  { t: 'submit', dev: 'sim-2', id: 11, ep: 0x01, type: 'bulk', data: brotliCompressSync(Buffer.alloc(3000, 0xff)), length: 3000, z: 1 },
  { t: 'claim', req: 4, dev: 'sim-1' },
  { t: 'error', req: 1, code: 'in-use', message: 'in use by bob' },
  { t: 'cancel', dev: 'sim-2', id: 77 },
  { t: 'serial-open', req: 5, port: 'sim-1', baud: 115200, dataBits: 8, parity: 'none', stopBits: 1, dtr: true },
  { t: 'serial-write', sid: 3, data: seededBytes(200) },
  { t: 'serial-set', req: 6, sid: 3, baud: 9600, parity: 'even', stopBits: 1.5, brk: false },
  { t: 'serial-state', sid: 3, state: 'waiting', detail: '/dev/ttyACM0 went away' },
];

test(`protocol framer: ${INPUTS} generated and mutated inputs`, (t) => {
  const r = rng(2026);
  const seeds = protocolSeeds.map(encodeFrame);
  let decoded = 0;
  let rejected = 0;
  const reasons = new Map<string, number>();
  const t0 = performance.now();
  for (let i = 0; i < INPUTS; i++) {
    const input = mutate(seeds[i % seeds.length], r);
    const d = new FrameDecoder();
    // feed in random splits, as a network would
    let pos = 0;
    try {
      while (pos < input.length) {
        const n = 1 + Math.floor(r() * 64);
        d.push(input.subarray(pos, pos + n));
        pos += n;
        for (let m = d.next(); m; m = d.next()) {
          inflatePayload(m); // as MessageStream.readLoop does for an admitted message
          decoded++;
        }
      }
      assert.ok(d.pendingBytes <= MAX_FRAME_BYTES + 4);
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw new Error(`input #${i} (${input.toString('hex').slice(0, 80)}) threw ${(e as Error).name}: ${(e as Error).message}`, { cause: e });
      assert.ok(e.message.length > 0);
      rejected++;
      const key = e.message.replace(/\d+/g, 'N').slice(0, 50);
      reasons.set(key, (reasons.get(key) ?? 0) + 1);
    }
  }
  const ms = performance.now() - t0;
  t.diagnostic(`protocol fuzz: ${INPUTS} inputs in ${ms.toFixed(0)} ms, ${decoded} messages decoded, ${rejected} inputs rejected, ${reasons.size} distinct reasons`);
  assert.ok(rejected > INPUTS / 10, 'mutations should mostly be caught');
});

test(`USB/IP decoder: ${INPUTS} generated and mutated inputs`, (t) => {
  const r = rng(1990);
  const seeds = [
    encodeCmdSubmit({ seqnum: 1, devid: 0x90002, direction: 1, ep: 0, transfer_flags: 0x200, transfer_buffer_length: 18, setup: Buffer.from([0x80, 6, 0, 1, 0, 0, 18, 0]) }),
    encodeCmdSubmit({ seqnum: 2, devid: 0x90002, direction: 0, ep: 1, transfer_flags: 0, transfer_buffer_length: 100, data: seededBytes(100) }),
    encodeCmdSubmit({ seqnum: 3, devid: 0x90002, direction: 1, ep: 2, transfer_flags: 0, transfer_buffer_length: 65536 }),
    encodeCmdUnlink({ seqnum: 4, devid: 0x90002, unlink_seqnum: 3 }),
  ];
  let decoded = 0;
  let rejected = 0;
  const t0 = performance.now();
  for (let i = 0; i < INPUTS; i++) {
    const input = mutate(seeds[i % seeds.length], r);
    const d = new UsbipDecoder();
    try {
      let pos = 0;
      while (pos < input.length) {
        const n = 1 + Math.floor(r() * 96);
        d.push(input.subarray(pos, pos + n));
        pos += n;
        for (let m = d.next(); m; m = d.next()) decoded++;
      }
    } catch (e) {
      if (!(e instanceof UsbipProtocolError)) throw new Error(`input #${i} (${input.toString('hex').slice(0, 96)}) threw ${(e as Error).name}: ${(e as Error).message}`, { cause: e });
      assert.ok(e.message.length > 0);
      rejected++;
    }
  }
  const ms = performance.now() - t0;
  t.diagnostic(`USB/IP fuzz: ${INPUTS} inputs in ${ms.toFixed(0)} ms, ${decoded} commands decoded, ${rejected} inputs rejected`);
  assert.ok(rejected > INPUTS / 10);
});
