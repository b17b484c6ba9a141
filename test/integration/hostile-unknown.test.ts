/**
 * Unknown peers against a real daemon process over real Iroh: compressed bombs and frame floods before
 * hello, a flood after a refused hello, a peer that never says hello, a broken allowlist at start. An
 * unauthenticated peer may cost the bench one small frame's decoding and a QUIC handshake — never an
 * inflation — so its CPU and memory stay small (measured here), and allowed clients keep being served.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { brotliCompressSync } from 'node:zlib';
import { BenchClient } from '../../extension/core/bench-client.js';
import { generateSecretKey, IrohEndpoint, PeerAddress } from '../../server/net/iroh.js';
import { MAX_URB_DATA } from '../../server/protocol/constants.js';
import { encodeFrame } from '../../server/protocol/framing.js';
import { HELLO_TIMEOUT_MS } from '../../server/session.js';
import { DaemonProcess, freeUdpPort, startWithClient } from '../helpers/daemon-process.js';
import { cpuSeconds, rssKiB } from '../bench/measure.js';
import { PROTOCOL_VERSION } from '../../server/protocol/constants.js';

/** The attack as found: 8 peers × 14 KB of back-to-back 14-byte Brotli bombs, each inflating to 4 MiB. */
const PEERS = 8;
const BYTES_PER_PEER = 14_000;
/** Stated budget for one unauthenticated connection (handshake + one frame + refusal). The old code spent ≈26 s. */
const CPU_MS_PER_PEER = 100;
/** Stated memory budget per unauthenticated connection while it lives (QUIC state and buffers included). */
const RSS_MIB_PER_PEER = 8;

let dir: string;
let daemon: DaemonProcess;
let address: PeerAddress;
let client: BenchClient;

const cpuMs = (pid: number): number => Math.round(1000 * cpuSeconds(pid));
const rssMiB = (pid: number): number => rssKiB(pid) / 1024;

before(async () => {
  const started = await startWithClient('rusb-unknown-', 'bystander');
  ({ dir, daemon, address } = started);
  const { key } = started;
  client = new BenchClient({ bench: address, secretKey: key, clientName: 'bystander', relay: { mode: 'disabled' } });
  await client.start();
});
after(async () => {
  await client?.close();
  await daemon?.stop();
  rmSync(dir, { recursive: true, force: true });
});

function bombs(bytes: number): Buffer {
  const bomb = brotliCompressSync(Buffer.alloc(MAX_URB_DATA));
  const frames: Buffer[] = [];
  let size = 0;
  for (let id = 1; size < bytes; id++) {
    const f = encodeFrame({ t: 'submit', dev: 'sim-1', id, ep: 0x02, type: 'bulk', length: MAX_URB_DATA, data: bomb, z: 1 });
    frames.push(f);
    size += f.length;
  }
  return Buffer.concat(frames);
}

/** Connects with a fresh key, writes `bytes` on the first stream, and resolves when the bench has closed on it. */
async function attack(bytes: Buffer): Promise<string> {
  const ep = await IrohEndpoint.bind({ secretKey: generateSecretKey(), relay: { mode: 'disabled' } });
  try {
    const conn = await ep.connect(address);
    const s = await conn.openStream();
    void s.write(bytes).catch(() => {});
    void (async () => { while ((await s.read().catch(() => null)) !== null); })();
    return await conn.closed();
  } finally {
    await ep.close();
  }
}

test('unknown peers flooding compressed bombs before hello, or after a refused hello, cost the bench a small, bounded amount; allowed clients keep being served', async () => {
  const pid = daemon.child!.pid!;
  const rtts: number[] = [];
  let pinging = true;
  const pinger = (async () => {
    while (pinging) {
      rtts.push(await client.ping());
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  const silent = (async () => {
    // a peer that connects and never says anything is dropped after HELLO_TIMEOUT_MS
    const ep = await IrohEndpoint.bind({ secretKey: generateSecretKey(), relay: { mode: 'disabled' } });
    const conn = await ep.connect(address);
    const s = await conn.openStream();
    await s.write(Buffer.from([0, 0])); // half a frame header: QUIC shows the bench the stream
    const t = performance.now();
    const why = await conn.closed();
    await ep.close();
    return { why, ms: performance.now() - t };
  })();
  const flood = bombs(BYTES_PER_PEER);
  const hello = encodeFrame({ t: 'hello', v: PROTOCOL_VERSION, caps: ['brotli'], name: 'mallory' });
  const cpu0 = cpuMs(pid);
  const rss0 = rssMiB(pid);
  const t0 = performance.now();
  const results = await Promise.all([
    ...Array.from({ length: PEERS / 2 }, () => attack(flood)),
    ...Array.from({ length: PEERS / 2 }, () => attack(Buffer.concat([hello, flood]))),
  ]);
  const wall = performance.now() - t0;
  const cpu = cpuMs(pid) - cpu0;
  const rss = rssMiB(pid) - rss0;
  pinging = false;
  await pinger;
  const sorted = [...rtts].sort((a, b) => a - b);
  console.log(`# ${PEERS} unknown peers × ${flood.length} bytes of bombs: bench CPU ${cpu} ms (${(cpu / PEERS).toFixed(1)} ms a peer, budget ${CPU_MS_PER_PEER}), RSS +${rss.toFixed(1)} MiB (${(rss / PEERS).toFixed(1)} MiB a peer, budget ${RSS_MIB_PER_PEER}), all refused in ${wall.toFixed(0)} ms; bystander pings p50 ${sorted[sorted.length >> 1].toFixed(2)} ms max ${sorted.at(-1)!.toFixed(2)} ms`);
  for (const why of results) assert.match(why, /expected 'hello' first, got 'submit'|not allowed on bench|closed/, why);
  assert.ok(cpu / PEERS <= CPU_MS_PER_PEER, `an unauthenticated peer cost ${cpu / PEERS} ms of bench CPU`);
  assert.ok(rss / PEERS <= RSS_MIB_PER_PEER, `bench RSS grew ${rss.toFixed(1)} MiB`);
  assert.equal(client.state, 'online', 'the allowed client stayed connected');
  assert.match(daemon.output, /refusing \w+: expected 'hello' first, got 'submit'/);
  assert.doesNotMatch(daemon.output, /does not inflate|inflates to/, 'nothing from an unknown peer was inflated');

  const quiet = await silent;
  console.log(`# a peer that never said hello was dropped after ${(quiet.ms / 1000).toFixed(1)} s (${quiet.why})`);
  assert.ok(quiet.ms < HELLO_TIMEOUT_MS + 6000, `dropped after ${quiet.ms} ms`);
});

test('a broken allowlist stops the daemon before it serves, naming file, line and key', async () => {
  const d = mkdtempSync(join(tmpdir(), 'rusb-badlist-'));
  try {
    const list = join(d, 'clients.toml');
    writeFileSync(list, `[[client]]\nid = "${'a'.repeat(64)}"\n\n[[client]]\nname = "bob"\nid = "not-an-id"\n`, { mode: 0o600 });
    const p = new DaemonProcess(d, await freeUdpPort());
    await assert.rejects(p.start(), (e: Error) => {
      assert.match(e.message, /daemon exited with 1/);
      assert.ok(e.message.includes(`${list}:6: client #2: 'id' must be a 64-hex-digit endpoint id`), e.message);
      assert.doesNotMatch(e.message, /serving as/);
      return true;
    });
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});
