/**
 * The ARM daemon bundles (npm run package:server -- --target linux-arm64,linux-armv7), run on ARM code here:
 * each bundle's own Node runs its daemon under qemu-user, and an x64 client on this machine pairs with the
 * code the ARM `pair` prints, lists, opens a serial session, claims and moves bulk data byte-identical over
 * loopback; `install --root` runs from the ARM bundle. Bulk MB/s and control round trip are printed beside
 * an x64 daemon's in the same run (not asserted). `npm run test:arm` after packaging; CI runs it.
 * REMOTE_USB_ARM_TARGETS picks the bundles (default both); a bundle that is not there fails, it is not skipped.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { BenchClient } from '../../extension/core/bench-client.js';
import { endpointIdOf, generateSecretKey, PeerAddress } from '../../server/net/iroh.js';
import { TrustStore } from '../../server/trust.js';
import { seededBytes } from '../../server/usb/patterns.js';
import { LOOP_EP_IN, LOOP_EP_OUT, SINK_EP_OUT, SOURCE_EP_IN } from '../../server/usb/sim-loopback-board.js';
import { DaemonProcess, freeUdpPort, repoRoot } from '../helpers/daemon-process.js';
import { freshRoot } from '../helpers/install-root.js';
import { measureSpeed, measureX64Daemon, Speed } from '../helpers/urb-speed.js';
import { pathToFileURL } from 'node:url';

const root = repoRoot();
const version = (JSON.parse(fs.readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }).version;
const CLIENT_JS = join(root, 'dist', 'remote-usb.js');
const targets = (process.env.REMOTE_USB_ARM_TARGETS ?? 'linux-arm64,linux-armv7').split(',');
const MIB = 1 << 20;

/** What this test uses of server/shared/natives.mjs (the packagers' plain ES module, loaded as it is). */
interface Natives {
  ARM_TARGETS: Record<string, object | undefined>;
  NATIVE_TARGETS: Record<string, { napi: string; binary: string }>;
  emulated(target: string, program: string): string[];
  binaryKind(head: Buffer): string;
}
const natives = import(pathToFileURL(join(root, 'server', 'shared', 'natives.mjs')).href) as Promise<Natives>;

/** Starts a daemon (x64: this checkout's dist/server.js) with one client allowed; returns it with a connected client. */
async function benchWithClient(dir: string, command?: string[]): Promise<{ daemon: DaemonProcess; client: BenchClient; address: PeerAddress }> {
  const port = await freeUdpPort();
  const daemon = new DaemonProcess(dir, port);
  if (command) { daemon.command = command; daemon.startTimeoutMs = 180_000; }
  const key = generateSecretKey();
  new TrustStore(join(dir, 'clients.toml'), dir).allow(endpointIdOf(key), 'x64-client');
  await daemon.start();
  const address = { id: /serving as ([0-9a-f]{64})/.exec(daemon.output)![1], addrs: [`127.0.0.1:${port}`] };
  const client = await BenchClient.connect({ secretKey: key, bench: address, clientName: 'x64-client', relay: { mode: 'disabled' }, handshakeTimeoutMs: 60_000, connectTimeoutMs: 60_000 });
  return { daemon, client, address };
}

let x64Speed: Promise<Speed> | undefined;
/** The x64 daemon's numbers, measured once, for the rows beside each ARM bundle's. */
const x64Baseline = (): Promise<Speed> => (x64Speed ??= measureX64Daemon(2));

for (const target of targets) {
  describe(`${target} bundle: its own Node runs the daemon under qemu-user`, () => {
    let n: Natives;
    const tgz = join(root, 'out', 'package', `remote-usb-server-${version}-${target}.tar.gz`);
    let work = '';
    let bundle = '';
    let command: string[] = [];
    let bench: Awaited<ReturnType<typeof benchWithClient>> | undefined;

    before(async () => {
      n = await natives;
      assert.ok(n.ARM_TARGETS[target], `unknown ARM target '${target}' (known: ${Object.keys(n.ARM_TARGETS).join(', ')})`);
      assert.ok(fs.existsSync(tgz), `${tgz} is missing: npm run package:server -- --target ${target} (after node server/packaging/cross-build.mjs)`);
      work = fs.mkdtempSync(join(tmpdir(), `remote-usb-${target}-`));
      fs.chmodSync(work, 0o755);
      const x = spawnSync('tar', ['-xzf', tgz, '-C', work], { encoding: 'utf8' });
      assert.equal(x.status, 0, x.stderr);
      bundle = join(work, `remote-usb-server-${version}-${target}`);
      command = [...n.emulated(target, join(bundle, 'lib', 'node')), join(bundle, 'lib', 'server.js')];
      fs.mkdirSync(join(work, 'state'));
      bench = await benchWithClient(join(work, 'state'), command);
    });
    after(async () => {
      await bench?.client.close();
      await bench?.daemon.stop();
      if (work) fs.rmSync(work, { recursive: true, force: true });
    });

    test('its node and natives are for the target; the daemon it runs is that node under emulation', () => {
      const want = n.NATIVE_TARGETS[target].binary;
      const natives = (fs.readdirSync(join(bundle, 'lib'), { recursive: true }) as string[]).filter((f) => f.endsWith('.node'));
      for (const f of ['node', ...natives]) assert.equal(n.binaryKind(fs.readFileSync(join(bundle, 'lib', f)).subarray(0, 64)), want, f);
      // ours for Iroh (npm has no Linux ARM @number0/iroh), usb's and serialport's prebuilds
      assert.ok(natives.includes(`remote-usb-iroh.${n.NATIVE_TARGETS[target].napi}.node`), natives.join(', '));
      assert.equal(natives.filter((f) => /node_modules\/(usb|@serialport\/bindings-cpp)\/prebuilds\//.test(f)).length, 2, natives.join(', '));
      const pid = bench!.daemon.child!.pid!;
      const maps = fs.readFileSync(`/proc/${pid}/maps`, 'utf8');
      assert.ok(maps.includes(join(bundle, 'lib', 'node')), 'the daemon process maps the bundle\'s ARM node');
      assert.match(bench!.daemon.output, /serving as [0-9a-f]{64}/);
    });

    test('an x64 client pairs with the code the ARM daemon prints, lists and opens a serial session', () => {
      const cfg = bench!.daemon.configFile;
      const pair = spawnSync(command[0], [...command.slice(1), 'pair', '-c', cfg], { encoding: 'utf8', timeout: 180_000 });
      assert.equal(pair.status, 0, pair.stderr);
      const code = /Pairing code: (\S+)/.exec(pair.stdout)![1];
      const ticket = /Bench ticket: (\S+)/.exec(pair.stdout)![1];
      const keyDir = join(work, 'client');
      const common = ['--bench', ticket, '--relay', 'disabled', '--key-dir', keyDir];
      const cli = (input: string | undefined, ...a: string[]): ReturnType<typeof spawnSync> =>
        spawnSync(process.execPath, [CLIENT_JS, ...a], { encoding: 'utf8', timeout: 120_000, input });
      const paired = cli(undefined, 'pair', '--code', code, '--name', 'x64-cli', ...common);
      assert.equal(paired.status, 0, String(paired.stderr));
      assert.match(String(paired.stdout), /paired with bench 'proc-bench'/);
      const list = cli(undefined, 'list', ...common);
      assert.equal(list.status, 0, String(list.stderr));
      assert.match(String(list.stdout), /sim-1 +1209:0001 +Simulated Serial Board/);
      assert.match(String(list.stdout), /sim-2 +1209:0002/);
      const serial = cli('hello from x64\r\n', 'serial', ticket, 'sim-1', '--baud', '115200', '--relay', 'disabled', '--key-dir', keyDir);
      assert.equal(serial.status, 0, String(serial.stderr));
      assert.match(String(serial.stdout), /Remote USB simulated serial board SIM0001/);
      assert.match(String(serial.stdout), /hello from x64\r\n/);
    });

    test('claim, then 4 MiB bulk out and back through the loopback board, byte-identical; speed beside the x64 daemon', async () => {
      const dev = await bench!.client.claim('sim-2');
      const sent = seededBytes(4 * MIB, 17);
      const got: Buffer[] = [];
      for (let off = 0; off < sent.length; off += 256 * 1024) {
        const part = sent.subarray(off, off + 256 * 1024);
        const outs = Array.from({ length: 4 }, (_, i) => dev.submit({ type: 'bulk', ep: LOOP_EP_OUT, data: part.subarray(i * 65536, (i + 1) * 65536) }));
        for (const r of await Promise.all(outs)) assert.equal(r.status, 0);
        for (let have = 0; have < part.length;) {
          const r = await dev.submit({ type: 'bulk', ep: LOOP_EP_IN, length: 65536 });
          assert.equal(r.status, 0);
          got.push(r.data);
          have += r.actual;
        }
      }
      assert.ok(Buffer.concat(got).equals(sent), '4 MiB came back byte-identical');
      const arm64 = await measureSpeed(dev, SINK_EP_OUT, SOURCE_EP_IN, 2);
      await dev.release();
      const x64 = await x64Baseline();
      const f = (n: number): string => n.toFixed(1);
      console.log(`# ${target} daemon under qemu-user: bulk out ${f(arm64.outMBps)} MB/s, in ${f(arm64.inMBps)} MB/s, control p50 ${f(arm64.controlP50Ms)} ms` +
        ` | x64 daemon, same run: out ${f(x64.outMBps)}, in ${f(x64.inMBps)} MB/s, control p50 ${f(x64.controlP50Ms)} ms`);
    });

    test('install --root works from the ARM bundle', { skip: process.getuid?.() !== 0 ? 'needs root (useradd --root, chown)' : false }, () => {
      const r = freshRoot(work);
      const i = spawnSync(command[0], [...command.slice(1), 'install', '--root', r], { encoding: 'utf8', timeout: 300_000 });
      assert.equal(i.status, 0, i.stdout + i.stderr);
      assert.match(i.stdout, /^Bench ticket: endpoint[a-z0-9]+$/m);
      assert.match(i.stdout, /^Pairing code: [0-9A-Z]{5}-[0-9A-Z]{5}/m);
      const lib = join(r, 'usr/local/lib/remote-usb-server');
      assert.equal(n.binaryKind(fs.readFileSync(join(lib, 'lib', 'node')).subarray(0, 64)), n.NATIVE_TARGETS[target].binary, 'the installed node is the bundle\'s');
      assert.equal(fs.readlinkSync(join(r, 'usr/local/bin/remote-usb-server')), '/usr/local/lib/remote-usb-server/bin/remote-usb-server');
      assert.match(fs.readFileSync(join(r, 'etc/systemd/system/remote-usb-server.service'), 'utf8'), /^ExecStart=\S*remote-usb-server run /m);
    });
  });
}
