/**
 * Both Iroh bindings through the transport interface (server/net/iroh.ts), on real endpoints over
 * 127.0.0.1 with no relay: bulk both ways, many streams and connections, backpressure, reset and close
 * mid-transfer, argument checks, repeated cycles without leaks, and the two bindings talking to each
 * other (raw streams, and a daemon on one with a client on the other through the whole protocol).
 * No timing assertions: timers below only bound how long a stuck test waits.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { BindingName, CloseCode, defaultBindingName, endpointIdOf, generateSecretKey, IrohConnection, IrohEndpoint, parsePeerAddress, ticketFor } from '../../server/net/iroh.js';
import { nativePath } from '../../server/net/native-binding.js';
import type * as N from '../../server/net/native/index.js';
import type { ByteStream } from '../../server/protocol/stream.js';
import { LOOP_EP_IN, LOOP_EP_OUT } from '../../server/usb/sim-loopback-board.js';
import { seededBytes } from '../../server/usb/patterns.js';
import { BenchFixture } from '../helpers/bench-fixture.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const MiB = 1 << 20;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const fds = () => readdirSync('/proc/self/fd').length;
// Without cargo (darwin, or no Rust installed) our binding is not built: its tests skip, @number0/iroh's run.
const noNative = !nativePath() && 'our binding is not built here (no cargo): @number0/iroh only';
const bindings: BindingName[] = noNative ? ['number0'] : ['native', 'number0'];

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout;
  return Promise.race([p, new Promise<T>((_, reject) => { t = setTimeout(() => reject(new Error(`${what}: still waiting after ${ms} ms`)), ms); })])
    .finally(() => clearTimeout(t));
}

async function writeAll(s: ByteStream, data: Buffer, piece = 256 * 1024): Promise<void> {
  for (let off = 0; off < data.length; off += piece) await s.write(data.subarray(off, off + piece));
  await s.finish();
}

async function readAll(s: ByteStream): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (let b = await s.read(); b !== null; b = await s.read()) parts.push(b);
  return Buffer.concat(parts);
}

interface Pair { server: IrohEndpoint; client: IrohEndpoint; s: IrohConnection; c: IrohConnection }

async function bindServer(binding: BindingName): Promise<IrohEndpoint> {
  return IrohEndpoint.bind({ secretKey: generateSecretKey(), relay: { mode: 'disabled' }, bindAddr: '127.0.0.1:0', accept: true, binding });
}

async function pair(serverBinding: BindingName, clientBinding: BindingName): Promise<Pair> {
  const server = await bindServer(serverBinding);
  const client = await IrohEndpoint.bind({ secretKey: generateSecretKey(), relay: { mode: 'disabled' }, binding: clientBinding });
  const accepted = server.accept();
  const c = await client.connect(server.address());
  const s = (await accepted)!;
  return { server, client, s, c };
}

async function unpair(p: Pair): Promise<void> {
  await p.client.close();
  await p.server.close();
}

/** Both ends write `n` bytes on one stream at once and read the other's: returns what each read. */
async function bothWays(p: Pair, n: number): Promise<void> {
  const up = randomBytes(n), down = randomBytes(n);
  const cs = await p.c.openStream();
  await cs.write(up.subarray(0, 1)); // a stream exists for the peer once something is sent on it
  const ss = (await p.s.acceptStream())!;
  const [atServer, atClient] = await within(Promise.all([
    readAll(ss), readAll(cs), writeAll(cs, up.subarray(1)), writeAll(ss, down),
  ]), 120_000, 'both-way transfer');
  assert.equal(atServer.length, n);
  assert.equal(sha(atServer), sha(up));
  assert.equal(atClient.length, n);
  assert.equal(sha(atClient), sha(down));
}

test('the default binding is ours when it is built (REMOTE_USB_IROH may force one)', () => {
  const want = process.env.REMOTE_USB_IROH ?? (nativePath() ? 'native' : 'number0');
  assert.equal(defaultBindingName(), want);
});

test('ids and tickets are the same from both bindings', { skip: noNative }, async () => {
  const key = generateSecretKey();
  const id = endpointIdOf(key);
  const server = await bindServer('native');
  const other = await bindServer('number0');
  try {
    assert.equal(server.id.length, 64);
    for (const ep of [server, other]) {
      const t = ticketFor(ep.address());
      assert.deepEqual(parsePeerAddress(t), ep.address());
    }
    assert.deepEqual(parsePeerAddress(`${id}@127.0.0.1:5,[::1]:6`), { id, addrs: ['127.0.0.1:5', '[::1]:6'] });
  } finally {
    await server.close();
    await other.close();
  }
});

for (const binding of bindings) {
  describe(`${binding} binding`, () => {
    test(`large transfers, byte-identical both ways at once`, async () => {
      const p = await pair(binding, binding);
      try {
        await bothWays(p, binding === 'native' ? 32 * MiB : 4 * MiB); // @number0/iroh: ~13 MB/s
        assert.equal(p.c.pathKind(), 'direct');
        assert.ok((p.c.rttMs() ?? 0) >= 0);
      } finally {
        await unpair(p);
      }
    });

    test('reset and connection close mid-transfer give clean errors on both sides', async () => {
      const p = await pair(binding, binding);
      try {
        // the client resets its stream while the server reads
        const cs = await p.c.openStream();
        await cs.write(randomBytes(64 * 1024));
        const ss = (await p.s.acceptStream())!;
        assert.ok((await ss.read())!.length > 0);
        cs.abort();
        await assert.rejects(within(readAll(ss), 10_000, 'read after reset'), (e: Error) => e instanceof Error && /reset|stop/i.test(e.message));
        // the server closes the connection while the client writes
        const cs2 = await p.c.openStream();
        await cs2.write(randomBytes(1024));
        const ss2 = (await p.s.acceptStream())!;
        await ss2.read();
        const writing = (async () => { for (;;) await cs2.write(randomBytes(256 * 1024)); })();
        p.s.close(CloseCode.protocol, 'enough');
        await assert.rejects(within(writing, 10_000, 'write after close'), (e: Error) => e instanceof Error && /clos|lost/i.test(e.message));
        assert.match(await within(p.c.closed(), 10_000, 'closed()'), /enough/);
        assert.ok((await within(p.s.closed(), 10_000, 'closed()')).length > 0);
        assert.equal(await p.c.acceptStream(), null);
      } finally {
        await unpair(p);
      }
    });

    test('wrong argument types and sizes throw TypeError / RangeError', async () => {
      assert.throws(() => endpointIdOf(new Uint8Array(31)), RangeError);
      assert.throws(() => endpointIdOf('00' as unknown as Uint8Array), TypeError);
      await assert.rejects(IrohEndpoint.bind({ secretKey: new Uint8Array(31), relay: { mode: 'disabled' }, binding }), RangeError);
      await assert.rejects(IrohEndpoint.bind({ secretKey: generateSecretKey(), relay: { mode: 'nope' } as never, binding }), TypeError);
      await assert.rejects(IrohEndpoint.bind({ secretKey: generateSecretKey(), relay: { mode: 'disabled' }, bindAddr: 5 as never, binding }), TypeError);
      await assert.rejects(IrohEndpoint.bind({ secretKey: generateSecretKey(), relay: { mode: 'disabled' }, bindAddr: 'not an address', binding }), /cannot open the network endpoint/);
      assert.throws(() => ticketFor({ id: 5 } as never), TypeError);
      assert.throws(() => parsePeerAddress(5 as never), TypeError);
      assert.throws(() => parsePeerAddress('endpointzzz'), /not a valid bench ticket/);
      const p = await pair(binding, binding);
      try {
        await assert.rejects(p.client.connect({ id: 'nope', addrs: [] }), /cannot reach bench/);
        await assert.rejects(p.client.connect({ id: p.server.id, addrs: 5 } as never), TypeError);
        const s = await p.c.openStream();
        await assert.rejects(s.write('text' as never), TypeError);
        assert.throws(() => p.c.close(-1n), RangeError);
        assert.throws(() => p.c.close(1n << 62n), RangeError);
        assert.throws(() => p.c.close(1 as never), TypeError);
      } finally {
        await unpair(p);
      }
    });
  });
}

describe('native binding', { skip: noNative }, () => {
  test('many streams on many connections at once', async () => {
    const server = await bindServer('native');
    const clients = await Promise.all(Array.from({ length: 6 }, () => IrohEndpoint.bind({ secretKey: generateSecretKey(), relay: { mode: 'disabled' }, binding: 'native' })));
    // the server echoes every stream of every connection
    const serving = (async () => {
      const tasks: Promise<void>[] = [];
      for (let conn = await server.accept(); conn; conn = await server.accept()) {
        const c = conn;
        tasks.push((async () => {
          for (let s = await c.acceptStream(); s; s = await c.acceptStream()) {
            const st = s;
            tasks.push((async () => { await writeAll(st, await readAll(st)); })().catch(() => {}));
          }
        })());
      }
      await Promise.all(tasks);
    })();
    try {
      const conns = await Promise.all(clients.map((c) => c.connect(server.address())));
      const results = await within(Promise.all(conns.flatMap((conn, i) => Array.from({ length: 8 }, async (_, j) => {
        const data = seededBytes(100_000 + i * 1000 + j, i * 8 + j + 1);
        const s = await conn.openStream();
        const [, back] = await Promise.all([writeAll(s, data, 7000), readAll(s)]);
        return back.equals(data);
      }))), 60_000, '48 echoed streams');
      assert.equal(results.filter(Boolean).length, 48);
    } finally {
      for (const c of clients) await c.close();
      await server.close();
      await serving;
    }
  });

  test("a reader that never reads: the sender is held back by flow control, its memory stays bounded", async () => {
    const p = await pair('native', 'native');
    try {
      const s = await p.c.openStream();
      await s.write(Buffer.alloc(1));
      const ss = (await p.s.acceptStream())!; // accepted, never read
      void ss;
      const rss0 = process.memoryUsage().rss;
      const piece = randomBytes(MiB);
      let written = 0;
      for (;;) {
        const w = s.write(piece);
        const done = await Promise.race([w.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 2000))]);
        if (!done) { w.catch(() => {}); break; }
        written += piece.length;
        assert.ok(written <= 256 * MiB, `${written} bytes accepted without the peer reading`);
      }
      const grew = process.memoryUsage().rss - rss0;
      assert.ok(written < 64 * MiB, `${written / MiB} MiB accepted before backpressure`);
      assert.ok(grew < 200 * MiB, `RSS grew ${(grew / MiB).toFixed(0)} MiB`);
    } finally {
      await unpair(p);
    }
  });

  test('the JS Endpoint object may be garbage-collected while its connections live', async () => {
    const n = require(nativePath()!) as typeof N; // eslint-disable-line @typescript-eslint/no-require-imports
    const alpn = Buffer.from('remote-usb/gc-test');
    const server = await n.Endpoint.bind({ secretKey: generateSecretKey(), relay: 'disabled', bindAddr: '127.0.0.1:0', alpns: [alpn] });
    const accepted = server.accept();
    // only the connection escapes this function: its endpoint is unreachable from JS afterwards
    const c = await (async () => {
      const client = await n.Endpoint.bind({ secretKey: generateSecretKey(), relay: 'disabled' });
      return client.connect(server.addr(), alpn);
    })();
    const s = (await accepted)!;
    for (let i = 0; i < 5; i++) { gc(); await new Promise((r) => setTimeout(r, 20)); }
    const data = randomBytes(4 * MiB);
    const cs = await c.openStream();
    const sending = (async () => { for (let o = 0; o < data.length; o += MiB) await cs.write(data.subarray(o, o + MiB)); await cs.finish(); })();
    const ss = await s.acceptStream();
    const parts: Buffer[] = [];
    for (let b = await ss.read(MiB); b; b = await ss.read(MiB)) parts.push(b);
    await sending;
    assert.ok(Buffer.concat(parts).equals(data));
    c.close(0n, Buffer.alloc(0));
    await server.close();
  });

  test('the raw native module rejects wrong arguments with errors, never a crash', async () => {
    const n = require(nativePath()!) as typeof N; // eslint-disable-line @typescript-eslint/no-require-imports
    assert.throws(() => n.endpointIdOf(new Uint8Array(31)), /32 bytes/);
    assert.throws(() => n.endpointIdOf(5 as never));
    assert.throws(() => n.parseEndpointId('xyz'), /not an endpoint id/);
    assert.throws(() => n.ticketToAddr('endpointabc'), /not a ticket/);
    assert.throws(() => n.Endpoint.bind({} as never));
    assert.throws(() => n.Endpoint.bind({ secretKey: new Uint8Array(32), relay: 'other' } as never), /relay must be/);
    assert.throws(() => n.Endpoint.bind({ secretKey: new Uint8Array(32), relay: 'custom', relayUrls: ['::'] }), /not a relay URL/);
    const ep = await n.Endpoint.bind({ secretKey: generateSecretKey(), relay: 'disabled' });
    assert.throws(() => ep.connect({ id: ep.id(), addrs: ['nope'] }, Buffer.from('x')), /not an IP:port/);
    await ep.close();
    assert.equal(await ep.accept(), null);
  });

  test('200 connect / transfer / close cycles leak neither fds nor memory', async () => {
    const server = await bindServer('native');
    const serving = (async () => {
      for (let conn = await server.accept(); conn; conn = await server.accept()) {
        const s = await conn.acceptStream();
        if (s) await writeAll(s, await readAll(s)).catch(() => {});
      }
    })();
    const data = randomBytes(64 * 1024);
    let fd0 = 0, rss0 = 0;
    try {
      for (let i = 0; i < 200; i++) {
        // the allocator's caches fill over the first ~100 endpoints (RSS then levels off: measured to 1000)
        if (i === 100) { gc(); fd0 = fds(); rss0 = process.memoryUsage().rss; }
        const client = await IrohEndpoint.bind({ secretKey: generateSecretKey(), relay: { mode: 'disabled' }, binding: 'native' });
        const c = await client.connect(server.address());
        const s = await c.openStream();
        const [, back] = await within(Promise.all([writeAll(s, data), readAll(s)]), 20_000, `cycle ${i}`);
        assert.ok(back.equals(data), `cycle ${i}`);
        c.close();
        await client.close();
      }
      gc();
      await new Promise((r) => setTimeout(r, 200));
      gc();
      const fdGrowth = fds() - fd0, rssGrowth = process.memoryUsage().rss - rss0;
      assert.ok(fdGrowth <= 10, `${fdGrowth} more fds after 100 cycles`);
      assert.ok(rssGrowth < 150 * MiB, `RSS grew ${(rssGrowth / MiB).toFixed(0)} MiB over 100 cycles`);
    } finally {
      await server.close();
      await serving;
    }
  });
});

describe('interop: our binding and @number0/iroh on either side', { skip: noNative }, () => {
  for (const [serverBinding, clientBinding] of [['native', 'number0'], ['number0', 'native']] as [BindingName, BindingName][]) {
    test(`raw streams, ${serverBinding} accepting, ${clientBinding} dialling: byte-identical both ways`, async () => {
      const p = await pair(serverBinding, clientBinding);
      try {
        await bothWays(p, 2 * MiB);
        assert.equal(p.s.remoteId, p.client.id);
        assert.equal(p.c.remoteId, p.server.id);
      } finally {
        await unpair(p);
      }
    });

    describe(`the full protocol: daemon on ${serverBinding}, client on ${clientBinding}`, () => {
      const bench = new BenchFixture();
      before(() => bench.start({ irohBinding: serverBinding }));
      after(() => bench.stop());

      test('bulk loopback through a claimed board, byte-identical', async () => {
        const c = await bench.connect({ irohBinding: clientBinding, compression: false });
        assert.deepEqual(c.devices.map((d) => d.id).sort(), ['sim-1', 'sim-2']);
        const dev = await c.claim('sim-2');
        const chunks = Array.from({ length: 16 }, (_, i) => seededBytes(64 * 1024, i + 7));
        const ins = Array.from({ length: 16 }, () => dev.submit({ type: 'bulk', ep: LOOP_EP_IN, length: 64 * 1024 }));
        const outs = chunks.map((data) => dev.submit({ type: 'bulk', ep: LOOP_EP_OUT, data }));
        for (const r of await Promise.all(outs)) assert.equal(r.status, 0);
        const back = await Promise.all(ins);
        assert.deepEqual(Buffer.concat(back.map((r) => r.data)), Buffer.concat(chunks));
        await dev.release();
        await c.close();
      });
    });
  }
});
