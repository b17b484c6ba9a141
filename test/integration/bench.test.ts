/**
 * The daemon and the client core over real Iroh endpoints on 127.0.0.1 (relay disabled, direct
 * addresses), with simulated boards.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BenchClient, BenchClientOptions, BenchError } from '../../extension/core/bench-client.js';
import { loadOrCreateSecretKey } from '../../server/shared/identity.js';
import { TrustStore } from '../../server/trust.js';
import { endpointIdOf } from '../../server/net/iroh.js';
import { DaemonProcess, freeUdpPort } from '../helpers/daemon-process.js';
import { encodeSetup, UrbStatus } from '../../server/protocol/urb.js';
import { LOOP_EP_IN, LOOP_EP_OUT, REPORT_EP_IN, SOURCE_EP_IN } from '../../server/usb/sim-loopback-board.js';
import { SERIAL_EP_IN, SERIAL_EP_OUT } from '../../server/usb/sim-serial-board.js';
import { simLoopbackBoard } from '../../server/usb/simulated.js';
import { firmwareLikeImage, seededBytes } from '../../server/usb/patterns.js';
import { generateSecretKey } from '../../server/net/iroh.js';
import { BenchFixture, until, waitFor } from '../helpers/bench-fixture.js';

const GET_DESCRIPTOR = (type: number, index: number, length: number) => ({
  type: 'control' as const, ep: 0x80, length,
  setup: encodeSetup({ bmRequestType: 0x80, bRequest: 6, wValue: (type << 8) | index, wIndex: type === 3 && index ? 0x0409 : 0, wLength: length }),
});

describe('bench daemon + client core over real Iroh', () => {
  const bench = new BenchFixture();
  before(() => bench.start());
  after(() => bench.stop());

  test('lists the bench and its boards', async () => {
    const c = await bench.connect({ clientName: 'lister' });
    assert.equal(c.state, 'online');
    assert.equal(c.benchName, 'test-bench');
    const ids = c.devices.map((d) => d.id).sort();
    assert.deepEqual(ids, ['sim-1', 'sim-2']);
    const serial = c.device('sim-1')!;
    assert.equal(serial.vendorId, 0x1209);
    assert.equal(serial.productId, 0x0001);
    assert.equal(serial.serial, 'SIM0001');
    assert.equal(serial.shared, true);
    assert.equal(serial.interfaces.length, 2);
    assert.deepEqual((await c.list()).map((d) => d.id).sort(), ids);
    assert.ok((await c.ping()) > 0);
    await c.close();
  });

  test('hot-plug is seen by the client', async () => {
    const c = await bench.connect();
    const added = waitFor<{ id: string }>(c, 'added');
    bench.backend.plug(simLoopbackBoard(7));
    assert.equal((await added).id, 'sim-7');
    assert.ok(c.device('sim-7'));
    const removed = waitFor<string>(c, 'removed');
    bench.backend.unplug('sim-7');
    assert.equal(await removed, 'sim-7');
    assert.equal(c.device('sim-7'), undefined);
    await c.close();
  });

  test('a claimed device is exclusive: the other client is told who has it', async () => {
    const alice = await bench.connect({ clientName: 'alice' });
    const bob = await bench.connect({ clientName: 'bob' });
    const dev = await alice.claim('sim-1');
    await until(() => bob.device('sim-1')?.claimedBy === 'alice', 3000, 'bob to see the claim');
    assert.equal(alice.device('sim-1')?.mine, true);
    await assert.rejects(bob.claim('sim-1'), (e: BenchError) => e.code === 'in-use' && /in use by alice/.test(e.message));
    await dev.release();
    const mine = await bob.claim('sim-1');
    assert.equal(mine.info.mine, true);
    await mine.release();
    await alice.close();
    await bob.close();
  });

  test('control URBs, 16 in flight, return real descriptors', async () => {
    const c = await bench.connect();
    const dev = await c.claim('sim-1');
    const urbs = Array.from({ length: 16 }, (_, i) => [GET_DESCRIPTOR(1, 0, 18), GET_DESCRIPTOR(2, 0, 255), GET_DESCRIPTOR(3, 2, 255), GET_DESCRIPTOR(3, 0, 4)][i % 4]);
    const results = await Promise.all(urbs.map((u) => dev.submit(u)));
    for (let i = 0; i < results.length; i++) {
      const r = results[i];
      assert.equal(r.status, 0);
      switch (i % 4) {
        case 0: assert.equal(r.actual, 18); assert.equal(r.data.readUInt16LE(8), 0x1209); break;
        case 1: assert.equal(r.data.readUInt16LE(2), r.actual); assert.equal(r.data[4], 2); break; // wTotalLength, 2 interfaces
        case 2: assert.equal(r.data.subarray(2).toString('utf16le'), 'Simulated Serial Board'); break;
        case 3: assert.deepEqual([...r.data], [4, 3, 0x09, 0x04]); break;
      }
    }
    // an unknown request stalls, like a real device
    const stall = await dev.submit({ type: 'control', ep: 0x80, length: 1, setup: encodeSetup({ bmRequestType: 0xc0, bRequest: 0x99, wValue: 0, wIndex: 0, wLength: 1 }) });
    assert.equal(stall.status, UrbStatus.EPIPE);
    await dev.release();
    await c.close();
  });

  test('bulk loopback with 32 URBs in flight each way, data verified', async () => {
    const c = await bench.connect();
    const dev = await c.claim('sim-2');
    const chunks = Array.from({ length: 32 }, (_, i) => seededBytes(1000 + i * 997, i + 1));
    const outs = chunks.map((data) => dev.submit({ type: 'bulk', ep: LOOP_EP_OUT, data }));
    const total = chunks.reduce((n, b) => n + b.length, 0);
    // 32 IN URBs of 64 KiB: the first ones take all the data, the rest wait (the FIFO is then empty)
    const results: (Buffer | undefined)[] = new Array(32);
    for (let i = 0; i < 32; i++) {
      void dev.submit({ type: 'bulk', ep: LOOP_EP_IN, length: 64 * 1024 }).then((r) => {
        if (r.status === 0) results[i] = r.data;
      });
    }
    for (const r of await Promise.all(outs)) assert.equal(r.status, 0);
    const received = (): Buffer => Buffer.concat(results.filter((b): b is Buffer => b !== undefined));
    await until(() => received().length >= total, 5000, 'the looped-back data');
    // the FIFO hands data to IN URBs in submission order; concatenated they equal what went out
    assert.equal(received().length, total);
    assert.deepEqual(received(), Buffer.concat(chunks));
    await dev.release(); // cancels the IN URBs still waiting
    await c.close();
  });

  test('a firmware image loops back compressed both ways, byte for byte; with compression off nothing is compressed', async () => {
    const image = firmwareLikeImage(1 << 20);
    for (const compression of [true, false]) {
      const c = await bench.connect({ compression });
      const dev = await c.claim('sim-2');
      const wire0 = c.wireBytes;
      const chunks = Array.from({ length: 16 }, (_, i) => image.subarray(i * 65536, (i + 1) * 65536));
      const ins = Array.from({ length: 16 }, () => dev.submit({ type: 'bulk', ep: LOOP_EP_IN, length: 64 * 1024 }));
      const outs = chunks.map((data) => dev.submit({ type: 'bulk', ep: LOOP_EP_OUT, data }));
      for (const r of await Promise.all(outs)) assert.equal(r.status, 0);
      const back = await Promise.all(ins);
      assert.deepEqual(Buffer.concat(back.map((r) => r.data)), image);
      const st = c.compressor.stats;
      const received = c.wireBytes.received - wire0.received; // the bench's completions, as they crossed the wire
      if (compression) {
        assert.ok(st.compressed >= 12, `${st.compressed} of ${st.payloads} OUT payloads compressed`);
        assert.ok(st.bytesIn / st.bytesOut > 2, `ratio ${(st.bytesIn / st.bytesOut).toFixed(2)}`);
        assert.ok(received < image.length / 2, `${received} bytes received for a ${image.length}-byte image`);
      } else {
        assert.equal(st.payloads, 0);
        assert.ok(received > image.length, `${received} bytes received for a ${image.length}-byte image`);
      }
      await dev.release();
      await c.close();
    }
  });

  test('bulk source and interrupt endpoints with many URBs in flight', async () => {
    const c = await bench.connect();
    const dev = await c.claim('sim-2');
    const bulk = await Promise.all(Array.from({ length: 32 }, () => dev.submit({ type: 'bulk', ep: SOURCE_EP_IN, length: 16 * 1024 })));
    let next = bulk[0].data[0];
    for (const r of bulk) {
      assert.equal(r.status, 0);
      assert.equal(r.actual, 16 * 1024);
      for (let k = 0; k < r.data.length; k += 511) assert.equal(r.data[k], (next + k) & 0xff);
      next = (next + r.data.length) & 0xff;
    }
    const reports = await Promise.all(Array.from({ length: 16 }, () => dev.submit({ type: 'interrupt', ep: REPORT_EP_IN, length: 8 })));
    const counters = reports.map((r) => { assert.equal(r.status, 0); assert.equal(r.actual, 8); return r.data.readUInt32LE(0); });
    assert.equal(new Set(counters).size, 16);
    await dev.release();
    await c.close();
  });

  test('cancel: a waiting URB ends with -ECONNRESET; a finished one is unaffected', async () => {
    const c = await bench.connect();
    const dev = await c.claim('sim-2');
    const waiting = dev.start({ type: 'bulk', ep: LOOP_EP_IN, length: 512 });
    await new Promise((r) => setTimeout(r, 50));
    dev.cancel(waiting.id);
    assert.equal((await waiting.done).status, UrbStatus.ECONNRESET);
    const done = dev.start({ type: 'bulk', ep: SOURCE_EP_IN, length: 512 });
    const r = await done.done;
    dev.cancel(done.id); // too late: ignored
    assert.equal(r.status, 0);
    assert.equal((await dev.submit({ type: 'bulk', ep: SOURCE_EP_IN, length: 8 })).status, 0);
    await dev.release();
    await c.close();
  });

  test('the serial board greets on DTR and echoes', async () => {
    const c = await bench.connect();
    const dev = await c.claim('sim-1');
    await dev.submit({ type: 'control', ep: 0, setup: encodeSetup({ bmRequestType: 0x21, bRequest: 0x22, wValue: 1, wIndex: 0, wLength: 0 }) });
    const banner = await dev.submit({ type: 'bulk', ep: SERIAL_EP_IN, length: 4096 });
    assert.match(banner.data.toString(), /Remote USB simulated serial board SIM0001/);
    await dev.submit({ type: 'bulk', ep: SERIAL_EP_OUT, data: Buffer.from('ping\r\n') });
    const echo = await dev.submit({ type: 'bulk', ep: SERIAL_EP_IN, length: 64 });
    assert.equal(echo.data.toString(), 'ping\r\n');
    await dev.release();
    await c.close();
  });

  test('unplugging a claimed board fails its URBs with -ENODEV and reports it lost', async () => {
    const c = await bench.connect();
    bench.backend.plug(simLoopbackBoard(8));
    await until(() => c.device('sim-8') !== undefined, 3000, 'sim-8 to appear');
    const dev = await c.claim('sim-8');
    const pending = dev.submit({ type: 'bulk', ep: LOOP_EP_IN, length: 512 });
    const lost = waitFor<string>(dev, 'lost');
    await new Promise((r) => setTimeout(r, 50));
    bench.backend.unplug('sim-8');
    assert.equal((await pending).status, UrbStatus.ENODEV);
    assert.match(await lost, /unplugged/);
    assert.equal((await dev.submit({ type: 'bulk', ep: LOOP_EP_IN, length: 1 })).status, UrbStatus.ENODEV);
    await c.close();
  });

  test('closing a client releases its devices for others', async () => {
    const a = await bench.connect({ clientName: 'leaver' });
    await a.claim('sim-2');
    const b = await bench.connect({ clientName: 'next' });
    await until(() => b.device('sim-2')?.claimedBy === 'leaver', 3000, 'claim to show');
    await a.close();
    await until(() => b.device('sim-2')?.claimedBy === undefined, 3000, 'release to show');
    await (await b.claim('sim-2')).release();
    await b.close();
  });

  test('an unknown client is refused before it learns anything', async () => {
    const c = new BenchClient({ ...bench.clientOptions(), secretKey: generateSecretKey() });
    await assert.rejects(c.start(), (e: BenchError) => e.code === 'unauthorized' && /not allowed on bench 'test-bench'/.test(e.message));
    assert.deepEqual(c.devices, []);
    assert.equal(c.state, 'refused');
    await c.close();
  });

  test('a pairing code admits a new client once, and never twice', async () => {
    const { code } = bench.daemon.trust.createPairingCode(5);
    const first = bench.track(await BenchClient.connect({ ...bench.clientOptions(), secretKey: generateSecretKey(), pairingCode: code, clientName: 'newbie' }));
    assert.equal(first.state, 'online');
    const again = new BenchClient({ ...bench.clientOptions(), secretKey: generateSecretKey(), pairingCode: code });
    await assert.rejects(again.start(), (e: BenchError) => e.code === 'pairing-failed' && /unknown or already used/.test(e.message));
    await again.close();
    assert.equal(bench.daemon.trust.nameOf(first.clientId), 'newbie');
    await first.close();
  });

  test('a device the config does not share is listed but cannot be claimed', async () => {
    const other = new BenchFixture();
    await other.start({ extraToml: '[sharing]\ndeny = ["port:sim-2"]\n' });
    try {
      const c = await other.connect();
      assert.equal(c.device('sim-2')?.shared, false);
      await assert.rejects(c.claim('sim-2'), (e: BenchError) => e.code === 'not-shared');
      await c.claim('sim-1');
    } finally {
      await other.stop();
    }
  });
});

describe('reconnects (daemon as a real process)', () => {
  let stateDir: string;
  let daemon: DaemonProcess;
  const clients: BenchClient[] = [];

  before(async () => {
    stateDir = mkdtempSync(join(tmpdir(), 'remote-usb-proc-'));
    daemon = new DaemonProcess(stateDir, await freeUdpPort());
    await daemon.start();
  });
  after(async () => {
    for (const c of clients) await c.close();
    daemon.signal('SIGCONT');
    await daemon.stop('SIGKILL');
    rmSync(stateDir, { recursive: true, force: true });
  });

  async function connect(opts: Partial<BenchClientOptions> = {}): Promise<BenchClient> {
    const key = generateSecretKey();
    new TrustStore(join(stateDir, 'clients.toml'), stateDir).allow(endpointIdOf(key), 'proc-client');
    const id = loadOrCreateSecretKey(stateDir, false).key;
    const c = await BenchClient.connect({
      secretKey: key, bench: { id: endpointIdOf(id), addrs: [`127.0.0.1:${daemon.port}`] }, clientName: 'proc-client',
      relay: { mode: 'disabled' }, reconnect: { initialDelayMs: 50, maxDelayMs: 500 }, ...opts,
    });
    clients.push(c);
    return c;
  }

  test('daemon restart: the client reconnects and re-claims its device', async () => {
    const c = await connect();
    const dev = await c.claim('sim-2');
    const inflight = dev.submit({ type: 'bulk', ep: LOOP_EP_IN, length: 512 });
    const suspended = waitFor(dev, 'suspended');
    const resumed = waitFor(dev, 'resumed', 15_000);
    assert.equal(await daemon.stop('SIGTERM'), 0);
    assert.match(daemon.output, /proc-client \(\w+\) released sim-2/);
    assert.equal((await inflight).status, UrbStatus.ESHUTDOWN);
    await suspended;
    const t0 = performance.now();
    await daemon.start();
    await resumed;
    process.stdout.write(`# reconnect + re-claim after the daemon came back: ${(performance.now() - t0).toFixed(0)} ms\n`);
    assert.equal(c.state, 'online');
    assert.equal(c.device('sim-2')?.mine, true);
    const r = await dev.submit({ type: 'bulk', ep: SOURCE_EP_IN, length: 1024 });
    assert.equal(r.status, 0);
    assert.equal(r.actual, 1024);
  });

  test('daemon killed (SIGKILL) and restarted: same identity, client back online', async () => {
    const c = await connect();
    await c.claim('sim-1');
    await daemon.stop('SIGKILL');
    await until(() => c.state === 'offline', 20_000, 'offline');
    await daemon.start();
    await until(() => c.state === 'online', 20_000, 'online again');
    await until(() => c.device('sim-1')?.mine === true, 5000, 're-claim');
  });

  test('re-claim after a reconnect waits while the bench still holds the device for another connection of ours (not lost)', async () => {
    // After a real network drop the bench keeps the dead connection's claim until its silence limit
    // (20 s) while the client gives up sooner (15 s): test/integration/network-drop.test.ts. Here a
    // silent client with the same key plays that stale connection, deterministically.
    const dir = mkdtempSync(join(tmpdir(), 'remote-usb-proc-stale-'));
    const quiet = new DaemonProcess(dir, await freeUdpPort(), 'client_silence_s = 2\n');
    const key = generateSecretKey();
    new TrustStore(join(dir, 'clients.toml'), dir).allow(endpointIdOf(key), 'me');
    const opts = (o: Partial<BenchClientOptions>): BenchClientOptions => ({
      secretKey: key, bench: { id: endpointIdOf(loadOrCreateSecretKey(dir).key), addrs: [`127.0.0.1:${quiet.port}`] },
      clientName: 'me', relay: { mode: 'disabled' }, ...o,
    });
    try {
      await quiet.start();
      const c = await BenchClient.connect(opts({ reconnect: { initialDelayMs: 1500, maxDelayMs: 1500 } }));
      clients.push(c);
      const dev = await c.claim('sim-2');
      assert.equal(dev.info.claimedBy, 'me');
      const suspended = waitFor(dev, 'suspended');
      await quiet.stop('SIGTERM');
      await suspended;
      await quiet.start();
      // our "old connection": same key, claims, then says nothing (no pings, no reconnects)
      const stale = await BenchClient.connect(opts({ pingIntervalMs: 600_000, deadAfterMs: 600_000, reconnect: { initialDelayMs: 600_000 } }));
      clients.push(stale);
      await stale.claim('sim-2');
      const t0 = performance.now();
      await waitFor(dev, 'resumed', 15_000);
      process.stdout.write(`# re-claimed ${(performance.now() - t0).toFixed(0)} ms after our silent other connection took it (bench silence limit 2 s)\n`);
      assert.equal(dev.lost, false);
      assert.equal(c.device('sim-2')?.mine, true);
      assert.equal((await dev.submit({ type: 'bulk', ep: SOURCE_EP_IN, length: 512 })).status, 0);
    } finally {
      await quiet.stop('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a frozen bench (no answers at all) is detected by the ping and reconnected when it thaws', async () => {
    const c = await connect({ pingIntervalMs: 100, deadAfterMs: 600 });
    daemon.signal('SIGSTOP');
    try {
      await until(() => c.state === 'offline', 5000, 'offline');
      assert.match(c.detail ?? '', /no answer from the bench/);
    } finally {
      daemon.signal('SIGCONT');
    }
    await until(() => c.state === 'online', 20_000, 'online again');
  });
});
