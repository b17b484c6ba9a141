/**
 * `npm run bench`: data-path numbers from one run on this machine (medians of several runs).
 * The daemon runs as its own process (dist/server.js run --simulate), the client core in this one,
 * over real Iroh on 127.0.0.1. Prints a table; asserts nothing.
 *   --quick   fewer/shorter runs (CI)
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as iroh from '@number0/iroh/index.js';
import { BenchClient, ClaimedDevice } from '../../extension/core/bench-client.js';
import { loadOrCreateSecretKey } from '../../server/identity.js';
import { endpointIdOf, generateSecretKey } from '../../server/net/iroh.js';
import { fromWireArray, toWireArray } from '../../server/net/bytes.js';
import { TrustStore } from '../../server/trust.js';
import { LOOP_EP_OUT, SINK_EP_OUT, SOURCE_EP_IN, VENDOR_SET_PATTERN } from '../../server/usb/sim-loopback-board.js';
import { DaemonProcess, freeUdpPort } from '../helpers/daemon-process.js';

const quick = process.argv.includes('--quick');
const RUNS = quick ? 1 : 3;
const SECONDS = quick ? 1 : 2;

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const pct = (xs: number[], p: number): number => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]; };
const rows: [string, string][] = [];
const row = (name: string, value: string): void => { rows.push([name, value]); process.stdout.write(`${name.padEnd(58)} ${value}\n`); };

function conversions(): void {
  const buf = Buffer.alloc(64 * 1024, 0xa5);
  const secret = iroh.SecretKey.generate();
  void secret;
  const time = (f: () => void, bytes: number): number => {
    const t = performance.now();
    let n = 0;
    while (performance.now() - t < 300) { f(); n += bytes; }
    return n / 1e6 / ((performance.now() - t) / 1000);
  };
  const arr = Array.from(buf);
  row('send conversion Buffer→Array: Array.from (naive)', `${time(() => Array.from(buf), buf.length).toFixed(0)} MB/s`);
  row('send conversion Buffer→Array: pooled, unrolled (ours)', `${time(() => toWireArray(buf), buf.length).toFixed(0)} MB/s`);
  row('receive conversion Array→Buffer: Buffer.from (naive)', `${time(() => Buffer.from(arr), buf.length).toFixed(0)} MB/s`);
  row('receive conversion Array→Buffer: loop into allocUnsafe (ours)', `${time(() => fromWireArray(arr), buf.length).toFixed(0)} MB/s`);
}

/** Raw binding ceiling: bench.ts → raw-peer.js processes (bare Iroh stream, our conversions). */
async function rawCeiling(): Promise<{ mbps: number; p50: number; p99: number }> {
  const js = join(__dirname, 'raw-peer.js');
  const server = spawn(process.execPath, [js, 'serve'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines: string[] = [];
  let buf = '';
  server.stdout!.on('data', (d: Buffer) => { buf += d; let i; while ((i = buf.indexOf('\n')) >= 0) { lines.push(buf.slice(0, i)); buf = buf.slice(i + 1); } });
  while (lines.length === 0) await new Promise((r) => setTimeout(r, 20));
  const { id, port } = JSON.parse(lines[0]) as { id: string; port: number };
  const run = ([mode, arg]: string[]): Promise<string> => new Promise((resolve, reject) => {
    const c = spawn(process.execPath, [js, mode, id, String(port), arg], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    c.stdout!.on('data', (d: Buffer) => { out += d; });
    c.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`raw-peer ${mode} exited ${code}`))));
  });
  try {
    const rates: number[] = [];
    for (let r = 0; r < RUNS; r++) {
      const before = lines.length;
      await run(['send', String(SECONDS)]);
      while (lines.length === before) await new Promise((res) => setTimeout(res, 20));
      const { bytes, secs } = JSON.parse(lines[lines.length - 1]) as { bytes: number; secs: number };
      rates.push(bytes / 1e6 / secs);
    }
    const { rtts } = JSON.parse(await run(['ping', '500'])) as { rtts: number[] };
    return { mbps: median(rates), p50: median(rtts), p99: pct(rtts, 99) };
  } finally {
    server.kill();
  }
}

async function bulk(dev: ClaimedDevice, dir: 'in' | 'out', inflight: number, urb: number): Promise<number> {
  const data = Buffer.alloc(urb, 0x5a);
  let bytes = 0;
  const start = performance.now();
  const until = start + SECONDS * 1000;
  await Promise.all(Array.from({ length: inflight }, async () => {
    while (performance.now() < until) {
      const r = dir === 'in'
        ? await dev.submit({ type: 'bulk', ep: SOURCE_EP_IN, length: urb })
        : await dev.submit({ type: 'bulk', ep: SINK_EP_OUT, data });
      if (r.status !== 0) throw new Error(`bulk ${dir} failed: ${r.status}`);
      bytes += r.actual;
    }
  }));
  return bytes / 1e6 / ((performance.now() - start) / 1000);
}

async function main(): Promise<void> {
  process.stdout.write(`Remote USB data-path bench — node ${process.version}, ${RUNS} run(s) per figure, medians\n\n`);
  conversions();
  const raw = await rawCeiling();
  row('raw Iroh ceiling: one stream, one way, 256 KiB writes (2 processes)', `${raw.mbps.toFixed(1)} MB/s`);
  row('raw Iroh 64-byte round trip p50 / p99', `${raw.p50.toFixed(3)} / ${raw.p99.toFixed(3)} ms`);
  const stateDir = mkdtempSync(join(tmpdir(), 'remote-usb-bench-'));
  const daemon = new DaemonProcess(stateDir, await freeUdpPort());
  await daemon.start();
  try {
    const bench = { id: endpointIdOf(loadOrCreateSecretKey(stateDir, false).key), addrs: [`127.0.0.1:${daemon.port}`] };
    const trust = new TrustStore(join(stateDir, 'clients.toml'), stateDir);
    // first URB after connect: cold client endpoint → connected → first completion
    const firsts: number[] = [];
    for (let i = 0; i < (quick ? 3 : 7); i++) {
      const key = generateSecretKey();
      trust.allow(endpointIdOf(key), `bench-${i}`);
      const t0 = performance.now();
      const c = await BenchClient.connect({ secretKey: key, bench, clientName: `bench-${i}`, relay: { mode: 'disabled' } });
      const dev = await c.claim('sim-2');
      await dev.submit({ type: 'control', ep: 0x80, length: 18, setup: { bmRequestType: 0x80, bRequest: 6, wValue: 0x100, wIndex: 0, wLength: 18 } });
      firsts.push(performance.now() - t0);
      await c.close();
    }
    row('first URB after connect (bind + connect + hello + claim + URB)', `${median(firsts).toFixed(1)} ms`);

    const key = generateSecretKey();
    trust.allow(endpointIdOf(key), 'bench');
    const c = await BenchClient.connect({ secretKey: key, bench, clientName: 'bench', relay: { mode: 'disabled' } });
    const dev = await c.claim('sim-2');
    const pings: number[] = [];
    for (let i = 0; i < 500; i++) pings.push(await c.ping());
    const ctl: number[] = [];
    for (let i = 0; i < 500; i++) {
      const t = performance.now();
      await dev.submit({ type: 'control', ep: 0x80, length: 2, setup: { bmRequestType: 0x80, bRequest: 0, wValue: 0, wIndex: 0, wLength: 2 } });
      ctl.push(performance.now() - t);
    }
    row('app ping round trip p50 / p99', `${median(pings).toFixed(3)} / ${pct(pings, 99).toFixed(3)} ms`);
    row('control URB round trip (GET_STATUS) p50 / p99', `${median(ctl).toFixed(3)} / ${pct(ctl, 99).toFixed(3)} ms`);
    row('control URB / ping (p50)', `${(median(ctl) / median(pings)).toFixed(2)}×`);
    row('control URB / raw round trip (p50 / p99)', `${(median(ctl) / raw.p50).toFixed(2)}× / ${(pct(ctl, 99) / raw.p99).toFixed(2)}×`);

    for (const pattern of [1, 2]) {
      await dev.submit({ type: 'control', ep: 0, setup: { bmRequestType: 0x40, bRequest: VENDOR_SET_PATTERN, wValue: pattern, wIndex: 0, wLength: 0 } });
      for (const inflight of [1, 8, 32]) {
        const runs: number[] = [];
        for (let r = 0; r < RUNS; r++) runs.push(await bulk(dev, 'in', inflight, 64 * 1024));
        row(`bulk IN 64 KiB URBs, ${String(inflight).padStart(2)} in flight, ${pattern === 1 ? 'random' : 'firmware-like'} data`, `${median(runs).toFixed(1)} MB/s (${((100 * median(runs)) / raw.mbps).toFixed(0)} % of raw)`);
      }
    }
    for (const inflight of [1, 8, 32]) {
      const runs: number[] = [];
      for (let r = 0; r < RUNS; r++) runs.push(await bulk(dev, 'out', inflight, 64 * 1024));
      row(`bulk OUT 64 KiB URBs, ${String(inflight).padStart(2)} in flight`, `${median(runs).toFixed(1)} MB/s (${((100 * median(runs)) / raw.mbps).toFixed(0)} % of raw)`);
    }
    void LOOP_EP_OUT;
    await c.close();
  } finally {
    await daemon.stop();
    rmSync(stateDir, { recursive: true, force: true });
  }
}

main().catch((e: Error) => { process.stderr.write(`bench failed: ${e.stack}\n`); process.exit(1); });
