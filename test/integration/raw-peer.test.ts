/** A hand-driven peer over real Iroh: what the daemon says to clients that break the rules. */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { CloseCode, IrohConnection, IrohEndpoint } from '../../server/net/iroh.js';
import { Message } from '../../server/protocol/messages.js';
import { MessageStream } from '../../server/protocol/stream.js';
import { BenchFixture, until } from '../helpers/bench-fixture.js';
import { PROTOCOL_VERSION } from '../../server/protocol/constants.js';

const bench = new BenchFixture();
let endpoint: IrohEndpoint;
before(async () => {
  await bench.start();
  endpoint = await IrohEndpoint.bind({ secretKey: bench.allowedKey('raw'), relay: { mode: 'disabled' } });
});
after(async () => {
  await endpoint.close();
  await bench.stop();
});

/** Opens a connection and a stream; collects what the bench sends until it closes or `ms` pass. */
async function talk(send: (s: MessageStream, raw: (b: Buffer) => Promise<void>) => Promise<void>, ms = 1500): Promise<{ got: Message[]; closed: string }> {
  const conn: IrohConnection = await endpoint.connect(bench.daemon.address());
  const io = await conn.openStream();
  const s = new MessageStream(io);
  const got: Message[] = [];
  const reading = s.readLoop((m) => got.push(m)).catch(() => {});
  await send(s, (b) => io.write(b));
  const closed = await Promise.race([conn.closed(), new Promise<string>((r) => setTimeout(() => r('still open'), ms))]);
  conn.close();
  await reading;
  return { got, closed };
}

const hello = { t: 'hello' as const, v: PROTOCOL_VERSION, caps: [], name: 'raw' };

test('a different protocol version gets a clear error and the connection closes', async () => {
  const { got, closed } = await talk(async (s) => s.send({ ...hello, v: 99 }));
  assert.equal(got[0].t, 'error');
  assert.match((got[0] as { message: string }).message, new RegExp(`this bench speaks protocol version ${PROTOCOL_VERSION}, the client speaks 99: update the bench daemon`));
  assert.notEqual(closed, 'still open');
});

test('anything before hello is refused', async () => {
  const { got, closed } = await talk(async (s) => s.send({ t: 'list', req: 1 }));
  assert.deepEqual(got.map((m) => m.t), ['error']);
  assert.match((got[0] as { message: string }).message, /expected 'hello' first, got 'list'/);
  assert.notEqual(closed, 'still open');
});

test('a malformed frame drops the connection with a reason', async () => {
  const { got, closed } = await talk(async (s, raw) => {
    s.send(hello);
    await s.drained();
    await raw(Buffer.from([0, 0, 0, 3, 0x92, 0x01, 0x02])); // [1, 2]: msgpack, but not a message map
  });
  const err = got.find((m) => m.t === 'error') as { message: string } | undefined;
  assert.match(err!.message, /bad message: message must be a map, got an array of 2/);
  assert.notEqual(closed, 'still open');
});

test('an oversized frame length is refused without buffering it', async () => {
  const { got, closed } = await talk(async (s, raw) => {
    s.send(hello);
    await s.drained();
    await raw(Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3]));
  });
  const err = got.find((m) => m.t === 'error') as { message: string } | undefined;
  assert.match(err!.message, /frame length 4294967295 exceeds the limit/);
  assert.notEqual(closed, 'still open');
});

test('before hello only small frames are accepted: an unknown peer cannot make the bench buffer megabytes', async () => {
  const { got, closed } = await talk(async (_s, raw) => {
    const header = Buffer.alloc(4);
    header.writeUInt32BE(64 * 1024);
    await raw(Buffer.concat([header, Buffer.alloc(100)]));
  });
  const err = got.find((m) => m.t === 'error') as { message: string } | undefined;
  assert.match(err!.message, /frame length 65536 exceeds the limit of 4096 bytes/);
  assert.notEqual(closed, 'still open');
});

test('URBs for an unclaimed device and duplicate URB ids are refused one by one; the session lives on', async () => {
  const { got, closed } = await talk(async (s) => {
    s.send(hello);
    s.send({ t: 'submit', dev: 'sim-2', id: 1, ep: 0x82, type: 'bulk', length: 8 });
    s.send({ t: 'claim', req: 5, dev: 'sim-2' });
    await new Promise((r) => setTimeout(r, 200));
    s.send({ t: 'submit', dev: 'sim-2', id: 2, ep: 0x81, type: 'bulk', length: 8 }); // waits: FIFO empty
    s.send({ t: 'submit', dev: 'sim-2', id: 2, ep: 0x81, type: 'bulk', length: 8 }); // duplicate id
    s.send({ t: 'ping', n: 42 });
  }, 800);
  const errors = got.filter((m) => m.t === 'error') as { id?: number; code: string; message: string }[];
  assert.equal(errors[0].code, 'not-claimed');
  assert.equal(errors[0].id, 1);
  assert.match(errors[0].message, /URB 1 for device sim-2, which this client has not claimed/);
  assert.equal(errors[1].code, 'bad-message');
  assert.match(errors[1].message, /URB id 2 is already in flight on sim-2/);
  assert.ok(got.some((m) => m.t === 'pong'));
  assert.equal(closed, 'still open');
});

test('a client that falls silent loses its devices once the resume grace is over (crashed or killed clients do not hold boards)', async () => {
  const quiet = await new BenchFixture().start({ clientSilenceLimitMs: 2000, resumeGraceS: 2 });
  const ep = await IrohEndpoint.bind({ secretKey: quiet.allowedKey('ghost'), relay: { mode: 'disabled' } });
  try {
    const conn = await ep.connect(quiet.daemon.address());
    const s = new MessageStream(await conn.openStream());
    const got: Message[] = [];
    void s.readLoop((m) => got.push(m)).catch(() => {});
    s.send(hello);
    s.send({ t: 'claim', req: 1, dev: 'sim-1' });
    const other = await quiet.connect({ clientName: 'next', pingIntervalMs: 300 }); // pings well within the limit
    await until(() => other.device('sim-1')?.claimedBy === 'ghost', 3000, 'the ghost to hold sim-1');
    // the ghost never pings: after the silence limit the bench counts it dropped and keeps the board for
    // a resume; nobody resumes, so after the grace it ends the session and frees the board
    await until(() => other.device('sim-1')?.claimedBy === undefined, 10_000, 'sim-1 to be freed');
    assert.ok(got.some((m) => m.t === 'claimed'));
    assert.ok(quiet.log.lines.some((l) => /ghost \(\w+\) dropped \(nothing heard for \d+ s\): keeping sim-1/.test(l)), quiet.log.lines.join('\n'));
    assert.ok(quiet.log.lines.some((l) => /ghost \(\w+\) gone: did not come back within 2 s/.test(l)), quiet.log.lines.join('\n'));
    await (await other.claim('sim-1')).release();
  } finally {
    await ep.close();
    await quiet.stop();
  }
});

test('a peer that closes its connection on purpose releases its devices; one that closes it as abandoned keeps them for a resume, which hands them over', async () => {
  const claimAndClose = async (code: bigint): Promise<string> => {
    const conn = await endpoint.connect(bench.daemon.address());
    const s = new MessageStream(await conn.openStream());
    const got: Message[] = [];
    void s.readLoop((m) => got.push(m)).catch(() => {});
    s.send({ ...hello, caps: ['resume'] });
    s.send({ t: 'claim', req: 1, dev: 'sim-2' });
    await until(() => got.some((m) => m.t === 'claimed'), 5000, 'the claim');
    const token = (got.find((m) => m.t === 'welcome') as { resume?: string }).resume!;
    conn.close(code, code === CloseCode.abandoned ? 'no answer: resuming on a new connection' : 'bye');
    return token;
  };
  const holder = (): string | undefined => bench.daemon.devicesFor(undefined as never).find((d) => d.id === 'sim-2')?.claimedBy;
  await claimAndClose(CloseCode.normal);
  await until(() => holder() === undefined, 5000, 'sim-2 released after a deliberate close');
  const token = await claimAndClose(CloseCode.abandoned);
  await until(() => bench.log.lines.some((l) => /raw \(\w+\) dropped \(connection closed: closed by peer: .*\(code 5\)\): keeping sim-2/.test(l)), 5000, 'the drop logged');
  assert.equal(holder(), 'raw', 'kept for the resume');
  // the resume: a new connection naming the token gets the session, sim-2 included
  const { got } = await talk(async (s) => s.send({ ...hello, caps: ['resume'], resume: { token, acked: [0, 0] } }), 500);
  const welcome = got.find((m) => m.t === 'welcome') as { resumed?: { received: number[] } } | undefined;
  assert.deepEqual(welcome?.resumed, { received: [0, 0] });
  assert.ok(bench.log.lines.some((l) => /raw \(\w+\) connected, resuming its session \(1 device/.test(l)), bench.log.lines.join('\n'));
  await until(() => holder() === undefined, 5000, 'sim-2 released when the resumed connection closed on purpose');
});
