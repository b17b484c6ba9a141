/** `remote-usb-server` as a user runs it (the bundled dist/server.js in a child process). */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { parsePeerAddress } from '../../server/net/iroh.js';
import { SERVER_JS } from '../helpers/daemon-process.js';

const dir = mkdtempSync(join(tmpdir(), 'remote-usb-cli-'));
const config = join(dir, 'server.toml');
writeFileSync(config, `name = "cli-bench"\nlisten = "0.0.0.0:47999"\nstate_dir = "${dir}/state"\n`);
after(() => rmSync(dir, { recursive: true, force: true }));

function cli(...args: string[]): { code: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, [SERVER_JS, ...args], { encoding: 'utf8', timeout: 20_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test('id is stable and ticket carries it with the configured port', () => {
  const id = cli('id', '-c', config);
  assert.equal(id.code, 0, id.err);
  assert.match(id.out.trim(), /^[0-9a-f]{64}$/);
  assert.equal(cli('id', '-c', config).out, id.out);
  const ticket = cli('ticket', '-c', config);
  assert.equal(ticket.code, 0, ticket.err);
  const addr = parsePeerAddress(ticket.out.trim());
  assert.equal(addr.id, id.out.trim());
  assert.ok(addr.addrs.every((a) => a.endsWith(':47999')), addr.addrs.join());
});

test('pair prints a one-time code and the ticket', () => {
  const r = cli('pair', '-c', config, '--minutes', '3');
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /Pairing code: [0-9A-Z]{5}-[0-9A-Z]{5} {3}\(single use, valid until/);
  assert.match(r.out, /Bench ticket: endpoint/);
  assert.equal(cli('pair', '-c', config, '--minutes', 'soon').code, 2);
});

test('pair --qr adds the ticket as a QR code (a square of half blocks, the same size on every row)', () => {
  const r = cli('pair', '--qr', '-c', config);
  assert.equal(r.code, 0, r.err);
  const ticket = /Bench ticket: (\S+)/.exec(r.out)![1];
  const qr = r.out.split('The ticket as a QR code:\n')[1].split('\n').filter((l) => l.length > 0);
  assert.ok(qr.length >= 15, `${qr.length} rows`);
  assert.ok(qr.every((l) => /^[█▀▄ ]+$/.test(l) && l.length === qr[0].length), 'only block characters, rectangular');
  // two modules per character row: as tall as wide
  assert.ok(Math.abs(qr.length * 2 - qr[0].length) <= 2, `${qr[0].length} wide, ${qr.length} rows`);
  assert.ok(ticket.length > 40);
  const bad = cli('clients', '--qr', '-c', config);
  assert.equal(bad.code, 2);
  assert.match(bad.err, /--qr goes with 'pair'/);
});

test('list shows simulated boards as a table and as JSON', () => {
  const table = cli('list', '--simulate', '-c', config);
  assert.equal(table.code, 0, table.err);
  assert.match(table.out, /sim-1 +1209:0001 +Simulated Serial Board +SIM0001 +full/);
  const json = JSON.parse(cli('list', '--simulate', '--json', '-c', config).out);
  assert.deepEqual(json.map((d: { id: string }) => d.id), ['sim-1', 'sim-2']);
});

test('$REMOTE_USB_SIM_BOARDS chooses the simulated boards; a bad value is a usage error naming it', () => {
  const run = (boards: string): ReturnType<typeof cli> => {
    const r = spawnSync(process.execPath, [SERVER_JS, 'list', '--simulate', '--json', '-c', config], { encoding: 'utf8', timeout: 20_000, env: { ...process.env, REMOTE_USB_SIM_BOARDS: boards } });
    return { code: r.status, out: r.stdout, err: r.stderr };
  };
  const ok = run('serial:1,loopback:3');
  assert.equal(ok.code, 0, ok.err);
  assert.deepEqual(JSON.parse(ok.out).map((d: { id: string; product: string }) => `${d.id} ${d.product}`), [
    'sim-1 Simulated Serial Board', 'sim-2 Simulated Loopback Board', 'sim-3 Simulated Loopback Board', 'sim-4 Simulated Loopback Board',
  ]);
  const bad = run('loopback:8,hid:1');
  assert.equal(bad.code, 2);
  assert.match(bad.err, /^remote-usb-server: REMOTE_USB_SIM_BOARDS: 'hid:1': unknown board kind 'hid' \(serial or loopback\)\n/);
});

test('real USB backend on a machine without USB: an empty list, not a crash', () => {
  const r = cli('list', '-c', config);
  assert.equal(r.code, 0, r.err);
});

test('clients, allow and revoke manage the allowlist', () => {
  assert.match(cli('clients', '-c', config).out, /no clients allowed yet/);
  const r = cli('revoke', 'nobody', '-c', config);
  assert.equal(r.code, 1);
  assert.match(r.err, /no client 'nobody'/);
  const id = 'c'.repeat(64);
  assert.equal(cli('allow', id, '--name', 'ci-runner', '-c', config).code, 0);
  assert.match(cli('clients', '-c', config).out, new RegExp(`${id}  ci-runner`));
  const bad = cli('allow', 'xyz', '-c', config);
  assert.equal(bad.code, 2);
  assert.match(bad.err, /'xyz' is not a client endpoint id/);
  assert.equal(cli('revoke', 'ci-runner', '-c', config).code, 0);
  assert.match(cli('clients', '-c', config).out, /no clients allowed yet/);
});

test('bad command lines and configs exit 2 with the problem named', () => {
  const unknown = cli('frobnicate');
  assert.equal(unknown.code, 2);
  assert.match(unknown.err, /unknown command 'frobnicate'/);
  assert.equal(cli('--no-such-flag').code, 2);
  assert.equal(cli('id', 'extra').code, 2);
  const bad = join(dir, 'bad.toml');
  writeFileSync(bad, '[relay]\nmode = "sometimes"\n');
  const r = cli('run', '-c', bad);
  assert.equal(r.code, 2);
  assert.equal(r.err.trim(), `remote-usb-server: ${bad}:2: relay.mode: 'sometimes' must be "default", "custom" or "disabled"`);
  const missing = cli('id', '-c', join(dir, 'missing.toml'));
  assert.equal(missing.code, 2);
  assert.match(missing.err, /missing\.toml: cannot read config \(ENOENT\)/);
});

test('--help and --version', () => {
  assert.match(cli('--help').out, /Usage: remote-usb-server \[command\]/);
  assert.match(cli('--version').out.trim(), /^\d+\.\d+\.\d+$/);
});
