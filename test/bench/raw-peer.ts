/**
 * The raw Iroh ceiling for `npm run bench`: bare processes, bidirectional streams, the transport
 * interface of server/net/iroh.ts (with @number0/iroh: our best conversions, bytes.ts), no protocol, no USB. Run by bench.ts, not by hand:
 *   node raw-peer.js serve <n>                 → n endpoints (n > 1: one worker thread each), prints
 *                                                {"id","port"} per endpoint, then {"bytes","secs"} per
 *                                                stream it received on
 *   node raw-peer.js send <targets> <secs>     → streams 256 KiB writes for <secs>, prints {"bytes","cpu"}
 * REMOTE_USB_IROH=native|number0 picks the binding (bench.ts compares both in one run).
 *   node raw-peer.js both <targets> <secs>     → both ends stream at once; prints {"bytes","secs"} received
 *   node raw-peer.js ping <targets> <count>    → 64-byte ping-pong, prints {"rtts":[ms...]}
 * <targets> is `id@port[,id@port…]`; with several, one worker thread per target, each with its own
 * endpoint and connection (the way to use more than one core: one thread converts every byte for the
 * @number0/iroh binding, and more streams or connections on that thread gain nothing).
 * The first byte on a stream says what it is: S(end), B(oth ways, then the seconds), P(ing).
 */
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { ByteStream } from '../../server/protocol/stream.js';
import { generateSecretKey, IrohEndpoint } from '../../server/net/iroh.js';

const CHUNK = Buffer.alloc(256 * 1024, 0xa5);

async function streamFor(io: ByteStream, secs: number): Promise<number> {
  const end = performance.now() + secs * 1000;
  let bytes = 0;
  while (performance.now() < end) { await io.write(CHUNK); bytes += CHUNK.length; }
  await io.finish();
  return bytes;
}

async function receiveAll(io: ByteStream, first: Buffer): Promise<{ bytes: number; secs: number }> {
  let bytes = first.length;
  const t0 = performance.now();
  for (let chunk = await io.read(); chunk !== null; chunk = await io.read()) bytes += chunk.length;
  return { bytes, secs: (performance.now() - t0) / 1000 };
}

async function serveOne(print: (line: string) => void): Promise<void> {
  const ep = await IrohEndpoint.bind({ secretKey: generateSecretKey(), relay: { mode: 'disabled' }, bindAddr: '127.0.0.1:0', accept: true });
  const sock = ep.boundSockets.find((s) => s.startsWith('127.0.0.1:'))!;
  print(JSON.stringify({ id: ep.id, port: Number(sock.split(':')[1]) }));
  for (;;) {
    const conn = await ep.accept();
    if (!conn) return;
    void (async () => {
      for (let io = await conn.acceptStream(); io; io = await conn.acceptStream()) {
        const s = io;
        void (async () => {
          const head = (await s.read())!;
          if (head[0] === 0x50) { // P: echo
            await s.write(head);
            for (let c = await s.read(); c !== null; c = await s.read()) await s.write(c);
            return;
          }
          const both = head[0] === 0x42;
          const sending = both ? streamFor(s, head[1]) : Promise.resolve(0);
          const got = await receiveAll(s, head.subarray(both ? 2 : 1));
          await sending;
          print(JSON.stringify(got));
        })().catch(() => {});
      }
    })().catch(() => {});
  }
}

async function clientOne(mode: string, target: string, arg: number): Promise<unknown> {
  const [id, port] = target.split('@');
  const ep = await IrohEndpoint.bind({ secretKey: generateSecretKey(), relay: { mode: 'disabled' } });
  const conn = await ep.connect({ id, addrs: [`127.0.0.1:${port}`] });
  const io = await conn.openStream();
  let result: unknown;
  if (mode === 'send') {
    await io.write(Buffer.from('S'));
    // CPU of the whole process (every thread: JS and the binding's runtime) while it streams
    const c0 = process.cpuUsage();
    const bytes = await streamFor(io, arg);
    const c = process.cpuUsage(c0);
    result = { bytes, cpu: (c.user + c.system) / 1e6 };
  } else if (mode === 'both') {
    await io.write(Buffer.from([0x42, arg]));
    const [, got] = await Promise.all([streamFor(io, arg), receiveAll(io, Buffer.alloc(0))]);
    result = got;

  } else {
    const ping = Buffer.alloc(64, 0x50);
    const rtts: number[] = [];
    for (let i = 0; i < arg; i++) {
      const t = performance.now();
      await io.write(ping);
      let got = 0;
      while (got < 64) got += (await io.read())?.length ?? 64;
      rtts.push(performance.now() - t);
    }
    await io.finish();
    result = { rtts };
  }
  await new Promise((r) => setTimeout(r, 200));
  conn.close();
  await ep.close();
  return result;
}

async function main(): Promise<void> {
  if (!isMainThread) {
    const { role, mode, target, arg } = workerData as { role: string; mode: string; target: string; arg: number };
    if (role === 'serve') await serveOne((line) => parentPort!.postMessage(line));
    else parentPort!.postMessage(await clientOne(mode, target, arg));
    return;
  }
  const [mode, a, b] = process.argv.slice(2);
  const print = (line: string): void => { process.stdout.write(line + '\n'); };
  if (mode === 'serve') {
    const n = Number(a ?? 1);
    if (n === 1) return serveOne(print);
    for (let i = 0; i < n; i++) new Worker(__filename, { workerData: { role: 'serve' } }).on('message', print);
    return new Promise(() => {});
  }
  const targets = a.split(',');
  const results = targets.length === 1
    ? [await clientOne(mode, targets[0], Number(b))]
    : await Promise.all(targets.map((target) => new Promise<unknown>((resolve, reject) => {
      new Worker(__filename, { workerData: { role: 'client', mode, target, arg: Number(b) } }).once('message', resolve).once('error', reject);
    })));
  print(JSON.stringify(results));
  process.exit(0);
}
main().catch((e: Error) => { process.stderr.write(`raw-peer: ${e.message}\n`); process.exit(1); });
