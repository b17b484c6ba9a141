/**
 * `npm run load`: many clients on one bench at once. The daemon runs as its own process
 * (dist/server.js run --simulate, REMOTE_USB_SIM_BOARDS=serial:1,loopback:10); every client core runs in
 * this one, over real Iroh on 127.0.0.1.
 *  - 20 watchers connect, list, and watch: the bench unplugs and replugs a board (SIGUSR2) and we time
 *    how long until every watcher heard of it (fan-out), idle and under load;
 *  - 8 clients each claim one loopback board (sim-2 … sim-9) and run bulk loopback at once: 64 KiB URBs,
 *    4 OUT + 4 IN in flight each, every byte checked (self-describing words, so order does not matter);
 *  - one more client, in its own process (so it measures the bench, not this busy process), times
 *    control round trips (GET_STATUS) on sim-10, idle and under that load;
 *  - the daemon's RSS and CPU from /proc/<pid>/status and /proc/<pid>/stat during the load.
 * Prints a table (medians of the repeated runs). Asserts no speed, but exits 1 on wrong data, a lost
 * completion or a watcher that never heard of a hot-plug.
 *   --quick   a short form for CI (a few seconds per phase, one run)
 */
import { ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BenchClient, ClaimedDevice } from '../../extension/core/bench-client.js';
import { loadOrCreateSecretKey } from '../../server/shared/identity.js';
import { endpointIdOf, generateSecretKey, PeerAddress } from '../../server/net/iroh.js';
import { encodeSetup, UrbResult, UrbStatus } from '../../server/protocol/urb.js';
import { TrustStore } from '../../server/trust.js';
import { LOOP_EP_IN, LOOP_EP_OUT } from '../../server/usb/sim-loopback-board.js';
import { DaemonProcess, freeUdpPort } from '../helpers/daemon-process.js';
import { cpuSeconds, median, ownCpuSeconds, pct, rssKiB, sleep } from './measure.js';

const quick = process.argv.includes('--quick');
const RUNS = quick ? 1 : 3;
const LOAD_SECONDS = quick ? 3 : 8;
const IDLE_SECONDS = quick ? 2 : 4;
const HOTPLUGS = quick ? 3 : 7;
const WATCHERS = 20;
const BULK_DEVICES = 8;
const URB = 64 * 1024;
const DEPTH = 4; // per direction, per device
const BOARDS = 'serial:1,loopback:10'; // sim-1 serial, sim-2 … sim-9 bulk, sim-10 control, sim-11 hot-plugged
const BULK_IDS = Array.from({ length: BULK_DEVICES }, (_, i) => `sim-${i + 2}`);
const CONTROL_ID = 'sim-10';
const HOTPLUG_ID = 'sim-11';
/** How long a completion or a hot-plug event may take before we call it lost. */
const LOST_MS = 15_000;

const failures: string[] = [];
function fail(what: string): void {
  failures.push(what);
  process.stderr.write(`FAIL: ${what}\n`);
}
function row(name: string, value: string): void {
  process.stdout.write(`${name.padEnd(74)} ${value}\n`);
}
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${what}: nothing after ${ms} ms (lost)`)), ms);
    p.then((v) => { clearTimeout(t); resolve(v); }, (e: unknown) => { clearTimeout(t); reject(e as Error); });
  });
}

// ---- bulk loopback with self-describing data ----
/** 64 KiB of little-endian words salt ^ (byte offset / 4): any chunk says where it came from. */
function chunkAt(salt: number, offset: number): Buffer {
  const b = Buffer.allocUnsafe(URB);
  const w = offset / 4;
  for (let i = 0; i < URB / 4; i++) b.writeUInt32LE(((w + i) ^ salt) >>> 0, i * 4);
  return b;
}
/** The byte offset a received chunk claims, or an error if its words are not consecutive. */
function offsetOf(salt: number, data: Uint8Array): number | string {
  if (data.length % 4 !== 0 || data.length === 0) return `a ${data.length}-byte chunk (expected a multiple of 4)`;
  const b = Buffer.from(data.buffer, data.byteOffset, data.length);
  const w0 = (b.readUInt32LE(0) ^ salt) >>> 0;
  for (let i = 1; i < data.length / 4; i++) {
    if (((b.readUInt32LE(i * 4) ^ salt) >>> 0) !== ((w0 + i) >>> 0)) return `word ${i} of the chunk at byte ${w0 * 4} is wrong`;
  }
  return w0 * 4;
}

interface BulkResult { id: string; bytes: number; secs: number }

/** Runs loopback on one device until `until`, then drains; every byte must come back exactly once. */
async function loopback(dev: ClaimedDevice, salt: number, until: number): Promise<BulkResult> {
  let sent = 0;
  let received = 0;
  const seen: [number, number][] = [];
  const t0 = performance.now();
  let writersDone = false;
  const inflightIn = new Set<number>();
  const check = (r: UrbResult, what: string): void => {
    if (r.status !== UrbStatus.OK) throw new Error(`${dev.id}: ${what} ended with status ${r.status}${r.error ? ` (${r.error})` : ''}`);
  };
  const writers = Array.from({ length: DEPTH }, async () => {
    while (performance.now() < until) {
      const offset = sent;
      sent += URB;
      const r = await within(dev.submit({ type: 'bulk', ep: LOOP_EP_OUT, data: chunkAt(salt, offset) }), LOST_MS, `${dev.id}: OUT URB at byte ${offset}`);
      check(r, `OUT at byte ${offset}`);
      if (r.actual !== URB) throw new Error(`${dev.id}: OUT at byte ${offset} moved ${r.actual} of ${URB} bytes`);
    }
  });
  const readers = Array.from({ length: DEPTH }, async () => {
    while (!writersDone || received < sent) {
      const urb = dev.start({ type: 'bulk', ep: LOOP_EP_IN, length: URB });
      inflightIn.add(urb.id);
      const r = await within(urb.done, LOST_MS + (until - performance.now()), `${dev.id}: IN URB ${urb.id}`);
      inflightIn.delete(urb.id);
      if (r.status === UrbStatus.ECONNRESET && writersDone && received >= sent) return; // the drain's leftovers
      check(r, `IN URB ${urb.id}`);
      const at = offsetOf(salt, r.data);
      if (typeof at === 'string') throw new Error(`${dev.id}: wrong data: ${at}`);
      seen.push([at, r.data.length]);
      received += r.data.length;
    }
  });
  await Promise.all(writers);
  writersDone = true;
  // every OUT is in the FIFO: the readers take the rest, then the INs still waiting are cancelled
  const deadline = performance.now() + LOST_MS;
  while (received < sent && performance.now() < deadline) await sleep(5);
  const secs = (performance.now() - t0) / 1000;
  for (const id of inflightIn) dev.cancel(id);
  await within(Promise.all(readers), LOST_MS, `${dev.id}: IN URBs after the drain`);
  if (received !== sent) throw new Error(`${dev.id}: sent ${sent} bytes, ${received} came back (lost)`);
  seen.sort((a, b) => a[0] - b[0]);
  let expect = 0;
  for (const [at, len] of seen) {
    if (at !== expect) throw new Error(`${dev.id}: wrong data: expected the chunk at byte ${expect}, got byte ${at} (lost, duplicated or reordered inside a chunk)`);
    expect += len;
  }
  return { id: dev.id, bytes: received, secs };
}

// ---- control round trips ----
async function controlRtts(dev: ClaimedDevice, until: () => boolean): Promise<number[]> {
  const rtts: number[] = [];
  while (!until()) {
    const t = performance.now();
    const r = await within(dev.submit({ type: 'control', ep: 0x80, length: 2, setup: encodeSetup({ bmRequestType: 0x80, bRequest: 0, wValue: 0, wIndex: 0, wLength: 2 }) }), LOST_MS, 'control URB');
    if (r.status !== UrbStatus.OK || r.actual !== 2) throw new Error(`control GET_STATUS on ${dev.id}: status ${r.status}, ${r.actual} bytes`);
    rtts.push(performance.now() - t);
  }
  return rtts;
}

/**
 * The control client's own process (`load.js --probe <bench id> <port> <secret key hex>`): claims
 * sim-10, prints "ready", then for each "<seconds>" line on stdin prints a JSON array of round trips.
 */
async function probe(id: string, port: string, keyHex: string): Promise<void> {
  const c = await BenchClient.connect({ secretKey: Buffer.from(keyHex, 'hex'), bench: { id, addrs: [`127.0.0.1:${port}`] }, clientName: 'control', relay: { mode: 'disabled' } });
  const dev = await c.claim(CONTROL_ID);
  process.stdout.write('ready\n');
  let input = '';
  for await (const chunk of process.stdin) {
    input += String(chunk);
    let nl;
    while ((nl = input.indexOf('\n')) >= 0) {
      const secs = Number(input.slice(0, nl));
      input = input.slice(nl + 1);
      const end = performance.now() + secs * 1000;
      process.stdout.write(JSON.stringify(await controlRtts(dev, () => performance.now() > end)) + '\n');
    }
  }
  await c.close();
}

class Probe {
  private lines: string[] = [];
  private waiting?: () => void;
  private constructor(readonly child: ChildProcess) {
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) { this.lines.push(buf.slice(0, nl)); buf = buf.slice(nl + 1); this.waiting?.(); }
    });
  }
  static async start(bench: PeerAddress, port: number, key: Uint8Array): Promise<Probe> {
    const p = new Probe(spawn(process.execPath, ['--enable-source-maps', __filename, '--probe', bench.id, String(port), Buffer.from(key).toString('hex')], { stdio: ['pipe', 'pipe', 'inherit'] }));
    if ((await p.next()) !== 'ready') throw new Error('the control probe did not start');
    return p;
  }
  private async next(): Promise<string> {
    while (this.lines.length === 0) {
      if (this.child.exitCode !== null) throw new Error(`the control probe exited with ${this.child.exitCode}`);
      await within(new Promise<void>((r) => { this.waiting = r; }), LOST_MS + 60_000, 'the control probe');
    }
    return this.lines.shift()!;
  }
  async run(seconds: number): Promise<number[]> {
    this.child.stdin!.write(`${seconds}\n`);
    return JSON.parse(await this.next()) as number[];
  }
  stop(): void {
    this.child.stdin!.end();
  }
}

// ---- hot-plug fan-out ----
/** Toggles the hot-plug board; resolves with ms until the last watcher heard of it (and each one's). */
async function hotplug(daemon: DaemonProcess, watchers: BenchClient[], present: boolean): Promise<{ last: number; each: number[] } | undefined> {
  const event = present ? 'removed' : 'added';
  const t0 = performance.now();
  const heard = watchers.map((w, i) => new Promise<number>((resolve, reject) => {
    const on = (x: string | { id: string }): void => {
      if ((typeof x === 'string' ? x : x.id) !== HOTPLUG_ID) return;
      clearTimeout(t);
      w.off(event, on);
      resolve(performance.now() - t0);
    };
    const t = setTimeout(() => { w.off(event, on); reject(new Error(`watcher ${i + 1} never heard '${event}' for ${HOTPLUG_ID} (waited ${LOST_MS} ms)`)); }, LOST_MS);
    w.on(event, on);
  }));
  daemon.signal('SIGUSR2');
  const results = await Promise.allSettled(heard);
  const missed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
  for (const m of missed) fail((m.reason as Error).message);
  if (missed.length > 0) return undefined;
  const each = results.map((r) => (r as PromiseFulfilledResult<number>).value);
  return { last: Math.max(...each), each };
}

async function main(): Promise<void> {
  process.stdout.write(`Remote USB load — node ${process.version}, ${WATCHERS} watchers, ${BULK_DEVICES} bulk clients + 1 control client, ${RUNS} run(s) of ${LOAD_SECONDS} s${quick ? ' (--quick)' : ''}\n\n`);
  const started = performance.now();
  const stateDir = mkdtempSync(join(tmpdir(), 'remote-usb-load-'));
  process.env.REMOTE_USB_SIM_BOARDS = BOARDS; // the daemon child inherits it
  const daemon = new DaemonProcess(stateDir, await freeUdpPort());
  await daemon.start();
  const pid = daemon.child!.pid!;
  const clients: BenchClient[] = [];
  let probeProcess: Probe | undefined;
  try {
    const bench: PeerAddress = { id: endpointIdOf(loadOrCreateSecretKey(stateDir, false).key), addrs: [`127.0.0.1:${daemon.port}`] };
    const trust = new TrustStore(join(stateDir, 'clients.toml'), stateDir);
    const connect = async (name: string): Promise<BenchClient> => {
      const key = generateSecretKey();
      trust.allow(endpointIdOf(key), name);
      const c = await BenchClient.connect({ secretKey: key, bench, clientName: name, relay: { mode: 'disabled' } });
      clients.push(c);
      return c;
    };
    const rssIdle = rssKiB(pid);

    // 20 watchers: connect and list at once
    let t = performance.now();
    const watchers = await Promise.all(Array.from({ length: WATCHERS }, (_, i) => connect(`watcher-${i + 1}`)));
    const connectMs = performance.now() - t;
    t = performance.now();
    const lists = await Promise.all(watchers.map((w) => w.list()));
    const listMs = performance.now() - t;
    for (const [i, l] of lists.entries()) if (l.length !== 11) fail(`watcher ${i + 1} listed ${l.length} devices, expected 11`);
    row(`${WATCHERS} watchers: connect (all at once) / list (all at once)`, `${connectMs.toFixed(0)} / ${listMs.toFixed(0)} ms`);

    const fanIdle: number[] = [];
    const fanIdleEach: number[] = [];
    let present = true;
    for (let i = 0; i < HOTPLUGS; i++) {
      const r = await hotplug(daemon, watchers, present);
      present = !present;
      if (r) { fanIdle.push(r.last); fanIdleEach.push(...r.each); }
      await sleep(100);
    }

    // the control client, idle
    const probeKey = generateSecretKey();
    trust.allow(endpointIdOf(probeKey), 'control');
    const ctl = await Probe.start(bench, daemon.port, probeKey);
    probeProcess = ctl;
    const idleRtts = await ctl.run(IDLE_SECONDS);

    // the 8 bulk clients
    const bulkDevs = await Promise.all(BULK_IDS.map(async (id, i) => (await connect(`bulk-${i + 1}`)).claim(id)));
    const perDevice = new Map<string, number[]>(BULK_IDS.map((id) => [id, []]));
    const aggregates: number[] = [];
    const loadRtts: number[] = [];
    const fanLoaded: number[] = [];
    const rssSamples: number[] = [];
    const cpu: number[] = [];
    const ownCpu: number[] = [];
    for (let run = 0; run < RUNS; run++) {
      const until = performance.now() + LOAD_SECONDS * 1000;
      const cpu0 = cpuSeconds(pid);
      const own0 = ownCpuSeconds();
      const wall0 = performance.now();
      let loading = true;
      const sampler = (async () => {
        while (loading) { rssSamples.push(rssKiB(pid)); await sleep(250); }
      })();
      const ctlUnderLoad = ctl.run(LOAD_SECONDS);
      const plugs = (async () => {
        for (let i = 0; i < 2; i++) {
          await sleep((LOAD_SECONDS * 1000) / 3);
          const r = await hotplug(daemon, watchers, present);
          present = !present;
          if (r) fanLoaded.push(r.last);
        }
      })();
      const results = await Promise.allSettled(bulkDevs.map((d, i) => loopback(d, (0x5eed0000 + i * 0x1111 + run) >>> 0, until)));
      const wall = (performance.now() - wall0) / 1000;
      cpu.push((cpuSeconds(pid) - cpu0) / wall);
      ownCpu.push((ownCpuSeconds() - own0) / wall);
      loadRtts.push(...await ctlUnderLoad);
      await plugs;
      loading = false;
      await sampler;
      let total = 0;
      for (const r of results) {
        if (r.status === 'rejected') { fail((r.reason as Error).message); continue; }
        const mbps = r.value.bytes / 1e6 / r.value.secs;
        perDevice.get(r.value.id)!.push(mbps);
        total += mbps;
      }
      aggregates.push(total);
      process.stdout.write(`  run ${run + 1}: ${total.toFixed(1)} MB/s aggregate, ${results.filter((r) => r.status === 'fulfilled').length}/${BULK_DEVICES} devices verified\n`);
    }
    if (present === false) await hotplug(daemon, watchers, present); // leave the board plugged in

    process.stdout.write('\n');
    const medians = BULK_IDS.map((id) => perDevice.get(id)!).filter((xs) => xs.length > 0).map(median);
    for (const [i, id] of BULK_IDS.entries()) {
      const xs = perDevice.get(id)!;
      row(`bulk loopback ${id} (64 KiB URBs, ${DEPTH} OUT + ${DEPTH} IN in flight, verified)`, xs.length ? `${median(xs).toFixed(2)} MB/s` : 'FAILED');
      void i;
    }
    const aggregate = median(aggregates);
    const fair = aggregate / BULK_DEVICES;
    if (medians.length > 0) {
      const lo = Math.min(...medians);
      const hi = Math.max(...medians);
      row(`aggregate over ${BULK_DEVICES} devices (each byte out and back in)`, `${aggregate.toFixed(1)} MB/s`);
      row('fairness: slowest / fastest device', `${(lo / hi).toFixed(2)} (${((100 * lo) / fair).toFixed(0)} % / ${((100 * hi) / fair).toFixed(0)} % of the fair share ${fair.toFixed(2)} MB/s)`);
    }
    const p50i = median(idleRtts);
    const p99i = pct(idleRtts, 99);
    const p50l = loadRtts.length ? median(loadRtts) : NaN;
    const p99l = loadRtts.length ? pct(loadRtts, 99) : NaN;
    row(`control round trip on ${CONTROL_ID}, idle p50 / p99 (${idleRtts.length} URBs)`, `${p50i.toFixed(2)} / ${p99i.toFixed(2)} ms`);
    row(`control round trip on ${CONTROL_ID}, under load p50 / p99 (${loadRtts.length} URBs)`, `${p50l.toFixed(2)} / ${p99l.toFixed(2)} ms`);
    row('control under load / idle (p50 / p99)', `${(p50l / p50i).toFixed(1)}× / ${(p99l / p99i).toFixed(1)}×`);
    if (fanIdle.length) {
      row(`hot-plug fan-out to ${WATCHERS} watchers, idle: last watcher (median of ${fanIdle.length})`, `${median(fanIdle).toFixed(1)} ms (one watcher: p50 ${median(fanIdleEach).toFixed(1)} ms)`);
    }
    if (fanLoaded.length) row(`hot-plug fan-out to ${WATCHERS} watchers, under load: last watcher (median of ${fanLoaded.length})`, `${median(fanLoaded).toFixed(1)} ms`);
    row('daemon RSS: idle (1 client-less start) / during load median / max', `${(rssIdle / 1024).toFixed(0)} / ${(median(rssSamples) / 1024).toFixed(0)} / ${(Math.max(...rssSamples) / 1024).toFixed(0)} MiB`);
    row('daemon CPU during load (100 % = one core)', `${(100 * median(cpu)).toFixed(0)} %`);
    row(`this process's CPU during load (${clients.length} clients; the control client runs apart)`, `${(100 * median(ownCpu)).toFixed(0)} %`);
    row('wall time', `${((performance.now() - started) / 1000).toFixed(0)} s`);
  } finally {
    probeProcess?.stop();
    await Promise.all(clients.map((c) => c.close().catch(() => {})));
    const code = await daemon.stop();
    if (code !== 0) fail(`the daemon exited with ${code}:\n${daemon.output.slice(-2000)}`);
    rmSync(stateDir, { recursive: true, force: true });
  }
  if (failures.length > 0) {
    process.stderr.write(`\nload: ${failures.length} failure(s):\n${failures.map((f) => `  - ${f}`).join('\n')}\n`);
    process.exit(1);
  }
}

if (process.argv[2] === '--probe') {
  probe(process.argv[3], process.argv[4], process.argv[5]).catch((e: Error) => { process.stderr.write(`control probe: ${e.stack}\n`); process.exit(1); });
} else {
  main().catch((e: Error) => { process.stderr.write(`load failed: ${e.stack}\n`); process.exit(1); });
}
