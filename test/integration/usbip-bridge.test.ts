/**
 * The USB/IP bridge end to end without a kernel: a real daemon with simulated boards, the client core
 * over real Iroh on 127.0.0.1, the bridge on a real unix socket pair made as attach.ts makes it, and
 * on the other end a fake kernel (FakeVhci) that enumerates and drives the board the way vhci_hcd
 * would, checking every reply as vhci_rx.c does. Timings are printed as diagnostics, not asserted.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { BenchClient, ClaimedDevice } from '../../extension/core/bench-client.js';
import { createSocketPair, devidOf } from '../../extension/core/usbip/attach.js';
import { UsbipBridge } from '../../extension/core/usbip/bridge.js';
import { UsbipRetSubmit } from '../../extension/core/usbip/codec.js';
import { encodeSetup, UrbStatus } from '../../server/protocol/urb.js';
import { readEndpointTable } from '../../extension/core/usbip/endpoints.js';
import { loadOrCreateSecretKey } from '../../server/shared/identity.js';
import { endpointIdOf, generateSecretKey } from '../../server/net/iroh.js';
import { TrustStore } from '../../server/trust.js';
import { seededBytes } from '../../server/usb/patterns.js';
import { VENDOR_GET_FIFO_LEVEL } from '../../server/usb/sim-loopback-board.js';
import { simLoopbackBoard } from '../../server/usb/simulated.js';
import { BenchFixture, recordingLogger, until } from '../helpers/bench-fixture.js';
import { DaemonProcess, freeUdpPort, SERVER_JS } from '../helpers/daemon-process.js';
import { FakeVhci, GET_DESCRIPTOR } from '../helpers/fake-vhci.js';

const LOOP = 1; // EP 1: OUT 0x01 → FIFO → IN 0x81
const REPORT = 3; // EP 0x83 IN, interrupt

interface Attached {
  dev: ClaimedDevice;
  bridge: UsbipBridge;
  kernel: FakeVhci;
  log: ReturnType<typeof recordingLogger>;
  detach(): Promise<void>;
}

function stringOf(ret: UsbipRetSubmit): string {
  return ret.data.subarray(2, ret.data[0]).toString('utf16le');
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))];
}

describe('USB/IP bridge: fake kernel ⇄ unix socket pair ⇄ bridge ⇄ real Iroh ⇄ daemon ⇄ simulated board', () => {
  const bench = new BenchFixture();
  let client: BenchClient;
  before(async () => {
    await bench.start();
    client = await bench.connect({ clientName: 'bridge-test' });
  });
  after(() => bench.stop());

  async function attach(id = 'sim-2'): Promise<Attached> {
    const dev = await client.claim(id);
    const endpoints = await readEndpointTable(dev);
    const { ours, theirs } = await createSocketPair();
    const devid = devidOf(dev.info);
    const log = recordingLogger();
    const bridge = new UsbipBridge(dev, ours, { devid, endpoints, log }).start();
    const kernel = new FakeVhci(theirs, devid);
    return {
      dev, bridge, kernel, log,
      async detach() {
        await bridge.close('test over');
        await kernel.ended;
        assert.deepEqual(kernel.violations, []);
        for (const [seqnum, n] of kernel.answers) assert.equal(n, 1, `seqnum ${seqnum} answered ${n} times`);
        assert.deepEqual(log.errors, []);
        await dev.release().catch(() => {});
      },
    };
  }

  async function fifoLevel(k: FakeVhci): Promise<number> {
    const r = await k.runControl({ bmRequestType: 0xc0, bRequest: VENDOR_GET_FIFO_LEVEL, wValue: 0, wIndex: 0, wLength: 4 });
    assert.equal(r.status, 0);
    return r.data.readUInt32LE(0);
  }

  test('the kernel enumerates the board through the bridge (descriptors, strings, SET_ADDRESS, SET_CONFIGURATION)', async () => {
    const a = await attach();
    const k = a.kernel;
    // hub_port_init: 64 bytes of device descriptor first (short answer), then the address
    const first = await k.runControl(GET_DESCRIPTOR(1, 0, 64));
    assert.deepEqual([first.status, first.actual_length], [0, 18]);
    assert.equal((await k.runControl({ bmRequestType: 0x00, bRequest: 5, wValue: 2, wIndex: 0, wLength: 0 })).status, 0);
    const device = await k.runControl(GET_DESCRIPTOR(1, 0, 18));
    assert.equal(device.data.readUInt16LE(8), 0x1209);
    assert.equal(device.data.readUInt16LE(10), 0x0002);
    assert.equal(device.data[17], 1); // bNumConfigurations
    const qualifier = await k.runControl(GET_DESCRIPTOR(6, 0, 10));
    assert.deepEqual([qualifier.status, qualifier.data[1]], [0, 6]);
    const head = await k.runControl(GET_DESCRIPTOR(2, 0, 9));
    const total = head.data.readUInt16LE(2);
    const config = await k.runControl(GET_DESCRIPTOR(2, 0, total));
    assert.equal(config.actual_length, total);
    const endpoints: number[] = [];
    for (let o = 0; o < total; o += config.data[o]) if (config.data[o + 1] === 5) endpoints.push(config.data[o + 2]);
    assert.deepEqual(endpoints, [0x01, 0x81, 0x02, 0x82, 0x83]);
    // strings: language table, then each string in en-US, as usb_cache_string does (255-byte reads)
    const langs = await k.runControl(GET_DESCRIPTOR(3, 0, 255));
    assert.equal(langs.data.readUInt16LE(2), 0x0409);
    const strings = [];
    for (const i of [device.data[14], device.data[15], device.data[16]]) strings.push(stringOf(await k.runControl(GET_DESCRIPTOR(3, i, 255, 0x0409))));
    assert.deepEqual(strings, ['Remote USB', 'Simulated Loopback Board', 'LOOP0002']);
    // usb_set_configuration: a host operation on the bench
    assert.equal((await k.runControl({ bmRequestType: 0x00, bRequest: 9, wValue: 1, wIndex: 0, wLength: 0 })).status, 0);
    assert.equal(bench.backend.board('sim-2')!.info().configuration, 1);
    const cfg = await k.runControl({ bmRequestType: 0x80, bRequest: 8, wValue: 0, wIndex: 0, wLength: 1 });
    assert.deepEqual(cfg.data, Buffer.from([1]));
    // an unsupported request stalls, as the device would
    assert.equal((await k.runControl({ bmRequestType: 0xc0, bRequest: 0x77, wValue: 0, wIndex: 0, wLength: 4 })).status, UrbStatus.EPIPE);
    assert.equal(await fifoLevel(k), 0);
    await a.detach();
  });

  test('bulk loopback, 1 MiB each way with 8 URBs in flight per direction, byte-identical', async (t) => {
    const a = await attach();
    const k = a.kernel;
    const total = 1024 * 1024;
    const chunk = 16 * 1024;
    const depth = 8;
    const data = seededBytes(total, 42);
    const t0 = performance.now();
    const writer = (async () => {
      const inflight = new Set<Promise<void>>();
      for (let off = 0; off < total; off += chunk) {
        const p: Promise<void> = k.run({ ep: LOOP, dir: 'out', data: data.subarray(off, off + chunk) }).then((r) => {
          assert.deepEqual([r.status, r.actual_length], [0, chunk]);
          inflight.delete(p);
        });
        inflight.add(p);
        if (inflight.size >= depth) await Promise.race(inflight);
      }
      await Promise.all(inflight);
    })();
    // keep `depth` IN URBs queued until everything came back; results in submission order
    const pieces: (Buffer | undefined)[] = [];
    const ins: { seqnum: number; index: number }[] = [];
    let received = 0;
    await new Promise<void>((resolve, reject) => {
      const submit = (): void => {
        const index = pieces.length;
        pieces.push(undefined);
        const s = k.submit({ ep: LOOP, dir: 'in', length: chunk });
        ins.push({ seqnum: s.seqnum, index });
        s.done.then((answer) => {
          if (answer.kind !== 'submitted') return; // unlinked at the end
          assert.equal(answer.ret.status, 0);
          pieces[index] = answer.ret.data;
          received += answer.ret.data.length;
          ins.splice(ins.findIndex((x) => x.index === index), 1);
          if (received >= total) resolve();
          else submit();
        }).catch(reject);
      };
      for (let i = 0; i < depth; i++) submit();
    });
    await writer;
    const ms = performance.now() - t0;
    assert.deepEqual(Buffer.concat(pieces.filter((p): p is Buffer => p !== undefined)), data);
    // the INs still queued on the empty FIFO: the kernel gives up on them (usb_kill_urb)
    const leftovers = await Promise.all(ins.map((x) => k.unlink(x.seqnum).done));
    assert.ok(leftovers.every((r) => r.status === -104));
    t.diagnostic(`1 MiB out + 1 MiB in through the bridge: ${ms.toFixed(0)} ms, ${((2 * total) / 1e6 / (ms / 1000)).toFixed(1)} MB/s total`);
    await a.detach();
  });

  test('interrupt reads: 16 in flight, each answered with a fresh report', async () => {
    const a = await attach();
    const reports = await Promise.all(Array.from({ length: 16 }, () => a.kernel.run({ ep: REPORT, dir: 'in', length: 8 })));
    const counters = reports.map((r) => {
      assert.deepEqual([r.status, r.actual_length], [0, 8]);
      return r.data.readUInt32LE(0);
    });
    // (uniqueness only: the simulated board times each waiting interrupt URB on its own, so queued
    // URBs may complete out of submission order, which a real endpoint would not do)
    assert.equal(new Set(counters).size, 16);
    await a.detach();
  });

  test('unlink race, 200 times: every URB gets exactly one answer, no RET_SUBMIT after an unlink won, no byte lost', async (t) => {
    const a = await attach();
    const k = a.kernel;
    const sent: Buffer[] = [];
    const got: Buffer[] = [];
    let won = 0;
    let lost = 0;
    const unlinkMs: number[] = [];
    for (let i = 0; i < 200; i++) {
      const urb = k.submit({ ep: LOOP, dir: 'in', length: 512 });
      // every third round, data races the unlink: it may complete the IN first
      let out: Promise<UsbipRetSubmit> | undefined;
      if (i % 3 === 0) {
        const b = Buffer.alloc(32, i & 0xff);
        b.writeUInt16BE(i, 0);
        sent.push(b);
        out = k.run({ ep: LOOP, dir: 'out', data: b });
      }
      const t0 = performance.now();
      const unlink = k.unlink(urb.seqnum);
      const [answer, ret] = await Promise.all([urb.done, unlink.done]);
      unlinkMs.push(performance.now() - t0);
      if (answer.kind === 'unlinked') {
        assert.deepEqual([answer.status, ret.status], [-104, -104]);
        won++;
      } else {
        assert.equal(answer.ret.status, 0);
        assert.equal(ret.status, 0);
        got.push(answer.ret.data);
        lost++;
      }
      if (out) assert.equal((await out).status, 0);
    }
    // what the unlinks left in the FIFO is still there, in order
    const level = await fifoLevel(k);
    if (level > 0) got.push((await k.run({ ep: LOOP, dir: 'in', length: level })).data);
    assert.deepEqual(Buffer.concat(got), Buffer.concat(sent));
    assert.equal(await fifoLevel(k), 0);
    assert.equal(won + lost, 200);
    assert.equal(a.bridge.inFlight, 0);
    assert.equal(a.dev.inFlight, 0);
    t.diagnostic(`unlink won ${won}×, URB completed first ${lost}×; CMD_UNLINK → answer p50 ${percentile(unlinkMs, 50).toFixed(1)} ms, p90 ${percentile(unlinkMs, 90).toFixed(1)} ms`);
    await a.detach();
  });

  test('URB round trip through the bridge vs. the client core alone', async (t) => {
    const a = await attach();
    const GET_STATUS = { bmRequestType: 0x80, bRequest: 0, wValue: 0, wIndex: 0, wLength: 2 };
    const viaBridge: number[] = [];
    const direct: number[] = [];
    for (let i = 0; i < 300; i++) {
      let t0 = performance.now();
      await a.kernel.runControl(GET_STATUS);
      viaBridge.push(performance.now() - t0);
      t0 = performance.now();
      await a.dev.submit({ type: 'control', ep: 0x80, setup: encodeSetup(GET_STATUS), length: 2 });
      direct.push(performance.now() - t0);
    }
    const us = (ms: number): string => `${(ms * 1000).toFixed(0)} µs`;
    t.diagnostic(`control URB round trip: via bridge p50 ${us(percentile(viaBridge, 50))} p99 ${us(percentile(viaBridge, 99))}; client core alone p50 ${us(percentile(direct, 50))} p99 ${us(percentile(direct, 99))}`);
    await a.detach();
  });

  test('the board unplugged on the bench: the bridge closes (device-lost) and the kernel sees the connection end', async () => {
    bench.backend.plug(simLoopbackBoard(9));
    await until(() => client.device('sim-9') !== undefined, 3000, 'sim-9 to appear');
    const a = await attach('sim-9');
    a.kernel.submit({ ep: LOOP, dir: 'in', length: 64 });
    await new Promise((r) => setTimeout(r, 50));
    const closed = once(a.bridge, 'closed');
    bench.backend.unplug('sim-9');
    const [info] = await closed;
    assert.equal(info.reason, 'device-lost');
    assert.match(info.message, /unplugged/);
    await a.kernel.ended;
    assert.deepEqual(a.kernel.violations, []);
    assert.equal(a.bridge.inFlight, 0);
  });
});

describe('USB/IP bridge across a daemon restart (daemon as a real process)', () => {
  let stateDir: string;
  let daemon: DaemonProcess;
  let client: BenchClient | undefined;
  const haveServer = existsSync(SERVER_JS);

  before(async () => {
    if (!haveServer) return;
    stateDir = mkdtempSync(join(tmpdir(), 'remote-usb-bridge-proc-'));
    daemon = new DaemonProcess(stateDir, await freeUdpPort());
    await daemon.start();
  });
  after(async () => {
    await client?.close();
    if (!haveServer) return;
    await daemon.stop('SIGKILL');
    rmSync(stateDir, { recursive: true, force: true });
  });

  test('a pending IN URB survives the restart: the port stays attached and the URB completes after the reconnect', { skip: haveServer ? false : `${SERVER_JS} not built (node esbuild.mjs)` }, async (t) => {
    const key = generateSecretKey();
    new TrustStore(join(stateDir, 'clients.toml'), stateDir).allow(endpointIdOf(key), 'bridge-proc');
    client = await BenchClient.connect({
      secretKey: key, bench: { id: endpointIdOf(loadOrCreateSecretKey(stateDir, false).key), addrs: [`127.0.0.1:${daemon.port}`] },
      clientName: 'bridge-proc', relay: { mode: 'disabled' }, reconnect: { initialDelayMs: 50, maxDelayMs: 500 },
    });
    const dev = await client.claim('sim-2');
    const { ours, theirs } = await createSocketPair();
    const devid = devidOf(dev.info);
    const log = recordingLogger();
    const bridge = new UsbipBridge(dev, ours, { devid, endpoints: await readEndpointTable(dev), log, offlineGraceMs: 20_000 }).start();
    const k = new FakeVhci(theirs, devid);
    const offline = once(bridge, 'offline');
    const online = once(bridge, 'online');
    const urb = k.submit({ ep: LOOP, dir: 'in', length: 64 });
    await new Promise((r) => setTimeout(r, 100));
    const t0 = performance.now();
    assert.equal(await daemon.stop('SIGTERM'), 0);
    await offline;
    await daemon.start();
    await online;
    t.diagnostic(`bridge online again ${(performance.now() - t0).toFixed(0)} ms after the daemon was stopped`);
    const out = await k.run({ ep: LOOP, dir: 'out', data: Buffer.from('after the restart') });
    assert.equal(out.status, 0);
    const answer = await urb.done;
    assert.ok(answer.kind === 'submitted', 'the held URB ran after the reconnect');
    assert.equal(answer.ret.data.toString(), 'after the restart');
    assert.ok(log.lines.some((l) => l.includes('bench connection back; resubmitting 1 URB(s)')));
    await bridge.close();
    await k.ended;
    assert.deepEqual(k.violations, []);
    assert.deepEqual(log.errors, []);
  });
});
