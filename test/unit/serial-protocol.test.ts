/** The serial messages of the protocol: round trips through the framer, exact refusals, lanes. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { encodeFrame, FrameDecoder } from '../../server/protocol/framing.js';
import { isDataLane, Message, parseMessage } from '../../server/protocol/messages.js';
import { CAPABILITIES } from '../../server/protocol/constants.js';

const valid: Message[] = [
  { t: 'serial-open', req: 1, port: 'sim-1', baud: 115200, dataBits: 8, parity: 'none', stopBits: 1 },
  { t: 'serial-open', req: 2, port: '/dev/ttyAMA0', baud: 300, dataBits: 5, parity: 'space', stopBits: 1.5, dtr: false, rts: true },
  { t: 'serial-opened', req: 1, sid: 7, port: 'sim-1', path: 'sim:sim-1' },
  { t: 'serial-write', sid: 7, data: Buffer.from('hello') },
  { t: 'serial-write', sid: 7, data: Buffer.alloc(64 * 1024) },
  { t: 'serial-set', req: 3, sid: 7 },
  { t: 'serial-set', req: 3, sid: 7, baud: 9600, dataBits: 7, parity: 'even', stopBits: 2, dtr: true, rts: false, brk: true },
  { t: 'serial-close', req: 4, sid: 7 },
  { t: 'serial-ok', req: 4 },
  { t: 'serial-data', sid: 7, data: Buffer.from([0, 1, 2, 255]) },
  { t: 'serial-state', sid: 7, state: 'waiting', detail: '/dev/ttyACM0 went away' },
  { t: 'serial-state', sid: 7, state: 'open' },
  { t: 'error', sid: 7, code: 'not-open', message: 'serial session 7 is not open by this client' },
  { t: 'welcome', v: 1, caps: ['serial'], bench: 'b', you: 'me', devices: [], ttys: ['/dev/ttyAMA0'] },
];

test('every serial message round-trips through the framer', () => {
  for (const m of valid) {
    const d = new FrameDecoder();
    d.push(encodeFrame(m));
    const back = d.next() as unknown as Record<string, unknown>;
    for (const [k, v] of Object.entries(m)) {
      if (v instanceof Uint8Array) assert.ok(Buffer.from(back[k] as Uint8Array).equals(Buffer.from(v)), `${m.t}.${k}`);
      else assert.deepEqual(back[k], v, `${m.t}.${k}`);
    }
  }
});

test('the bench announces the serial capability', () => {
  assert.ok(CAPABILITIES.includes('serial'));
});

test('bad serial fields are refused with the field, the rule and the value', () => {
  const open = { t: 'serial-open', req: 1, port: 'sim-1', baud: 115200, dataBits: 8, parity: 'none', stopBits: 1 };
  const cases: [Record<string, unknown>, string][] = [
    [{ ...open, baud: 0 }, `field 'baud' of 'serial-open' must be an integer 1..20000000, got 0`],
    [{ ...open, baud: 20_000_001 }, `field 'baud' of 'serial-open' must be an integer 0..20000000, got 20000001`],
    [{ ...open, baud: 9600.5 }, `field 'baud' of 'serial-open' must be an integer 0..20000000, got 9600.5`],
    [{ ...open, dataBits: 9 }, `field 'dataBits' of 'serial-open' must be one of 5, 6, 7, 8, got 9`],
    [{ ...open, parity: 'weird' }, `field 'parity' of 'serial-open' must be one of "none", "even", "odd", "mark", "space", got "weird"`],
    [{ ...open, stopBits: 3 }, `field 'stopBits' of 'serial-open' must be one of 1, 1.5, 2, got 3`],
    [{ ...open, stopBits: undefined }, `field 'stopBits' of 'serial-open' must be one of 1, 1.5, 2, got nothing`],
    [{ ...open, dtr: 1 }, `field 'dtr' of 'serial-open' must be a boolean, got 1`],
    [{ ...open, port: 5 }, `field 'port' of 'serial-open' must be a string of at most 256 characters, got 5`],
    [{ ...open, port: 'x'.repeat(257) }, `field 'port' of 'serial-open' must be a string of at most 256 characters, got "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…"`],
    [{ t: 'serial-write', sid: 1, data: Buffer.alloc(64 * 1024 + 1) }, `field 'data' of 'serial-write' is 65537 bytes, limit 65536`],
    [{ t: 'serial-write', sid: -1, data: Buffer.alloc(1) }, `field 'sid' of 'serial-write' must be an integer 0..4294967295, got -1`],
    [{ t: 'serial-write', sid: 1, data: 'text' }, `field 'data' of 'serial-write' must be binary, got "text"`],
    [{ t: 'serial-set', req: 1, sid: 1, brk: 'yes' }, `field 'brk' of 'serial-set' must be a boolean, got "yes"`],
    [{ t: 'serial-set', req: 1, sid: 1, parity: 'NONE' }, `field 'parity' of 'serial-set' must be one of "none", "even", "odd", "mark", "space", got "NONE"`],
    [{ t: 'serial-set', req: 1, baud: 9600 }, `field 'sid' of 'serial-set' must be an integer 0..4294967295, got nothing`],
    [{ t: 'serial-close', req: 1 }, `field 'sid' of 'serial-close' must be an integer 0..4294967295, got nothing`],
    [{ t: 'serial-state', sid: 1, state: 'gone' }, `field 'state' of 'serial-state' must be one of "open", "waiting", "closed", got "gone"`],
    [{ t: 'serial-state', sid: 1, state: 'open', detail: 5 }, `field 'detail' of 'serial-state' must be a string of at most 4096 characters, got 5`],
    [{ t: 'serial-opened', req: 1, sid: 1, port: 'sim-1' }, `field 'path' of 'serial-opened' must be a string of at most 256 characters, got nothing`],
    [{ t: 'serial-data', sid: 1 }, `field 'data' of 'serial-data' must be binary, got nothing`],
    [{ t: 'error', sid: 'x', code: 'busy', message: 'm' }, `field 'sid' of 'error' must be an integer 0..4294967295, got "x"`],
    [{ t: 'welcome', v: 1, caps: [], bench: 'b', you: 'y', devices: [], ttys: [5] }, `tty paths must be strings of at most 256 characters`],
  ];
  for (const [m, message] of cases) assert.throws(() => parseMessage(m), { name: 'ProtocolError', message }, JSON.stringify(m).slice(0, 80));
});

test('serial messages travel on the data lane; requests of other kinds do not', () => {
  for (const m of valid) if (m.t.startsWith('serial-')) assert.equal(isDataLane(m), true, m.t);
  assert.equal(isDataLane({ t: 'claim', req: 1, dev: 'sim-1' }), false);
  assert.equal(isDataLane({ t: 'submit', dev: 'sim-1', id: 1, ep: 0x81, type: 'bulk', length: 8 }), true);
  assert.equal(isDataLane({ t: 'error', sid: 1, code: 'busy', message: '' }), false);
});
