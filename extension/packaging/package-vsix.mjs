// Builds one .vsix per platform, each carrying only that platform's native binaries.
//
//   node extension/packaging/package-vsix.mjs [--target linux-x64,darwin-arm64] [--allow-missing-native]
//
// Per target: stage out/package/<target>/ (stripped package.json, dist/*.js, media/, docs, and a
// node_modules/ holding only what the external native modules require at run time), run
// `vsce package --target`, then read the .vsix back and check its native files are all for that
// platform; the .vsix for this machine's platform is unpacked and its native modules loaded.
// Exit 1 when a target could not be built (e.g. no Iroh binary published for it).
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { builtinModules, createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inflateRawSync } from 'node:zlib';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const outDir = join(root, 'out', 'package');
const built = join(root, 'out', 'production'); // where `esbuild.mjs --production` writes the bundles
const cacheDir = join(outDir, '.cache');
// real path: require.resolve answers with real paths, and node_modules may be a symlink
const nodeModules = realpathSync(join(root, 'node_modules'));
const rel = (file) => join('node_modules', relative(nodeModules, file));
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';

// napi: suffix of the napi-rs platform packages (@number0/iroh-*, @node-usb/usb-*);
// prebuild: @serialport/bindings-cpp's prebuilds/ folder and which of its files this target loads
// (VS Code's linux targets are glibc; alpine-* would be the musl ones);
// binary: what every .node file in the package must be.
const TARGETS = {
  'linux-x64': { napi: 'linux-x64-gnu', prebuild: 'linux-x64', file: /\.glibc\.node$/, binary: 'ELF x64' },
  'linux-arm64': { napi: 'linux-arm64-gnu', prebuild: 'linux-arm64', file: /armv8\.glibc\.node$/, binary: 'ELF arm64' },
  'darwin-arm64': { napi: 'darwin-arm64', prebuild: 'darwin-x64+arm64', file: /\.node$/, binary: 'Mach-O arm64' },
  'win32-x64': { napi: 'win32-x64-msvc', prebuild: 'win32-x64', file: /\.node$/, binary: 'PE x64' },
};
// What esbuild leaves external and the extension (or the remote-usb CLI it ships) loads at run time.
// msgpackr-extract is left out on purpose: msgpackr falls back to plain JS without it.
const ENTRIES = ['@number0/iroh/index.js', 'usb', 'serialport'];
// napi-rs loaders try one package per platform; the tracer skips them and each target gets its own.
const PLATFORM_PACKAGE = /^(@number0\/iroh|@node-usb\/usb)-/;
// required inside try/catch and only for niceties: debug colours its output (when DEBUG is set) with it
const OPTIONAL = new Set(['supports-color']);
const platformPackages = (t) => [
  { name: `@number0/iroh-${t.napi}`, version: depVersion('@number0/iroh') },
  { name: `@node-usb/usb-${t.napi}`, version: depVersion('usb') },
];
// bundled runtime files the extension needs: extension.js, helper.js (Install Helper copies it from
// the extension's own dist/), remote-usb.js (the CLI, for terminals and tasks)
const DIST = ['extension.js', 'helper.js', 'remote-usb.js'];
// README links are relative; without a `repository` in package.json vsce needs a base URL (the
// same repository the welcome view links to).
const REPO_URL = 'https://github.com/remote-usb/remote-usb';

const args = process.argv.slice(2);
const allowMissing = args.includes('--allow-missing-native');
const targetArg = args.find((a, i) => args[i - 1] === '--target') ?? args.find((a) => a.startsWith('--target='))?.slice(9);
const targets = targetArg ? targetArg.split(',') : Object.keys(TARGETS);
for (const t of targets) if (!TARGETS[t]) fail(`unknown target '${t}' (known: ${Object.keys(TARGETS).join(', ')})`);

function fail(msg) { console.error(`package-vsix: ${msg}`); process.exit(2); }
function depVersion(name) {
  return JSON.parse(readFileSync(join(root, 'node_modules', name, 'package.json'), 'utf8')).version;
}

// ---- which files of node_modules the natives need: follow require() from the entry points ----

// Static require('x') calls only: every module on these paths uses them, except node-gyp-build's
// prebuilds lookup (handled below) and the napi-rs platform packages (added per target).
// Returns the files, and for each package directory the names of the packages its files require.
function traceRequires() {
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
function packageDir(file) {
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

const licenseFiles = (dir) => readdirSync(dir).filter((f) => /^(licen[cs]e|copying)/i.test(f));

// ---- platform packages: from node_modules when it holds that version, else npm pack into a cache ----

function platformPackage({ name, version }) {
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
  mkdirSync(dir, { recursive: true });
  execFileSync('tar', ['-xzf', tgz, '-C', dir, '--strip-components=1']);
  rmSync(tgz);
  return { dir };
}

// ---- staging ----

function stage(target, { files: traced, uses }) {
  const t = TARGETS[target];
  const dir = join(outDir, target);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, 'dist'), { recursive: true });
  const missing = [];

  const pkgDirs = [...new Set(traced.map(packageDir))];
  const staged = new Set(pkgDirs.map((d) => JSON.parse(readFileSync(join(root, d, 'package.json'), 'utf8')).name));
  for (const d of pkgDirs) {
    mkdirSync(join(dir, d), { recursive: true });
    writeFileSync(join(dir, d, 'package.json'), JSON.stringify(prunedManifest(d, uses.get(d) ?? new Set()), null, 2) + '\n');
    for (const f of licenseFiles(join(root, d))) cpSync(join(root, d, f), join(dir, d, f));
  }
  for (const f of traced) if (!f.endsWith('package.json')) cpSync(join(root, f), join(dir, f));

  // node-gyp-build picks prebuilds/<platform>-<arch>/ at run time: copy only this target's
  const prebuilds = join('node_modules', '@serialport', 'bindings-cpp', 'prebuilds', t.prebuild);
  const prebuilt = existsSync(join(root, prebuilds)) ? readdirSync(join(root, prebuilds)).filter((f) => t.file.test(f)) : [];
  if (prebuilt.length === 0) missing.push(`@serialport/bindings-cpp has no prebuild for ${target}`);
  for (const f of prebuilt) cpSync(join(root, prebuilds, f), join(dir, prebuilds, f));

  for (const p of platformPackages(t)) {
    const got = platformPackage(p);
    if (got.missing) { missing.push(got.missing); continue; }
    const dest = join(dir, 'node_modules', p.name);
    mkdirSync(dest, { recursive: true });
    for (const f of readdirSync(got.dir).filter((f) => f.endsWith('.node') || f === 'package.json' || licenseFiles(got.dir).includes(f))) {
      cpSync(join(got.dir, f), join(dest, f));
    }
  }

  const manifest = { ...pkg };
  for (const k of ['devDependencies', 'scripts', 'bin']) delete manifest[k];
  manifest.dependencies = Object.fromEntries(Object.entries(pkg.dependencies).filter(([n]) => staged.has(n)));
  writeFileSync(join(dir, 'package.json'), JSON.stringify(manifest, null, 2) + '\n');
  for (const f of DIST) cpSync(join(built, f), join(dir, 'dist', f));
  cpSync(join(root, 'media'), join(dir, 'media'), { recursive: true });
  for (const f of ['README.md', 'CHANGELOG.md', 'LICENSE']) cpSync(join(root, f), join(dir, f));
  if (missing.length) {
    // only reached with --allow-missing-native: say so where a user of the .vsix will read it
    const readme = readFileSync(join(dir, 'README.md'), 'utf8');
    writeFileSync(join(dir, 'README.md'), `> **Incomplete ${target} build, do not publish:** ${missing.join('; ')}. ` +
      `Remote USB cannot ${missing.some((m) => m.includes('iroh')) ? 'connect to a bench' : 'use every feature'} with this package.\n\n${readme}`);
  }
  // everything staged is wanted; this only keeps stray editor/OS files out
  writeFileSync(join(dir, '.vscodeignore'), '**/*.map\n**/*.d.ts\n**/.DS_Store\n');
  return { dir, missing };
}

// ---- reading the .vsix back (a zip: central directory, then each entry's local header) ----

function readZip(file) {
  const buf = readFileSync(file);
  let eocd = buf.length - 22;
  while (eocd >= 0 && buf.readUInt32LE(eocd) !== 0x06054b50) eocd--;
  if (eocd < 0) throw new Error(`${file}: not a zip`);
  const entries = [];
  for (let p = buf.readUInt32LE(eocd + 16), n = buf.readUInt16LE(eocd + 10); n > 0; n--) {
    const method = buf.readUInt16LE(p + 10), csize = buf.readUInt32LE(p + 20), size = buf.readUInt32LE(p + 24);
    const nameLen = buf.readUInt16LE(p + 28), extraLen = buf.readUInt16LE(p + 30), commentLen = buf.readUInt16LE(p + 32);
    const local = buf.readUInt32LE(p + 42);
    const name = buf.toString('utf8', p + 46, p + 46 + nameLen);
    entries.push({
      name, size,
      data() {
        const start = local + 30 + buf.readUInt16LE(local + 26) + buf.readUInt16LE(local + 28);
        const raw = buf.subarray(start, start + csize);
        return method === 0 ? raw : inflateRawSync(raw);
      },
    });
    p += 46 + nameLen + extraLen + commentLen;
  }
  return entries;
}

// Format and CPU of a native module from its header (a universal Mach-O lists every CPU it holds).
function binaryKind(b) {
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

function verify(vsix, target, missing) {
  const entries = readZip(vsix);
  const natives = entries.filter((e) => e.name.endsWith('.node')).map((e) => ({ name: e.name, kind: binaryKind(e.data()) }));
  const [format, cpu] = TARGETS[target].binary.split(' ');
  const wrong = natives.filter((n) => !n.kind.startsWith(format) || !n.kind.split(' ')[1].split('+').includes(cpu));
  const problems = wrong.map((n) => `${n.name} is ${n.kind}, not ${TARGETS[target].binary}`);
  for (const [what, re] of [['Iroh', /iroh/], ['usb', /node-usb/], ['serialport', /bindings-cpp/]]) {
    const n = natives.filter((x) => re.test(x.name)).length;
    if (n > 1 || (n === 0 && !missing.length)) problems.push(`${n} ${what} binaries (expected one)`);
  }
  for (const f of ['extension/package.json', ...DIST.map((f) => `extension/dist/${f}`)]) {
    if (!entries.some((e) => e.name === f)) problems.push(`${f} missing`);
  }
  return { entries, natives, problems };
}

// Unpack and load the natives the way the extension would: resolved from extension/dist/, in a
// child without NODE_PATH, and every module it loaded must come from the unpacked copy.
function loadCheck(entries) {
  const tmp = mkdtempSync(join(tmpdir(), 'remote-usb-vsix-'));
  try {
    for (const e of entries) {
      if (e.name.endsWith('/')) continue;
      mkdirSync(dirname(join(tmp, e.name)), { recursive: true });
      writeFileSync(join(tmp, e.name), e.data());
    }
    const ext = join(tmp, 'extension');
    const script = `
      const req = require('node:module').createRequire(${JSON.stringify(join(ext, 'dist', 'extension.js'))});
      (async () => {
        const iroh = req('@number0/iroh/index.js');
        const id = iroh.SecretKey.generate().public().toString();
        const { usb } = req('usb');
        const devices = await usb.getDevices().then((d) => d.length + ' devices', (e) => e.message);
        const ports = await req('@serialport/bindings-cpp').autoDetect().list().then((p) => p.length + ' ports', (e) => e.message);
        req('serialport');
        const loaded = Object.keys(require.cache);
        const outside = loaded.filter((f) => !f.startsWith(${JSON.stringify(ext)}));
        if (outside.length) throw new Error('loaded from outside the vsix: ' + outside.join(', '));
        const natives = loaded.filter((f) => f.endsWith('.node')).length;
        if (natives !== 3) throw new Error(natives + ' native modules loaded, expected 3');
        console.log('3 natives loaded from the unpacked vsix (iroh key ' + id.slice(0, 8) + '…, usb ' + devices + ', serial ' + ports + ')');
      })().catch((e) => { console.error(e.stack); process.exit(1); });`;
    const env = { ...process.env }; delete env.NODE_PATH;
    const r = spawnSync(process.execPath, ['-e', script], { cwd: tmp, env, encoding: 'utf8' });
    if (r.status !== 0) return { ok: false, detail: (r.stderr || r.stdout).trim() };
    const cli = spawnSync(process.execPath, [join(ext, 'dist', 'remote-usb.js'), '--help'], { cwd: tmp, env, encoding: 'utf8' });
    if (cli.status !== 0) return { ok: false, detail: `remote-usb --help exited ${cli.status}: ${cli.stderr.trim()}` };
    return { ok: true, detail: r.stdout.trim() };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

// ---- main ----

console.log('== esbuild --production');
try { execFileSync(process.execPath, ['esbuild.mjs', '--production'], { cwd: root, stdio: 'inherit' }); } catch { fail('esbuild --production failed (see above)'); }
for (const f of DIST) if (!existsSync(join(built, f))) fail(`${relative(root, join(built, f))} was not built`);

const traced = traceRequires();
const host = `${process.platform}-${process.arch}`;
const vsce = join(root, 'node_modules', '@vscode', 'vsce', 'vsce');
const rows = [];
for (const target of targets) {
  console.log(`\n== ${target}`);
  const { dir, missing } = stage(target, traced);
  if (missing.length && !allowMissing) {
    for (const m of missing) console.error(`  ✗ ${m}`);
    rows.push({ target, size: '-', natives: [], status: `NOT BUILT: ${missing.join('; ')} (--allow-missing-native builds it anyway)` });
    continue;
  }
  const vsix = join(outDir, `${pkg.name}-${pkg.version}-${target}${missing.length ? '-incomplete' : ''}.vsix`);
  rmSync(vsix, { force: true });
  const vsceArgs = ['package', '--target', target, '-o', vsix];
  if (!pkg.repository) vsceArgs.push('--allow-missing-repository', '--baseContentUrl', `${REPO_URL}/blob/HEAD/`, '--baseImagesUrl', `${REPO_URL}/raw/HEAD/`);
  // stdin closed: any vsce question fails instead of waiting forever in CI
  const r = spawnSync(process.execPath, [vsce, ...vsceArgs], { cwd: dir, stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.status !== 0) { rows.push({ target, size: '-', natives: [], status: `FAILED: vsce exited ${r.status}` }); continue; }

  const { entries, natives, problems } = verify(vsix, target, missing);
  let loaded = '';
  if (!problems.length && target === host) {
    const load = loadCheck(entries);
    if (load.ok) loaded = `, ${load.detail}`; else problems.push(`load failed: ${load.detail}`);
  }
  if (missing.length) console.warn(`\n  !!!!! WARNING: ${relative(root, vsix)} lacks ${missing.join('; ')}. It is NOT a working release. !!!!!\n`);
  const status = problems.length ? `BAD: ${problems.join('; ')}` : missing.length ? `INCOMPLETE: ${missing.join('; ')}` : `ok${loaded}`;
  rows.push({
    target, size: `${Math.round(statSync(vsix).size / 1024)} KB`, status, ok: !problems.length, incomplete: missing.length > 0,
    natives: natives.map((n) => `${n.name.replace('extension/node_modules/', '')} (${n.kind})`),
  });
}

// target | size | native files (one a line) | status
const table = [['target', 'size', 'native files', 'status'], ...rows.flatMap((r) => {
  const natives = r.natives.length ? r.natives : ['-'];
  return natives.map((n, i) => (i === 0 ? [r.target, r.size, n, r.status] : ['', '', n, '']));
})];
const widths = [0, 1, 2].map((c) => Math.max(...table.map((row) => row[c].length)));
console.log('\n' + table.map((row) => row.map((cell, c) => (c < 3 ? cell.padEnd(widths[c]) : cell)).join('  ')).join('\n'));
const list = (f) => rows.filter(f).map((r) => r.target).join(', ') || 'none';
console.log(`\nbuilt: ${list((r) => r.ok && !r.incomplete)}; built INCOMPLETE: ${list((r) => r.ok && r.incomplete)}; not built: ${list((r) => !r.ok)}`);
process.exit(rows.every((r) => r.ok) ? 0 : 1);
