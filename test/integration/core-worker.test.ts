/**
 * The byte-path worker (extension/core/worker/) as the extension runs it: the real dist/core-worker.js in a
 * child process, a real daemon over real Iroh. The main thread sees snapshots and serial bytes only; when
 * it is blocked, the worker keeps the bench connection and the byte path going; a killed worker is
 * noticed, restarted, and the bench comes back online.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { isMainThread, parentPort, Worker } from 'node:worker_threads';
import { SOURCE_EP_IN } from '../../server/usb/sim-loopback-board.js';
import { FakeVhci } from '../helpers/fake-vhci.js';
import { RelayVhci } from '../helpers/relay-vhci.js';
import { cpuSeconds } from '../bench/measure.js';
import { silentLogger } from '../../server/shared/log.js';
import { CoreHost, RemoteBench } from '../../extension/core/worker/core-host.js';
import type { AttachSettings } from '../../extension/core/worker/messages.js';
import { until } from '../helpers/bench-fixture.js';
import { DaemonProcess, repoRoot, startWithClient } from '../helpers/daemon-process.js';


/**
 * The kernel's side, in a thread of its own so it keeps going while the test blocks the main thread: a
 * relay stand-in for vhci_hcd, then (once told the devid) bulk IN URBs, 8 × 64 KiB in flight, until told to
 * stop; it reports the time of every completion.
 */
async function kernelThread(): Promise<void> {
  const relay = await new RelayVhci().listen();
  parentPort!.postMessage({ settings: relay.settings });
  const socket = await relay.next();
  const { devid } = await new Promise<{ devid: number }>((r) => parentPort!.once('message', r));
  const vhci = new FakeVhci(socket, devid);
  let running = true;
  parentPort!.once('message', () => { running = false; });
  const done: number[] = [];
  let bytes = 0;
  const t0 = Date.now();
  await Promise.all(Array.from({ length: 8 }, async () => {
    while (running) {
      const a = await vhci.submit({ ep: SOURCE_EP_IN & 0x0f, dir: 'in', length: 65536 }).done;
      if (a.kind !== 'submitted' || a.ret.status !== 0) throw new Error(`URB failed: ${JSON.stringify(a)}`);
      bytes += a.ret.actual_length;
      done.push(Date.now());
    }
  }));
  parentPort!.postMessage({ done, mbps: bytes / 1e6 / ((Date.now() - t0) / 1000), violations: vhci.violations });
  await vhci.ended; // the test detaches: our side closes first, as it would with the real kernel
  await relay.close();
}

if (isMainThread) {
const WORKER = join(repoRoot(), 'dist', 'core-worker.js');
let dir: string;
let daemon: DaemonProcess;
let host: CoreHost;
let remote: RemoteBench;
const logs: string[] = [];

before(async () => {
  // the bench in a process of its own: blocking this thread must not block the bench
  const started = await startWithClient('rusb-core-worker-', 'worker-client');
  ({ dir, daemon } = started);
  const { key, address } = started;
  host = new CoreHost(WORKER, { ...silentLogger, error: (m) => logs.push(`error ${m}`), info: (m) => logs.push(m) });
  await host.configure({ secretKey: key, clientName: 'worker-client', relay: { mode: 'disabled' } });
  remote = host.bench(address.id, address);
  remote.startInBackground();
  await until(() => remote.state === 'online', 10_000);
});
after(async () => {
  await host?.stop();
  await daemon?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** CPU time of this process's main thread, in ms. */
const mainThreadCpuMs = (): number => 1000 * cpuSeconds(process.pid, process.pid);

test('the worker connects the bench and the main thread sees its snapshot: name, devices, round trip, path', async () => {
  assert.equal(remote.benchName, 'proc-bench');
  assert.deepEqual(remote.devices.map((d) => d.id).sort(), ['sim-1', 'sim-2']);
  await until(() => remote.rttMs !== undefined, 10_000);
  assert.equal(remote.path, 'direct', 'the path comes across with the round trip (loopback: direct)');
  assert.ok(host.pid !== undefined);
  await assert.rejects(host.parseAddress('not a ticket'), /neither a bench ticket nor an endpoint id/);
});

test('a bench serial session through the worker: the banner, an echo, and bytes keep arriving while the main thread is blocked for 2 s', async () => {
  const s = await remote.openSerial('sim-1', { baud: 115200, dataBits: 8, parity: 'none', stopBits: 1 });
  let text = '';
  s.on('data', (d) => { text += d.toString('latin1'); });
  await until(() => text.includes('ready'), 5000);
  s.write(Buffer.from('before\r'));
  await until(() => text.includes('before'), 5000);
  // block this thread for 2 s right after asking for an echo: the worker gets it meanwhile
  s.write(Buffer.from('during\r'));
  const cpu0 = mainThreadCpuMs();
  const end = Date.now() + 2000;
  while (Date.now() < end) { /* an extension hogging the extension host */ }
  const blockedCpu = mainThreadCpuMs() - cpu0;
  await until(() => text.includes('during'), 5000);
  assert.equal(remote.state, 'online');
  console.log(`# main thread blocked for 2 s (${blockedCpu} ms CPU); the echo sent just before was waiting when it woke`);
  await s.close();
});

test('an attached board streams bulk through the worker; while the main thread is blocked for 2 s, URBs keep completing', async () => {
  const kernel = new Worker(__filename);
  const { settings } = await new Promise<{ settings: AttachSettings }>((r) => kernel.once('message', r));
  const attachment = await remote.attach('sim-2', settings).catch(async (e: Error) => {
    await kernel.terminate();
    throw e;
  });
  kernel.postMessage({ devid: attachment.devid });
  await new Promise((r) => setTimeout(r, 1500)); // let it stream
  const cpu0 = mainThreadCpuMs();
  const t1 = performance.now();
  await new Promise((r) => setTimeout(r, 2000));
  const mainCpu = (mainThreadCpuMs() - cpu0) / (performance.now() - t1);
  const blockedFrom = Date.now();
  while (Date.now() < blockedFrom + 2000) { /* an extension hogging the extension host */ }
  const blockedTo = Date.now();
  const result = new Promise<{ done: number[]; mbps: number; violations: string[] }>((r) => kernel.once('message', r));
  kernel.postMessage('stop');
  const { done, mbps, violations } = await result;
  await attachment.detach();
  const during = done.filter((t) => t >= blockedFrom && t <= blockedTo).length;
  console.log(`# bulk IN through the worker: ${mbps.toFixed(1)} MB/s; main thread ${(100 * mainCpu).toFixed(1)} % of a core while streaming; ${during} URBs completed while the main thread was blocked for 2 s`);
  assert.deepEqual(violations, []);
  assert.ok(during > 0, 'URBs completed while the main thread was blocked');
  assert.equal((await attachment.closed).reason, 'local');
  assert.ok(attachment.traffic.bytesIn > 0, 'traffic reached the main thread');
});

test('a killed worker is noticed, restarted with backoff, and the bench comes back online; open sessions end with the reason', async () => {
  const s = await remote.openSerial('sim-1', { baud: 115200, dataBits: 8, parity: 'none', stopBits: 1 });
  const ended = new Promise<string | undefined>((r) => s.on('state', (state, detail) => { if (state === 'closed') r(detail); }));
  const crashed = new Promise<[string, number]>((r) => host.once('crashed', (reason, ms) => r([reason, ms])));
  const restarted = new Promise<void>((r) => host.once('restarted', () => r()));
  const starts = host.starts;
  host.kill();
  const [reason, delay] = await crashed;
  assert.match(reason, /the byte-path worker stopped/);
  assert.ok(delay > 0 && delay < 5000, `restart in ${delay} ms`);
  assert.match((await ended) ?? '', /the byte-path worker stopped/);
  assert.equal(remote.state, 'connecting');
  assert.match(remote.detail ?? '', /restarting it/);
  await restarted;
  assert.equal(host.starts, starts + 1);
  await until(() => remote.state === 'online', 15_000);
  assert.deepEqual(remote.devices.map((d) => d.id).sort(), ['sim-1', 'sim-2']);
  assert.ok(logs.some((l) => /error the byte-path worker stopped .*restarting it in/.test(l)), 'logged');
});

}
else void kernelThread();
