/**
 * `remote-usb-server top` against a real daemon: its admin socket (a unix socket in the state dir, 0600)
 * serves snapshots; `top --json` (a real process) shows the connected client, its claim with URB counts
 * and rate, its serial session and the pairing code pending. The text view escapes names from peers.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { TopSnapshot } from '../../server/admin-socket.js';
import { renderTop } from '../../server/top.js';
import { encodeSetup } from '../../server/protocol/urb.js';
import { BenchFixture } from '../helpers/bench-fixture.js';
import { SERVER_JS } from '../helpers/daemon-process.js';

function run(...args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [SERVER_JS, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    p.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    const t = setTimeout(() => p.kill(), 20_000);
    p.once('exit', (code) => { clearTimeout(t); resolve({ code, out, err }); });
  });
}

describe('remote-usb-server top', () => {
  const bench = new BenchFixture();
  let configFile: string;
  before(async () => {
    await bench.start();
    configFile = join(bench.stateDir, 'top.toml');
    writeFileSync(configFile, `state_dir = "${bench.stateDir}"\n`);
  });
  after(() => bench.stop());

  test('the admin socket is a unix socket only the daemon user can open', () => {
    const st = statSync(join(bench.stateDir, 'admin.sock'));
    assert.ok(st.isSocket());
    assert.equal(st.mode & 0o777, 0o600);
  });

  test('top --json: the client, its claim with URB counts and rate, its serial session, a pending pairing code', async () => {
    const c = await bench.connect({ clientName: 'alice' });
    const dev = await c.claim('sim-2');
    for (let i = 0; i < 20; i++) {
      const r = await dev.start({ type: 'control', ep: 0, setup: encodeSetup({ bmRequestType: 0x80, bRequest: 6, wValue: 0x0100, wIndex: 0, wLength: 18 }), length: 18 }).done;
      assert.equal(r.actual, 18);
    }
    const s = await c.openSerial('sim-1');
    bench.daemon.trust.createPairingCode(10);
    // keep the device busy while top samples its rate
    let busy = true;
    const load = (async () => {
      while (busy) await dev.start({ type: 'control', ep: 0, setup: encodeSetup({ bmRequestType: 0x80, bRequest: 6, wValue: 0x0100, wIndex: 0, wLength: 18 }), length: 18 }).done;
    })();
    const r = await run('top', '--json', '-c', configFile);
    busy = false;
    await load;
    assert.equal(r.code, 0, r.err);
    const snap = JSON.parse(r.out) as TopSnapshot;
    assert.equal(snap.bench, 'test-bench');
    assert.equal(snap.id, bench.daemon.id);
    const alice = snap.clients.find((x) => x.name === 'alice');
    assert.ok(alice, `alice among ${JSON.stringify(snap.clients)}`);
    assert.deepEqual(alice.claims, ['sim-2']);
    assert.deepEqual(alice.serial.map((x) => [x.path, x.state]), [['sim:sim-1', 'open']]);
    // the connection as the bench's Iroh sees it: loopback, so UDP straight to the client, and QUIC's round trip
    assert.equal(alice.path, 'direct');
    assert.ok(typeof alice.rttMs === 'number' && alice.rttMs >= 0 && alice.rttMs < 1000, `a round trip (${alice.rttMs})`);
    // and as the client sees it
    await c.ping();
    assert.equal(c.path, 'direct');
    const d = snap.devices.find((x) => x.id === 'sim-2')!;
    assert.equal(d.claimedBy, 'alice');
    assert.ok(d.urbs >= 20, `URBs counted (${d.urbs})`);
    assert.ok(d.bytes >= 20 * 18, `bytes counted (${d.bytes})`);
    assert.ok(d.urbsPerS !== null && d.urbsPerS > 0, `a rate over the last second (${d.urbsPerS})`);
    assert.equal(snap.devices.find((x) => x.id === 'sim-1')!.claimedBy, null);
    assert.equal(snap.pairing.pending, 1);
    console.log(`top --json: alice ${alice.path}, rtt ${alice.rttMs} ms; sim-2 at ${d.urbsPerS} URB/s, ${d.mbPerS} MB/s (control GET_DESCRIPTOR one at a time)`);
    const text = renderTop(snap);
    assert.match(text, /alice .* direct +[\d.]+ ms +sim-2, serial sim:sim-1 \(open\)/);
    assert.match(text, /PAIRING CODES PENDING: 1/);
    await s.close();
    await dev.release();
    await c.close();
  });

  test('the text view: live frames on a pipe; names from peers are escaped', async () => {
    const hostile: TopSnapshot = {
      v: 1, bench: 'lab\x1b]52;c;ZXZpbA==\x07', id: 'f'.repeat(64), time: new Date().toISOString(), uptimeS: 3725,
      clients: [{ name: 'mallory\x1b[2J\u202e', id: 'a'.repeat(64), path: 'unknown', rttMs: 1.2, claims: ['1-1'], serial: [], backlogBytes: 0 }],
      devices: [{ id: '1-1', label: 'Evil\r\nDevice', shared: true, claimedBy: 'mallory\x1b[2J', tty: null, urbs: 5, bytes: 5000, inFlight: 1, urbsPerS: 5, mbPerS: 0.005 }],
      pairing: { pending: 0, nextExpires: null },
    };
    const text = renderTop(hostile);
    // eslint-disable-next-line no-control-regex -- looking for control characters is the point
    assert.ok(!/[\x00-\x09\x0b-\x1f\x7f\u202e]/.test(text), `no control characters reach the terminal: ${JSON.stringify(text)}`);
    assert.match(text, /mallory\\x1b\[2J\\u202e/);
    assert.match(text, /up 1 h 2 min/);
    // the live view on a pipe: a frame a second until Ctrl-C
    const p = spawn(process.execPath, [SERVER_JS, 'top', '-c', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    const exited = new Promise<number | null>((r) => p.once('exit', r));
    const t0 = Date.now();
    while ((out.match(/^CLIENTS/gm) ?? []).length < 2 && Date.now() - t0 < 15_000) await new Promise((r) => setTimeout(r, 50));
    p.kill('SIGINT');
    assert.equal(await exited, 0);
    assert.ok((out.match(/^CLIENTS/gm) ?? []).length >= 2, `two frames: ${out}`);
    assert.match(out, /^bench 'test-bench'/m);
  });

  test('no daemon: top says where it looked', async () => {
    const dir = join(bench.stateDir, 'nowhere');
    const cfg = join(bench.stateDir, 'nowhere.toml');
    writeFileSync(cfg, `state_dir = "${dir}"\n`);
    const r = await run('top', '--json', '-c', cfg);
    assert.equal(r.code, 1);
    assert.match(r.err, /no daemon is serving .*nowhere\/admin\.sock: is remote-usb-server running with state dir/);
  });
});
