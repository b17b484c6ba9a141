/**
 * The real `serialport` path, with a pseudo-terminal pair from socat standing in for a UART: the bench
 * config shares end A, the test plays the board on end B (through openLocalSerial, the client core's
 * local serial monitor). Killing socat makes A vanish like an unplugged adapter; restarting it brings it
 * back. Needs socat (apt-get install socat); skipped with that message without it.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BenchError } from '../../extension/core/bench-client.js';
import { openLocalSerial } from '../../extension/core/local-serial.js';
import { seededBytes } from '../../server/usb/patterns.js';
import { BenchFixture, until } from '../helpers/bench-fixture.js';
import { Collected } from '../helpers/serial-collector.js';

const hasSocat = spawnSync('socat', ['-V'], { stdio: 'ignore' }).status === 0;
const skip = hasSocat ? false : 'socat is not installed (apt-get install socat): the real-tty serial tests need a pty pair';

describe('serial over a real tty (pty pair from socat)', { skip }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'remote-usb-pty-'));
  const A = join(dir, 'A');
  const B = join(dir, 'B');
  const bench = new BenchFixture();
  let socat: ChildProcess | undefined;

  async function startSocat(): Promise<void> {
    socat = spawn('socat', ['-d', '-d', `pty,raw,echo=0,link=${A}`, `pty,raw,echo=0,link=${B}`], { stdio: 'ignore' });
    await until(() => existsSync(A) && existsSync(B), 5000, 'socat to make the pty pair');
  }
  async function stopSocat(): Promise<void> {
    const s = socat;
    socat = undefined;
    if (!s || s.exitCode !== null) return;
    const gone = new Promise((r) => s.once('exit', r));
    s.kill('SIGTERM');
    await gone;
    await until(() => !existsSync(A), 5000, 'the pty links to go');
  }

  before(async () => {
    if (!hasSocat) return;
    await startSocat();
    await bench.start({ extraToml: `[serial]\nports = ["${A}"]\n` });
  });
  after(async () => {
    if (!hasSocat) return;
    await bench.stop();
    await stopSocat();
    rmSync(dir, { recursive: true, force: true });
  });

  test('the shared tty is announced, opened, and carries data both ways, byte-identical', async () => {
    const c = await bench.connect();
    assert.deepEqual(c.ttys, [A]);
    const s = await c.openSerial(A, { baud: 115200, dataBits: 8, parity: 'none', stopBits: 1 });
    assert.equal(s.path, A);
    const board = await openLocalSerial(B);
    const atBoard = new Collected(board);
    const atClient = new Collected(s);
    s.write(Buffer.from('AT\r\n'));
    await atBoard.waitFor('AT\r\n');
    board.write(Buffer.from('OK\r\n'));
    await atClient.waitFor('OK\r\n');
    atClient.clear();
    atBoard.clear();
    const down = seededBytes(200 * 1024, 11);
    const up = seededBytes(200 * 1024, 12);
    board.write(down);
    for (let i = 0; i < up.length; i += 4096) s.write(up.subarray(i, i + 4096));
    await atClient.waitFor(down.length, 20_000);
    await atBoard.waitFor(up.length, 20_000);
    assert.ok(atClient.bytes.equals(down), 'bench → client byte-identical');
    assert.ok(atBoard.bytes.equals(up), 'client → bench tty byte-identical');
    await board.close();
    await s.close();
    await c.close();
  });

  test('settings on a real tty: baud in place, 7E1 reopens, control lines (a pty has none) do not fail', async () => {
    const c = await bench.connect();
    const s = await c.openSerial(A);
    await s.set({ baud: 9600 });
    await s.set({ dataBits: 7, parity: 'even' });
    await s.set({ dtr: false, rts: false, brk: false });
    assert.equal(s.state, 'open');
    const board = await openLocalSerial(B);
    const got = new Collected(board);
    s.write(Buffer.from('after 7E1\n'));
    await got.waitFor('after 7E1\n');
    await board.close();
    await s.close();
    await c.close();
  });

  test('the tty is locked: a second opener, on the bench or beside it, is refused', async () => {
    const alice = await bench.connect({ clientName: 'alice' });
    const bob = await bench.connect({ clientName: 'bob' });
    const s = await alice.openSerial(A);
    await assert.rejects(bob.openSerial(A), (e: BenchError) => e.code === 'busy' && new RegExp(`serial port ${A} is in use by alice`).test(e.message));
    await assert.rejects(openLocalSerial(A), /another program has it open \(locked\)/);
    await s.close();
    await (await bob.openSerial(A)).close();
    await alice.close();
    await bob.close();
  });

  test('the tty vanishes → waiting on both ends; it comes back → open again, data flows', async () => {
    const c = await bench.connect();
    const s = await c.openSerial(A);
    const atClient = new Collected(s);
    const board = await openLocalSerial(B, undefined, { pollMs: 100 });
    const atBoard = new Collected(board);
    await stopSocat();
    assert.match(await atClient.waitForState('waiting', 5000), new RegExp(`waiting: ${A} went away`));
    await atBoard.waitForState('waiting', 5000);
    await startSocat();
    await atClient.waitForState('open', 10_000);
    await atBoard.waitForState('open', 10_000);
    s.write(Buffer.from('hello again\n'));
    await atBoard.waitFor('hello again\n');
    board.write(Buffer.from('welcome back\n'));
    await atClient.waitFor('welcome back\n');
    await board.close();
    await s.close();
    await c.close();
  });
});
