/**
 * `npm run bench`: data-path numbers and their baselines from one run on this machine (each figure the
 * median of several runs). The daemon runs as its own process (dist/server.js run --simulate with nine
 * loopback boards), the client core in this one (or in worker threads), over real Iroh on 127.0.0.1.
 * The raw ceiling comes from bare Iroh processes (raw-peer.ts) with the same conversions. Prints a
 * table, then the same as Markdown; asserts nothing.
 *   --quick     fewer and shorter runs (CI)
 *   --profile   also profile the client (this process) during compressed bulk IN and small URBs, and
 *               the daemon over its whole run, and print where their CPU time goes
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { BenchClient, ClaimedDevice } from '../../extension/core/bench-client.js';
import { encodeSetup } from '../../server/protocol/urb.js';
import { loadOrCreateSecretKey } from '../../server/shared/identity.js';
import { BindingName, defaultBindingName, endpointIdOf, generateSecretKey, PeerAddress } from '../../server/net/iroh.js';
import { nativePath } from '../../server/net/native-binding.js';
import { fromWireArray, toWireArray } from '../../server/net/bytes.js';
import { TrustStore } from '../../server/trust.js';
import { firmwareLikeImage, seededBytes } from '../../server/usb/patterns.js';
import { LOOP_EP_IN, LOOP_EP_OUT, SINK_EP_OUT, SOURCE_EP_IN, VENDOR_SET_PATTERN } from '../../server/usb/sim-loopback-board.js';
import { DaemonProcess, freeUdpPort, repoRoot } from '../helpers/daemon-process.js';
import { Session } from 'node:inspector/promises';
import { cpuSeconds, freeCores, median, ownCpuSeconds, pct, privateDirtyKiB, rssKiB, sleep } from './measure.js';

const quick = process.argv.includes('--quick');
const profile = process.argv.includes('--profile');
const RUNS = quick ? 1 : 3;
const SECONDS = quick ? 1 : 2;
const URB = 64 * 1024;
const BOARDS = 'loopback:9'; // sim-1 … sim-9
const GET_STATUS = encodeSetup({ bmRequestType: 0x80, bRequest: 0, wValue: 0, wIndex: 0, wLength: 2 });

type Pattern = 'random' | 'firmware';
const PATTERN_ID: Record<Pattern, number> = { random: 1, firmware: 2 };
const IMAGES: Record<Pattern, Buffer> = { random: seededBytes(4 << 20, 99), firmware: firmwareLikeImage(4 << 20) };

const rows: [string, string][] = [];
function row(name: string, value: string): void {
  rows.push([name, value]);
  process.stdout.write(`${name.padEnd(78)} ${value}\n`);
}
function section(title: string): void {
  rows.push([`**${title}**`, '']);
  process.stdout.write(`\n${title}\n`);
}
const mbps = (x: number): string => `${x.toFixed(1)} MB/s`;
const ms = (x: number): string => `${x.toFixed(3)} ms`;

// ---- the raw binding ----
function conversions(): void {
  const buf = Buffer.alloc(URB, 0xa5);
  const time = (f: () => void): number => {
    const t = performance.now();
    let n = 0;
    while (performance.now() - t < 300) { f(); n += buf.length; }
    return n / 1e6 / ((performance.now() - t) / 1000);
  };
  const arr = Array.from(buf);
  row('send conversion Buffer→Array: Array.from (naive) / pooled, unrolled (ours)', `${time(() => Array.from(buf)).toFixed(0)} / ${time(() => toWireArray(buf)).toFixed(0)} MB/s`);
  row('receive conversion Array→Buffer: Buffer.from (naive) / loop into allocUnsafe (ours)', `${time(() => Buffer.from(arr)).toFixed(0)} / ${time(() => fromWireArray(arr)).toFixed(0)} MB/s`);
}

interface Raw { oneWay: number; bothWays: { up: number; down: number }; p50: number; p99: number; workers2: number }

const rawPeerJs = (): string => join(__dirname, 'raw-peer.js');
const bindingEnv = (binding?: BindingName): NodeJS.ProcessEnv => (binding ? { ...process.env, REMOTE_USB_IROH: binding } : process.env);

/** A raw-peer server; `received` collects the byte counts it prints per stream. */
async function rawServe(n: number, binding?: BindingName): Promise<{ targets: string; received: number[]; pid: number; stop: () => void }> {
  const server = spawn(process.execPath, [rawPeerJs(), 'serve', String(n)], { stdio: ['ignore', 'pipe', 'inherit'], env: bindingEnv(binding) });
  const ids: string[] = [];
  const received: number[] = [];
  let buf = '';
  server.stdout!.on('data', (d: Buffer) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const m = JSON.parse(buf.slice(0, i)) as { id?: string; port?: number; bytes?: number };
      if (m.id) ids.push(`${m.id}@${m.port}`);
      if (m.bytes !== undefined) received.push(m.bytes);
      buf = buf.slice(i + 1);
    }
  });
  while (ids.length < n) await sleep(20);
  return { targets: ids.join(','), received, pid: server.pid!, stop: () => server.kill() };
}

function rawClient(args: string[], binding?: BindingName): Promise<{ bytes: number; secs?: number; rtts?: number[]; cpu?: number }[]> {
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, [rawPeerJs(), ...args], { stdio: ['ignore', 'pipe', 'inherit'], env: bindingEnv(binding) });
    let out = '';
    c.stdout!.on('data', (d: Buffer) => { out += d; });
    c.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`raw-peer ${args[0]} exited ${code}`))));
  });
}

/** bench.ts → raw-peer.js processes: bare Iroh streams over the default binding. */
async function rawCeiling(): Promise<Raw> {
  const client = (args: string[]) => rawClient(args);
  const one = await rawServe(1);
  const two = await rawServe(2);
  try {
    const oneWay: number[] = [];
    const bothWays: { up: number; down: number }[] = [];
    const workers2: number[] = [];
    for (let r = 0; r < RUNS; r++) {
      // one way: what the sender wrote over the time it took (the receiver's rate, within a flush)
      const t0 = performance.now();
      const [s] = await client(['send', one.targets, String(SECONDS)]);
      oneWay.push(s.bytes / 1e6 / ((performance.now() - t0) / 1000 - 0.2));
      const t1 = performance.now();
      const before = one.received.length;
      const [b] = await client(['both', one.targets, String(SECONDS)]);
      while (one.received.length === before) await sleep(20);
      // what came back to the client plus what reached the server
      const secs = (performance.now() - t1) / 1000 - 0.2;
      bothWays.push({ up: one.received[one.received.length - 1] / 1e6 / secs, down: b.bytes / 1e6 / secs });
      const t2 = performance.now();
      const w = await client(['send', two.targets, String(SECONDS)]);
      workers2.push(w.reduce((n, x) => n + x.bytes, 0) / 1e6 / ((performance.now() - t2) / 1000 - 0.2));
    }
    const [{ rtts }] = await client(['ping', one.targets, '1000']);
    const both = bothWays.sort((x, y) => x.up + x.down - y.up - y.down)[Math.floor(bothWays.length / 2)];
    return { oneWay: median(oneWay), bothWays: both, workers2: median(workers2), p50: median(rtts!), p99: pct(rtts!, 99) };
  } finally {
    one.stop();
    two.stop();
  }
}

interface RawBinding { mbps: number; sendCpuPerMiB: number; recvCpuPerMiB: number }

/** One stream, one way, between two processes on `binding`: MB/s and CPU-seconds per MiB at each end. */
async function rawOneWay(binding: BindingName): Promise<RawBinding> {
  const server = await rawServe(1, binding);
  try {
    const runs: RawBinding[] = [];
    for (let r = 0; r < RUNS; r++) {
      const before = server.received.length;
      const cpu0 = cpuSeconds(server.pid);
      const t0 = performance.now();
      const [s] = await rawClient(['send', server.targets, String(SECONDS)], binding);
      const secs = (performance.now() - t0) / 1000 - 0.2;
      while (server.received.length === before) await sleep(20);
      const mib = server.received[server.received.length - 1] / (1 << 20);
      runs.push({ mbps: s.bytes / 1e6 / secs, sendCpuPerMiB: s.cpu! / (s.bytes / (1 << 20)), recvCpuPerMiB: (cpuSeconds(server.pid) - cpu0) / mib });
    }
    return { mbps: median(runs.map((x) => x.mbps)), sendCpuPerMiB: median(runs.map((x) => x.sendCpuPerMiB)), recvCpuPerMiB: median(runs.map((x) => x.recvCpuPerMiB)) };
  } finally {
    server.stop();
  }
}

function rawBindingRows(ours: RawBinding, theirs: RawBinding): void {
  const cpu = (x: number): string => x.toFixed(4);
  row('raw, one stream, one way: ours / @number0/iroh (ours ÷ theirs; target ≥ 53 MB/s)', `${mbps(ours.mbps)} / ${mbps(theirs.mbps)} (${(ours.mbps / theirs.mbps).toFixed(1)}×)`);
  row('raw CPU-s per MiB, sender: ours / @number0/iroh (ours ÷ theirs; target ≤ 0.1)', `${cpu(ours.sendCpuPerMiB)} / ${cpu(theirs.sendCpuPerMiB)} (${(ours.sendCpuPerMiB / theirs.sendCpuPerMiB).toFixed(2)})`);
  row('raw CPU-s per MiB, receiver: ours / @number0/iroh (ours ÷ theirs; target ≤ 0.1)', `${cpu(ours.recvCpuPerMiB)} / ${cpu(theirs.recvCpuPerMiB)} (${(ours.recvCpuPerMiB / theirs.recvCpuPerMiB).toFixed(2)})`);
}

// ---- the whole path ----
/** Streams bulk for SECONDS with `inflight` URBs outstanding; MB/s of payload (uncompressed). */
async function bulk(dev: ClaimedDevice, dir: 'in' | 'out', inflight: number, pattern: Pattern, seconds = SECONDS): Promise<number> {
  const image = IMAGES[pattern];
  let offset = 0;
  let bytes = 0;
  const start = performance.now();
  const until = start + seconds * 1000;
  await Promise.all(Array.from({ length: inflight }, async () => {
    while (performance.now() < until) {
      let r;
      if (dir === 'in') {
        r = await dev.submit({ type: 'bulk', ep: SOURCE_EP_IN, length: URB });
      } else {
        const data = image.subarray(offset, offset + URB);
        offset = (offset + URB) % image.length;
        r = await dev.submit({ type: 'bulk', ep: SINK_EP_OUT, data });
      }
      if (r.status !== 0) throw new Error(`bulk ${dir} failed: ${r.status}`);
      bytes += r.actual;
    }
  }));
  return bytes / 1e6 / ((performance.now() - start) / 1000);
}

async function setPattern(dev: ClaimedDevice, pattern: Pattern): Promise<void> {
  await dev.submit({ type: 'control', ep: 0, setup: encodeSetup({ bmRequestType: 0x40, bRequest: VENDOR_SET_PATTERN, wValue: PATTERN_ID[pattern], wIndex: 0, wLength: 0 }) });
}

async function controlRtts(dev: ClaimedDevice, n: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await dev.submit({ type: 'control', ep: 0x80, length: 2, setup: GET_STATUS });
    out.push(performance.now() - t);
  }
  return out;
}

interface Setup { bench: PeerAddress; trust: TrustStore }
let clientCount = 0;
async function connect(s: Setup, compression = true): Promise<BenchClient> {
  const key = generateSecretKey();
  const name = `bench-${++clientCount}`;
  s.trust.allow(endpointIdOf(key), name);
  return BenchClient.connect({ secretKey: key, bench: s.bench, clientName: name, relay: { mode: 'disabled' }, compression });
}

/** Worker thread: its own client (own endpoint, own connection) streams bulk IN from one device. */
async function workerMain(): Promise<void> {
  const { bench, key, dev, seconds } = workerData as { bench: PeerAddress; key: Uint8Array; dev: string; seconds: number };
  const c = await BenchClient.connect({ secretKey: key, bench, clientName: `worker-${dev}`, relay: { mode: 'disabled' } });
  const d = await c.claim(dev);
  await setPattern(d, 'random');
  parentPort!.postMessage('ready');
  await new Promise((r) => parentPort!.once('message', r));
  parentPort!.postMessage(await bulk(d, 'in', 8, 'random', seconds));
  await c.close();
}

/** `devices` stream bulk IN at once, each from its own worker thread; aggregate MB/s. */
async function streamFromWorkers(s: Setup, devices: string[]): Promise<number> {
  const workers = devices.map((dev) => {
    const key = generateSecretKey();
    s.trust.allow(endpointIdOf(key), `worker-${dev}`);
    return new Worker(__filename, { workerData: { bench: s.bench, key, dev, seconds: SECONDS } });
  });
  const next = (w: Worker): Promise<unknown> => new Promise((resolve, reject) => w.once('message', resolve).once('error', reject));
  await Promise.all(workers.map(next));
  const results = workers.map(next);
  for (const w of workers) w.postMessage('go');
  const rates = (await Promise.all(results)) as number[];
  await Promise.all(workers.map((w) => new Promise((r) => w.once('exit', r))));
  return rates.reduce((a, b) => a + b, 0);
}

function activation(): { loadMs: number; activateMs: number; natives: string[] } {
  const runs: { loadMs: number; activateMs: number; natives: string[] }[] = [];
  for (let i = 0; i < 5; i++) {
    const out = execFileSync(process.execPath, [join(__dirname, 'activation-probe.js'), join(repoRoot(), 'dist', 'extension.js')], { encoding: 'utf8' });
    runs.push(JSON.parse(out));
  }
  return { loadMs: median(runs.map((r) => r.loadMs)), activateMs: median(runs.map((r) => r.activateMs)), natives: runs.flatMap((r) => r.natives) };
}

/** A V8 CPU profile of this process while it streams a firmware image in, summed by function. */
async function profileBulk(dev: ClaimedDevice): Promise<void> {
  await setPattern(dev, 'firmware');
  await profiled('bulk IN firmware 32 in flight', () => bulk(dev, 'in', 32, 'firmware'));
}

/** Runs `work` under the V8 profiler (this process: the client) and prints where the time went. */
async function profiled(what: string, work: () => Promise<unknown>): Promise<void> {
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.start');
  await work();
  const { profile: p } = await session.post('Profiler.stop');
  session.disconnect();
  printProfile(`client, ${what}`, p);
}

/** Prints the ten functions of a V8 CPU profile with the most self time. */
function printProfile(what: string, p: { nodes: { id: number; callFrame: { functionName: string; url: string } }[]; samples?: number[] }): void {
  const self = new Map<string, number>();
  const total = p.samples!.length;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  for (const id of p.samples!) {
    const f = byId.get(id)!.callFrame;
    const name = `${f.functionName || '(anonymous)'} ${f.url ? f.url.split('/').slice(-2).join('/') : ''}`.trim();
    self.set(name, (self.get(name) ?? 0) + 1);
  }
  const top = [...self].sort((a, b) => b[1] - a[1]).slice(0, 10);
  for (const [name, n] of top) row(`  profile, ${what}: ${name}`, `${((100 * n) / total).toFixed(1)} % of samples`);
}

/** Where the client's CPU goes per URB: small IN URBs, 16 in flight. */
async function profileSmall(dev: ClaimedDevice): Promise<void> {
  await profiled('512-byte IN, 16 in flight', async () => {
    const until = performance.now() + SECONDS * 1000;
    await Promise.all(Array.from({ length: 16 }, async () => {
      while (performance.now() < until) await dev.submit({ type: 'bulk', ep: SOURCE_EP_IN, length: 512 });
    }));
  });
}

async function main(): Promise<void> {
  const cores = cpus().length;
  process.stdout.write(`Remote USB bench — node ${process.version}, ${cpus()[0]?.model ?? 'cpu?'} × ${cores}, ${freeCores().toFixed(1)} core(s) free at start; ${RUNS} run(s) per figure, medians\n`);

  section(`Raw Iroh binding (baseline, 2 bare processes; default binding: ${defaultBindingName() === 'native' ? 'ours' : '@number0/iroh'})`);
  if (nativePath()) rawBindingRows(await rawOneWay('native'), await rawOneWay('number0'));
  else row('raw: our binding vs @number0/iroh', 'our binding is not built here (no cargo): @number0/iroh only');
  conversions();
  const raw = await rawCeiling();
  row('raw ceiling: one stream, one way, 256 KiB writes', mbps(raw.oneWay));
  row('raw: one stream, both ways at once: sum (up + down)', `${mbps(raw.bothWays.up + raw.bothWays.down)} (${raw.bothWays.up.toFixed(1)} + ${raw.bothWays.down.toFixed(1)})`);
  row('raw: one way, 2 worker threads per side (own endpoint + connection each)', `${mbps(raw.workers2)} (${(raw.workers2 / raw.oneWay).toFixed(2)}× one thread)`);
  row('raw 64-byte round trip p50 / p99', `${ms(raw.p50)} / ${ms(raw.p99)}`);

  const stateDir = mkdtempSync(join(tmpdir(), 'remote-usb-bench-'));
  process.env.REMOTE_USB_SIM_BOARDS = BOARDS; // the daemon child inherits it
  const daemon = new DaemonProcess(stateDir, await freeUdpPort());
  const profileDir = join(stateDir, 'daemon-profile');
  if (profile) daemon.nodeArgs = ['--cpu-prof', `--cpu-prof-dir=${profileDir}`]; // the daemon's whole run
  await daemon.start();
  const pid = daemon.child!.pid!;
  const clients: BenchClient[] = [];
  try {
    const s: Setup = {
      bench: { id: endpointIdOf(loadOrCreateSecretKey(stateDir, false).key), addrs: [`127.0.0.1:${daemon.port}`] },
      trust: new TrustStore(join(stateDir, 'clients.toml'), stateDir),
    };
    section('Daemon and extension footprint');
    await sleep(1000);
    const cpu0 = cpuSeconds(pid);
    await sleep(quick ? 2000 : 5000);
    const idleCpu = (cpuSeconds(pid) - cpu0) / (quick ? 2 : 5);
    row('daemon idle (9 simulated boards, no client): RSS / private dirty', `${(rssKiB(pid) / 1024).toFixed(1)} / ${(privateDirtyKiB(pid) / 1024).toFixed(1)} MiB`);
    row('daemon idle CPU (100 % = one core)', `${(100 * idleCpu).toFixed(2)} %`);
    const act = activation();
    row('extension: load dist/extension.js / activate() (VS Code API stood in)', `${act.loadMs.toFixed(1)} / ${act.activateMs.toFixed(1)} ms`);
    row('extension: native modules loaded by activation', act.natives.length === 0 ? 'none (Iroh and usb load on first use)' : act.natives.join(', '));

    section('Connect and control');
    const firsts: number[] = [];
    for (let i = 0; i < (quick ? 3 : 7); i++) {
      const t0 = performance.now();
      const c = await connect(s);
      const dev = await c.claim('sim-1');
      await dev.submit({ type: 'control', ep: 0x80, length: 18, setup: encodeSetup({ bmRequestType: 0x80, bRequest: 6, wValue: 0x100, wIndex: 0, wLength: 18 }) });
      firsts.push(performance.now() - t0);
      await c.close();
    }
    row('first URB after connect (bind + connect + hello + claim + URB)', `${median(firsts).toFixed(1)} ms`);
    const c = await connect(s);
    clients.push(c);
    const dev = await c.claim('sim-1');
    const pings: number[] = [];
    for (let i = 0; i < 1000; i++) pings.push(await c.ping());
    const ctl = await controlRtts(dev, 1000);
    row('app ping round trip p50 / p99', `${ms(median(pings))} / ${ms(pct(pings, 99))}`);
    row('control URB round trip (GET_STATUS) p50 / p99', `${ms(median(ctl))} / ${ms(pct(ctl, 99))}`);
    row('control URB / raw round trip: p50 / p99 (targets ≤ 1.5× / ≤ 3×)', `${(median(ctl) / raw.p50).toFixed(2)}× / ${(pct(ctl, 99) / raw.p99).toFixed(2)}×`);

    section('Bulk, one device, 64 KiB URBs (compression on unless said)');
    const rate = (name: string, runs: number[]): void => {
      const m = median(runs);
      row(name, `${mbps(m)} (${((100 * m) / raw.oneWay).toFixed(0)} % of raw)`);
    };
    for (const pattern of ['random', 'firmware'] as Pattern[]) {
      await setPattern(dev, pattern);
      for (const dir of ['in', 'out'] as const) {
        for (const inflight of [1, 8, 32]) {
          const runs: number[] = [];
          const cpu = { bench: 0, client: 0, secs: 0 };
          for (let r = 0; r < RUNS; r++) {
            const b0 = cpuSeconds(pid);
            const c0 = ownCpuSeconds();
            const t0 = performance.now();
            runs.push(await bulk(dev, dir, inflight, pattern));
            cpu.bench += cpuSeconds(pid) - b0;
            cpu.client += ownCpuSeconds() - c0;
            cpu.secs += (performance.now() - t0) / 1000;
          }
          const name = `bulk ${dir.toUpperCase().padEnd(3)} ${String(inflight).padStart(2)} in flight, ${pattern === 'random' ? 'random data' : 'firmware image'}`;
          rate(inflight === 32 ? `${name} [CPU: bench ${(100 * cpu.bench / cpu.secs).toFixed(0)} %, client ${(100 * cpu.client / cpu.secs).toFixed(0)} %]` : name, runs);
        }
      }
    }
    if (profile) await profileBulk(dev);
    const plain = await connect(s, false);
    clients.push(plain);
    const plainDev = await plain.claim('sim-2');
    for (const pattern of ['firmware', 'random'] as Pattern[]) {
      await setPattern(plainDev, pattern);
      for (const dir of ['in', 'out'] as const) {
        const runs: number[] = [];
        for (let r = 0; r < RUNS; r++) runs.push(await bulk(plainDev, dir, 32, pattern));
        rate(`bulk ${dir.toUpperCase().padEnd(3)} 32 in flight, ${pattern === 'random' ? 'random data' : 'firmware image'}, compression off`, runs);
      }
    }
    const st = c.compressor.stats;
    row('compression, this client\'s OUT payloads: sent compressed / ratio', `${st.compressed} of ${st.payloads} / ${(st.bytesIn / Math.max(1, st.bytesOut)).toFixed(2)}×`);

    section('Small URBs, like a debug probe (CMSIS-DAP: 64-512-byte command, then its response)');
    const pairs: number[] = [];
    const command = IMAGES.random.subarray(0, 512);
    for (let i = 0; i < (quick ? 300 : 1000); i++) {
      const t = performance.now();
      const [w, r] = await Promise.all([
        dev.submit({ type: 'bulk', ep: LOOP_EP_OUT, data: command }),
        dev.submit({ type: 'bulk', ep: LOOP_EP_IN, length: 512 }),
      ]);
      if (w.status !== 0 || r.status !== 0 || r.actual !== 512) throw new Error(`command/response ${i} failed: ${w.status}/${r.status}`);
      pairs.push(performance.now() - t);
    }
    row('512-byte OUT + 512-byte IN (submitted together) p50 / p99', `${ms(median(pairs))} / ${ms(pct(pairs, 99))} (${(median(pairs) / raw.p50).toFixed(2)}× raw round trip)`);
    for (const inflight of [1, 16]) {
      const counts: number[] = [];
      for (let r = 0; r < RUNS; r++) {
        let n = 0;
        const t0 = performance.now();
        const until = t0 + SECONDS * 1000;
        await Promise.all(Array.from({ length: inflight }, async () => {
          while (performance.now() < until) {
            const res = await dev.submit({ type: 'bulk', ep: SOURCE_EP_IN, length: 512 });
            if (res.status !== 0) throw new Error(`small IN failed: ${res.status}`);
            n++;
          }
        }));
        counts.push(n / ((performance.now() - t0) / 1000));
      }
      row(`512-byte bulk IN URBs, ${String(inflight).padStart(2)} in flight`, `${median(counts).toFixed(0)} URBs/s`);
    }
    if (profile) await profileSmall(dev);

    section('Several devices at once (random data, 8 × 64 KiB in flight each, one connection)');
    let single = 0;
    for (const n of [1, 4, 8]) {
      const devs: ClaimedDevice[] = [];
      for (let i = 0; i < n; i++) {
        const d = i === 0 ? plainDev : await plain.claim(`sim-${i + 2}`);
        await setPattern(d, 'random');
        devs.push(d);
      }
      const aggregates: number[] = [];
      const fairness: number[] = [];
      const rssLoad: number[] = [];
      const cpuLoad: number[] = [];
      let ctlUnderLoad: number[] = [];
      for (let r = 0; r < RUNS; r++) {
        const cpuStart = cpuSeconds(pid);
        const t0 = performance.now();
        const streaming = Promise.all(devs.map((d) => bulk(d, 'in', 8, 'random')));
        if (n === 8) ctlUnderLoad = ctlUnderLoad.concat(await controlRtts(dev, 200));
        await sleep(SECONDS * 500);
        rssLoad.push(rssKiB(pid));
        const each = await streaming;
        cpuLoad.push((cpuSeconds(pid) - cpuStart) / ((performance.now() - t0) / 1000));
        const sum = each.reduce((a, b) => a + b, 0);
        aggregates.push(sum);
        fairness.push(Math.min(...each) / (sum / n));
      }
      if (n === 1) single = median(aggregates);
      row(`${n} device(s): aggregate / per device / slowest ÷ fair share`, `${mbps(median(aggregates))} / ${mbps(median(aggregates) / n)} / ${median(fairness).toFixed(2)}${n > 1 ? ` (aggregate ${(median(aggregates) / single).toFixed(2)}× one device)` : ''}`);
      if (n === 8) {
        row('control URB on a 9th device while 8 stream bulk: p50 / p99', `${ms(median(ctlUnderLoad))} / ${ms(pct(ctlUnderLoad, 99))}`);
        row('daemon under bulk load (8 devices): RSS / CPU (100 % = one core)', `${(median(rssLoad) / 1024).toFixed(1)} MiB / ${(100 * median(cpuLoad)).toFixed(0)} %`);
      }
      for (const d of devs.slice(1)) await d.release();
    }

    section(`Spreading connections over worker threads (${cores} cores, ${freeCores().toFixed(1)} free now)`);
    const d3 = await plain.claim('sim-3');
    for (const d of [plainDev, d3]) await setPattern(d, 'random');
    const oneThread: number[] = [];
    for (let r = 0; r < RUNS; r++) oneThread.push((await Promise.all([bulk(plainDev, 'in', 8, 'random'), bulk(d3, 'in', 8, 'random')])).reduce((a, b) => a + b, 0));
    await plain.close();
    clients.splice(clients.indexOf(plain), 1);
    const workers: number[] = [];
    for (let r = 0; r < RUNS; r++) workers.push(await streamFromWorkers(s, ['sim-2', 'sim-3']));
    row('2 devices, one connection on the main thread: aggregate', mbps(median(oneThread)));
    row('2 devices, one connection each in its own worker thread: aggregate', `${mbps(median(workers))} (${(median(workers) / median(oneThread)).toFixed(2)}×; the bench side is one thread)`);
  } finally {
    for (const c of clients) await c.close().catch(() => {});
    await daemon.stop();
    if (profile) printProfile('bench daemon, whole run', JSON.parse(readFileSync(join(profileDir, readdirSync(profileDir)[0]), 'utf8')));
    rmSync(stateDir, { recursive: true, force: true });
  }
  process.stdout.write('\n| measure | value |\n|---|---|\n');
  for (const [name, value] of rows) process.stdout.write(`| ${name} | ${value} |\n`);
}

if (isMainThread) main().catch((e: Error) => { process.stderr.write(`bench failed: ${e.stack}\n`); process.exit(1); });
else workerMain().catch((e: Error) => { process.stderr.write(`bench worker failed: ${e.stack}\n`); process.exit(1); });
