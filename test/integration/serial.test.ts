/**
 * Serial ports streamed over the protocol: the daemon opens the simulated serial board's "tty" on the
 * bench (a host-side CDC-ACM driver talking to the same board object the USB path uses) and the client
 * core's SerialSession reads and writes it, over real Iroh on 127.0.0.1.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BenchClient, BenchError } from '../../extension/core/bench-client.js';
import { loadOrCreateSecretKey } from '../../server/shared/identity.js';
import { TrustStore } from '../../server/trust.js';
import { endpointIdOf, generateSecretKey, IrohEndpoint } from '../../server/net/iroh.js';
import type { Message } from '../../server/protocol/messages.js';
import { MessageStream } from '../../server/protocol/stream.js';
import { seededBytes } from '../../server/usb/patterns.js';
import { simSerialBoard } from '../../server/usb/simulated.js';
import type { SimSerialBoard } from '../../server/usb/sim-serial-board.js';
import { BenchFixture, until } from '../helpers/bench-fixture.js';
import { DaemonProcess, freeUdpPort } from '../helpers/daemon-process.js';
import { Collected } from '../helpers/serial-collector.js';
import { PROTOCOL_VERSION } from '../../server/protocol/constants.js';

const BANNER = 'Remote USB simulated serial board SIM0001';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('serial over the protocol (simulated board)', () => {
  const bench = new BenchFixture();
  before(() => bench.start({ extraToml: '[sharing]\ndeny = ["serial:SIM0009"]\n' }));
  after(() => bench.stop());
  const board = (): SimSerialBoard => bench.backend.board('sim-1') as SimSerialBoard;

  test('devices carry their bench tty; the serial capability is announced', async () => {
    const c = await bench.connect();
    assert.equal(c.device('sim-1')?.tty, 'sim:sim-1');
    assert.equal(c.device('sim-2')?.tty, undefined);
    assert.deepEqual(c.ttys, []);
    await c.close();
  });

  test('banner after DTR rises, echo, 256 KiB echoed byte-identical and in order', async () => {
    const c = await bench.connect();
    const s = await c.openSerial('sim-1', { baud: 115200, dataBits: 8, parity: 'none', stopBits: 1, dtr: false });
    assert.equal(s.state, 'open');
    assert.equal(s.path, 'sim:sim-1');
    const got = new Collected(s);
    await sleep(150);
    assert.equal(got.text, '', 'no banner while DTR is low');
    await s.set({ dtr: true });
    await got.waitFor('everything you type is echoed\r\n');
    assert.match(got.text, new RegExp(BANNER));
    assert.equal(board().dtr, true);
    got.clear();
    s.write(Buffer.from('hello bench\r\n'));
    await got.waitFor('hello bench\r\n');
    got.clear();
    const big = seededBytes(256 * 1024, 7);
    for (let i = 0; i < big.length; i += 3000) s.write(big.subarray(i, i + 3000));
    await got.waitFor(big.length, 20_000);
    assert.ok(got.bytes.equals(big), 'echo is byte-identical and in order');
    assert.ok(got.chunks.length < big.length / 1024, `reads are batched (${got.chunks.length} messages)`);
    await s.close();
    assert.equal(s.state, 'closed');
    await until(() => board().dtr === false, 2000, 'DTR to drop on close');
    await c.close();
  });

  test('settings: baud changes in place, data bits / parity / stop bits reopen the port', async () => {
    const c = await bench.connect();
    const s = await c.openSerial('sim-1', { baud: 115200, dataBits: 8, parity: 'none', stopBits: 1 });
    const got = new Collected(s);
    await got.waitFor(BANNER);
    await s.set({ baud: 9600 });
    assert.equal(board().lineCoding.readUInt32LE(0), 9600);
    got.clear();
    await s.set({ dataBits: 7, parity: 'even', stopBits: 2 });
    assert.deepEqual([...board().lineCoding], [0x80, 0x25, 0, 0, 2, 2, 7]); // 9600, 2 stop bits, even, 7 bits
    await got.waitFor(BANNER); // reopened: DTR fell and rose again, the board greets again
    await s.set({ brk: true });
    await s.set({ brk: false, rts: false });
    assert.equal(board().rts, false);
    await s.close();
    await c.close();
  });

  test('unplug → waiting, plug back → open again with the banner', async () => {
    const c = await bench.connect();
    const s = await c.openSerial('sim-1');
    const got = new Collected(s);
    await got.waitFor(BANNER);
    got.clear();
    bench.backend.unplug('sim-1');
    const waiting = await got.waitForState('waiting');
    assert.match(waiting, /sim:sim-1 went away \((board unplugged|no longer there)\); waiting for it to come back/);
    assert.equal(s.state, 'waiting');
    s.write(Buffer.from('lost')); // dropped while waiting
    bench.backend.plug(simSerialBoard(1));
    await got.waitForState('open');
    await got.waitFor(BANNER);
    assert.ok(!got.text.includes('lost'));
    s.write(Buffer.from('back\r\n'));
    await got.waitFor('back\r\n');
    await s.close();
    await c.close();
  });

  test('busy rules between serial sessions and claims', async () => {
    const alice = await bench.connect({ clientName: 'alice' });
    const bob = await bench.connect({ clientName: 'bob' });
    const s = await alice.openSerial('sim-1');
    const got = new Collected(s);
    await assert.rejects(bob.openSerial('sim-1'), (e: BenchError) => e.code === 'busy' && /serial port sim-1 is in use by alice/.test(e.message));
    await assert.rejects(alice.openSerial('sim-1'), (e: BenchError) => e.code === 'busy' && /already open by this client/.test(e.message));
    await assert.rejects(bob.claim('sim-1'), (e: BenchError) => e.code === 'busy' && /serial port of Simulated Serial Board .* is open by alice/.test(e.message));
    // alice's own claim closes her serial session first
    const dev = await alice.claim('sim-1');
    assert.match(await got.waitForState('closed'), /you claimed \(attached\) the device/);
    await until(() => bob.device('sim-1')?.claimedBy === 'alice' && bob.device('sim-1')?.tty === undefined, 3000, 'bob to see the claim, without tty');
    await assert.rejects(bob.openSerial('sim-1'), (e: BenchError) => e.code === 'busy' && /claimed \(attached\) by alice.*use the local tty/.test(e.message));
    await assert.rejects(alice.openSerial('sim-1'), (e: BenchError) => e.code === 'busy' && /claimed \(attached\) by you/.test(e.message));
    await dev.release();
    await until(() => bob.device('sim-1')?.tty === 'sim:sim-1', 3000, 'the tty to come back');
    const b = await bob.openSerial('sim-1');
    await b.close();
    await alice.close();
    await bob.close();
  });

  test('refusals name the problem: unknown port, device without tty, device not shared', async () => {
    const c = await bench.connect();
    await assert.rejects(c.openSerial('/dev/ttyS0'), (e: BenchError) => e.code === 'no-such-port' && /has no device or shared serial port '\/dev\/ttyS0'/.test(e.message));
    await assert.rejects(c.openSerial('sim-2'), (e: BenchError) => e.code === 'no-such-port' && /has no serial port \(tty\) on the bench/.test(e.message));
    bench.backend.plug(simSerialBoard(9));
    await until(() => c.device('sim-9') !== undefined, 3000, 'sim-9');
    await assert.rejects(c.openSerial('sim-9'), (e: BenchError) => e.code === 'not-shared');
    bench.backend.unplug('sim-9');
    await c.close();
  });

  test('a client that goes away frees its ports at once', async () => {
    const a = await bench.connect({ clientName: 'leaver' });
    await a.openSerial('sim-1');
    await a.close();
    const b = await bench.connect();
    const s = await b.openSerial('sim-1');
    await s.close();
    await b.close();
  });

  test('hostile input: unknown and foreign session ids are refused, oversize data drops the connection', async () => {
    const owner = await bench.connect({ clientName: 'owner' });
    const s = await owner.openSerial('sim-1');
    const got = new Collected(s);
    await got.waitFor(BANNER);
    const endpoint = await IrohEndpoint.bind({ secretKey: bench.allowedKey('raw'), relay: { mode: 'disabled' } });
    try {
      const conn = await endpoint.connect(bench.daemon.address());
      const io = new MessageStream(await conn.openStream());
      const msgs: Message[] = [];
      const reading = io.readLoop((m) => msgs.push(m)).catch(() => {});
      io.send({ t: 'hello', v: PROTOCOL_VERSION, caps: [], name: 'raw' });
      await until(() => msgs.some((m) => m.t === 'welcome'), 3000, 'welcome');
      // ids 1..20 cover the owner's session: none of them is this client's
      for (let sid = 1; sid <= 20; sid++) {
        io.send({ t: 'serial-write', sid, data: Buffer.from('evil') });
        io.send({ t: 'serial-set', req: 100 + sid, sid, baud: 300 });
        io.send({ t: 'serial-close', req: 200 + sid, sid });
      }
      await until(() => msgs.filter((m) => m.t === 'error').length === 60, 3000, '60 refusals');
      const errors = msgs.filter((m) => m.t === 'error') as Extract<Message, { t: 'error' }>[];
      assert.ok(errors.every((e) => e.code === 'not-open' && /serial session \d+ is not open by this client/.test(e.message)));
      assert.ok(errors.filter((e) => e.sid !== undefined).length === 20);
      assert.equal(s.state, 'open');
      assert.equal(board().lineCoding.readUInt32LE(0), 115200, 'the owner keeps its settings');
      io.send({ t: 'serial-open', req: 1, port: 'sim-1', baud: 0, dataBits: 8, parity: 'none', stopBits: 1 } as Message);
      await until(() => msgs.some((m) => m.t === 'error' && /bad message: field 'baud' of 'serial-open' must be an integer 1..20000000, got 0/.test(m.message)), 3000, 'bad baud refusal');
      assert.notEqual(await Promise.race([conn.closed(), sleep(3000).then(() => 'still open')]), 'still open');
      await reading;
      const conn2 = await endpoint.connect(bench.daemon.address());
      const raw = await conn2.openStream();
      const io2 = new MessageStream(raw);
      const msgs2: Message[] = [];
      const reading2 = io2.readLoop((m) => msgs2.push(m)).catch(() => {});
      io2.send({ t: 'hello', v: PROTOCOL_VERSION, caps: [], name: 'raw' });
      await until(() => msgs2.some((m) => m.t === 'welcome'), 3000, 'welcome');
      io2.send({ t: 'serial-write', sid: 1, data: Buffer.alloc(64 * 1024 + 1) });
      await until(() => msgs2.some((m) => m.t === 'error' && /field 'data' of 'serial-write' is 65537 bytes, limit 65536/.test(m.message)), 3000, 'oversize refusal');
      conn2.close();
      await reading2;
    } finally {
      await endpoint.close();
    }
    got.clear();
    s.write(Buffer.from('still mine\r\n'));
    await got.waitFor('still mine\r\n');
    assert.ok(!got.text.includes('evil'));
    await s.close();
    await owner.close();
  });
});

describe('serial across a daemon restart (daemon as a real process)', () => {
  let stateDir: string;
  let daemon: DaemonProcess;

  before(async () => {
    stateDir = mkdtempSync(join(tmpdir(), 'remote-usb-serial-proc-'));
    daemon = new DaemonProcess(stateDir, await freeUdpPort());
    await daemon.start();
  });
  after(async () => {
    await daemon.stop('SIGKILL');
    rmSync(stateDir, { recursive: true, force: true });
  });

  test('the session waits while the bench is away and reopens with the same settings', async () => {
    const key = generateSecretKey();
    new TrustStore(join(stateDir, 'clients.toml'), stateDir).allow(endpointIdOf(key), 'proc-client');
    const id = loadOrCreateSecretKey(stateDir, false).key;
    const c = await BenchClient.connect({
      secretKey: key, bench: { id: endpointIdOf(id), addrs: [`127.0.0.1:${daemon.port}`] }, clientName: 'proc-client',
      relay: { mode: 'disabled' }, reconnect: { initialDelayMs: 50, maxDelayMs: 500 },
    });
    try {
      const s = await c.openSerial('sim-1', { baud: 57600, dataBits: 8, parity: 'none', stopBits: 1 });
      const got = new Collected(s);
      await got.waitFor(BANNER);
      assert.equal(await daemon.stop('SIGTERM'), 0);
      assert.match(await got.waitForState('waiting'), /bench offline, reconnecting/);
      got.clear();
      await daemon.start();
      await got.waitForState('open', 15_000);
      await got.waitFor(BANNER); // a fresh bench: DTR rises again on the reopened port
      assert.match(daemon.output, /opened serial port sim-1 \(sim:sim-1, 57600 8N1\)/);
      s.write(Buffer.from('after restart\r\n'));
      await got.waitFor('after restart\r\n');
      await s.close();
    } finally {
      await c.close();
    }
  });
});
