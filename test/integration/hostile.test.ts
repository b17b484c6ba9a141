/**
 * Hostile but paired (or pairing) peers over real Iroh: floods of URBs, cancels and tiny frames, a peer
 * that never reads, stream floods, an expired pairing code. The daemon must answer or refuse each
 * request with an error naming the problem, keep what it holds for the peer bounded, and keep serving
 * everybody else. Latencies are printed as diagnostics, not asserted.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { BenchClient, BenchError, ClaimedDevice } from '../../extension/core/bench-client.js';
import { generateSecretKey, IrohConnection, IrohEndpoint } from '../../server/net/iroh.js';
import { MAX_URB_DATA, MAX_URBS_IN_FLIGHT } from '../../server/protocol/constants.js';
import { encodeSetup, UrbStatus } from '../../server/protocol/urb.js';
import { Message } from '../../server/protocol/messages.js';
import { MessageStream } from '../../server/protocol/stream.js';
import { REPLY_BACKLOG_LIMIT, Session } from '../../server/session.js';
import { SimulatedBackend, simLoopbackBoard, simSerialBoard } from '../../server/usb/simulated.js';
import { BenchFixture, until } from '../helpers/bench-fixture.js';
import { PROTOCOL_VERSION } from '../../server/protocol/constants.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
function heapMiB(): number {
  gc();
  return process.memoryUsage().heapUsed / 1048576;
}

const bench = new BenchFixture();
bench.backend = new SimulatedBackend([simSerialBoard(1), simLoopbackBoard(2), simLoopbackBoard(3)]);
let bystander: BenchClient;
let control: ClaimedDevice;
before(async () => {
  await bench.start();
  bystander = await bench.connect({ clientName: 'bystander' });
  control = await bystander.claim('sim-1');
});
after(() => bench.stop());

const GET_STATUS = encodeSetup({ bmRequestType: 0x80, bRequest: 0, wValue: 0, wIndex: 0, wLength: 2 });

/** Runs control URBs on the bystander's device until stop() is called; every one must succeed. */
function bystanderTraffic(): { stop(): Promise<number[]> } {
  let running = true;
  const rtts: number[] = [];
  const loop = (async () => {
    while (running) {
      const t = performance.now();
      const r = await control.submit({ type: 'control', ep: 0x80, length: 2, setup: GET_STATUS });
      assert.equal(r.status, UrbStatus.OK, `the bystander's control URB failed: ${r.error}`);
      rtts.push(performance.now() - t);
    }
  })();
  return { async stop() { running = false; await loop; return rtts; } };
}

function latency(rtts: number[]): string {
  const s = [...rtts].sort((a, b) => a - b);
  return `${s.length} control URBs, p50 ${s[Math.floor(s.length / 2)].toFixed(1)} ms, p99 ${s[Math.ceil(s.length * 0.99) - 1].toFixed(1)} ms, max ${s[s.length - 1].toFixed(1)} ms`;
}

function sessionOf(name: string): Session {
  const s = [...(bench.daemon as unknown as { sessions: Set<Session> }).sessions].find((x) => x.clientName === name);
  assert.ok(s, `no session for ${name}`);
  return s;
}

/** A paired peer speaking the protocol by hand, on its own endpoint. */
interface RawPeer {
  conn: IrohConnection;
  s: MessageStream;
  /** Starts reading the control stream; every message goes to `onMessage`. */
  read(onMessage: (m: Message) => void): void;
  close(): Promise<void>;
}
async function rawPeer(name: string): Promise<RawPeer> {
  const ep = await IrohEndpoint.bind({ secretKey: bench.allowedKey(name), relay: { mode: 'disabled' } });
  const conn = await ep.connect(bench.daemon.address());
  const s = new MessageStream(await conn.openStream());
  s.send({ t: 'hello', v: PROTOCOL_VERSION, caps: [], name });
  return {
    conn, s,
    read(onMessage) { void s.readLoop(onMessage).catch(() => {}); },
    async close() { conn.close(); await ep.close(); },
  };
}

test('50,000 URBs and 50,000 unknown cancels as fast as a client can send them: one answer each, bounded, others served', async (t) => {
  const peer = await rawPeer('flooder');
  const answers = new Map<number, number>();
  const kinds = new Map<string, number>();
  let claimed = false;
  peer.read((m) => {
    if (m.t === 'claimed') claimed = true;
    if ((m.t === 'complete' || m.t === 'error') && m.id !== undefined) {
      answers.set(m.id, (answers.get(m.id) ?? 0) + 1);
      const kind = m.t === 'complete' ? `complete ${m.dev} ${m.status}` : `${m.code} ${m.dev}: ${m.message.replace(/\d+/g, 'N')}`;
      kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
    }
  });
  peer.s.send({ t: 'claim', req: 1, dev: 'sim-2' });
  await until(() => claimed, 5000, 'the flooder to claim sim-2');
  const heapBefore = heapMiB();
  const traffic = bystanderTraffic();
  const session = sessionOf('flooder');
  let maxUrbs = 0;
  let maxBacklog = 0;
  const watch = setInterval(() => {
    const p = session.pendingState();
    maxUrbs = Math.max(maxUrbs, p.urbs);
    maxBacklog = Math.max(maxBacklog, p.backlog);
  }, 5);
  const N = 50_000;
  const t0 = performance.now();
  // odd ids: bulk IN on sim-2's empty loopback FIFO (they wait); even ids: sim-1, which the bystander holds
  for (let id = 1; id <= N; id++) {
    peer.s.send({ t: 'submit', dev: id % 2 ? 'sim-2' : 'sim-1', id, ep: 0x81, type: 'bulk', length: 64 });
    if (id % 1000 === 0) await new Promise((r) => setImmediate(r));
  }
  for (let i = 1; i <= N; i++) {
    peer.s.send({ t: 'cancel', dev: i % 2 ? 'sim-2' : 'sim-1', id: N + i }); // never submitted: no answer
    if (i % 1000 === 0) await new Promise((r) => setImmediate(r));
  }
  await until(() => answers.size >= N - MAX_URBS_IN_FLIGHT, 60_000, 'an answer to every refused URB');
  const floodMs = performance.now() - t0;
  // the URBs still in flight: cancelled for real, each completes once with -ECONNRESET
  const waiting = [...Array(N).keys()].map((i) => i + 1).filter((id) => !answers.has(id));
  assert.equal(waiting.length, MAX_URBS_IN_FLIGHT);
  for (const id of waiting) peer.s.send({ t: 'cancel', dev: 'sim-2', id });
  await until(() => answers.size === N, 10_000, 'the cancelled URBs to complete');
  clearInterval(watch);
  const rtts = await traffic.stop();
  await new Promise((r) => setTimeout(r, 200)); // late duplicates would show here
  assert.ok([...answers.values()].every((n) => n === 1), 'a URB was answered twice');
  assert.ok([...answers.keys()].every((id) => id >= 1 && id <= N), 'an unknown cancel was answered');
  assert.deepEqual(Object.fromEntries([...kinds].sort()), {
    [`busy sim-2: more than N URBs in flight on sim-N`]: N / 2 - MAX_URBS_IN_FLIGHT,
    [`complete sim-2 ${UrbStatus.ECONNRESET}`]: MAX_URBS_IN_FLIGHT,
    [`not-claimed sim-1: URB N for device sim-N, which this client has not claimed`]: N / 2,
  });
  assert.ok(maxUrbs <= MAX_URBS_IN_FLIGHT, `${maxUrbs} URBs in flight`);
  assert.ok(maxBacklog <= REPLY_BACKLOG_LIMIT + 65536, `${maxBacklog} bytes queued for the flooder`);
  assert.deepEqual(session.pendingState().urbs, 0);
  assert.ok(rtts.length > 0);
  const heapAfter = heapMiB();
  t.diagnostic(`flood of ${2 * N} messages answered in ${floodMs.toFixed(0)} ms; at most ${maxUrbs} URBs in flight and ${(maxBacklog / 1024).toFixed(0)} KiB of replies queued; heap ${heapBefore.toFixed(1)} → ${heapAfter.toFixed(1)} MiB after GC`);
  t.diagnostic(`the bystander meanwhile: ${latency(rtts)}`);
  assert.ok(heapAfter - heapBefore < 64, `heap grew by ${(heapAfter - heapBefore).toFixed(1)} MiB`);
  assert.deepEqual(bench.log.errors, []);
  await peer.close();
});

test('URB bytes in flight are capped per client: a clear refusal, and room again once they complete', async () => {
  const peer = await rawPeer('hoarder');
  const got: Message[] = [];
  peer.read((m) => got.push(m));
  peer.s.send({ t: 'claim', req: 1, dev: 'sim-3' });
  await until(() => got.some((m) => m.t === 'claimed'), 5000, 'the claim');
  // 16 × 4 MiB IN URBs wait on the empty FIFO: 64 MiB, the limit; the 17th is one too many
  for (let id = 1; id <= 17; id++) peer.s.send({ t: 'submit', dev: 'sim-3', id, ep: 0x81, type: 'bulk', length: MAX_URB_DATA });
  await until(() => got.some((m) => m.t === 'error'), 5000, 'the refusal');
  const refusal = got.find((m) => m.t === 'error') as Extract<Message, { t: 'error' }>;
  assert.equal(refusal.id, 17);
  assert.equal(refusal.code, 'busy');
  assert.equal(refusal.message, 'URB 17 on sim-3 (4194304 bytes) would put 68.0 MiB in flight for this client, over the 64.0 MiB limit');
  assert.deepEqual(sessionOf('hoarder').pendingState().urbBytes, 16 * MAX_URB_DATA);
  for (let id = 1; id <= 16; id++) peer.s.send({ t: 'cancel', dev: 'sim-3', id });
  await until(() => got.filter((m) => m.t === 'complete').length === 16, 5000, 'the cancelled URBs');
  assert.ok(got.filter((m) => m.t === 'complete').every((m) => (m as { status: number }).status === UrbStatus.ECONNRESET));
  assert.equal(sessionOf('hoarder').pendingState().urbBytes, 0);
  peer.s.send({ t: 'submit', dev: 'sim-3', id: 18, ep: 0x81, type: 'bulk', length: MAX_URB_DATA });
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(sessionOf('hoarder').pendingState().urbs, 1);
  peer.s.send({ t: 'release', req: 2, dev: 'sim-3' });
  await until(() => got.some((m) => m.t === 'released'), 5000, 'the release');
  await peer.close();
});

test('a client that sends 50,000 tiny requests and never reads the answers stops being read; the bench stays bounded and serves others; all answers arrive once it reads', async (t) => {
  const peer = await rawPeer('deaf');
  const N = 50_000;
  await new Promise((r) => setTimeout(r, 200)); // hello first, so the flood is not refused as pre-hello
  const heapBefore = heapMiB();
  for (let i = 1; i <= N; i++) {
    peer.s.send(i % 2 ? { t: 'list', req: i } : { t: 'ping', n: i }); // ~20-byte frames; a list answer is ~1 KiB
    if (i % 1000 === 0) await new Promise((r) => setImmediate(r));
  }
  const session = sessionOf('deaf');
  let maxBacklog = 0;
  const traffic = bystanderTraffic();
  const deadline = performance.now() + 20_000;
  while (session.pendingState().readPauses === 0 && performance.now() < deadline) {
    maxBacklog = Math.max(maxBacklog, session.pendingState().backlog);
    await new Promise((r) => setTimeout(r, 5));
  }
  for (let i = 0; i < 100; i++) { // while it is held back
    maxBacklog = Math.max(maxBacklog, session.pendingState().backlog);
    await new Promise((r) => setTimeout(r, 10));
  }
  const rtts = await traffic.stop();
  const held = session.pendingState();
  const heapHeld = heapMiB();
  assert.ok(held.readPauses > 0, 'the bench never stopped reading the peer that does not read');
  assert.ok(maxBacklog <= REPLY_BACKLOG_LIMIT + 65536, `${maxBacklog} bytes queued for a peer that does not read`);
  t.diagnostic(`held back: ${(maxBacklog / 1048576).toFixed(1)} MiB queued at most (limit ${REPLY_BACKLOG_LIMIT / 1048576} MiB); heap ${heapBefore.toFixed(1)} → ${heapHeld.toFixed(1)} MiB after GC`);
  t.diagnostic(`the bystander meanwhile: ${latency(rtts)}`);
  // now it reads: every request is answered, in order
  let lists = 0;
  let pongs = 0;
  peer.read((m) => {
    if (m.t === 'devices') lists++;
    if (m.t === 'pong') pongs++;
  });
  await until(() => lists === N / 2 && pongs === N / 2, 60_000, `every answer (${lists} lists, ${pongs} pongs so far)`);
  await peer.close();
});

test('a client opening streams in a loop gets 8; each one more is told why and torn down; the connection lives on', async () => {
  const peer = await rawPeer('opener');
  const got: Message[] = [];
  peer.read((m) => got.push(m));
  await until(() => got.some((m) => m.t === 'welcome'), 5000, 'the welcome');
  const extra: { n: number; got: Message[] }[] = [];
  for (let n = 1; n < 40; n++) {
    const s = new MessageStream(await peer.conn.openStream());
    const mine = { n, got: [] as Message[] };
    extra.push(mine);
    void s.readLoop((m) => mine.got.push(m)).catch(() => {});
    s.send({ t: 'ping', n });
  }
  await until(() => extra.every((e) => e.got.length > 0), 10_000, 'an answer on every stream');
  const served = extra.filter((e) => e.got[0].t === 'pong').map((e) => e.n);
  const refused = extra.filter((e) => e.got[0].t === 'error');
  assert.deepEqual(served, [1, 2, 3, 4, 5, 6, 7]);
  assert.equal(refused.length, 32);
  for (const e of refused) assert.deepEqual(e.got[0], { t: 'error', code: 'bad-message', message: 'too many streams: a client may open at most 8' });
  peer.s.send({ t: 'ping', n: 99 });
  await until(() => got.some((m) => m.t === 'pong' && m.n === 99), 5000, 'the control stream to answer');
  await peer.close();
});

test('a peer that opens a second stream before saying hello is told to say hello first', async () => {
  const ep = await IrohEndpoint.bind({ secretKey: bench.allowedKey('hasty'), relay: { mode: 'disabled' } });
  try {
    const conn = await ep.connect(bench.daemon.address());
    const first = new MessageStream(await conn.openStream());
    first.send({ t: 'ping', n: 0 }); // opens it on the wire, but is not a hello: the bench waits
    await new Promise((r) => setTimeout(r, 100));
    const second = new MessageStream(await conn.openStream());
    const got: Message[] = [];
    void second.readLoop((m) => got.push(m)).catch(() => {});
    second.send({ t: 'hello', v: PROTOCOL_VERSION, caps: [], name: 'hasty' });
    await until(() => got.length > 0, 5000, 'an answer on the second stream');
    assert.deepEqual(got[0], { t: 'error', code: 'bad-message', message: `say 'hello' on the first stream before opening another` });
    conn.close();
  } finally {
    await ep.close();
  }
});

test('an expired pairing code is refused over the wire, says so, and admits nobody', async () => {
  const { code } = bench.daemon.trust.createPairingCode(1);
  const file = bench.daemon.trust.pairingFile;
  writeFileSync(file, readFileSync(file, 'utf8').replace(/expires = ".*"/, `expires = "${new Date(Date.now() - 1000).toISOString()}"`));
  const key = generateSecretKey();
  const c = new BenchClient({ ...bench.clientOptions(), secretKey: key, pairingCode: code, clientName: 'late' });
  await assert.rejects(c.start(), (e: BenchError) => e.code === 'pairing-failed' && e.message === 'pairing code expired; ask for a new one');
  assert.equal(c.state, 'refused');
  assert.deepEqual(c.devices, []);
  assert.equal(bench.daemon.trust.clients().some((x) => x.name === 'late'), false);
  await c.close();
  assert.ok(bench.log.lines.some((l) => /pairing attempt by \w+ \('late'\) failed: pairing code expired/.test(l)), 'the bench logs the expired attempt');
});

test('ten strangers guessing pairing codes neither revoke nor block the admin\'s code', async () => {
  const { code } = bench.daemon.trust.createPairingCode(5);
  for (let i = 0; i < 10; i++) {
    const c = new BenchClient({ ...bench.clientOptions(), secretKey: generateSecretKey(), pairingCode: '00000-00000', clientName: `guesser-${i}` });
    await assert.rejects(c.start(), (e: BenchError) => e.code === 'pairing-failed' && e.message === 'pairing code unknown or already used');
    await c.close();
  }
  const real = new BenchClient({ ...bench.clientOptions(), secretKey: generateSecretKey(), pairingCode: code, clientName: 'newcomer' });
  await real.start();
  assert.equal(real.state, 'online');
  await real.close();
});

test('two claims of one device sent back to back by one client both succeed, and the bench keeps the reservation', async () => {
  const peer = await rawPeer('double-claimer');
  const got: Message[] = [];
  peer.read((m) => got.push(m));
  await until(() => got.some((m) => m.t === 'welcome'));
  peer.s.send({ t: 'claim', req: 1, dev: 'sim-3' });
  peer.s.send({ t: 'claim', req: 2, dev: 'sim-3' });
  await until(() => got.filter((m) => 'req' in m && (m.req === 1 || m.req === 2)).length === 2);
  assert.deepEqual(got.filter((m) => 'req' in m && (m.req === 1 || m.req === 2)).map((m) => m.t), ['claimed', 'claimed']);
  // on the old code the second claim's "already open" dropped the reservation, so this said "already open"
  await assert.rejects(bystander.claim('sim-3'), (e: BenchError) => e.code === 'in-use' && /in use by double-claimer/.test(e.message));
  await peer.close();
  await until(() => bench.daemon.devicesFor(sessionOf('bystander')).find((d) => d.id === 'sim-3')?.claimedBy === undefined);
});

test('BenchClient.claim called twice at once makes one request and returns one handle', async () => {
  const [a, b] = await Promise.all([bystander.claim('sim-3'), bystander.claim('sim-3')]);
  assert.equal(a, b);
  await a.release();
  const again = await bystander.claim('sim-3');
  assert.notEqual(again, a);
  await again.release();
});
