/**
 * The raw Iroh ceiling for `npm run bench`: two bare processes, one bidirectional stream, our best
 * conversions (server/net/bytes.ts), no protocol, no USB. Run by bench.ts, not by hand:
 *   node raw-peer.js serve                      → prints {"id","port"}, then per connection {"bytes","secs"}
 *   node raw-peer.js send <id> <port> <secs>    → streams 256 KiB writes for <secs>, prints {"bytes"}
 *   node raw-peer.js ping <id> <port> <count>   → 64-byte ping-pong, prints {"rtts":[ms...]}
 */
import { IrohEndpoint } from '../../server/net/iroh.js';
import { generateSecretKey } from '../../server/net/iroh.js';

async function main(): Promise<void> {
  const [mode, id, port, arg] = process.argv.slice(2);
  if (mode === 'serve') {
    const ep = await IrohEndpoint.bind({ secretKey: generateSecretKey(), relay: { mode: 'disabled' }, bindAddr: '127.0.0.1:0', accept: true });
    const sock = ep.boundSockets.find((s) => s.startsWith('127.0.0.1:'))!;
    process.stdout.write(JSON.stringify({ id: ep.id, port: Number(sock.split(':')[1]) }) + '\n');
    for (;;) {
      const conn = await ep.accept();
      if (!conn) return;
      void (async () => {
        const io = (await conn.acceptStream())!;
        let bytes = 0;
        let t0 = 0;
        for (let chunk = await io.read(); chunk !== null; chunk = await io.read()) {
          if (bytes === 0) t0 = performance.now();
          bytes += chunk.length;
          if (chunk.length === 64 && chunk[0] === 0x50) await io.write(chunk); // ping: echo
        }
        process.stdout.write(JSON.stringify({ bytes, secs: (performance.now() - t0) / 1000 }) + '\n');
      })().catch(() => {});
    }
  }
  const ep = await IrohEndpoint.bind({ secretKey: generateSecretKey(), relay: { mode: 'disabled' } });
  const conn = await ep.connect({ id, addrs: [`127.0.0.1:${port}`] });
  const io = await conn.openStream();
  if (mode === 'send') {
    const buf = Buffer.alloc(256 * 1024, 0xa5);
    const end = performance.now() + Number(arg) * 1000;
    let bytes = 0;
    while (performance.now() < end) { await io.write(buf); bytes += buf.length; }
    await io.finish();
    process.stdout.write(JSON.stringify({ bytes }) + '\n');
  } else if (mode === 'ping') {
    const ping = Buffer.alloc(64, 0x50);
    const rtts: number[] = [];
    for (let i = 0; i < Number(arg); i++) {
      const t = performance.now();
      await io.write(ping);
      let got = 0;
      while (got < 64) got += (await io.read())?.length ?? 64;
      rtts.push(performance.now() - t);
    }
    await io.finish();
    process.stdout.write(JSON.stringify({ rtts }) + '\n');
  }
  await new Promise((r) => setTimeout(r, 200));
  conn.close();
  await ep.close();
  process.exit(0);
}
main().catch((e: Error) => { process.stderr.write(`raw-peer: ${e.message}\n`); process.exit(1); });
