/** What an x64 client measures of a daemon in the ARM tests (test/arm): bulk MB/s each way and control round trips. */
import { rmSync } from 'node:fs';
import { BenchClient, type ClaimedDevice } from '../../extension/core/bench-client.js';
import { encodeSetup } from '../../server/protocol/urb.js';
import { seededBytes } from '../../server/usb/patterns.js';
import { SINK_EP_OUT, SOURCE_EP_IN } from '../../server/usb/sim-loopback-board.js';
import { startWithClient } from './daemon-process.js';

export interface Speed { outMBps: number; inMBps: number; controlP50Ms: number; controlP90Ms: number }

/**
 * Bulk MB/s each way (8 URBs of 64 KiB in flight for `seconds`, OUT to `sink`, IN from `source`), then 50
 * GET_STATUS control round trips one at a time. Throws on a URB that fails.
 */
export async function measureSpeed(dev: ClaimedDevice, sink: number, source: number, seconds: number): Promise<Speed> {
  const stream = async (dir: 'in' | 'out'): Promise<number> => {
    const data = seededBytes(64 * 1024, 5);
    let bytes = 0;
    const start = performance.now();
    await Promise.all(Array.from({ length: 8 }, async () => {
      while (performance.now() - start < seconds * 1000) {
        const r = dir === 'in' ? await dev.submit({ type: 'bulk', ep: source, length: data.length }) : await dev.submit({ type: 'bulk', ep: sink, data });
        if (r.status !== 0) throw new Error(`bulk ${dir} status ${r.status} ${r.error ?? ''}`);
        bytes += r.actual;
      }
    }));
    return bytes / 1e6 / ((performance.now() - start) / 1000);
  };
  const outMBps = await stream('out');
  const inMBps = await stream('in');
  const rtts: number[] = [];
  for (let i = 0; i < 50; i++) {
    const t = performance.now();
    const r = await dev.submit({ type: 'control', ep: 0x80, length: 2, setup: encodeSetup({ bmRequestType: 0x80, bRequest: 0, wValue: 0, wIndex: 0, wLength: 2 }) });
    if (r.status !== 0) throw new Error(`control status ${r.status}`);
    rtts.push(performance.now() - t);
  }
  rtts.sort((a, b) => a - b);
  return { outMBps, inMBps, controlP50Ms: rtts[rtts.length >> 1], controlP90Ms: rtts[Math.floor(rtts.length * 0.9)] };
}

/** The baseline beside an ARM daemon's numbers: an x64 daemon (this checkout's dist/server.js) with simulated boards, its loopback board measured. */
export async function measureX64Daemon(seconds: number): Promise<Speed> {
  const { dir, daemon, key, address } = await startWithClient('remote-usb-x64-baseline-', 'x64-baseline');
  const client = await BenchClient.connect({ secretKey: key, bench: address, clientName: 'x64-baseline', relay: { mode: 'disabled' } });
  try {
    const dev = await client.claim('sim-2');
    const speed = await measureSpeed(dev, SINK_EP_OUT, SOURCE_EP_IN, seconds);
    await dev.release();
    return speed;
  } finally {
    await client.close();
    await daemon.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
