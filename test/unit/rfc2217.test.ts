/**
 * The RFC 2217 codec: golden bytes for what we send, every event the decoder reads, every truncated
 * prefix and random chunkings giving the same events, and hostile input staying bounded.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  ComPort, comPort, DO, DONT, escapeIac, IAC, MAX_SUBNEGOTIATION, negotiation, NOP, OPT_BINARY, OPT_COM_PORT,
  parseComPortRequest, SB, SE, subnegotiation, TelnetDecoder, TelnetEvent, u32, WILL, WONT,
} from '../../extension/core/rfc2217.js';

/** Adjacent data events joined, data as plain arrays: chunking must not change this. */
function canon(events: TelnetEvent[]): unknown[] {
  const out: unknown[] = [];
  for (const e of events) {
    const last = out[out.length - 1] as { kind: string; data: number[] } | undefined;
    if (e.kind === 'data' && last?.kind === 'data') last.data.push(...e.data);
    else if (e.kind === 'data') out.push({ kind: 'data', data: [...e.data] });
    else if (e.kind === 'subnegotiation') out.push({ ...e, payload: [...e.payload] });
    else out.push(e);
  }
  return out;
}

function decodeAll(chunks: Uint8Array[]): unknown[] {
  const d = new TelnetDecoder();
  return canon(chunks.flatMap((c) => d.push(c)));
}

/** A stream with one of everything, IACs in data and in a subnegotiation. */
const STREAM = Buffer.concat([
  Buffer.from('ab'), Buffer.of(IAC, IAC), Buffer.from('c'),
  Buffer.of(IAC, WILL, OPT_COM_PORT), Buffer.of(IAC, DO, OPT_BINARY), Buffer.of(IAC, WONT, 1), Buffer.of(IAC, DONT, 3),
  comPort(ComPort.SET_BAUDRATE, u32(0x0001c2ff)), // 115455: a 0xff inside the value is doubled
  Buffer.of(IAC, NOP), Buffer.of(0, IAC, IAC, IAC, IAC, 0xfe),
]);
const EXPECTED = [
  { kind: 'data', data: [0x61, 0x62, 0xff, 0x63] },
  { kind: 'negotiate', verb: 'will', option: 44 },
  { kind: 'negotiate', verb: 'do', option: 0 },
  { kind: 'negotiate', verb: 'wont', option: 1 },
  { kind: 'negotiate', verb: 'dont', option: 3 },
  { kind: 'subnegotiation', option: 44, payload: [1, 0x00, 0x01, 0xc2, 0xff] },
  { kind: 'command', command: NOP },
  { kind: 'data', data: [0, 0xff, 0xff, 0xfe] },
];

describe('RFC 2217 encoding (golden bytes)', () => {
  test('negotiation: IAC verb option', () => {
    assert.deepEqual([...negotiation('will', 44)], [255, 251, 44]);
    assert.deepEqual([...negotiation('wont', 44)], [255, 252, 44]);
    assert.deepEqual([...negotiation('do', 0)], [255, 253, 0]);
    assert.deepEqual([...negotiation('dont', 3)], [255, 254, 3]);
  });

  test('COM-PORT-OPTION replies: IAC SB 44 <command+100> <value> IAC SE, values big-endian, IAC doubled', () => {
    // SET-BAUDRATE answer for 115200: 101, 0x0001C200
    assert.deepEqual([...comPort(101, u32(115200))], [IAC, SB, 44, 101, 0x00, 0x01, 0xc2, 0x00, IAC, SE]);
    // a baud rate whose bytes hold 0xff: 0x0000ffff
    assert.deepEqual([...comPort(101, u32(65535))], [IAC, SB, 44, 101, 0, 0, IAC, IAC, IAC, IAC, IAC, SE]);
    assert.deepEqual([...comPort(ComPort.SET_CONTROL + 100, [8])], [IAC, SB, 44, 105, 8, IAC, SE]);
    assert.deepEqual([...subnegotiation(44, Buffer.of())], [IAC, SB, 44, IAC, SE]);
  });

  test('escapeIac doubles every 0xff and returns the same buffer when there is none', () => {
    const plain = Buffer.from('no iac here');
    assert.equal(escapeIac(plain), plain);
    assert.deepEqual([...escapeIac(Buffer.of(0xff))], [0xff, 0xff]);
    assert.deepEqual([...escapeIac(Buffer.of(1, 0xff, 2, 0xff, 0xff))], [1, 0xff, 0xff, 2, 0xff, 0xff, 0xff, 0xff]);
    const all = Buffer.alloc(1000, 0xff);
    assert.deepEqual(escapeIac(all), Buffer.alloc(2000, 0xff));
    const every = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    assert.deepEqual(new TelnetDecoder().push(escapeIac(every)), [{ kind: 'data', data: every }]);
  });
});

describe('RFC 2217 decoding', () => {
  test('one of everything in one chunk', () => {
    assert.deepEqual(decodeAll([STREAM]), EXPECTED);
  });

  test('plain data comes out as a slice of the chunk, without a copy', () => {
    const chunk = Buffer.from('hello');
    const [e] = new TelnetDecoder().push(chunk);
    assert.equal(e.kind, 'data');
    assert.equal((e as { data: Buffer }).data.buffer, chunk.buffer);
  });

  test('every split point: the first part gives only complete events, both parts give the same events', () => {
    for (let i = 0; i <= STREAM.length; i++) {
      assert.deepEqual(decodeAll([STREAM.subarray(0, i), STREAM.subarray(i)]), EXPECTED, `split at ${i}`);
    }
  });

  test('every truncated prefix yields a prefix of the events, and nothing half-read', () => {
    for (let i = 0; i < STREAM.length; i++) {
      const got = decodeAll([STREAM.subarray(0, i)]);
      for (const [k, e] of got.entries()) {
        const want = EXPECTED[k] as { kind: string; data?: number[] };
        if ((e as { kind: string }).kind === 'data') {
          assert.equal(want.kind, 'data', `prefix ${i}`);
          assert.deepEqual((e as { data: number[] }).data, want.data!.slice(0, (e as { data: number[] }).data.length), `prefix ${i}`);
        } else {
          assert.deepEqual(e, want, `prefix ${i}`);
        }
      }
    }
  });

  test('one byte at a time, and random chunk sizes', () => {
    assert.deepEqual(decodeAll([...STREAM].map((b) => Buffer.of(b))), EXPECTED);
    let seed = 7;
    const rnd = (): number => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
    for (let round = 0; round < 200; round++) {
      const chunks: Buffer[] = [];
      for (let i = 0; i < STREAM.length;) {
        const n = 1 + Math.floor(rnd() * 8);
        chunks.push(STREAM.subarray(i, i + n));
        i += n;
      }
      assert.deepEqual(decodeAll(chunks), EXPECTED, `round ${round}`);
    }
  });

  test('IAC SE without SB, IAC <command> inside SB, an empty SB: reported and dropped, decoding goes on', () => {
    const d = new TelnetDecoder();
    assert.deepEqual(canon(d.push(Buffer.of(IAC, SE, 0x41))), [{ kind: 'bad-subnegotiation', reason: 'IAC SE without IAC SB' }, { kind: 'data', data: [0x41] }]);
    assert.deepEqual(canon(d.push(Buffer.of(IAC, SB, 44, 1, IAC, WILL, 0, 0x42))), [
      { kind: 'bad-subnegotiation', reason: 'IAC 251 inside a subnegotiation' },
      { kind: 'negotiate', verb: 'will', option: 0 },
      { kind: 'data', data: [0x42] },
    ]);
    assert.deepEqual(canon(d.push(Buffer.of(IAC, SB, IAC, SE))), [{ kind: 'bad-subnegotiation', reason: 'empty subnegotiation' }]);
  });

  test('a subnegotiation of exactly the limit is kept; one byte more is dropped whole', () => {
    const atLimit = Buffer.concat([Buffer.of(IAC, SB, 44), Buffer.alloc(MAX_SUBNEGOTIATION, 0x41), Buffer.of(IAC, SE)]);
    const [ok] = new TelnetDecoder().push(atLimit);
    assert.equal(ok.kind, 'subnegotiation');
    assert.equal((ok as { payload: Buffer }).payload.length, MAX_SUBNEGOTIATION);
    const over = Buffer.concat([Buffer.of(IAC, SB, 44), Buffer.alloc(MAX_SUBNEGOTIATION + 1, 0x41), Buffer.of(IAC, SE)]);
    assert.deepEqual(new TelnetDecoder().push(over), [{ kind: 'bad-subnegotiation', reason: `subnegotiation of ${MAX_SUBNEGOTIATION + 1} bytes, limit ${MAX_SUBNEGOTIATION}` }]);
  });

  test('hostile: a 16 MiB subnegotiation (IAC IAC too) in 64 KiB chunks keeps at most the limit, then data flows', () => {
    const d = new TelnetDecoder();
    assert.deepEqual(d.push(Buffer.of(IAC, SB, 44)), []);
    const junk = Buffer.alloc(64 * 1024, 0x41);
    for (let i = 0; i < 64 * 1024; i += 2) { junk[i] = IAC; junk[i + 1] = IAC; }
    for (let i = 0; i < 256; i++) {
      assert.deepEqual(d.push(junk), []);
      assert.ok((d as unknown as { sb: number[] }).sb.length <= MAX_SUBNEGOTIATION + 1);
    }
    const end = canon(d.push(Buffer.of(IAC, SE, 0x7a)));
    assert.equal((end[0] as { kind: string }).kind, 'bad-subnegotiation');
    assert.deepEqual(end[1], { kind: 'data', data: [0x7a] });
  });

  test('hostile: random junk never throws, and 1 MiB of IAC IAC decodes to 512 KiB of 0xff in one event', () => {
    let seed = 99;
    const d = new TelnetDecoder();
    for (let round = 0; round < 200; round++) {
      const b = Buffer.alloc(512);
      for (let i = 0; i < b.length; i++) b[i] = (seed = (seed * 1103515245 + 12345) & 0x7fffffff) % 4 === 0 ? 0xf0 + (seed % 16) : seed & 0xff;
      d.push(b);
    }
    const events = new TelnetDecoder().push(Buffer.alloc(1024 * 1024, 0xff));
    assert.equal(events.length, 1);
    assert.deepEqual((events[0] as { data: Buffer }).data, Buffer.alloc(512 * 1024, 0xff));
  });
});

describe('COM-PORT-OPTION requests', () => {
  const req = (...b: number[]): ReturnType<typeof parseComPortRequest> => parseComPortRequest(Buffer.from(b));

  test('every command a client sends', () => {
    assert.deepEqual(parseComPortRequest(Buffer.from('\x00esptool')), { command: 'signature', text: 'esptool' });
    assert.deepEqual(req(0), { command: 'signature', text: '' });
    assert.deepEqual(req(1, 0, 0x0e, 0x10, 0), { command: 'set-baudrate', baud: 921600 });
    assert.deepEqual(req(1, 0, 0, 0, 0), { command: 'set-baudrate', baud: 0 });
    assert.deepEqual(req(2, 7), { command: 'set-datasize', value: 7 });
    assert.deepEqual(req(3, 3), { command: 'set-parity', value: 3 });
    assert.deepEqual(req(4, 3), { command: 'set-stopsize', value: 3 });
    assert.deepEqual(req(5, 8), { command: 'set-control', value: 8 });
    assert.deepEqual(req(6), { command: 'notify-linestate' });
    assert.deepEqual(req(7), { command: 'notify-modemstate' });
    assert.deepEqual(req(8), { command: 'flowcontrol-suspend' });
    assert.deepEqual(req(9), { command: 'flowcontrol-resume' });
    assert.deepEqual(req(10, 0x12), { command: 'set-linestate-mask', mask: 0x12 });
    assert.deepEqual(req(11, 0xf0), { command: 'set-modemstate-mask', mask: 0xf0 });
    assert.deepEqual(req(12, 3), { command: 'purge-data', value: 3 });
  });

  test('wrong lengths and unknown commands name the problem', () => {
    assert.throws(() => req(), /COM-PORT-OPTION subnegotiation without a command/);
    assert.throws(() => req(1, 0, 1), /SET-BAUDRATE takes 4 bytes, got 2/);
    assert.throws(() => req(2), /SET-DATASIZE takes 1 byte, got 0/);
    assert.throws(() => req(5, 1, 2), /SET-CONTROL takes 1 byte, got 2/);
    assert.throws(() => req(8, 1), /FLOWCONTROL-SUSPEND takes no value, got 1 bytes/);
    assert.throws(() => req(101, 0, 0, 0, 0), /COM-PORT-OPTION command 101 is a server's answer, not a client's request/);
    assert.throws(() => req(13), /unknown COM-PORT-OPTION command 13/);
  });
});
