/**
 * `npm run soak -- --minutes 10`: does anything grow when the same work is done over and over?
 * The daemon runs as its own process (dist/server.js run --simulate, REMOTE_USB_SIM_BOARDS=
 * serial:1,loopback:3); the client core in this one (run with --expose-gc), over real Iroh on 127.0.0.1.
 * Each cycle, on one long-lived client:
 *  - claim sim-2 → bulk loopback (1 MiB, 4 URBs in flight each way, verified) + 20 control URBs → release;
 *  - claim sim-3 → USB/IP bridge to a fake kernel (test/helpers/fake-vhci.ts) → enumerate, configure,
 *    256 KiB loopback verified, unlink a waiting URB → detach → release;
 *  - unplug and replug sim-4 (the daemon's SIGUSR2), seen by the client;
 * plus a fresh client that connects, lists and closes.
 * Every --sample-seconds it records the daemon's VmRSS and open fds (/proc/<pid>/status, /proc/<pid>/fd)
 * and this process's heap, RSS and fds after a forced GC. It prints start / end / max and the
 * least-squares slope per minute over the second half (after warm-up), says "no growth" only when the
 * slope is under 1 % of the start value per minute (and, for fds, the count is back where it started),
 * and exits 1 on a leak signal (fds growing steadily) or any failed cycle, printing the evidence.
 *   --minutes N         how long (default 10; CI: 1)
 *   --sample-seconds N  sampling period (default 5 for runs up to 2 minutes, else 10)
 */
import { readdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { BenchClient, ClaimedDevice } from '../../extension/core/bench-client.js';
import { encodeSetup } from '../../server/protocol/urb.js';
import { createSocketPair, devidOf } from '../../extension/core/usbip/attach.js';
import { UsbipBridge } from '../../extension/core/usbip/bridge.js';
import { readEndpointTable } from '../../extension/core/usbip/endpoints.js';
import { loadOrCreateSecretKey } from '../../server/shared/identity.js';
import { endpointIdOf, generateSecretKey, PeerAddress } from '../../server/net/iroh.js';
import { TrustStore } from '../../server/trust.js';
import { seededBytes } from '../../server/usb/patterns.js';
import { LOOP_EP_IN, LOOP_EP_OUT } from '../../server/usb/sim-loopback-board.js';
import { recordingLogger } from '../helpers/bench-fixture.js';
import { DaemonProcess, freeUdpPort } from '../helpers/daemon-process.js';
import { FakeVhci, GET_DESCRIPTOR } from '../helpers/fake-vhci.js';
import { rssKiB, sleep } from './measure.js';

const { values: args } = parseArgs({ options: { minutes: { type: 'string', default: '10' }, 'sample-seconds': { type: 'string' } } });
const MINUTES = Number(args.minutes);
if (!(MINUTES > 0 && MINUTES <= 24 * 60)) {
  process.stderr.write(`soak: --minutes must be a number of minutes above 0, got '${args.minutes}'\n`);
  process.exit(2);
}
const SAMPLE_SECONDS = Number(args['sample-seconds'] ?? (MINUTES <= 2 ? 5 : 10));
const BOARDS = 'serial:1,loopback:3';
const CLAIM_ID = 'sim-2';
const BRIDGE_ID = 'sim-3';
const HOTPLUG_ID = 'sim-4';
const STEP_MS = 15_000; // a step of a cycle that takes longer than this has failed
/** "No growth": the second half's slope stays under this share of the start value per minute. */
const NOISE_PER_MINUTE = 0.01;

const gc = (globalThis as { gc?: () => void }).gc;
function within<T>(p: Promise<T>, what: string, ms = STEP_MS): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${what}: nothing after ${ms} ms`)), ms);
    p.then((v) => { clearTimeout(t); resolve(v); }, (e: unknown) => { clearTimeout(t); reject(e as Error); });
  });
}
function check(cond: boolean, what: string): void {
  if (!cond) throw new Error(what);
}

// ---- the work ----
async function claimCycle(client: BenchClient, n: number): Promise<void> {
  const dev = await within(client.claim(CLAIM_ID), `claim ${CLAIM_ID}`);
  const total = 1024 * 1024;
  const urb = 64 * 1024;
  const data = seededBytes(total, n);
  let out = 0;
  const pieces: Buffer[] = [];
  const writers = Array.from({ length: 4 }, async () => {
    while (out < total) {
      const off = out;
      out += urb;
      const r = await within(dev.submit({ type: 'bulk', ep: LOOP_EP_OUT, data: data.subarray(off, off + urb) }), `OUT at ${off}`);
      check(r.status === 0 && r.actual === urb, `bulk OUT at byte ${off}: status ${r.status}, ${r.actual} bytes`);
    }
  });
  // several INs wait at once, so completions may come in any order: place each chunk by its content
  // (seeded random bytes: 64 of them find the one place it came from)
  let ins = 0;
  const readers = Array.from({ length: 4 }, async () => {
    while (ins < total) {
      ins += urb;
      const r = await within(dev.submit({ type: 'bulk', ep: LOOP_EP_IN, length: urb }), 'bulk IN');
      check(r.status === 0 && r.actual === urb, `bulk IN: status ${r.status}, ${r.actual} bytes`);
      pieces.push(Buffer.from(r.data));
    }
  });
  await Promise.all([...writers, ...readers]);
  const offsets = new Set<number>();
  for (const c of pieces) {
    const at = data.indexOf(c.subarray(0, 64));
    check(at >= 0 && at % urb === 0 && data.subarray(at, at + urb).equals(c), 'loopback: a chunk came back that was never sent (wrong data)');
    check(!offsets.has(at), `loopback: the chunk at byte ${at} came back twice`);
    offsets.add(at);
  }
  check(offsets.size === total / urb, `loopback: ${offsets.size} of ${total / urb} chunks came back`);
  for (let i = 0; i < 20; i++) {
    const r = await within(dev.submit({ type: 'control', ep: 0x80, length: 18, setup: encodeSetup({ bmRequestType: 0x80, bRequest: 6, wValue: 0x100, wIndex: 0, wLength: 18 }) }), 'control GET_DESCRIPTOR');
    check(r.status === 0 && r.actual === 18 && r.data[1] === 1, `control GET_DESCRIPTOR: status ${r.status}, ${r.actual} bytes`);
  }
  await within(dev.release(), `release ${CLAIM_ID}`);
}

async function bridgeCycle(client: BenchClient, n: number): Promise<void> {
  const dev: ClaimedDevice = await within(client.claim(BRIDGE_ID), `claim ${BRIDGE_ID}`);
  const endpoints = await within(readEndpointTable(dev), 'read the endpoint table');
  const { ours, theirs } = await createSocketPair();
  const devid = devidOf(dev.info);
  const log = recordingLogger();
  const bridge = new UsbipBridge(dev, ours, { devid, endpoints, log }).start();
  const k = new FakeVhci(theirs, devid);
  try {
    const desc = await within(k.runControl(GET_DESCRIPTOR(1, 0, 18)), 'bridge: device descriptor');
    check(desc.status === 0 && desc.data.readUInt16LE(8) === 0x1209, `bridge: device descriptor status ${desc.status}`);
    check((await within(k.runControl({ bmRequestType: 0, bRequest: 5, wValue: 2, wIndex: 0, wLength: 0 }), 'bridge: SET_ADDRESS')).status === 0, 'bridge: SET_ADDRESS failed');
    check((await within(k.runControl({ bmRequestType: 0, bRequest: 9, wValue: 1, wIndex: 0, wLength: 0 }), 'bridge: SET_CONFIGURATION')).status === 0, 'bridge: SET_CONFIGURATION failed');
    const total = 256 * 1024;
    const chunk = 16 * 1024;
    const data = seededBytes(total, 1000 + n);
    const back: Buffer[] = [];
    for (let off = 0; off < total; off += chunk * 4) {
      const outs = [0, 1, 2, 3].map((i) => k.run({ ep: 1, dir: 'out', data: data.subarray(off + i * chunk, off + (i + 1) * chunk) }));
      for (const r of await within(Promise.all(outs), 'bridge: bulk OUT')) check(r.status === 0 && r.actual_length === chunk, `bridge: bulk OUT status ${r.status}`);
      for (let i = 0; i < 4; i++) {
        const r = await within(k.run({ ep: 1, dir: 'in', length: chunk }), 'bridge: bulk IN');
        check(r.status === 0, `bridge: bulk IN status ${r.status}`);
        back.push(r.data);
      }
    }
    check(Buffer.concat(back).equals(data), 'bridge: the loopback data came back different');
    // a URB the kernel gives up on (usb_kill_urb): the FIFO is empty, so the unlink must win
    const waiting = k.submit({ ep: 1, dir: 'in', length: 512 });
    await sleep(5);
    const un = await within(k.unlink(waiting.seqnum).done, 'bridge: unlink');
    check(un.status === -104, `bridge: unlink of a waiting URB returned ${un.status}, expected -104`);
  } finally {
    await bridge.close('soak cycle over');
    await within(k.ended, 'bridge: the kernel side to close');
  }
  check(k.violations.length === 0, `bridge: the fake kernel saw violations: ${k.violations.join('; ')}`);
  for (const [seqnum, count] of k.answers) check(count === 1, `bridge: seqnum ${seqnum} answered ${count} times`);
  check(log.errors.length === 0, `bridge logged errors: ${log.errors.join('; ')}`);
  await within(dev.release().catch(() => {}), `release ${BRIDGE_ID}`);
}

async function hotplugCycle(daemon: DaemonProcess, client: BenchClient): Promise<void> {
  for (const event of ['removed', 'added'] as const) {
    const seen = new Promise<void>((resolve) => {
      const on = (x: string | { id: string }): void => {
        if ((typeof x === 'string' ? x : x.id) !== HOTPLUG_ID) return;
        client.off(event, on);
        resolve();
      };
      client.on(event, on);
    });
    daemon.signal('SIGUSR2');
    await within(seen, `hot-plug: '${event}' for ${HOTPLUG_ID}`);
  }
}

// ---- measuring ----
interface Sample {
  t: number; // minutes since start
  daemonRss: number; // KiB
  daemonFds: number;
  heap: number; // bytes, after GC
  rss: number; // bytes
  fds: number;
}

const fdCount = (pid: number | 'self'): number => readdirSync(`/proc/${pid}/fd`).length;

function sample(pid: number, t0: number): Sample {
  gc?.();
  const m = process.memoryUsage();
  return { t: (performance.now() - t0) / 60_000, daemonRss: rssKiB(pid), daemonFds: fdCount(pid), heap: m.heapUsed, rss: m.rss, fds: fdCount('self') };
}

/** Least-squares slope of y over t (per minute). */
function slope(points: [number, number][]): number {
  const n = points.length;
  if (n < 2) return 0;
  const mt = points.reduce((s, [t]) => s + t, 0) / n;
  const my = points.reduce((s, [, y]) => s + y, 0) / n;
  let num = 0;
  let den = 0;
  for (const [t, y] of points) { num += (t - mt) * (y - my); den += (t - mt) ** 2; }
  return den === 0 ? 0 : num / den;
}

async function main(): Promise<void> {
  process.stdout.write(`Remote USB soak — node ${process.version}, ${MINUTES} minute(s), a sample every ${SAMPLE_SECONDS} s${gc ? ', client GC forced before each sample' : ' (no --expose-gc: client heap without forced GC)'}\n\n`);
  const stateDir = mkdtempSync(join(tmpdir(), 'remote-usb-soak-'));
  process.env.REMOTE_USB_SIM_BOARDS = BOARDS; // the daemon child inherits it
  const daemon = new DaemonProcess(stateDir, await freeUdpPort());
  await daemon.start();
  const pid = daemon.child!.pid!;
  const failures: string[] = [];
  const samples: Sample[] = [];
  const counts = { cycles: 0, claims: 0, bridges: 0, hotplugs: 0, connects: 0 };
  let client: BenchClient | undefined;
  try {
    const bench: PeerAddress = { id: endpointIdOf(loadOrCreateSecretKey(stateDir, false).key), addrs: [`127.0.0.1:${daemon.port}`] };
    const trust = new TrustStore(join(stateDir, 'clients.toml'), stateDir);
    const key = generateSecretKey();
    trust.allow(endpointIdOf(key), 'soak');
    const visitorKey = generateSecretKey();
    trust.allow(endpointIdOf(visitorKey), 'soak-visitor');
    client = await BenchClient.connect({ secretKey: key, bench, clientName: 'soak', relay: { mode: 'disabled' } });
    const t0 = performance.now();
    const end = t0 + MINUTES * 60_000;
    let nextSample = t0;
    while (performance.now() < end) {
      const n = ++counts.cycles;
      const steps: [string, () => Promise<void>][] = [
        ['claim → traffic → release', async () => { await claimCycle(client!, n); counts.claims++; }],
        ['attach → transfer → detach (USB/IP bridge)', async () => { await bridgeCycle(client!, n); counts.bridges++; }],
        ['unplug → replug', async () => { await hotplugCycle(daemon, client!); counts.hotplugs++; }],
        ['connect → list → close', async () => {
          const c = await within(BenchClient.connect({ secretKey: visitorKey, bench, clientName: 'soak-visitor', relay: { mode: 'disabled' } }), 'connect');
          try {
            const list = await within(c.list(), 'list');
            check(list.length === 4, `a fresh client listed ${list.length} devices, expected 4`);
          } finally {
            await c.close();
          }
          counts.connects++;
        }],
      ];
      for (const [name, step] of steps) {
        try {
          await step();
        } catch (e) {
          failures.push(`cycle ${n}, ${name}: ${(e as Error).message}`);
          process.stderr.write(`FAIL: cycle ${n}, ${name}: ${(e as Error).message}\n`);
        }
      }
      if (failures.length >= 5) break;
      if (performance.now() >= nextSample) {
        daemon.output = daemon.output.slice(-20_000); // the helper keeps the daemon's log: not ours to grow
        const s = sample(pid, t0);
        samples.push(s);
        process.stdout.write(`  ${s.t.toFixed(2).padStart(6)} min  cycle ${String(n).padStart(5)}  daemon ${(s.daemonRss / 1024).toFixed(1)} MiB ${s.daemonFds} fds   client heap ${(s.heap / 1048576).toFixed(1)} MiB rss ${(s.rss / 1048576).toFixed(1)} MiB ${s.fds} fds\n`);
        nextSample += SAMPLE_SECONDS * 1000;
      }
    }
    await sleep(500);
    samples.push(sample(pid, t0)); // at rest after the last cycle
  } finally {
    await client?.close().catch(() => {});
    const code = await daemon.stop();
    if (code !== 0) failures.push(`the daemon exited with ${code}: ${daemon.output.slice(-2000)}`);
    rmSync(stateDir, { recursive: true, force: true });
  }

  // ---- the verdict ----
  process.stdout.write(`\n${counts.cycles} cycles: ${counts.claims} claim/traffic/release, ${counts.bridges} bridge attach/detach, ${counts.hotplugs} unplug/replug, ${counts.connects} connect/close\n\n`);
  const warm = samples.filter((s) => s.t >= 0.1 * MINUTES);
  const start = warm[0] ?? samples[0];
  const last = samples[samples.length - 1];
  const secondHalf = samples.filter((s) => s.t >= MINUTES / 2);
  const metrics: { name: string; get: (s: Sample) => number; unit: string; scale: number; fds?: boolean }[] = [
    { name: 'daemon RSS', get: (s) => s.daemonRss * 1024, unit: 'MiB', scale: 1048576 },
    { name: 'daemon fds', get: (s) => s.daemonFds, unit: '', scale: 1, fds: true },
    { name: `client heap${gc ? ' (after GC)' : ''}`, get: (s) => s.heap, unit: 'MiB', scale: 1048576 },
    { name: 'client RSS', get: (s) => s.rss, unit: 'MiB', scale: 1048576 },
    { name: 'client fds', get: (s) => s.fds, unit: '', scale: 1, fds: true },
  ];
  const fmt = (v: number, m: (typeof metrics)[number]): string => (m.fds ? String(v) : `${(v / m.scale).toFixed(1)} ${m.unit}`);
  process.stdout.write(`${'what'.padEnd(22)} ${'start'.padStart(10)} ${'end'.padStart(10)} ${'max'.padStart(10)}  ${'slope, 2nd half'.padStart(18)}  verdict\n`);
  for (const m of metrics) {
    const s0 = m.get(start);
    const s1 = m.get(last);
    const max = Math.max(...samples.map(m.get));
    const k = slope(secondHalf.map((s) => [s.t, m.get(s)]));
    const rel = s0 > 0 ? k / s0 : 0;
    let verdict: string;
    if (m.fds) {
      const steady = secondHalf.length >= 3 && k > 0.5 && s1 > s0;
      verdict = s1 <= s0 ? 'no growth' : steady ? 'GROWING' : `+${s1 - s0} at the end`;
      if (steady) failures.push(`${m.name} grow steadily: ${s0} → ${s1} (+${k.toFixed(2)}/min over the second half); samples: ${samples.map(m.get).join(' ')}`);
    } else {
      verdict = Math.abs(rel) < NOISE_PER_MINUTE ? 'no growth' : rel > 0 ? 'growth?' : 'shrinking';
    }
    const slopeText = m.fds ? `${k >= 0 ? '+' : ''}${k.toFixed(2)}/min` : `${k >= 0 ? '+' : ''}${(k / m.scale).toFixed(2)} ${m.unit}/min`;
    process.stdout.write(`${m.name.padEnd(22)} ${fmt(s0, m).padStart(10)} ${fmt(s1, m).padStart(10)} ${fmt(max, m).padStart(10)}  ${`${slopeText} (${(100 * rel).toFixed(2)} %)`.padStart(18)}  ${verdict}\n`);
  }
  if (failures.length > 0) {
    process.stderr.write(`\nsoak: ${failures.length} failure(s):\n${failures.map((f) => `  - ${f}`).join('\n')}\n`);
    process.exit(1);
  }
}

main().catch((e: Error) => { process.stderr.write(`soak failed: ${e.stack}\n`); process.exit(1); });
