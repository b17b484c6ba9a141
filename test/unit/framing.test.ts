import assert from 'node:assert/strict';
import { test } from 'node:test';
import { encodeFrame, FrameDecoder } from '../../server/protocol/framing.js';
import { Message, parseMessage, ProtocolError } from '../../server/protocol/messages.js';
import { MAX_FRAME_BYTES } from '../../server/protocol/constants.js';
import { seededBytes } from '../../server/usb/patterns.js';
import { PROTOCOL_VERSION } from '../../server/protocol/constants.js';
import { encodeSetup, isIn, parseSetup } from '../../server/protocol/urb.js';

test('golden bytes: ping', () => {
  const frame = encodeFrame({ t: 'ping', n: 1 });
  assert.deepEqual([...frame], [
    0x00, 0x00, 0x00, 0x0b, // body length 11, big-endian
    0x82, // fixmap, 2 entries
    0xa1, 0x74, 0xa4, 0x70, 0x69, 0x6e, 0x67, // "t": "ping"
    0xa1, 0x6e, 0x01, // "n": 1
  ]);
});

test('golden bytes: control submit carries the setup packet as msgpack bin', () => {
  const setup = Buffer.from([0x80, 0x06, 0x00, 0x01, 0x00, 0x00, 0x12, 0x00]);
  const frame = encodeFrame({ t: 'submit', dev: 'a', id: 7, ep: 0x80, type: 'control', setup, length: 18 });
  const body = frame.subarray(4);
  assert.equal(frame.readUInt32BE(0), body.length);
  assert.equal(body[0], 0x87); // fixmap, 7 entries
  const binAt = body.indexOf(Buffer.from([0xc4, 0x08])); // bin8, 8 bytes
  assert.ok(binAt > 0);
  assert.deepEqual(body.subarray(binAt + 2, binAt + 10), setup);
});

test('a URB\'s direction: the setup packet for control, the endpoint address otherwise', () => {
  const getStatus = encodeSetup({ bmRequestType: 0x80, bRequest: 0, wValue: 0, wIndex: 0, wLength: 2 });
  const setLine = encodeSetup({ bmRequestType: 0x21, bRequest: 0x22, wValue: 3, wIndex: 0, wLength: 0 });
  assert.equal(isIn({ type: 'control', ep: 0, setup: getStatus }), true);
  assert.equal(isIn({ type: 'control', ep: 0x80, setup: setLine }), false);
  assert.equal(isIn({ type: 'bulk', ep: 0x81 }), true);
  assert.equal(isIn({ type: 'interrupt', ep: 0x02 }), false);
  assert.deepEqual(parseSetup(setLine), { bmRequestType: 0x21, bRequest: 0x22, wValue: 3, wIndex: 0, wLength: 0 });
  assert.deepEqual([...getStatus], [0x80, 0, 0, 0, 0, 0, 2, 0]);
});

const sample: Message[] = [
  { t: 'hello', v: PROTOCOL_VERSION, caps: ['urb'], name: 'n' },
  { t: 'submit', dev: 'sim-1', id: 1, ep: 0x02, type: 'bulk', data: seededBytes(3000), length: 3000 },
  { t: 'complete', dev: 'sim-1', id: 1, status: 0, actual: 5, data: Buffer.from('hello') },
  { t: 'complete', dev: 'sim-1', id: 2, status: -32, actual: 0 },
  { t: 'error', req: 3, code: 'in-use', message: 'in use by alice' },
  { t: 'cancel', dev: 'x', id: 9 },
];

function roundTrip(m: Message): Message {
  const d = new FrameDecoder();
  d.push(encodeFrame(m));
  return d.next()!;
}

test('every message type round-trips', () => {
  for (const m of sample) {
    const back = roundTrip(m) as unknown as Record<string, unknown>;
    for (const [k, v] of Object.entries(m)) {
      if (v instanceof Uint8Array) assert.deepEqual(Buffer.from(back[k] as Uint8Array), Buffer.from(v));
      else assert.deepEqual(back[k], v);
    }
  }
});

test('every truncated prefix is "not yet", never an error', () => {
  for (const m of sample) {
    const frame = encodeFrame(m);
    for (let n = 0; n < frame.length; n++) {
      const d = new FrameDecoder();
      d.push(frame.subarray(0, n));
      assert.equal(d.next(), undefined, `prefix ${n}/${frame.length} of ${m.t}`);
    }
  }
});

test('random chunk splits decode the same messages in order', () => {
  const stream = Buffer.concat(Array.from({ length: 50 }, (_, i) => encodeFrame(sample[i % sample.length])));
  const cuts = seededBytes(4096, 42);
  for (let trial = 0; trial < 200; trial++) {
    const d = new FrameDecoder();
    const got: string[] = [];
    let pos = 0;
    let k = trial * 7;
    while (pos < stream.length) {
      const n = 1 + (cuts[k++ % cuts.length] % (trial % 3 === 0 ? 7 : 400));
      d.push(stream.subarray(pos, pos + n));
      pos += n;
      for (let m = d.next(); m; m = d.next()) got.push(m.t);
    }
    assert.equal(got.length, 50);
    assert.deepEqual(got, Array.from({ length: 50 }, (_, i) => sample[i % sample.length].t));
    assert.equal(d.pendingBytes, 0);
  }
});

test('oversized frame length is rejected before buffering', () => {
  const d = new FrameDecoder();
  const head = Buffer.alloc(4);
  head.writeUInt32BE(0xffffffff);
  d.push(head);
  assert.throws(() => d.next(), { name: 'ProtocolError', message: `frame length 4294967295 exceeds the limit of ${MAX_FRAME_BYTES} bytes` });
});

test('empty frame, junk body and non-messages are rejected with a reason', () => {
  const zero = new FrameDecoder();
  zero.push(Buffer.alloc(4));
  assert.throws(() => zero.next(), /empty frame/);

  const junk = new FrameDecoder();
  junk.push(Buffer.from([0, 0, 0, 1, 0x92])); // an array of 2 with no elements
  assert.throws(() => junk.next(), /not valid MessagePack/);

  const num = new FrameDecoder();
  num.push(Buffer.from([0, 0, 0, 1, 0x05]));
  assert.throws(() => num.next(), { message: 'message must be a map, got 5' });
});

test('message validation names the bad field', () => {
  assert.throws(() => parseMessage({ t: 'nope' }), { message: `unknown message type "nope"` });
  assert.throws(() => parseMessage({ t: 'submit', dev: 'a', id: -1, ep: 1, type: 'bulk', length: 0 }), /field 'id' of 'submit' must be an integer 0\.\.4294967295, got -1/);
  assert.throws(() => parseMessage({ t: 'submit', dev: 'a', id: 1, ep: 1, type: 'iso', length: 0 }), /unknown transfer type "iso"/);
  assert.throws(() => parseMessage({ t: 'submit', dev: 'a', id: 1, ep: 0, type: 'control', setup: Buffer.alloc(4), length: 0 }), /setup packet must be 8 bytes/);
  assert.throws(() => parseMessage({ t: 'submit', dev: 'a', id: 1, ep: 1, type: 'bulk', length: 5e7 }), /field 'length'/);
  assert.throws(() => parseMessage({ t: 'hello', v: PROTOCOL_VERSION, caps: 'x', name: 'n' }), /field 'caps' of 'hello' must be a list/);
  assert.throws(() => parseMessage({ t: 'claim', req: 1, dev: 'x'.repeat(65) }), /field 'dev' of 'claim' must be a string of at most 64/);
  assert.throws(() => parseMessage(null), ProtocolError);
});
