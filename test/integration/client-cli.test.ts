/** `remote-usb` (client CLI) against `remote-usb-server` — both as real processes, over real Iroh. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { DaemonProcess, freeUdpPort, repoRoot, SERVER_JS } from '../helpers/daemon-process.js';

const CLIENT_JS = join(repoRoot(), 'dist', 'remote-usb.js');
const dir = mkdtempSync(join(tmpdir(), 'remote-usb-client-cli-'));
let daemon: DaemonProcess;

function run(js: string, ...args: string[]): { code: number | null; out: string; err: string } {
  return runWithInput(js, undefined, ...args);
}

function runWithInput(js: string, input: string | undefined, ...args: string[]): { code: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, [js, ...args], { encoding: 'utf8', timeout: 30_000, input });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

before(async () => {
  daemon = new DaemonProcess(dir, await freeUdpPort());
  await daemon.start();
});
after(async () => {
  await daemon.stop();
  rmSync(dir, { recursive: true, force: true });
});

test('pair with a code from the bench, then list its devices', () => {
  const pair = run(SERVER_JS, 'pair', '-c', daemon.configFile);
  const code = /Pairing code: (\S+)/.exec(pair.out)![1];
  const ticket = /Bench ticket: (\S+)/.exec(pair.out)![1];
  const keyDir = join(dir, 'client');
  const common = ['--bench', ticket, '--relay', 'disabled', '--key-dir', keyDir];

  const refused = run(CLIENT_JS, 'list', ...common);
  assert.equal(refused.code, 1);
  assert.match(refused.err, /not allowed on bench 'proc-bench'/);

  const paired = run(CLIENT_JS, 'pair', '--code', code, '--name', 'cli-user', ...common);
  assert.equal(paired.code, 0, paired.err);
  assert.match(paired.out, /paired with bench 'proc-bench'/);

  const list = run(CLIENT_JS, 'list', ...common);
  assert.equal(list.code, 0, list.err);
  assert.match(list.out, /sim-1 +1209:0001 +Simulated Serial Board/);
  const json = JSON.parse(run(CLIENT_JS, 'list', '--json', ...common).out);
  assert.equal(json.length, 2);

  // serial: stdin → the bench's simulated serial board, its banner and echo → stdout
  const serial = runWithInput(CLIENT_JS, 'hello over serial\r\n', 'serial', ticket, 'sim-1', '--baud', '57600', '--relay', 'disabled', '--key-dir', keyDir);
  assert.equal(serial.code, 0, serial.err);
  assert.match(serial.err, /connected to sim-1 \(sim:sim-1\) on bench 'proc-bench' at 57600 8N1; end of input quits/);
  assert.match(serial.out, /Remote USB simulated serial board SIM0001/);
  assert.match(serial.out, /hello over serial\r\n/);
  const noPort = run(CLIENT_JS, 'serial', 'sim-2', ...common);
  assert.equal(noPort.code, 1);
  assert.match(noPort.err, /has no serial port \(tty\) on the bench/);

  const again = run(CLIENT_JS, 'pair', '--code', code, ...common.slice(0, -1), join(dir, 'other-client'));
  assert.equal(again.code, 1);
  assert.match(again.err, /pairing code unknown or already used/);
});

test('bad client command lines exit 2', () => {
  assert.equal(run(CLIENT_JS, 'frob').code, 2);
  const r = run(CLIENT_JS, 'list', '--bench', 'nonsense');
  assert.equal(r.code, 2);
  assert.match(r.err, /'nonsense' is neither a bench ticket nor an endpoint id/);
  assert.equal(run(CLIENT_JS, 'serial').code, 2);
  assert.match(run(CLIENT_JS, 'serial', 'sim-1', '--baud', 'fast', '--bench', 'x').err, /--baud must be a whole number/);
});
