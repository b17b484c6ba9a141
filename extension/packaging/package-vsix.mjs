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
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, relative } from 'node:path';
import { inflateRawSync } from 'node:zlib';
import { NATIVE_TARGETS, NODE_RUNTIMES, OUR_USB_PATH, binaryKind, canEmulate, emulated, kindMatches, npmPackage, ourIrohBinary, ourUsbBinary, outDir, reportTargets, root, stageNatives, traceRequires } from '../../server/shared/natives.mjs';

const built = join(root, 'out', 'production'); // where `esbuild.mjs --production` writes the bundles
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));

// The .vsix targets (VS Code's linux targets are glibc); natives.mjs says which natives each one takes.
const TARGETS = Object.fromEntries(['linux-x64', 'linux-arm64', 'darwin-arm64', 'win32-x64'].map((t) => [t, NATIVE_TARGETS[t]]));
// bundled runtime files the extension needs: extension.js, core-worker.js (the byte path's worker thread), helper.js (Install Helper copies it from
// the extension's own dist/), remote-usb.js (the CLI, for terminals and tasks)
const DIST = ['extension.js', 'core-worker.js', 'helper.js', 'remote-usb.js'];
// README links are relative; without a `repository` in package.json vsce needs a base URL (the
// same repository the welcome view links to).
const REPO_URL = 'https://github.com/remote-usb/remote-usb';

const args = process.argv.slice(2);
const allowMissing = args.includes('--allow-missing-native');
const targetArg = args.find((a, i) => args[i - 1] === '--target') ?? args.find((a) => a.startsWith('--target='))?.slice(9);
const targets = targetArg ? targetArg.split(',') : Object.keys(TARGETS);
for (const t of targets) if (!TARGETS[t]) fail(`unknown target '${t}' (known: ${Object.keys(TARGETS).join(', ')})`);

function fail(msg) { console.error(`package-vsix: ${msg}`); process.exit(2); }

// ---- staging ----

function stage(target, traced) {
  const dir = join(outDir, target);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, 'dist'), { recursive: true });
  const { missing, staged } = stageNatives(dir, target, traced);

  const manifest = { ...pkg };
  for (const k of ['devDependencies', 'scripts', 'bin']) delete manifest[k];
  manifest.dependencies = Object.fromEntries(Object.entries(pkg.dependencies).filter(([n]) => staged.has(n)));
  writeFileSync(join(dir, 'package.json'), JSON.stringify(manifest, null, 2) + '\n');
  for (const f of DIST) cpSync(join(built, f), join(dir, 'dist', f));
  const ours = ourIrohBinary(target);
  if (ours) cpSync(ours, join(dir, 'dist', basename(ours)));
  const ourUsb = ourUsbBinary(target);
  if (ourUsb) { mkdirSync(dirname(join(dir, 'dist', OUR_USB_PATH)), { recursive: true }); cpSync(ourUsb, join(dir, 'dist', OUR_USB_PATH)); }
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

function verify(vsix, target, missing) {
  const entries = readZip(vsix);
  const natives = entries.filter((e) => e.name.endsWith('.node')).map((e) => ({ name: e.name, kind: binaryKind(e.data()) }));
  const wrong = natives.filter((n) => !kindMatches(n.kind, TARGETS[target].binary));
  const problems = wrong.map((n) => `${n.name} is ${n.kind}, not ${TARGETS[target].binary}`);
  // one Iroh binding at least: @number0/iroh's (where npm has it for the target) and/or ours (where built)
  for (const [what, re] of [['Iroh', /@number0\/iroh|remote-usb-iroh\./], ['usb', /node_modules\/usb\/prebuilds/], ['serialport', /bindings-cpp/]]) {
    const n = natives.filter((x) => re.test(x.name)).length;
    if (n === 0 && !missing.length) problems.push(`no ${what} binary`);
  }
  for (const [what, re] of [['@number0/iroh', /@number0\/iroh/], ['usb', /node_modules\/usb\/prebuilds/], ['serialport', /bindings-cpp/]]) {
    const n = natives.filter((x) => re.test(x.name)).length;
    if (n > 1) problems.push(`${n} ${what} binaries (expected one)`);
  }
  // our own Iroh binding: at most one, beside the bundle
  const ours = natives.filter((x) => /remote-usb-iroh\./.test(x.name));
  if (ours.length > 1 || ours.some((x) => !x.name.startsWith('extension/dist/'))) problems.push(`our Iroh binding: ${ours.map((x) => x.name).join(', ')}`);
  for (const f of ['extension/package.json', ...DIST.map((f) => `extension/dist/${f}`)]) {
    if (!entries.some((e) => e.name === f)) problems.push(`${f} missing`);
  }
  return { entries, natives, problems };
}

// Unpack and load the natives the way the extension would: resolved from extension/dist/, in a
// child without NODE_PATH, and every module it loaded must come from the unpacked copy. `node` runs it: this
// machine's, or for an ARM target npm's Node for it under qemu-user.
function loadCheck(entries, node) {
  const ours = entries.find((e) => /^extension\/dist\/remote-usb-iroh\..*\.node$/.test(e.name));
  const number0 = entries.some((e) => /^extension\/node_modules\/@number0\/iroh-[^/]+\/.*\.node$/.test(e.name));
  const expected = 2 + (number0 ? 1 : 0) + (ours ? 1 : 0);
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
        const ours = ${JSON.stringify(ours ? './' + basename(ours.name) : null)};
        const id = ${number0} ? req('@number0/iroh/index.js').SecretKey.generate().public().toString() : req(ours).endpointIdOf(new Uint8Array(32).fill(1));
        const { usb } = req('usb');
        const devices = usb.getDeviceList().length + ' devices';
        const ports = await req('@serialport/bindings-cpp').autoDetect().list().then((p) => p.length + ' ports', (e) => e.message);
        req('serialport');
        if (ours) req(ours).endpointIdOf(new Uint8Array(32));
        const loaded = Object.keys(require.cache);
        const outside = loaded.filter((f) => !f.startsWith(${JSON.stringify(ext)}));
        if (outside.length) throw new Error('loaded from outside the vsix: ' + outside.join(', '));
        const natives = loaded.filter((f) => f.endsWith('.node')).length;
        if (natives !== ${expected}) throw new Error(natives + ' native modules loaded, expected ${expected}');
        console.log('${expected} natives loaded from the unpacked vsix by Node ' + process.version + ' ' + process.arch + ' (iroh key ' + id.slice(0, 8) + '…, usb ' + devices + ', serial ' + ports + ')');
      })().catch((e) => { console.error(e.stack); process.exit(1); });`;
    const env = { ...process.env }; delete env.NODE_PATH;
    const r = spawnSync(node[0], [...node.slice(1), '-e', script], { cwd: tmp, env, encoding: 'utf8', timeout: 180_000 });
    if (r.status !== 0) return { ok: false, detail: (r.stderr || r.stdout).trim() };
    const cli = spawnSync(node[0], [...node.slice(1), join(ext, 'dist', 'remote-usb.js'), '--help'], { cwd: tmp, env, encoding: 'utf8', timeout: 180_000 });
    if (cli.status !== 0) return { ok: false, detail: `remote-usb --help exited ${cli.status}: ${cli.stderr.trim()}` };
    return { ok: true, detail: r.stdout.trim() };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** How to run Node for `target` here: this machine's, npm's Node for an ARM target under qemu-user, or null. */
function nodeFor(target) {
  if (target === host) return [process.execPath];
  if (!canEmulate(target)) return null;
  const got = npmPackage(NODE_RUNTIMES[target]);
  return got.missing ? null : emulated(target, join(got.dir, 'bin', 'node'));
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
    rows.push({ target, size: '-', files: [], status: `NOT BUILT: ${missing.join('; ')} (--allow-missing-native builds it anyway)` });
    continue;
  }
  const vsix = join(outDir, `${pkg.name}-${pkg.version}-${target}${missing.length ? '-incomplete' : ''}.vsix`);
  rmSync(vsix, { force: true });
  const vsceArgs = ['package', '--target', target, '-o', vsix];
  if (!pkg.repository) vsceArgs.push('--allow-missing-repository', '--baseContentUrl', `${REPO_URL}/blob/HEAD/`, '--baseImagesUrl', `${REPO_URL}/raw/HEAD/`);
  // stdin closed: any vsce question fails instead of waiting forever in CI
  const r = spawnSync(process.execPath, [vsce, ...vsceArgs], { cwd: dir, stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.status !== 0) { rows.push({ target, size: '-', files: [], status: `FAILED: vsce exited ${r.status}` }); continue; }

  const { entries, natives, problems } = verify(vsix, target, missing);
  let loaded = '';
  const node = problems.length ? null : nodeFor(target);
  if (node) {
    const load = loadCheck(entries, node);
    if (load.ok) loaded = `, ${load.detail}`; else problems.push(`load failed: ${load.detail}`);
  } else if (!problems.length) loaded = ', not loaded here';
  if (missing.length) console.warn(`\n  !!!!! WARNING: ${relative(root, vsix)} lacks ${missing.join('; ')}. It is NOT a working release. !!!!!\n`);
  const status = problems.length ? `BAD: ${problems.join('; ')}` : missing.length ? `INCOMPLETE: ${missing.join('; ')}` : `ok${loaded}`;
  rows.push({
    target, size: `${Math.round(statSync(vsix).size / 1024)} KB`, status, ok: !problems.length, incomplete: missing.length > 0,
    files: natives.map((n) => `${n.name.replace('extension/node_modules/', '')} (${n.kind})`),
  });
}

process.exit(reportTargets(rows, 'native files'));
