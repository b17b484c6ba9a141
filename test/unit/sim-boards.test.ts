/** `--simulate`'s board list ($REMOTE_USB_SIM_BOARDS) and its hot-plug toggle (SIGUSR2). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DEFAULT_SIM_BOARDS, makeSimBoard, parseSimBoards, SimulatedBackend } from '../../server/usb/simulated.js';

test('a board list is kind:count entries, numbered sim-1, sim-2, … in order', () => {
  assert.deepEqual(parseSimBoards(DEFAULT_SIM_BOARDS), [{ kind: 'serial', n: 1 }, { kind: 'loopback', n: 2 }]);
  const specs = parseSimBoards('serial:2, loopback:8');
  assert.equal(specs.length, 10);
  assert.deepEqual(specs.slice(0, 3), [{ kind: 'serial', n: 1 }, { kind: 'serial', n: 2 }, { kind: 'loopback', n: 3 }]);
  assert.deepEqual(specs.at(-1), { kind: 'loopback', n: 10 });
  const boards = specs.map(makeSimBoard);
  assert.deepEqual(boards.map((b) => b.info().id), specs.map((s) => `sim-${s.n}`));
  assert.equal(boards[2].info().product, 'Simulated Loopback Board');
  assert.equal(boards[2].info().serial, 'LOOP0003');
});

test('a bad board list is an error naming the bad entry', () => {
  const cases: [string, RegExp][] = [
    ['', /^no boards given; expected e\.g\. 'serial:1,loopback:1'$/],
    ['loopback', /^'loopback' is not <kind>:<count> \(e\.g\. 'loopback:8'\)$/],
    ['loopback:8,hid:1', /^'hid:1': unknown board kind 'hid' \(serial or loopback\)$/],
    ['loopback:0', /^'loopback:0': the count must be at least 1$/],
    ['loopback:-1', /^'loopback:-1' is not <kind>:<count>/],
    ['serial:1,loopback:64', /^'serial:1,loopback:64' asks for more than 64 boards$/],
  ];
  for (const [text, message] of cases) assert.throws(() => parseSimBoards(text), { message }, text);
});

test('togglePlug unplugs a board, then plugs a fresh one back in, with events', async () => {
  const [spec] = parseSimBoards('loopback:1');
  const backend = new SimulatedBackend([makeSimBoard(spec)]);
  const events: string[] = [];
  backend.on('attach', (d) => events.push(`attach ${d.id}`));
  backend.on('detach', (id) => events.push(`detach ${id}`));
  assert.equal(backend.togglePlug(spec), 'unplugged');
  assert.deepEqual(await backend.list(), []);
  assert.equal(backend.togglePlug(spec), 'plugged');
  assert.deepEqual((await backend.list()).map((d) => d.id), ['sim-1']);
  assert.deepEqual(events, ['detach sim-1', 'attach sim-1']);
  await backend.close();
});

test('serial board echo loses nothing when OUT transfers larger than the free FIFO wait behind a pending IN', async () => {
  // An IN that made room woke the waiting OUT, whose print woke the same IN again while its first ready()
  // was still running: the inner call took 4 KiB that no transfer returned (SimBoard.wake is not re-entrant now).
  const { simSerialBoard } = await import('../../server/usb/simulated.js');
  const { SERIAL_EP_IN, SERIAL_EP_OUT } = await import('../../server/usb/sim-serial-board.js');
  const board = simSerialBoard(1);
  const signal = new AbortController().signal;
  const sent = Buffer.from(Array.from({ length: 256 * 1024 }, (_, i) => (i * 31 + (i >> 10)) & 0xff));
  const got: Buffer[] = [];
  let received = 0;
  const reading = (async () => {
    while (received < sent.length) {
      const r = await board.transfer({ type: 'bulk', ep: SERIAL_EP_IN, length: 4096 }, signal);
      got.push(Buffer.from(r.data));
      received += r.data.length;
    }
  })();
  for (let i = 0; i < sent.length; i += 16384) {
    const r = await board.transfer({ type: 'bulk', ep: SERIAL_EP_OUT, data: sent.subarray(i, i + 16384) }, signal);
    assert.equal(r.status, 0);
  }
  await reading;
  assert.ok(Buffer.concat(got).equals(sent), 'echo byte-identical');
});
