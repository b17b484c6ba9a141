/**
 * The client side of the network-drop test, run as its own process inside the client's network
 * namespace (`ip netns exec NS node out/test/integration/network-drop.test.js` with
 * REMOTE_USB_NETDROP_CLIENT set to a JSON NetdropSpec). It prints one JSON object per line on stdout:
 * `{ "ev": "...", "t": ms since start, ... }`, and stops on SIGTERM (closing the client cleanly).
 *
 * - mode 'stream': the client core alone. Claims the loopback board and runs rounds of one 16 KiB OUT
 *   (EP 0x01) and the IN reads (EP 0x81) that bring it back, both in flight at once, each round
 *   verified byte for byte. A failed round (URBs ended by the drop) is reported with the statuses and
 *   how long the URBs took to fail, then retried once the device is back ('resumed'), after draining
 *   what the drop left in the FIFO. When the device is lost (the bench let it go and someone else
 *   has it), it reports that and claims again every 300 ms until it gets it.
 * - mode 'bridge': the USB/IP bridge over the client core, with FakeVhci as the kernel on a real unix
 *   socket pair: an interrupt IN (EP 0x83) always pending, and loopback rounds (OUT, then the INs).
 *   Reports the bridge's offline / online / closed and the kernel seeing its socket end.
 */
import { once } from 'node:events';
import { BenchClient, ClaimedDevice } from '../../extension/core/bench-client.js';
import { encodeSetup, UrbResult } from '../../server/protocol/urb.js';
import { createSocketPair, devidOf } from '../../extension/core/usbip/attach.js';
import { UsbipBridge } from '../../extension/core/usbip/bridge.js';
import { readEndpointTable } from '../../extension/core/usbip/endpoints.js';
import { createLogger } from '../../server/shared/log.js';
import { parsePeerAddress } from '../../server/net/iroh.js';
import { seededBytes } from '../../server/usb/patterns.js';
import { VENDOR_GET_FIFO_LEVEL } from '../../server/usb/sim-loopback-board.js';
import { FakeVhci } from './fake-vhci.js';

export const NETDROP_ENV = 'REMOTE_USB_NETDROP_CLIENT';

export interface NetdropSpec {
  mode: 'stream' | 'bridge';
  ticket: string;
  /** The client's secret key, hex (already on the bench's allowlist). */
  key: string;
  name: string;
  device: string;
  pingIntervalMs?: number;
  deadAfterMs?: number;
  connectTimeoutMs?: number;
  offlineGraceMs?: number;
  /** A URB round (or a wait for the device) that takes longer than this is reported as a hang (exit 3). */
  hangMs?: number;
}

const CHUNK = 16 * 1024;
const LOOP_OUT = 0x01;
const LOOP_IN = 0x81;
const FIFO_LEVEL = { bmRequestType: 0xc0, bRequest: VENDOR_GET_FIFO_LEVEL, wValue: 0, wIndex: 0, wLength: 4 };

const t0 = performance.now();
function emit(ev: string, fields: Record<string, unknown> = {}): void {
  process.stdout.write(JSON.stringify({ ev, t: Math.round(performance.now() - t0), ...fields }) + '\n');
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Rejects after `ms` naming what hung; the caller exits with status 3. */
function bounded<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`hung: ${what} (${ms} ms)`)), ms); }),
  ]);
}

export async function runNetdropClient(spec: NetdropSpec): Promise<void> {
  const hangMs = spec.hangMs ?? 30_000;
  const log = createLogger('info', (l) => process.stderr.write(l + '\n'));
  const client = new BenchClient({
    secretKey: new Uint8Array(Buffer.from(spec.key, 'hex')),
    bench: parsePeerAddress(spec.ticket),
    clientName: spec.name,
    relay: { mode: 'disabled' },
    reconnect: { initialDelayMs: 100, maxDelayMs: 500 },
    pingIntervalMs: spec.pingIntervalMs,
    deadAfterMs: spec.deadAfterMs,
    connectTimeoutMs: spec.connectTimeoutMs,
    log,
  });
  client.on('state', (state, detail) => emit('state', { state, detail }));
  let stopping = false;
  const stop = async (): Promise<void> => {
    if (stopping) return;
    stopping = true;
    await client.close();
    emit('closed');
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop());
  const fail = (e: Error): never => {
    emit(/^hung/.test(e.message) ? 'hung' : 'error', { message: e.message });
    process.exit(/^hung/.test(e.message) ? 3 : 1);
  };
  try {
    await client.start();
    if (spec.mode === 'stream') await streamMode(client, spec, hangMs, () => stopping);
    else await bridgeMode(client, spec, hangMs, () => stopping);
  } catch (e) {
    if (!stopping) fail(e as Error);
  }
}

/** Claims until it gets the device (another client may hold it for a while). */
async function claim(client: BenchClient, id: string, hangMs: number): Promise<ClaimedDevice> {
  const deadline = performance.now() + hangMs;
  for (;;) {
    try {
      const dev = await client.claim(id);
      emit('claimed', { device: id });
      dev.on('suspended', () => emit('suspended'));
      dev.on('resumed', () => emit('resumed'));
      dev.on('lost', (reason) => emit('lost', { reason }));
      return dev;
    } catch (e) {
      emit('claim-refused', { message: (e as Error).message });
      if (performance.now() > deadline) throw new Error(`hung: no claim of ${id} for ${hangMs} ms`, { cause: e });
      await sleep(300);
    }
  }
}

/** After a failed round: waits until the device is usable again (resumed, or lost and claimed anew). */
async function recover(client: BenchClient, dev: ClaimedDevice, spec: NetdropSpec, hangMs: number): Promise<ClaimedDevice> {
  if (!dev.lost && client.state !== 'online') {
    await bounded(Promise.race([once(dev, 'resumed'), once(dev, 'lost')]), hangMs, 'waiting for the device after a drop');
  }
  if (dev.lost) dev = await claim(client, spec.device, hangMs);
  // what the drop left in the loopback FIFO (an OUT that landed, an IN whose answer was lost)
  const level = await dev.submit({ type: 'control', ep: 0x80, setup: encodeSetup(FIFO_LEVEL), length: 4 });
  if (level.status !== 0) return dev; // dropped again: the next round fails and comes back here
  const n = level.data.readUInt32LE(0);
  if (n > 0) await dev.submit({ type: 'bulk', ep: LOOP_IN, length: n });
  emit('drained', { bytes: n });
  return dev;
}

async function streamMode(client: BenchClient, spec: NetdropSpec, hangMs: number, stopping: () => boolean): Promise<void> {
  let dev = await recover(client, await claim(client, spec.device, hangMs), spec, hangMs);
  let bytes = 0;
  let rounds = 0;
  let lastReport = 0;
  for (let seed = 1; !stopping(); seed++) {
    const data = seededBytes(CHUNK, seed);
    const started = performance.now();
    const round = (async (): Promise<{ out: UrbResult; ins: UrbResult[] }> => {
      const out = dev.submit({ type: 'bulk', ep: LOOP_OUT, data });
      const ins: UrbResult[] = [];
      for (let got = 0; got < CHUNK;) {
        const r = await dev.submit({ type: 'bulk', ep: LOOP_IN, length: CHUNK - got });
        ins.push(r);
        if (r.status !== 0) break;
        got += r.data.length;
      }
      return { out: await out, ins };
    })();
    const { out, ins } = await bounded(round, hangMs, `URB round ${seed}`);
    const failed = out.status !== 0 || ins.some((r) => r.status !== 0);
    if (failed) {
      emit('urb-failed', { out: out.status, in: ins.map((r) => r.status), failMs: Math.round(performance.now() - started), lost: dev.lost });
      dev = await recover(client, dev, spec, hangMs);
      continue;
    }
    const back = Buffer.concat(ins.map((r) => r.data));
    if (!back.equals(data)) {
      emit('verify-failed', { round: seed, got: back.length });
      process.exit(4);
    }
    bytes += CHUNK;
    rounds++;
    if (performance.now() - lastReport > 250) {
      lastReport = performance.now();
      emit('progress', { bytes, rounds });
    }
  }
}

/** How long an IN may wait on the loopback FIFO once the bench is reachable before it is unlinked. */
const STALL_MS = 3000;

/** Resolves when the bridge is online (at once if it is). */
function waitOnline(bridge: UsbipBridge): Promise<void> {
  return bridge.isOffline ? once(bridge, 'online').then(() => undefined) : Promise.resolve();
}

async function bridgeMode(client: BenchClient, spec: NetdropSpec, hangMs: number, stopping: () => boolean): Promise<void> {
  const dev = await claim(client, spec.device, hangMs);
  const endpoints = await readEndpointTable(dev);
  const { ours, theirs } = await createSocketPair();
  const devid = devidOf(dev.info);
  const log = createLogger('info', (l) => process.stderr.write(l + '\n'));
  const bridge = new UsbipBridge(dev, ours, { devid, endpoints, log, offlineGraceMs: spec.offlineGraceMs }).start();
  const k = new FakeVhci(theirs, devid);
  bridge.on('offline', () => emit('bridge-offline'));
  bridge.on('online', () => emit('bridge-online', { pending: k.pending }));
  bridge.on('closed', (c) => emit('bridge-closed', { reason: c.reason, message: c.message }));
  let ended = false;
  const kernelEnded = k.ended.then(() => {
    ended = true;
    emit('kernel-ended', { violations: k.violations, pending: k.pending });
  });
  emit('attached', { devid });
  // what an earlier user left in the loopback FIFO
  const level0 = await k.runControl(FIFO_LEVEL);
  if (level0.data.readUInt32LE(0) > 0) await k.run({ ep: 1, dir: 'in', length: level0.data.readUInt32LE(0) });
  // An interrupt IN always pending, as usbhid keeps one: it must complete again after the drop.
  let reports = 0;
  void (async () => {
    while (!ended && !stopping()) {
      const a = await Promise.race([k.submit({ ep: 3, dir: 'in', length: 8 }).done, kernelEnded.then(() => undefined)]);
      if (!a) return;
      if (a.kind === 'submitted' && a.ret.status === 0) reports++;
      else emit('report-failed', { status: a.kind === 'submitted' ? a.ret.status : a.status });
      await sleep(20);
    }
  })();
  let bytes = 0;
  let lastReport = 0;
  const until = <T>(p: Promise<T>): Promise<T | undefined> => Promise.race([p, kernelEnded.then(() => undefined)]);
  for (let seed = 1; !ended && !stopping(); seed++) {
    const data = seededBytes(4096, seed);
    const started = performance.now();
    const out = await until(bounded(k.submit({ ep: 1, dir: 'out', data }).done, hangMs, `OUT URB of round ${seed}`));
    if (!out) break;
    if (out.kind !== 'submitted' || out.ret.status !== 0) {
      emit('urb-failed', { out: out.kind === 'submitted' ? out.ret.status : out.status, failMs: Math.round(performance.now() - started) });
      // drain what may have landed (the bridge holds these until the bench is back)
      const level = await until(bounded(k.control(FIFO_LEVEL).done, hangMs, 'FIFO level'));
      if (!level) break;
      const n = level.kind === 'submitted' && level.ret.status === 0 ? level.ret.data.readUInt32LE(0) : 0;
      if (n > 0 && !(await until(bounded(k.submit({ ep: 1, dir: 'in', length: n }).done, hangMs, 'drain')))) break;
      emit('drained', { bytes: n });
      continue;
    }
    const got: Buffer[] = [];
    let have = 0;
    while (have < data.length) {
      // An IN whose answer was on the wire when the link dropped is replayed after the reconnect and
      // then waits on the FIFO its first run emptied: like a driver's timeout, unlink it and redo.
      const urb = k.submit({ ep: 1, dir: 'in', length: data.length - have });
      let r = await until(Promise.race([urb.done, waitOnline(bridge).then(() => sleep(STALL_MS)).then(() => undefined)]));
      if (r === undefined && !ended) {
        emit('in-stalled', { round: seed, offline: bridge.isOffline });
        await until(k.unlink(urb.seqnum).done);
        r = await until(urb.done);
      }
      if (!r) break;
      if (r.kind !== 'submitted' || r.ret.status !== 0) {
        emit('urb-failed', { in: r.kind === 'submitted' ? r.ret.status : r.status });
        break;
      }
      got.push(r.ret.data);
      have += r.ret.data.length;
    }
    if (ended) break;
    if (have < data.length) {
      const level = await until(k.control(FIFO_LEVEL).done);
      const n = level?.kind === 'submitted' && level.ret.status === 0 ? level.ret.data.readUInt32LE(0) : 0;
      if (n > 0 && !(await until(k.submit({ ep: 1, dir: 'in', length: n }).done))) break;
      emit('drained', { bytes: n, lostInDrop: data.length - have - n });
      continue;
    }
    if (!Buffer.concat(got).equals(data)) {
      emit('verify-failed', { round: seed });
      process.exit(4);
    }
    bytes += data.length;
    if (performance.now() - lastReport > 250) {
      lastReport = performance.now();
      emit('progress', { bytes, reports, offline: bridge.isOffline });
    }
  }
  await kernelEnded;
  // the bench connection outlives the port: the device can be claimed and used again at once
  emit('after-close', { clientState: client.state, deviceLost: dev.lost });
  await new Promise(() => {}); // until SIGTERM
}
