/** SerialChannel against a fake tty: batching, write order, settings, vanish → waiting → reopen. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { EventEmitter } from 'node:events';
import type { SerialLine } from '../../server/protocol/messages.js';
import type { SerialBackend, SerialPortEvents, SerialPortHandle, SerialSignals } from '../../server/shared/serial/backend.js';
import { SerialChannel, SerialSettings } from '../../server/shared/serial/channel.js';
import { until } from '../helpers/bench-fixture.js';

class FakeTty extends EventEmitter<SerialPortEvents> implements SerialPortHandle {
  written: Buffer[] = [];
  signals: Required<SerialSignals>[] = [];
  bauds: number[] = [];
  closed = false;
  paused = false;
  constructor(readonly path: string, readonly line: SerialLine, private readonly writeDelayMs = 0, private readonly bannerOnDtr = false) { super(); }
  async write(data: Uint8Array): Promise<void> {
    if (this.writeDelayMs) await new Promise((r) => setTimeout(r, Math.random() * this.writeDelayMs));
    this.written.push(Buffer.from(data));
  }
  async setBaud(baud: number): Promise<void> { this.bauds.push(baud); }
  async setSignals(s: Required<SerialSignals>): Promise<void> {
    this.signals.push(s);
    if (this.bannerOnDtr && s.dtr) this.emit('data', Buffer.from('banner')); // a board greeting the DTR edge
  }
  pause(): void { this.paused = true; }
  resume(): void { this.paused = false; }
  async close(): Promise<void> { this.closed = true; }
}

class FakeBackend implements SerialBackend {
  present = new Set<string>(['/dev/ttyX']);
  opened: FakeTty[] = [];
  writeDelayMs = 0;
  bannerOnDtr = false;
  async open(path: string, line: SerialLine): Promise<SerialPortHandle> {
    if (!this.present.has(path)) throw new Error(`cannot open ${path}: no such tty`);
    const t = new FakeTty(path, line, this.writeDelayMs, this.bannerOnDtr);
    this.opened.push(t);
    return t;
  }
  exists(path: string): boolean { return this.present.has(path); }
  get last(): FakeTty { return this.opened[this.opened.length - 1]; }
}

const SETTINGS: SerialSettings = { baud: 115200, dataBits: 8, parity: 'none', stopBits: 1, dtr: true, rts: false };

function channel(backend: FakeBackend, options = {}): SerialChannel {
  return new SerialChannel(backend, () => (backend.exists('/dev/ttyX') ? { path: '/dev/ttyX' } : { missing: '/dev/ttyX is not there' }), { ...SETTINGS }, options);
}

test('open applies line settings and control lines; a missing tty is refused', async () => {
  const b = new FakeBackend();
  const c = channel(b);
  await c.open();
  assert.equal(c.state, 'open');
  assert.equal(c.path, '/dev/ttyX');
  assert.deepEqual(b.last.line, SETTINGS);
  assert.deepEqual(b.last.signals, [{ dtr: true, rts: false, brk: false }]);
  b.present.clear();
  await assert.rejects(channel(b).open(), /\/dev\/ttyX is not there/);
  await c.close();
});

test('reads are batched: many small chunks become few messages, big ones are cut at batchBytes', async () => {
  const b = new FakeBackend();
  const c = channel(b, { batchBytes: 1024, batchMs: 20 });
  const got: Buffer[] = [];
  c.on('data', (d) => got.push(d));
  await c.open();
  for (let i = 0; i < 100; i++) b.last.emit('data', Buffer.from([i]));
  assert.equal(got.length, 0);
  await until(() => got.length > 0, 1000, 'flush');
  assert.equal(got.length, 1);
  assert.equal(got[0].length, 100);
  got.length = 0;
  b.last.emit('data', Buffer.alloc(3000, 1));
  assert.deepEqual(got.map((g) => g.length), [1024, 1024, 952]);
  await c.close();
});

test('writes reach the tty in order even when each takes a random time; settings wait their turn', async () => {
  const b = new FakeBackend();
  b.writeDelayMs = 3;
  const c = channel(b);
  await c.open();
  for (let i = 0; i < 50; i++) assert.equal(c.write(Buffer.from([i])), true);
  await c.set({ baud: 9600 });
  assert.deepEqual(Buffer.concat(b.last.written), Buffer.from([...Array(50).keys()]));
  assert.deepEqual(b.last.bauds, [9600]);
  await c.close();
});

test('a full write queue refuses more instead of growing', async () => {
  const b = new FakeBackend();
  b.writeDelayMs = 20;
  const c = channel(b, { maxQueuedWriteBytes: 100 });
  await c.open();
  assert.equal(c.write(Buffer.alloc(60)), true);
  assert.equal(c.write(Buffer.alloc(60)), false);
  await c.close();
});

test('data bits / parity / stop bits reopen the tty; signals change in place', async () => {
  const b = new FakeBackend();
  const c = channel(b);
  await c.open();
  const first = b.last;
  await c.set({ dtr: false, brk: true });
  assert.deepEqual(first.signals.at(-1), { dtr: false, rts: false, brk: true });
  await c.set({ parity: 'odd', dataBits: 7 });
  assert.equal(first.closed, true);
  assert.notEqual(b.last, first);
  assert.deepEqual(b.last.line, { ...SETTINGS, dtr: false, parity: 'odd', dataBits: 7 });
  assert.deepEqual(b.last.signals, [{ dtr: false, rts: false, brk: false }]);
  await c.close();
});

test('vanish → waiting (writes dropped) → back → open with the same settings, then the data', async () => {
  const b = new FakeBackend();
  const c = channel(b);
  const states: string[] = [];
  const got: string[] = [];
  c.on('state', (s, d) => states.push(`${s}: ${d}`));
  c.on('data', (d) => got.push(`${c.state}:${d.toString()}`));
  await c.open();
  await c.set({ baud: 57600 });
  b.present.delete('/dev/ttyX');
  b.last.emit('vanished', 'EIO');
  assert.deepEqual(states, ['waiting: /dev/ttyX went away (EIO); waiting for it to come back']);
  assert.equal(c.write(Buffer.from('x')), false);
  c.check(); // still gone
  assert.equal(c.state, 'waiting');
  await c.set({ rts: true }); // kept for the reopen
  b.present.add('/dev/ttyX');
  b.bannerOnDtr = true;
  c.check();
  await until(() => c.state === 'open', 1000, 'reopen');
  assert.equal(states[1], 'open: reopened /dev/ttyX');
  assert.equal(b.last.line.baud, 57600);
  assert.deepEqual(b.last.signals, [{ dtr: true, rts: true, brk: false }]);
  await until(() => got.length > 0, 1000, 'data');
  assert.deepEqual(got, ['open:banner']);
  await c.close('bye');
  assert.equal(states[2], 'closed: bye');
});

test('a tty that disappears without a read error is noticed by check()', async () => {
  const b = new FakeBackend();
  const c = channel(b);
  await c.open();
  b.present.clear();
  c.check();
  assert.equal(c.state, 'waiting');
  await c.close();
});

test('a final resolution closes the channel', async () => {
  const b = new FakeBackend();
  let final = false;
  const c = new SerialChannel(b, () => (final ? { missing: 'not shared any more', final: true } : { path: '/dev/ttyX' }), { ...SETTINGS });
  const states: string[] = [];
  c.on('state', (s, d) => states.push(`${s}: ${d}`));
  await c.open();
  b.last.emit('vanished', 'EIO');
  final = true;
  c.check();
  await until(() => c.state === 'closed', 1000, 'closed');
  assert.deepEqual(states.slice(1), ['closed: not shared any more']);
});
