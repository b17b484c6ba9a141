/**
 * `npm run demo`: a simulated bench and a client, talking over real Iroh on this machine.
 * The bench is the real daemon program (`dist/server.js run --simulate`, a child process, as a bench
 * runs it); this file is pure client code, like the CLI and the extension. It pairs a new client with a
 * one-time code (`remote-usb-server pair`), lists the bench, claims the serial board, shows its banner
 * and an echo (control + bulk round trips), measures the data path, and shows a hot-plug event (the
 * daemon's SIGUSR2). No USB hardware or network needed.
 */
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deviceTable } from '../server/shared/device-table.js';
import { generateSecretKey, parsePeerAddress } from '../server/net/iroh.js';
import { BenchClient, ClaimedDevice } from './core/bench-client.js';
import { encodeSetup } from '../server/protocol/urb.js';

/** The daemon, bundled beside this file (dist/server.js). */
const SERVER_JS = join(__dirname, 'server.js');
/** The simulated boards' endpoints, as their descriptors list them (server/usb/sim-serial-board.ts, sim-loopback-board.ts). */
const SERIAL_EP_IN = 0x82;
const SERIAL_EP_OUT = 0x02;
/** The loopback board's source: every IN transfer is filled. */
const SOURCE_EP_IN = 0x82;

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

/** A UDP port that was free a moment ago: the daemon's ticket names its port, so it cannot be 0. */
async function freeUdpPort(): Promise<number> {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  const port = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** The bench daemon in a child process; its log is kept, and shown only when something fails. */
class BenchProcess {
  output = '';
  private constructor(readonly child: ChildProcess) {
    child.stdout!.on('data', (d: Buffer) => { this.output += d.toString(); });
    child.stderr!.on('data', (d: Buffer) => { this.output += d.toString(); });
  }

  static start(configFile: string): BenchProcess {
    // Three boards, so that the hot-plug toggle (SIGUSR2: the last board) can unplug sim-3 before the client
    // connects and plug it in again at the end.
    const env = { ...process.env, REMOTE_USB_SIM_BOARDS: 'serial:1,loopback:2' };
    return new BenchProcess(spawn(process.execPath, [SERVER_JS, 'run', '--simulate', '--config', configFile], { env, stdio: ['ignore', 'pipe', 'pipe'] }));
  }

  /** Resolves with the match once the daemon's log has a line matching `re`. */
  async waitFor(re: RegExp, timeoutMs = 15_000): Promise<RegExpExecArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = re.exec(this.output);
      if (m) return m;
      if (this.child.exitCode !== null) throw new Error(`the bench daemon exited with ${this.child.exitCode}`);
      if (Date.now() > deadline) throw new Error(`the bench daemon did not log ${re}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.kill('SIGTERM');
    await exited;
  }
}

async function main(): Promise<void> {
  const stateDir = mkdtempSync(join(tmpdir(), 'remote-usb-demo-'));
  const configFile = join(stateDir, 'server.toml');
  const port = await freeUdpPort();
  writeFileSync(configFile, `name = "demo-bench"\nlisten = "127.0.0.1:${port}"\nstate_dir = "${stateDir}"\nlog_level = "info"\n[relay]\nmode = "disabled"\n`);
  const bench = BenchProcess.start(configFile);
  try {
    await demo(bench, configFile, port);
  } catch (e) {
    process.stderr.write(`the bench daemon's log:\n${bench.output}\n`);
    throw e;
  } finally {
    await bench.stop();
    rmSync(stateDir, { recursive: true, force: true });
  }
  say('▶ released the boards, closed the client, stopped the bench. Done.');
}

async function demo(bench: BenchProcess, configFile: string, port: number): Promise<void> {
  const address = parsePeerAddress((await bench.waitFor(/ticket: (\S+)/))[1]);
  await bench.waitFor(/serving as/);
  bench.child.kill('SIGUSR2');
  await bench.waitFor(/SIGUSR2: sim-3 unplugged/);
  say(`▶ bench daemon 'demo-bench' up: endpoint ${address.id.slice(0, 16)}… on 127.0.0.1:${port} (simulated boards, relay disabled)`);

  const code = /Pairing code: (\S+)/.exec(execFileSync(process.execPath, [SERVER_JS, 'pair', '--minutes', '5', '--config', configFile], { encoding: 'utf8' }))![1];
  say(`▶ pairing code ${code} (what 'remote-usb-server pair' prints)`);
  const t0 = performance.now();
  const client = await BenchClient.connect({
    secretKey: generateSecretKey(), bench: address, clientName: 'demo-client', relay: { mode: 'disabled' }, pairingCode: code,
  });
  const tConnected = performance.now();
  say(`▶ client paired and connected over Iroh in ${(tConnected - t0).toFixed(1)} ms; bench devices:\n`);
  say(deviceTable(client.devices) + '\n');

  const serial = await client.claim('sim-1');
  const first = await serial.submit({ type: 'control', ep: 0x80, setup: encodeSetup({ bmRequestType: 0x80, bRequest: 6, wValue: 0x0100, wIndex: 0, wLength: 18 }), length: 18 });
  const tFirst = performance.now();
  say(`▶ claimed sim-1; first URB (GET_DESCRIPTOR device) → ${first.actual} bytes, VID:PID ${first.data.readUInt16LE(8).toString(16).padStart(4, '0')}:${first.data.readUInt16LE(10).toString(16).padStart(4, '0')}; connect → first completion ${(tFirst - t0).toFixed(1)} ms`);
  // Open the "port" like a terminal does: SET_CONTROL_LINE_STATE with DTR, and the board greets us.
  await serial.submit({ type: 'control', ep: 0, setup: encodeSetup({ bmRequestType: 0x21, bRequest: 0x22, wValue: 1, wIndex: 0, wLength: 0 }) });
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
    await serial.submit({ type: 'control', ep: 0x80, setup: encodeSetup({ bmRequestType: 0x80, bRequest: 0, wValue: 0, wIndex: 0, wLength: 2 }), length: 2 });
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
  bench.child.kill('SIGUSR2');
  say(`▶ hot-plug: client saw ${await added}`);

  await client.close();
}

main().catch((e: Error) => {
  process.stderr.write(`demo failed: ${e.stack ?? e.message}\n`);
  process.exit(1);
});
