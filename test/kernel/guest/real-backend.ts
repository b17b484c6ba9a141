/**
 * Guest program (qemu): our daemon's REAL `usb` backend against a real device — the configfs CDC-ACM
 * gadget — driven by the real client core over real Iroh on loopback. Prints `KTEST PASS|FAIL|METRIC`
 * lines on stdout (the scenario forwards them to the harness).
 *   node real-backend.js <bench id@127.0.0.1:port> <client key dir> <busid> <gadget tty> <bytes>
 */
import { constants, existsSync, openSync, readlinkSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { ReadStream } from 'node:tty';
import { basename } from 'node:path';
import { BenchClient, ClaimedDevice } from '../../../extension/core/bench-client.js';
import { encodeSetup, UrbFlag, UrbResult } from '../../../server/protocol/urb.js';
import { spawn } from 'node:child_process';
import { loadOrCreateSecretKey } from '../../../server/shared/identity.js';
import { parsePeerAddress } from '../../../server/net/iroh.js';
import { seededBytes } from '../../../server/usb/patterns.js';

const [benchText, keyDir, busid, gadgetTty, bytesText] = process.argv.slice(2);
const BYTES = Number(bytesText ?? 1048576);
let failures = 0;
const pass = (name: string, what: string): void => void console.log(`KTEST PASS ${name} ${what}`);
const fail = (name: string, what: string): void => { failures++; console.log(`KTEST FAIL ${name} ${what}`); };
const metric = (name: string, value: string, unit: string): void => void console.log(`KTEST METRIC ${name} ${value} ${unit}`);
const check = (ok: boolean, name: string, what: string): void => (ok ? pass(name, what) : fail(name, what));

function driverOf(iface: string): string | undefined {
  try { return basename(readlinkSync(`/sys/bus/usb/devices/${iface}/driver`)); } catch { return undefined; }
}
async function until(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!cond()) { if (Date.now() > end) return false; await new Promise((r) => setTimeout(r, 20)); }
  return true;
}

/** Bulk endpoints of the CDC data interface, from the configuration descriptor. */
function bulkEndpoints(config: Buffer): { in: number; out: number } {
  const eps = { in: 0, out: 0 };
  for (let i = 0; i + 1 < config.length && config[i] > 0; i += config[i]) {
    if (config[i + 1] === 5 && (config[i + 3] & 3) === 2) {
      if (config[i + 2] & 0x80) eps.in = config[i + 2]; else eps.out = config[i + 2];
    }
  }
  return eps;
}

async function bulkOut(dev: ClaimedDevice, ep: number, data: Buffer, urb: number, inflight: number): Promise<number> {
  let next = 0;
  let status = 0;
  await Promise.all(Array.from({ length: inflight }, async () => {
    while (next < data.length && status === 0) {
      const chunk = data.subarray(next, next + urb);
      next += chunk.length;
      const r = await dev.submit({ type: 'bulk', ep, data: chunk, timeout: 10_000 });
      if (r.status !== 0) status = r.status;
    }
  }));
  return status;
}

/**
 * Follows usbmon's text interface for one bus (Documentation/usb/usbmon.rst): each line is
 * `tag timestamp S|C|E type:bus:dev:ep status length …`. Counts the URBs submitted and not completed
 * per endpoint, and keeps the OUT submissions' lengths.
 */
function usbmon(bus: number, devnum: number): { outstanding(ep: string): number; outLengths(ep: string): number[]; stop(): void } | undefined {
  const path = `/sys/kernel/debug/usb/usbmon/${bus}u`;
  if (!existsSync(path)) return undefined;
  const cat = spawn('cat', [path], { stdio: ['ignore', 'pipe', 'ignore'] });
  const open = new Map<string, Set<string>>();
  const outs = new Map<string, number[]>();
  let rest = '';
  cat.stdout.on('data', (c: Buffer) => {
    const lines = (rest + c.toString('latin1')).split('\n');
    rest = lines.pop() ?? '';
    for (const line of lines) {
      const [tag, , event, address, , length] = line.split(' ');
      const [type, , dev, ep] = (address ?? '').split(':');
      if (Number(dev) !== devnum || !type) continue;
      const key = `${type}:${Number(ep)}`;
      const set = open.get(key) ?? new Set<string>();
      open.set(key, set);
      if (event === 'S') {
        set.add(tag);
        if (type === 'Bo') outs.set(key, [...(outs.get(key) ?? []), Number(length)]);
      } else {
        set.delete(tag);
      }
    }
  });
  return { outstanding: (ep) => open.get(ep)?.size ?? 0, outLengths: (ep) => outs.get(ep) ?? [], stop: () => cat.kill() };
}

/**
 * What the bench's libusb backend promises (issue: keep every URB in flight, cancel for real, lose
 * nothing): 16 IN URBs queued at the host controller at once; a burst of whole packets followed by silence
 * arrives whole (no 1 s slices); cancels reach the host controller at once; an OUT transfer that times
 * out part way reports exactly the bytes the device took; URB_ZERO_PACKET sends the zero-length packet.
 * (The gadget ends every write with a short or zero-length packet, so an IN transfer here never holds
 * partial data when cancelled; the OUT case shows the partial-length rule.)
 */
async function queuedUrbs(dev: ClaimedDevice, devnum: number, bus: number, eps: { in: number; out: number }, gadgetTty: string): Promise<void> {
  const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
  const mon = usbmon(bus, devnum);
  if (!mon) fail('real.usbmon', `no /sys/kernel/debug/usb/usbmon/${bus}u (usbmon module, debugfs)`);
  await sleep(1000); // usbmon shows only what happens after its reader is in place
  const fh = await open(gadgetTty, constants.O_RDWR | constants.O_NOCTTY);
  const write = async (b: Buffer): Promise<void> => { for (let n = 0; n < b.length;) n += (await fh.write(b, n, b.length - n)).bytesWritten; };
  const urbs = Array.from({ length: 16 }, () => dev.start({ type: 'bulk', ep: eps.in, length: 1024 }));
  const results: (UrbResult | undefined)[] = urbs.map(() => undefined);
  urbs.forEach((u, i) => void u.done.then((r) => { results[i] = r; }));
  await sleep(1500);
  const inKey = `Bi:${eps.in & 0x0f}`;
  if (mon) check(mon.outstanding(inKey) >= 16, 'real.urbs_queued', `IN URBs queued at the bench's host controller at once: ${mon.outstanding(inKey)} (16 submitted)`);

  // 4 × 512-byte packets, a second and a half of silence, then a short tail
  const burst = seededBytes(2048, 21);
  const tail = seededBytes(100, 22);
  const want = Buffer.concat([burst, tail]);
  await write(burst);
  await sleep(1500);
  await write(tail);
  const received = (): Buffer => {
    const done: Buffer[] = [];
    for (const r of results) { if (!r) break; done.push(r.data); }
    return Buffer.concat(done);
  };
  await until(() => received().length >= want.length, 10_000);
  const got = received();
  check(got.equals(want), 'real.burst_then_silence', `${want.length} bytes (4 full packets, 1.5 s silence, 100 more) arrived ${got.equals(want) ? 'whole and in order' : `as ${got.length} bytes, different`} in ${results.filter(Boolean).length} URBs (the device's zero-length packets included)`);

  // cancel the URBs still waiting: they must end at once, at the host controller too
  const waiting = results.filter((r) => r === undefined).length;
  const t0 = performance.now();
  for (const u of urbs) dev.cancel(u.id);
  const allDone = await until(() => results.every((r) => r !== undefined), 5000);
  check(allDone && results.every((r) => r && (r.status === 0 || r.status === -104)), 'real.cancel', `${waiting} waiting URBs cancelled, answered in ${(performance.now() - t0).toFixed(0)} ms; statuses ${[...new Set(results.map((r) => r?.status))].join(',')}`);
  if (mon) check(await until(() => mon.outstanding(inKey) === 0, 3000), 'real.cancel_reaches_device', `IN URBs still queued at the host controller after the cancels: ${mon.outstanding(inKey)}`);

  // URB_ZERO_PACKET: 512 bytes (one whole packet) and the zero-length packet behind it
  const zlp = await dev.submit({ type: 'bulk', ep: eps.out, data: seededBytes(512, 24), flags: UrbFlag.zeroPacket, timeout: 5000 });
  const outKey = `Bo:${eps.out & 0x0f}`;
  await sleep(300);
  const lengths = mon?.outLengths(outKey).slice(-2) ?? [];
  check(zlp.status === 0 && zlp.actual === 512 && (!mon || (lengths[0] === 512 && lengths[1] === 0)), 'real.zero_packet',
    `OUT 512 bytes with URB_ZERO_PACKET: status ${zlp.status}, ${zlp.actual} bytes; host controller saw OUT lengths ${lengths.join(', ')}`);
  mon?.stop();

  // An OUT transfer nobody drains times out part way: its length says exactly what the device took.
  // Nobody reads the gadget's tty now, so it throttles after its buffers fill.
  const big = seededBytes(1024 * 1024, 25);
  const partial = await dev.submit({ type: 'bulk', ep: eps.out, data: big, timeout: 3000 });
  const ttyFd = openSync(gadgetTty, constants.O_RDWR | constants.O_NOCTTY | constants.O_NONBLOCK);
  const reader = new ReadStream(ttyFd);
  const drained: Buffer[] = [];
  reader.on('data', (c: string | Buffer) => drained.push(Buffer.isBuffer(c) ? c : Buffer.from(c)));
  await sleep(3000);
  reader.destroy();
  // the earlier 512 bytes of the zero-packet case come first
  const arrived = Buffer.concat(drained).subarray(512);
  const prefix = arrived.equals(big.subarray(0, partial.actual));
  check(partial.status === -110 && partial.actual > 0 && partial.actual < big.length && prefix, 'real.timeout_partial',
    `1 MiB OUT into an undrained tty, 3 s timeout: status ${partial.status}, ${partial.actual} bytes reported, ${arrived.length} arrived${prefix ? ', the same bytes' : ', DIFFERENT'}`);
  await fh.close();
}

async function main(): Promise<void> {
  setTimeout(() => { console.log('KTEST FAIL real.watchdog guest client still running after 180 s'); process.exit(1); }, 180_000).unref();
  const client = await BenchClient.connect({
    secretKey: loadOrCreateSecretKey(keyDir, false).key, bench: parsePeerAddress(benchText), clientName: 'ktest', relay: { mode: 'disabled' },
  });
  const info = client.device(busid);
  check(info !== undefined, 'real.list', `bench lists ${busid}: ${info ? `${info.vendorId.toString(16)}:${info.productId.toString(16)} '${info.product}' serial ${info.serial} speed ${info.speed} drivers ${info.interfaces.map((i) => i.driver ?? '-').join(',')}` : 'missing: ' + client.devices.map((d) => d.id).join(',')}`);
  if (!info) return;
  check(info.interfaces.some((i) => i.driver === 'cdc_acm'), 'real.list_driver', `kernel driver shown: ${info.interfaces.map((i) => i.driver).join(',')}`);
  const iface0 = `${busid}:1.0`;

  const dev = await client.claim(busid);
  // claimed through usbfs: the kernel shows "usbfs" as the interface's driver instead of cdc_acm
  check(driverOf(iface0) === 'usbfs', 'real.claim_detaches_driver', `after claim, ${iface0} driver: ${driverOf(iface0) ?? 'none'}`);

  const dd = await dev.submit({ type: 'control', ep: 0x80, length: 18, setup: encodeSetup({ bmRequestType: 0x80, bRequest: 6, wValue: 0x100, wIndex: 0, wLength: 18 }) });
  check(dd.status === 0 && dd.actual === 18 && dd.data.readUInt16LE(8) === info.vendorId, 'real.control_in', `GET_DESCRIPTOR(device): status ${dd.status}, ${dd.actual} bytes`);
  const cfg = await dev.submit({ type: 'control', ep: 0x80, length: 255, setup: encodeSetup({ bmRequestType: 0x80, bRequest: 6, wValue: 0x200, wIndex: 0, wLength: 255 }) });
  const eps = bulkEndpoints(cfg.data);
  check(cfg.status === 0 && eps.in !== 0 && eps.out !== 0, 'real.config', `config descriptor ${cfg.actual} bytes, bulk IN 0x${eps.in.toString(16)} OUT 0x${eps.out.toString(16)}`);
  // SET_CONFIGURATION(1) becomes a host operation; the device must keep working after it.
  const setCfg = await dev.submit({ type: 'control', ep: 0, setup: encodeSetup({ bmRequestType: 0, bRequest: 9, wValue: 1, wIndex: 0, wLength: 0 }) });
  check(setCfg.status === 0, 'real.set_configuration', `status ${setCfg.status}`);
  const dtr = await dev.submit({ type: 'control', ep: 0, setup: encodeSetup({ bmRequestType: 0x21, bRequest: 0x22, wValue: 3, wIndex: 0, wLength: 0 }) });
  check(dtr.status === 0, 'real.control_out', `SET_CONTROL_LINE_STATE status ${dtr.status}`);

  // host -> device: bulk OUT, read at the gadget's tty
  const out = seededBytes(BYTES, 11);
  const got: Buffer[] = [];
  let gotBytes = 0;
  // tty streams (epoll), not fs streams: a blocked fs read on a tty would keep node from exiting
  const ttyFd = openSync(gadgetTty, constants.O_RDWR | constants.O_NOCTTY | constants.O_NONBLOCK);
  const reader = new ReadStream(ttyFd);
  const received = new Promise<void>((resolve) => reader.on('data', (c: string | Buffer) => {
    const b = Buffer.isBuffer(c) ? c : Buffer.from(c);
    got.push(b); gotBytes += b.length;
    if (gotBytes >= BYTES) resolve();
  }));
  await new Promise((r) => setTimeout(r, 200));
  let t0 = performance.now();
  const st = await bulkOut(dev, eps.out, out, 16384, 8);
  const arrived = await Promise.race([received.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 30_000))]);
  let secs = (performance.now() - t0) / 1000;
  reader.destroy();
  const same = Buffer.concat(got).subarray(0, BYTES).equals(out);
  check(st === 0 && arrived && same, 'real.bulk_out', `${BYTES} bytes OUT, status ${st}, ${gotBytes} arrived at ${gadgetTty}, identical: ${same}`);
  metric('real_bulk_out', (BYTES / 1e6 / secs).toFixed(3), 'MB/s');

  // device -> host: write at the gadget's tty, bulk IN with 8 URBs in flight
  const inData = seededBytes(BYTES, 12);
  // tty.WriteStream writes synchronously (it would block this loop until we read); write from the
  // thread pool instead, in a loop that handles partial writes.
  const fh = await open(gadgetTty, constants.O_RDWR | constants.O_NOCTTY);
  let written = 0;
  t0 = performance.now();
  const writing = (async () => {
    while (written < inData.length) written += (await fh.write(inData, written, Math.min(65536, inData.length - written))).bytesWritten;
  })();
  const parts: Buffer[] = [];
  let have = 0;
  let inStatus = 0;
  const deadline = Date.now() + 30_000;
  const statuses = new Map<number, number>();
  const progress = setInterval(() => console.log(`  bulk IN progress: ${have} bytes, statuses ${JSON.stringify([...statuses])}, in flight ${dev.inFlight}, written to the tty ${written}`), 2000);
  await Promise.all(Array.from({ length: 8 }, async () => {
    while (have < BYTES && inStatus === 0 && Date.now() < deadline) {
      const r = await dev.submit({ type: 'bulk', ep: eps.in, length: 16384, timeout: 2000 });
      statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
      if (r.status === -110) continue;
      if (r.status !== 0) { inStatus = r.status; break; }
      parts.push(r.data); have += r.actual;
      if (have >= BYTES) secs = (performance.now() - t0) / 1000;
    }
  }));
  clearInterval(progress);
  await Promise.race([writing, new Promise((r) => setTimeout(r, 1000))]);
  await fh.close().catch(() => {});
  // 8 concurrent readers complete in submission order per endpoint, but our parts[] is filled in
  // completion order, which is the same order the device produced them.
  const inSame = Buffer.concat(parts).subarray(0, BYTES).equals(inData);
  check(inStatus === 0 && have >= BYTES && inSame, 'real.bulk_in', `${have} bytes IN, status ${inStatus}, identical: ${inSame}`);
  metric('real_bulk_in', (BYTES / 1e6 / secs).toFixed(3), 'MB/s');

  await queuedUrbs(dev, info.devnum, info.busnum, eps, gadgetTty);

  await dev.release();
  const back = await until(() => driverOf(iface0) === 'cdc_acm', 5000);
  check(back, 'real.release_gives_driver_back', `after release, ${iface0} driver: ${driverOf(iface0) ?? 'none'}; tty present: ${existsSync('/sys/bus/usb/devices/' + iface0 + '/tty')}`);
  const closed = await Promise.race([client.close().then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 5000))]);
  check(closed, 'real.client_close', closed ? 'client closed' : 'client.close() did not finish within 5 s');
}

main().then(
  () => process.exit(failures ? 1 : 0),
  (e: Error) => { console.log(`KTEST FAIL real.exception ${e.message.replace(/\n/g, ' ')}`); process.exit(1); },
);
