/**
 * The two halves of a resumable session without a network: the bench's ClaimSet (answers kept until
 * acknowledged, replayed in order, bounded) and the client's UrbLanes (which URB messages to send again).
 * The last test runs both against a link that drops at every possible point and checks that every URB
 * runs exactly once and every answer arrives exactly once — what the ids make checkable. The real thing,
 * over real Iroh and real network drops, is test/integration/network-drop.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ClaimSet, MAX_UNACKED_BYTES } from '../../server/claim-set.js';
import { UrbLanes } from '../../extension/core/urb-lanes.js';
import { CloseCode, peerCloseCode } from '../../server/net/iroh.js';
import type { BenchMessage, LaneCounts, Message } from '../../server/protocol/messages.js';
import { parseMessage } from '../../server/protocol/messages.js';

type Answer = Extract<BenchMessage, { t: 'complete' | 'error' }>;
type Urb = Extract<Message, { t: 'submit' | 'cancel' }>;

const complete = (id: number, bytes = 0): Answer => ({ t: 'complete', dev: 'd', id, status: 0, actual: bytes, data: bytes ? new Uint8Array(bytes) : undefined });
const submit = (id: number): Urb => ({ t: 'submit', dev: 'd', id, ep: 0x81, type: 'bulk', length: 64 });

describe('ClaimSet (bench)', () => {
  test('keeps answers until acknowledged and replays only the rest, per lane, in order', () => {
    const set = new ClaimSet();
    const got: [number, number][] = [];
    set.attach((lane, m) => got.push([lane, (m as { id: number }).id]));
    for (let id = 1; id <= 5; id++) set.answer(id % 2 === 0 ? 1 : 0, complete(id));
    assert.equal(got.length, 5);
    set.ack([2, 1]); // lane 0 answers 1, 3 and lane 1 answer 2 arrived
    assert.deepEqual(set.unackedState.answers, 2);
    set.detach();
    set.answer(1, complete(6)); // while no connection carries the set: kept only
    assert.equal(got.length, 5);
    const replayed: [number, number][] = [];
    set.attach((lane, m) => replayed.push([lane, (m as { id: number }).id]), [2, 1]);
    assert.deepEqual(replayed, [[0, 5], [1, 4], [1, 6]]);
  });

  test('a replay after an older ack skips what the newer ack says arrived', () => {
    const set = new ClaimSet();
    set.attach(() => {});
    for (let id = 1; id <= 4; id++) set.answer(0, complete(id));
    set.ack([1, 0]);
    const replayed: number[] = [];
    set.attach((_lane, m) => replayed.push((m as { id: number }).id), [3, 0]);
    assert.deepEqual(replayed, [4]);
  });

  test('stops being resumable rather than keep more than MAX_UNACKED_BYTES', () => {
    const set = new ClaimSet();
    set.attach(() => {});
    const chunk = 1024 * 1024;
    for (let id = 1; id * (chunk + 64) <= MAX_UNACKED_BYTES; id++) set.answer(1, complete(id, chunk)); // 64: per-answer overhead
    assert.equal(set.resumable, true);
    set.answer(1, complete(999, chunk));
    assert.equal(set.resumable, false);
    assert.deepEqual(set.unackedState, { answers: 0, bytes: 0 });
  });

  test('tokens are unguessable and differ per session', () => {
    const a = new ClaimSet().token;
    const b = new ClaimSet().token;
    assert.match(a, /^[0-9a-f]{32}$/);
    assert.notEqual(a, b);
  });
});

describe('UrbLanes (client)', () => {
  test('sends again exactly what the bench did not get, then what was made offline, renumbered', () => {
    const lanes = new UrbLanes();
    for (let id = 1; id <= 4; id++) lanes.record(1, submit(id), true);
    lanes.record(1, submit(5), false); // offline
    lanes.record(0, { t: 'cancel', dev: 'd', id: 2 }, false);
    const pending = new Set([2, 3, 4, 5]); // 1 was answered
    const again = lanes.resend([0, 2], (_dev, id) => pending.has(id));
    assert.deepEqual(again.map((x) => [x.lane, x.m.t, x.m.id]), [[0, 'cancel', 2], [1, 'submit', 3], [1, 'submit', 4], [1, 'submit', 5]]);
    // a second drop right after: the bench got 1 more on lane 1 (seq 3, URB 3) this time
    const again2 = lanes.resend([1, 3], (_dev, id) => pending.has(id));
    assert.deepEqual(again2.map((x) => x.m.id), [4, 5]);
  });

  test('prune keeps only URBs in flight; reset forgets the session', () => {
    const lanes = new UrbLanes();
    for (let id = 1; id <= 100; id++) lanes.record(1, submit(id), true);
    lanes.prune((_dev, id) => id > 90);
    assert.deepEqual(lanes.resend([0, 0], () => true).map((x) => x.m.id), [91, 92, 93, 94, 95, 96, 97, 98, 99, 100]);
    lanes.reset('t2');
    assert.deepEqual([lanes.token, lanes.received, lanes.resend([0, 0], () => true)], ['t2', [0, 0], []]);
  });
});

describe('both halves across a link that drops anywhere', () => {
  /**
   * Runs `n` URBs on lane 1 through a link that loses everything in flight at `cut` (messages delivered
   * so far in each direction), then resumes; every URB must run once and be answered once.
   */
  function scenario(n: number, cutAfterSubmits: number, cutAfterAnswers: number): void {
    const bench = new ClaimSet();
    const client = new UrbLanes();
    const runs = new Map<number, number>();
    const answers = new Map<number, number>();
    const pending = new Set<number>();
    let linkUp = true;
    let submitsDelivered = 0;
    let answersDelivered = 0;
    const toClient: Answer[] = [];
    const deliverToBench = (m: Urb): void => {
      if (!linkUp) return;
      if (++submitsDelivered > cutAfterSubmits) { linkUp = false; return; }
      bench.received[1]++;
      runs.set(m.id, (runs.get(m.id) ?? 0) + 1);
      bench.answer(1, complete(m.id)); // the device answers at once
    };
    const onAnswer = (m: Answer): void => {
      if (!linkUp) return;
      if (++answersDelivered > cutAfterAnswers) { linkUp = false; return; }
      toClient.push(m);
    };
    bench.attach((_lane, m) => onAnswer(m));
    for (let id = 1; id <= n; id++) {
      pending.add(id);
      client.record(1, submit(id), linkUp);
      deliverToBench(submit(id));
    }
    const take = (): void => {
      for (const m of toClient.splice(0)) {
        client.received[1]++;
        answers.set(m.id!, (answers.get(m.id!) ?? 0) + 1);
        pending.delete(m.id!);
      }
    };
    take();
    // the drop: a new connection resumes
    bench.detach();
    linkUp = true;
    submitsDelivered = answersDelivered = -Infinity;
    const acked: LaneCounts = [...client.received];
    const received: LaneCounts = [...bench.received];
    bench.attach((_lane, m) => toClient.push(m), acked);
    for (const { m } of client.resend(received, (_dev, id) => pending.has(id))) deliverToBench(m);
    take();
    for (let id = 1; id <= n; id++) {
      assert.equal(runs.get(id), 1, `URB ${id} ran ${runs.get(id) ?? 0} times (cut ${cutAfterSubmits}/${cutAfterAnswers})`);
      assert.equal(answers.get(id), 1, `URB ${id} answered ${answers.get(id) ?? 0} times (cut ${cutAfterSubmits}/${cutAfterAnswers})`);
    }
  }

  test('every URB runs once and is answered once, wherever the link drops', () => {
    const n = 6;
    for (let s = 0; s <= n; s++) for (let a = 0; a <= s; a++) scenario(n, s, a);
  });
});

describe('close reasons', () => {
  test('peerCloseCode reads the code a peer closed with, and nothing from other ends', () => {
    assert.equal(peerCloseCode('closed by peer: no answer: resuming on a new connection (code 5)'), CloseCode.abandoned);
    assert.equal(peerCloseCode('closed by peer: 0'), CloseCode.normal);
    assert.equal(peerCloseCode('timed out'), undefined);
    assert.equal(peerCloseCode('closed'), undefined);
    assert.equal(peerCloseCode('reset by peer'), undefined);
  });
});

describe('resume messages from a hostile peer', () => {
  test('ack and a hello resume are checked field by field', () => {
    assert.throws(() => parseMessage({ t: 'ack', lanes: [-1, 0] }), /field 'lanes' of 'ack' must be two counts/);
    assert.throws(() => parseMessage({ t: 'ack', lanes: [1, 2, 3] }), /field 'lanes' of 'ack' must be two counts/);
    assert.throws(() => parseMessage({ t: 'hello', v: 2, caps: [], name: 'x', resume: { token: 'a'.repeat(65), acked: [0, 0] } }), /field 'token' of 'hello.resume' must be a string of at most 64/);
    assert.throws(() => parseMessage({ t: 'hello', v: 2, caps: [], name: 'x', resume: { token: 't', acked: [0] } }), /field 'acked' of 'hello.resume' must be two counts/);
    assert.throws(() => parseMessage({ t: 'submit', dev: 'd', id: 1, ep: 1, type: 'bulk', length: 0, flags: -1 }), /field 'flags' of 'submit'/);
    assert.doesNotThrow(() => parseMessage({ t: 'ack', lanes: [0, 7] }));
  });
});
