/**
 * The byte-path worker (extension/core/worker/) as the extension runs it: the real dist/core-worker.js in a
 * child process, a real daemon over real Iroh. The main thread sees snapshots and serial bytes only; when
 * it is blocked, the worker keeps the bench connection and the byte path going; a killed worker is
 * noticed, restarted, and the bench comes back online.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { silentLogger } from '../../server/log.js';
import { endpointIdOf, generateSecretKey } from '../../server/net/iroh.js';
import { CoreHost, RemoteBench } from '../../extension/core/worker/core-host.js';
import { BenchFixture, until } from '../helpers/bench-fixture.js';
import { repoRoot } from '../helpers/daemon-process.js';

const WORKER = join(repoRoot(), 'dist', 'core-worker.js');
const bench = new BenchFixture();
let host: CoreHost;
let remote: RemoteBench;
const logs: string[] = [];

before(async () => {
  await bench.start();
  const key = generateSecretKey();
  bench.daemon.trust.allow(endpointIdOf(key), 'worker-client');
  host = new CoreHost(WORKER, { ...silentLogger, error: (m) => logs.push(`error ${m}`), info: (m) => logs.push(m) });
  await host.configure({ secretKey: key, clientName: 'worker-client', relay: { mode: 'disabled' } });
  remote = host.bench(bench.daemon.id, bench.daemon.address());
  remote.startInBackground();
  await until(() => remote.state === 'online', 10_000);
});
after(async () => {
  await host?.stop();
  await bench.stop();
});

/** CPU time of this process's main thread (its task id is the pid), in ms. */
function mainThreadCpuMs(): number {
  const f = readFileSync(`/proc/${process.pid}/task/${process.pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) * 10;
}

test('the worker connects the bench and the main thread sees its snapshot: name, devices, round trip', async () => {
  assert.equal(remote.benchName, 'test-bench');
  assert.deepEqual(remote.devices.map((d) => d.id).sort(), ['sim-1', 'sim-2']);
  await until(() => remote.rttMs !== undefined, 10_000);
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
