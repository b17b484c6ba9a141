/**
 * The RFC 2217 share with a real peer: pyserial's `rfc2217://` client (Debian python3-serial, what esptool
 * and PlatformIO use) against a real daemon over real Iroh — the simulated serial board (whose DTR, RTS and
 * line coding the test can see) and the real `serialport` path on a socat pty pair (whose termios `stty`
 * shows). The python side (test/helpers/rfc2217_client.py) stops after each change until the test has
 * looked at the bench. Measurements (throughput, DTR/RTS latency) are printed, not asserted.
 * Needs python3-serial (and socat for the pty part); skipped with that message without them.
 */
import assert from 'node:assert/strict';
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, test } from 'node:test';
import { openLocalSerial } from '../../extension/core/local-serial.js';
import { Rfc2217Share } from '../../extension/core/rfc2217-server.js';
import type { SerialParams, SerialSession, SerialSetOptions } from '../../extension/core/serial.js';
import type { SimSerialBoard } from '../../server/usb/sim-serial-board.js';
import { loadOrCreateSecretKey } from '../../server/shared/identity.js';
import { endpointIdOf } from '../../server/net/iroh.js';
import { BenchFixture, until } from '../helpers/bench-fixture.js';
import { repoRoot } from '../helpers/daemon-process.js';
import { Collected } from '../helpers/serial-collector.js';

const SCRIPT = readFileSync(join(repoRoot(), 'test', 'helpers', 'rfc2217_client.py'), 'utf8');
/** Debian's python3 first: a python from pyenv or a venv may not see python3-serial. */
const PYTHON = ['/usr/bin/python3', 'python3'].find((p) => spawnSync(p, ['-c', 'import serial.rfc2217'], { stdio: 'ignore' }).status === 0);
const noPython = PYTHON ? false : 'pyserial is not installed (apt-get install python3-serial): the RFC 2217 tests need a real rfc2217:// client';
const hasSocat = spawnSync('socat', ['-V'], { stdio: 'ignore' }).status === 0;
const isRoot = process.getuid?.() === 0;
const hasSetpriv = spawnSync('setpriv', ['--version'], { stdio: 'ignore' }).status === 0;
const PARAMS: SerialParams = { baud: 115200, dataBits: 8, parity: 'none', stopBits: 1 };

/** The same bytes as pattern() in rfc2217_client.py. */
function pattern(seed: number, n: number): Buffer {
  const parts: Buffer[] = [];
  for (let i = 0, len = 0; len < n; i++, len += 32) parts.push(createHash('sha256').update(`${seed}:${i}`).digest());
  return Buffer.concat(parts).subarray(0, n);
}

interface Step { step: string; [k: string]: unknown }

/** pyserial in a child process; `next()` waits for its next step line, `go()` lets it continue. */
class PySerial {
  readonly proc: ChildProcess;
  private readonly lines: Step[] = [];
  private waiters: (() => void)[] = [];
  stderr = '';
  exit: Promise<number | null>;

  constructor(url: string, scenario: string, asNobody = false) {
    const args = ['-u', '-c', SCRIPT, url, scenario];
    this.proc = asNobody
      ? spawn('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', PYTHON!, ...args], { stdio: ['pipe', 'pipe', 'pipe'], cwd: '/' })
      : spawn(PYTHON!, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    createInterface({ input: this.proc.stdout! }).on('line', (l) => {
      try { this.lines.push(JSON.parse(l) as Step); } catch { this.stderr += `stdout: ${l}\n`; }
      for (const w of this.waiters.splice(0)) w();
    });
    this.proc.stderr!.on('data', (d: Buffer) => { this.stderr += d.toString(); });
    this.exit = new Promise((r) => this.proc.once('exit', (code) => { for (const w of this.waiters.splice(0)) w(); r(code); }));
  }

  async next(name: string, timeoutMs = 60_000): Promise<Step> {
    const end = Date.now() + timeoutMs;
    while (this.lines.length === 0) {
      if (this.proc.exitCode !== null) throw new Error(`pyserial exited (${this.proc.exitCode}) before step '${name}': ${this.stderr}`);
      if (Date.now() > end) throw new Error(`timed out waiting for pyserial's step '${name}': ${this.stderr}`);
      await new Promise<void>((r) => { this.waiters.push(r); setTimeout(r, 200); });
    }
    const s = this.lines.shift()!;
    assert.equal(s.step, name, `pyserial: expected step '${name}', got ${JSON.stringify(s)} ${this.stderr}`);
    return s;
  }

  go(): void {
    this.proc.stdin!.write('next\n');
  }

  async done(): Promise<void> {
    const code = await this.exit;
    assert.equal(code, 0, `pyserial failed: ${this.stderr}`);
  }
}

/** Records how long each set() takes at the session (Iroh round trip + the bench applying it). */
function timeSets(s: SerialSession): Map<string, number[]> {
  const times = new Map<string, number[]>();
  const set = s.set.bind(s);
  s.set = async (o: SerialSetOptions): Promise<void> => {
    const t0 = performance.now();
    await set(o);
    const key = Object.keys(o).join(',');
    times.set(key, [...(times.get(key) ?? []), performance.now() - t0]);
  };
  return times;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

describe('RFC 2217 with pyserial: simulated serial board over real Iroh', { skip: noPython }, () => {
  const bench = new BenchFixture();
  before(() => bench.start());
  after(() => bench.stop());
  const board = (): SimSerialBoard => bench.backend.board('sim-1') as SimSerialBoard;

  test('open, DTR/RTS reach the board, 256 KiB echoed byte-identical, baud and line changes reach the board, one client at a time', async () => {
    const c = await bench.connect();
    const s = await c.openSerial('sim-1', PARAMS);
    const times = timeSets(s);
    const share = await Rfc2217Share.start(s, { params: PARAMS, name: 'sim-1', log: bench.log });
    const py = new PySerial(share.url, 'sim');
    try {
      await py.next('open');
      assert.equal(share.connected, true);
      // a second local program is told and closed while pyserial holds the port
      const second = connect({ host: '127.0.0.1', port: share.port });
      let told = '';
      second.on('data', (d: Buffer) => { told += d.toString('latin1'); });
      await new Promise((r) => second.once('close', r));
      assert.match(told, /remote-usb: refused: sim-1 is in use by another local program; one at a time/);
      py.go();

      await py.next('dtr-low');
      assert.equal(board().dtr, false);
      py.go();
      const banner = await py.next('banner');
      assert.match(banner.text as string, /Remote USB simulated serial board SIM0001\r\nfirmware 1.0 ready; everything you type is echoed\r\n/);
      assert.equal(board().dtr, true);
      py.go();
      await py.next('rts-low');
      assert.equal(board().rts, false);
      py.go();
      await py.next('rts-high');
      assert.equal(board().rts, true);
      py.go();

      const echo = await py.next('echo');
      assert.equal(echo.ok, true, `256 KiB echoed byte-identical (got ${echo.bytes} bytes)`);
      const kbps = 256 / (echo.seconds as number);
      console.log(`RFC 2217 echo through the simulated board: 256 KiB each way in ${echo.seconds} s = ${kbps.toFixed(0)} KiB/s each way (1 Mbaud ≈ 98 KiB/s)`);
      py.go();

      await py.next('baud');
      assert.equal(board().lineCoding.readUInt32LE(0), 921600);
      py.go();
      await py.next('line');
      // 921600 (LE), 2 stop bits, even parity, 7 data bits
      assert.deepEqual([...board().lineCoding], [0x00, 0x10, 0x0e, 0x00, 2, 2, 7]);
      py.go();
      await py.next('8n1');
      assert.deepEqual([...board().lineCoding], [0x00, 0xc2, 0x01, 0x00, 0, 0, 8]);
      py.go();

      const t = await py.next('toggles');
      py.go();
      const reset = await py.next('esptool-reset');
      const dtr = times.get('dtr') ?? [];
      const rts = times.get('rts') ?? [];
      console.log(`DTR/RTS toggle over RFC 2217 → Iroh → bench → board: ${median(dtr).toFixed(1)} ms DTR / ${median(rts).toFixed(1)} ms RTS at the share (median of ${dtr.length}/${rts.length}); ` +
        `pyserial sees ${JSON.stringify(t.dtr_ms)} / ${JSON.stringify(t.rts_ms)} ms (it polls for the answer every 50 ms); ` +
        `esptool's classic reset (150 ms of sleeps) took ${reset.ms} ms`);
      assert.equal(board().dtr, false);
      assert.equal(board().rts, false);
      py.go();
      await py.next('break');
      assert.ok((times.get('brk') ?? []).length >= 2, 'break on and off reached the bench');
      py.go();
      await py.done();
      await until(() => !share.connected, 3000, 'pyserial to leave');
      assert.deepEqual(bench.log.errors, []);
    } finally {
      py.proc.kill();
      await share.stop();
    }
    assert.equal(s.state, 'closed', 'stopping the share closes the bench session');
  });

  test('a client from another user is refused (Linux: the kernel socket table)', { skip: !(isRoot && hasSetpriv && process.platform === 'linux') && 'needs root and setpriv to run pyserial as nobody' }, async () => {
    const c = await bench.connect();
    const s = await c.openSerial('sim-1', PARAMS);
    const share = await Rfc2217Share.start(s, { params: PARAMS, name: 'sim-1', log: bench.log });
    const refused: string[] = [];
    share.on('refused', (r) => refused.push(r));
    try {
      const py = new PySerial(share.url, 'refused', true);
      const r = await py.next('refused');
      assert.match(r.error as string, /Remote does not seem to support RFC2217|connection failed/);
      await py.done();
      assert.deepEqual(refused, [`this port is shared with user 0 only, not with user 65534`]);
      assert.equal(share.connected, false);
      // the owner still gets in
      const mine = new PySerial(share.url, 'sim');
      await mine.next('open');
      mine.proc.kill();
    } finally {
      await share.stop();
    }
  });

  test('remote-usb serial --rfc2217 prints the URL, serves pyserial, and stops on Ctrl-C', async () => {
    const keyDir = mkdtempSync(join(tmpdir(), 'remote-usb-rfc2217-cli-'));
    try {
      bench.daemon.trust.allow(endpointIdOf(loadOrCreateSecretKey(keyDir).key), 'cli-user');
      const a = bench.daemon.address();
      const where = `${a.id}@${a.addrs.find((x) => x.startsWith('127.0.0.1:'))}`;
      const cli = spawn(process.execPath, [join(repoRoot(), 'dist', 'remote-usb.js'), 'serial', '--rfc2217', '--bench', where, '--relay', 'disabled', '--key-dir', keyDir, '--baud', '57600', 'sim-1'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      cli.stdout.on('data', (d: Buffer) => { out += d.toString(); });
      cli.stderr.on('data', (d: Buffer) => { err += d.toString(); });
      const exited = new Promise<number | null>((r) => cli.once('exit', r));
      await until(() => /rfc2217:\/\/127\.0\.0\.1:\d+\n/.test(out), 20_000, `the URL (stderr: ${err})`);
      const url = out.trim();
      assert.match(err, /sharing sim-1 \(sim:sim-1\) on bench 'test-bench' with local programs at rfc2217:\/\/127\.0\.0\.1:\d+; Ctrl-C stops/);
      const py = new PySerial(url, 'sim');
      await py.next('open');
      py.go();
      await py.next('dtr-low');
      assert.equal(board().dtr, false);
      assert.equal(board().lineCoding.readUInt32LE(0), 115200, 'pyserial asked for 115200 over the CLI\'s 57600');
      py.proc.kill();
      cli.kill('SIGINT');
      assert.equal(await exited, 0, err);
      await until(() => bench.log.lines.some((l) => /cli-user \([0-9a-f]+\) closed serial session/.test(l)), 5000, 'the CLI to close its bench session');
      // usage errors
      const bad = spawnSync(process.execPath, [join(repoRoot(), 'dist', 'remote-usb.js'), 'serial', '--port', '80', '--bench', where, 'sim-1'], { encoding: 'utf8' });
      assert.equal(bad.status, 2);
      assert.match(bad.stderr, /--port goes with --rfc2217/);
      const badPort = spawnSync(process.execPath, [join(repoRoot(), 'dist', 'remote-usb.js'), 'serial', '--rfc2217', '--port', '70000', '--bench', where, 'sim-1'], { encoding: 'utf8' });
      assert.equal(badPort.status, 2);
      assert.match(badPort.stderr, /--port must be a whole number 0..65535, got '70000'/);
    } finally {
      rmSync(keyDir, { recursive: true, force: true });
    }
  });

  test('the share ends when the bench session closes for good', async () => {
    const c = await bench.connect();
    const s = await c.openSerial('sim-1', PARAMS);
    const share = await Rfc2217Share.start(s, { params: PARAMS, name: 'sim-1' });
    const ended = new Promise<string>((r) => share.once('end', r));
    await c.claim('sim-1'); // claiming the device closes its serial session on the bench
    assert.match(await ended, /the serial port closed: .*you claimed \(attached\) the device/);
    await new Promise<void>((resolve, reject) => {
      const probe = connect({ host: '127.0.0.1', port: share.port });
      probe.once('error', (e: NodeJS.ErrnoException) => (e.code === 'ECONNREFUSED' ? resolve() : reject(e)));
      probe.once('connect', () => reject(new Error('still listening')));
    });
    await c.close();
  });
});

describe('RFC 2217 with pyserial: a real tty (socat pty pair) through serialport', { skip: noPython || (!hasSocat && 'socat is not installed (apt-get install socat)') }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'remote-usb-rfc2217-'));
  const A = join(dir, 'A');
  const B = join(dir, 'B');
  const bench = new BenchFixture();
  let socat: ChildProcess | undefined;

  before(async () => {
    if (noPython || !hasSocat) return;
    socat = spawn('socat', [`pty,raw,echo=0,link=${A}`, `pty,raw,echo=0,link=${B}`], { stdio: 'ignore' });
    await until(() => existsSync(A) && existsSync(B), 5000, 'socat to make the pty pair');
    await bench.start({ extraToml: `[serial]\nports = ["${A}"]\n` });
  });
  after(async () => {
    if (noPython || !hasSocat) return;
    await bench.stop();
    socat?.kill();
    rmSync(dir, { recursive: true, force: true });
  });

  /** The pty's settings as the bench left them (stty opens it beside the bench's lock: root only). */
  const stty = (): string | undefined => {
    if (!isRoot) return undefined;
    const r = spawnSync('stty', ['-F', A, '-a'], { encoding: 'utf8' });
    return r.status === 0 ? r.stdout : undefined;
  };

  test('termios follows pyserial; 256 KiB each way byte-identical (0xff included)', async () => {
    const c = await bench.connect();
    const s = await c.openSerial(A, PARAMS);
    const times = timeSets(s);
    const share = await Rfc2217Share.start(s, { params: PARAMS, name: A });
    const atBoard = new Collected(await openLocalSerial(B));
    const py = new PySerial(share.url, 'pty');
    try {
      await py.next('open');
      py.go();
      await py.next('baud');
      const baud = stty();
      if (baud !== undefined) assert.match(baud, /speed 230400 baud/);
      py.go();
      await py.next('line');
      const line = stty();
      // Linux's pty driver keeps CS8 and no parity whatever is asked (drivers/tty/pty.c, pty_set_termios):
      // on a pty only the speed and the stop bits show; data bits and parity are checked on the sim board.
      if (line !== undefined) assert.match(line, /(^|\s)cstopb(\s|$)/);
      py.go();
      await py.next('8n1');
      const eight = stty();
      if (eight !== undefined) {
        assert.match(eight, /(^|\s)-cstopb(\s|$)/);
      } else {
        console.log('not root: termios of the pty not checked (stty cannot open a tty the bench holds exclusively)');
      }
      const t0 = performance.now();
      py.go();
      const up = pattern(2, 256 * 1024);
      await py.next('up');
      await atBoard.waitFor(up.length, 60_000);
      const upSeconds = (performance.now() - t0) / 1000;
      assert.ok(atBoard.bytes.equals(up), 'client → tty byte-identical');
      py.go();
      await py.next('down-ready');
      atBoard.session.write(pattern(3, 256 * 1024));
      const down = await py.next('down');
      assert.equal(down.ok, true, `tty → client byte-identical (got ${down.bytes} bytes)`);
      console.log(`RFC 2217 over a real tty: 256 KiB client → tty in ${upSeconds.toFixed(2)} s (${(256 / upSeconds).toFixed(0)} KiB/s), tty → client in ${down.seconds} s (${(256 / (down.seconds as number)).toFixed(0)} KiB/s); 1 Mbaud ≈ 98 KiB/s`);
      py.go();
      const t = await py.next('toggles');
      console.log(`DTR/RTS on the real-tty path: ${median(times.get('dtr') ?? [0]).toFixed(1)} ms at the share, pyserial sees ${JSON.stringify(t.dtr_ms)} ms`);
      py.go();
      await py.done();
    } finally {
      py.proc.kill();
      await atBoard.session.close();
      await share.stop();
      await c.close();
    }
  });
});
