/**
 * `npm run demo`: a simulated bench and a client, talking over real Iroh on this machine.
 * Starts the daemon with simulated boards, pairs a new client with a one-time code, lists the bench,
 * claims the serial board, shows its banner and an echo (control + bulk round trips), measures the
 * data path, and shows a hot-plug event. No USB hardware or network needed.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../server/config.js';
import { Daemon } from '../server/daemon.js';
import { deviceTable } from '../server/device-table.js';
import { createLogger } from '../server/log.js';
import { generateSecretKey } from '../server/net/iroh.js';
import { SimulatedBackend, simLoopbackBoard } from '../server/usb/simulated.js';
import { SOURCE_EP_IN } from '../server/usb/sim-loopback-board.js';
import { SERIAL_EP_IN, SERIAL_EP_OUT } from '../server/usb/sim-serial-board.js';
import { BenchClient, ClaimedDevice } from './core/bench-client.js';

const say = (s: string): void => void process.stdout.write(s + '\n');

async function readUntil(dev: ClaimedDevice, want: string, timeoutMs = 3000): Promise<string> {
  let text = '';
  const deadline = Date.now() + timeoutMs;
  while (!text.includes(want) && Date.now() < deadline) {
    const r = await dev.submit({ type: 'bulk', ep: SERIAL_EP_IN, length: 64, timeout: 500 });
    if (r.status === 0) text += r.data.toString('latin1');
  }
  return text;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}
function p99(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(s.length * 0.99) - 1)];
}

async function main(): Promise<void> {
  const stateDir = mkdtempSync(join(tmpdir(), 'remote-usb-demo-'));
  const config = parseConfig(`name = "demo-bench"\nlisten = "127.0.0.1:0"\nstate_dir = "${stateDir}"\nlog_level = "warn"\n[relay]\nmode = "disabled"\n`, 'demo');
  const backend = new SimulatedBackend();
  const daemon = new Daemon({ config, backend, secretKey: generateSecretKey(), log: createLogger('warn') });
  await daemon.start();
  say(`▶ bench daemon 'demo-bench' up: endpoint ${daemon.id.slice(0, 16)}… on 127.0.0.1:${daemon.port} (simulated boards, relay disabled)`);

  const { code } = daemon.trust.createPairingCode(5);
  say(`▶ pairing code ${code} (what 'remote-usb-server pair' prints)`);
  const t0 = performance.now();
  const client = await BenchClient.connect({
    secretKey: generateSecretKey(), bench: daemon.address(), clientName: 'demo-client', relay: { mode: 'disabled' }, pairingCode: code,
  });
  const tConnected = performance.now();
  say(`▶ client paired and connected over Iroh in ${(tConnected - t0).toFixed(1)} ms; bench devices:\n`);
  say(deviceTable(client.devices) + '\n');

  const serial = await client.claim('sim-1');
  const first = await serial.submit({ type: 'control', ep: 0x80, setup: { bmRequestType: 0x80, bRequest: 6, wValue: 0x0100, wIndex: 0, wLength: 18 }, length: 18 });
  const tFirst = performance.now();
  say(`▶ claimed sim-1; first URB (GET_DESCRIPTOR device) → ${first.actual} bytes, VID:PID ${first.data.readUInt16LE(8).toString(16).padStart(4, '0')}:${first.data.readUInt16LE(10).toString(16).padStart(4, '0')}; connect → first completion ${(tFirst - t0).toFixed(1)} ms`);
  // Open the "port" like a terminal does: SET_CONTROL_LINE_STATE with DTR, and the board greets us.
  await serial.submit({ type: 'control', ep: 0, setup: { bmRequestType: 0x21, bRequest: 0x22, wValue: 1, wIndex: 0, wLength: 0 } });
  const banner = await readUntil(serial, 'echoed');
  say(`▶ serial board says: ${JSON.stringify(banner)}`);
  const message = 'hello from the demo\r\n';
  await serial.submit({ type: 'bulk', ep: SERIAL_EP_OUT, data: Buffer.from(message) });
  const echo = await readUntil(serial, 'demo');
  say(`▶ echo: ${JSON.stringify(echo)} ${echo === message ? '✓' : '✗'}`);

  // Measurements: app-level ping, control URB round trip, bulk IN with 32 URBs in flight.
  const pings: number[] = [];
  for (let i = 0; i < 200; i++) pings.push(await client.ping());
  const ctl: number[] = [];
  for (let i = 0; i < 200; i++) {
    const s = performance.now();
    await serial.submit({ type: 'control', ep: 0x80, setup: { bmRequestType: 0x80, bRequest: 0, wValue: 0, wIndex: 0, wLength: 2 }, length: 2 });
    ctl.push(performance.now() - s);
  }
  say(`▶ round trips (200 each): ping p50 ${median(pings).toFixed(3)} ms p99 ${p99(pings).toFixed(3)} ms; control URB p50 ${median(ctl).toFixed(3)} ms p99 ${p99(ctl).toFixed(3)} ms`);

  const loop = await client.claim('sim-2');
  const urb = 64 * 1024;
  const inflight = 32;
  let bytes = 0;
  const start = performance.now();
  const until = start + 2000;
  await Promise.all(Array.from({ length: inflight }, async () => {
    while (performance.now() < until) {
      const r = await loop.submit({ type: 'bulk', ep: SOURCE_EP_IN, length: urb });
      if (r.status !== 0) throw new Error(`bulk IN failed: ${r.status}`);
      bytes += r.actual;
    }
  }));
  const secs = (performance.now() - start) / 1000;
  say(`▶ bulk IN from the loopback board: ${(bytes / 1e6 / secs).toFixed(1)} MB/s (64 KiB URBs, ${inflight} in flight, ${secs.toFixed(1)} s)`);

  const added = new Promise<string>((resolve) => client.once('added', (d) => resolve(`${d.product} at ${d.id}`)));
  backend.plug(simLoopbackBoard(3));
  say(`▶ hot-plug: client saw ${await added}`);

  await client.close();
  await daemon.stop();
  await backend.close();
  rmSync(stateDir, { recursive: true, force: true });
  say('▶ released the boards, closed the client, stopped the bench. Done.');
}

main().catch((e: Error) => {
  process.stderr.write(`demo failed: ${e.stack ?? e.message}\n`);
  process.exit(1);
});
