/**
 * The host half of the full arm64 system test (test/arm/system/run.sh): an x64 client on this machine
 * against the arm64 daemon that `remote-usb-server install` set up inside the qemu-system-aarch64 guest.
 *
 *   node out/test/arm/system/host.js <share dir>
 *
 * Reads <share>/ready (the ticket and pairing code install printed, the gadget's bus id), pairs and lists with
 * the client CLI (dist/remote-usb.js pair --code … --bench <ticket>), then, with the identity it paired,
 * claims the gadget through the client core (BenchClient), reads its descriptors with control
 * transfers, sends 4 MiB through the Loopback function and checks it comes back byte-identical, then
 * measures bulk MB/s (SourceSink: sink OUT, source IN) and control round trips; then the same measurement
 * against an x64 daemon on this host (this checkout's dist/server.js, its simulated loopback board sim-2),
 * printed side by side. Prints "RUTEST PASS|FAIL|INFO|METRIC ..." lines; exit 0 unless it could not run.
 * No assertion on speed.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { BenchClient, ClaimedDevice } from '../../../extension/core/bench-client.js';
import { parsePeerAddress } from '../../../server/net/iroh.js';
import { encodeSetup } from '../../../server/protocol/urb.js';
import { loadOrCreateSecretKey } from '../../../server/shared/identity.js';
import { seededBytes } from '../../../server/usb/patterns.js';
import { repoRoot } from '../../helpers/daemon-process.js';
import { measureSpeed, measureX64Daemon, Speed } from '../../helpers/urb-speed.js';

const CLIENT_JS = join(repoRoot(), 'dist', 'remote-usb.js');

const [share] = process.argv.slice(2);
if (!share) { console.error('usage: host.js <share dir>'); process.exit(2); }
const MIB = 1 << 20;
let failed = 0;
const out = (l: string): void => { process.stdout.write(`RUTEST ${l}\n`); };
const pass = (name: string, detail = ''): void => out(`PASS ${name} ${detail}`);
const fail = (name: string, reason: string): void => { failed++; out(`FAIL ${name} ${reason}`); };
const info = (text: string): void => out(`INFO ${text}`);
const f1 = (n: number): string => n.toFixed(1);

interface Endpoints { bulkIn: number; bulkOut: number }

/** GET_DESCRIPTOR over the wire: the configuration's bulk endpoints per interface (alternate setting 0). */
async function bulkEndpoints(dev: ClaimedDevice): Promise<Map<number, Endpoints>> {
  const get = async (type: number, length: number): Promise<Buffer> => {
    const r = await dev.submit({ type: 'control', ep: 0x80, length, setup: encodeSetup({ bmRequestType: 0x80, bRequest: 6, wValue: type << 8, wIndex: 0, wLength: length }) });
    if (r.status !== 0) throw new Error(`GET_DESCRIPTOR ${type} status ${r.status}`);
    return Buffer.from(r.data);
  };
  const head = await get(2, 9);
  const cfg = await get(2, head.readUInt16LE(2));
  const eps = new Map<number, Endpoints>();
  let iface = -1;
  let alt = 0;
  for (let o = 0; o + 2 <= cfg.length && cfg[o] > 0; o += cfg[o]) {
    if (cfg[o + 1] === 4) { iface = cfg[o + 2]; alt = cfg[o + 3]; }
    if (cfg[o + 1] === 5 && alt === 0 && (cfg[o + 3] & 3) === 2) {
      const e = eps.get(iface) ?? { bulkIn: 0, bulkOut: 0 };
      if (cfg[o + 2] & 0x80) e.bulkIn = cfg[o + 2]; else e.bulkOut = cfg[o + 2];
      eps.set(iface, e);
    }
  }
  return eps;
}

async function armSystem(): Promise<Speed | undefined> {
  const ready = Object.fromEntries(fs.readFileSync(join(share, 'ready'), 'utf8').trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
  const { CODE: code, BUSID: busid, TICKET: ticket } = ready as Record<string, string>;
  info(`install's ticket: ${ticket} (${parsePeerAddress(ticket).addrs.join(', ')})`);
  // pair and list with the client CLI, given the ticket and the code exactly as install printed them
  const keyDir = join(share, 'client-key');
  const cli = (...a: string[]): ReturnType<typeof spawnSync> =>
    spawnSync(process.execPath, [CLIENT_JS, ...a, '--bench', ticket, '--relay', 'disabled', '--key-dir', keyDir], { encoding: 'utf8', timeout: 300_000 });
  let t = performance.now();
  const paired = cli('pair', '--code', code, '--name', 'x64-host');
  if (paired.status === 0 && /paired with bench/.test(String(paired.stdout))) pass('client.pair', `remote-usb pair with install's code and ticket, ${f1((performance.now() - t) / 1000)} s: ${String(paired.stdout).trim()}`);
  else { fail('client.pair', `exit ${paired.status}: ${String(paired.stderr).trim()}`); return undefined; }
  const list = cli('list');
  const line = String(list.stdout).split('\n').find((l) => l.includes('1d6b:0104'));
  if (list.status === 0 && line) pass('client.list', `remote-usb list: ${line.trim().replace(/\s+/g, ' ')}`);
  else fail('client.list', `exit ${list.status}: ${String(list.stdout)}${String(list.stderr)}`);

  // the paired identity, through the client core, for the data
  t = performance.now();
  const client = await BenchClient.connect({
    secretKey: loadOrCreateSecretKey(keyDir, false).key, bench: parsePeerAddress(ticket), clientName: 'x64-host',
    relay: { mode: 'disabled' }, handshakeTimeoutMs: 120_000, connectTimeoutMs: 120_000,
  });
  info(`BenchClient connected in ${f1((performance.now() - t) / 1000)} s to bench '${client.benchName}'`);
  try {
    const row = (await client.list()).find((d) => d.id === busid);
    if (!row || row.vendorId !== 0x1d6b || row.productId !== 0x0104 || !row.shared) { fail('client.device', `no shared 1d6b:0104 at ${busid}: ${JSON.stringify(row)}`); return undefined; }
    t = performance.now();
    const dev = await client.claim(busid);
    pass('client.claim', `${busid} claimed in ${f1(performance.now() - t)} ms`);
    const desc = await dev.submit({ type: 'control', ep: 0x80, length: 18, setup: encodeSetup({ bmRequestType: 0x80, bRequest: 6, wValue: 0x0100, wIndex: 0, wLength: 18 }) });
    const d = Buffer.from(desc.data);
    if (desc.status === 0 && d.length === 18 && d.readUInt16LE(8) === 0x1d6b && d.readUInt16LE(10) === 0x0104) pass('control.device_descriptor', 'GET_DESCRIPTOR(device): 1d6b:0104');
    else fail('control.device_descriptor', `status ${desc.status}, ${d.toString('hex')}`);
    const eps = await bulkEndpoints(dev);
    const ss = eps.get(0);
    const lb = eps.get(1);
    if (!ss?.bulkIn || !ss.bulkOut || !lb?.bulkIn || !lb.bulkOut) { fail('control.config_descriptor', `bulk endpoints ${JSON.stringify([...eps])}`); return undefined; }
    pass('control.config_descriptor', `SourceSink (interface 0) out 0x${ss.bulkOut.toString(16)} in 0x${ss.bulkIn.toString(16)}, Loopback (interface 1) out 0x${lb.bulkOut.toString(16)} in 0x${lb.bulkIn.toString(16)}`);

    // 4 MiB out to the Loopback function and back in, 64 KiB at a time: f_loopback holds 32 × 4 KiB, and
    // queues each OUT request it completes back as IN, so 64 KiB out always fits before it is read back
    const sent = seededBytes(4 * MIB, 17);
    const got: Buffer[] = [];
    t = performance.now();
    for (let off = 0; off < sent.length; off += 65536) {
      const part = sent.subarray(off, off + 65536);
      const ro = await dev.submit({ type: 'bulk', ep: lb.bulkOut, data: part });
      if (ro.status !== 0 || ro.actual !== part.length) throw new Error(`loopback OUT status ${ro.status}, ${ro.actual} bytes`);
      let have = 0;
      while (have < part.length) {
        const r = await dev.submit({ type: 'bulk', ep: lb.bulkIn, length: part.length - have });
        if (r.status !== 0) throw new Error(`loopback IN status ${r.status} ${r.error ?? ''}`);
        got.push(Buffer.from(r.data));
        have += r.actual;
      }
    }
    const back = Buffer.concat(got);
    const secs = (performance.now() - t) / 1000;
    if (back.equals(sent)) pass('bulk.loopback', `4 MiB out through the arm64 daemon to the gadget and back in, byte-identical (${f1(secs)} s, one 64 KiB URB at a time)`);
    else fail('bulk.loopback', `${back.length} bytes back, first difference at ${back.findIndex((b, i) => b !== sent[i])}`);

    const speed = await measureSpeed(dev, ss.bulkOut, ss.bulkIn, 5);
    pass('bulk.measure', `sink and source moved data, control answered (numbers below)`);
    await dev.release();
    pass('client.release', busid);
    return speed;
  } finally {
    await client.close();
  }
}

/** The x64 daemon of this checkout on this host, its simulated loopback board (sim-2), same measurement. */

async function main(): Promise<number> {
  let arm: Speed | undefined;
  try {
    arm = await armSystem();
  } catch (e) {
    fail('arm64.session', (e as Error).stack ?? String(e));
  }
  let x64: Speed | undefined;
  try {
    x64 = await measureX64Daemon(5);
    pass('x64.baseline', 'x64 daemon on the host measured');
  } catch (e) {
    fail('x64.baseline', (e as Error).stack ?? String(e));
  }
  const row = (s: Speed | undefined): string => s ? `bulk out ${f1(s.outMBps)} MB/s, in ${f1(s.inMBps)} MB/s, control p50 ${f1(s.controlP50Ms)} ms (p90 ${f1(s.controlP90Ms)})` : 'not measured';
  if (arm) for (const [k, v] of [['out_MBps', arm.outMBps], ['in_MBps', arm.inMBps], ['control_p50_ms', arm.controlP50Ms]] as const) out(`METRIC arm64_system_${k} ${f1(v)}`);
  if (x64) for (const [k, v] of [['out_MBps', x64.outMBps], ['in_MBps', x64.inMBps], ['control_p50_ms', x64.controlP50Ms]] as const) out(`METRIC x64_host_${k} ${f1(v)}`);
  info(`arm64 daemon, full system under qemu-system-aarch64 (TCG), real gadget on dummy_hcd, over a tap link: ${row(arm)}`);
  info(`x64 daemon on this host, simulated loopback board sim-2, over loopback, same run:                     ${row(x64)}`);
  return failed ? 1 : 0;
}

main().then((code) => process.exit(code), (e) => { console.error(e); process.exit(1); });
