#!/usr/bin/env node
// Real-kernel test harness, host side: boot Debian's kernel under qemu (TCG) with the host's / as the
// guest's root (9p, read-only, tmpfs overlay) and run ONE guest script as the payload of PID 1.
//
//   node test/kernel/run-guest.mjs <guest-script> [timeout-seconds] [--ftdi MODE] [--mem MB]
//                                   [--smp N] [--artifacts DIR] [--verbose]
//                                   [--forward HOSTPORT:GUESTPORT]... [--share DIR]
//
// The guest gets: qemu-xhci + an emulated FTDI FT232 (-device usb-serial) whose serial data goes to a
// unix socket served here ("FTDI peer", MODE = echo | pong | sink | none | path/to/peer.mjs); the console
// on ttyS0 (-> console.log); a result channel on ttyS1 (-> results.log, KTEST lines, see guest-lib.sh).
// Defaults can also come from header lines in the guest script:   # ktest-timeout: 240
//                                                                  # ktest-ftdi: echo
//                                                                  # ktest-mem: 2048
// Artifacts: <repo>/test-artifacts/kernel/<script-name>/{console,results,ftdi,qemu}.log, guest.env,
// summary.json. Exit status 0 only if the guest reported DONE 0, at least one PASS and no FAIL.
//
// Opt-in extras (nothing changes without them):
//   --forward HOSTPORT:GUESTPORT  (repeatable) gives the guest a NIC on qemu user-mode networking, isolated
//       (restrict=on: no route out), with TCP 127.0.0.1:HOSTPORT on the host forwarded to GUESTPORT on the
//       guest's 10.0.2.15. The guest brings the NIC up itself (KTEST_NET_FORWARDS lists the pairs).
//   --share DIR  exports the host directory DIR read-write over 9p (tag "ktestshare"); the guest mounts it
//       at the same path (KTEST_SHARE), so both sides can exchange files while the guest runs.
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..');
const BUILD = process.env.KTEST_BUILD_DIR || path.join(REPO, 'build', 'kernel');
const BOOT_LIMIT_S = Number(process.env.KTEST_BOOT_LIMIT || 120); // no "KTEST BOOTED" by then -> give up

function usage(msg) {
  if (msg) console.error(`run-guest: ${msg}`);
  console.error('usage: run-guest.mjs <guest-script> [timeout-seconds] [--ftdi echo|pong|sink|none|peer.mjs] [--mem MB] [--smp N] [--artifacts DIR] [--verbose] [--forward HOSTPORT:GUESTPORT]... [--share DIR]');
  process.exit(2);
}

// ------------------------------------------------------------------------------------------ arguments
const argv = process.argv.slice(2);
const opt = { verbose: !!process.env.KTEST_VERBOSE, forward: [] };
const positional = [];
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  const val = () => (i + 1 < argv.length ? argv[++i] : usage(`${a} needs a value`));
  if (a === '--ftdi') opt.ftdi = val();
  else if (a === '--mem') opt.mem = Number(val());
  else if (a === '--smp') opt.smp = Number(val());
  else if (a === '--artifacts') opt.artifacts = val();
  else if (a === '--forward') {
    const f = val();
    const m = /^(\d{1,5}):(\d{1,5})$/.exec(f);
    if (!m || !(+m[1] > 0 && +m[1] < 65536 && +m[2] > 0 && +m[2] < 65536)) usage(`--forward wants HOSTPORT:GUESTPORT, got '${f}'`);
    opt.forward.push([+m[1], +m[2]]);
  } else if (a === '--share') opt.share = val();
  else if (a === '--verbose' || a === '-v') opt.verbose = true;
  else if (a === '--help' || a === '-h') usage();
  else if (a.startsWith('--')) usage(`unknown option ${a}`);
  else positional.push(a);
}
if (positional.length < 1 || positional.length > 2) usage();
const script = path.resolve(positional[0]);
if (!fs.existsSync(script)) usage(`guest script not found: ${script}`);
const header = {};
for (const line of fs.readFileSync(script, 'utf8').split('\n').slice(0, 40)) {
  const m = /^#\s*ktest-([a-z]+):\s*(\S+)/.exec(line);
  if (m) header[m[1]] = m[2];
}
const timeoutS = Number(positional[1] || process.env.KTEST_TIMEOUT || header.timeout || 300);
if (!(timeoutS >= 30)) usage(`timeout must be >= 30 s (got ${positional[1] ?? header.timeout})`);
const ftdiMode = opt.ftdi || process.env.KTEST_FTDI || header.ftdi || 'echo';
const memMB = opt.mem || Number(header.mem) || 2048;
const smp = opt.smp || Number(header.smp) || Math.min(2, os.cpus().length || 1);
const name = path.basename(script).replace(/\.(sh|bash)$/, '');
const shareDir = opt.share ? path.resolve(opt.share) : null;
if (shareDir && (!fs.statSync(shareDir, { throwIfNoEntry: false })?.isDirectory() || /[\s,'"]/.test(shareDir))) usage(`--share: not a directory (or a path with spaces/commas/quotes): ${opt.share}`);
const artDir = path.resolve(opt.artifacts || process.env.KTEST_ARTIFACTS || path.join(REPO, 'test-artifacts', 'kernel', name));

// ------------------------------------------------------------------------------------------ prerequisites
function fail(msg) { console.error(`run-guest: ERROR: ${msg}`); process.exit(3); }
const verFile = path.join(BUILD, 'linux.version');
if (!fs.existsSync(verFile)) fail(`${verFile} missing: run test/kernel/setup.sh first`);
const kver = fs.readFileSync(verFile, 'utf8').trim();
const vmlinuz = path.join(BUILD, 'linux', 'boot', `vmlinuz-${kver}`);
const initrd = path.join(BUILD, 'initramfs.cpio.gz');
const modulesDir = path.join(BUILD, 'linux', 'lib', 'modules', kver);
for (const f of [vmlinuz, initrd, path.join(modulesDir, 'modules.dep')]) {
  if (!fs.existsSync(f)) fail(`${f} missing: run test/kernel/setup.sh`);
}
let qemuBin = 'qemu-system-x86_64';
try { qemuBin = execFileSync('sh', ['-c', 'command -v qemu-system-x86_64'], { encoding: 'utf8' }).trim(); }
catch { fail('qemu-system-x86_64 not on PATH: run test/kernel/setup.sh'); }
const nodeBin = fs.realpathSync(process.execPath);   // the guest runs the very same node binary

// ------------------------------------------------------------------------------------------ run dirs
fs.mkdirSync(artDir, { recursive: true });
for (const f of ['console.log', 'results.log', 'ftdi.log', 'qemu.log', 'guest.env', 'summary.json']) {
  fs.rmSync(path.join(artDir, f), { force: true });
}
let tmpBase = os.tmpdir();
if (/\s|,/.test(tmpBase) || tmpBase.length > 60) tmpBase = '/tmp';
const runDir = fs.mkdtempSync(path.join(tmpBase, 'ktest-'));   // unix socket paths must be short
const sock = { results: path.join(runDir, 'results.sock'), ftdi: path.join(runDir, 'ftdi.sock') };
const files = {
  console: path.join(artDir, 'console.log'), results: path.join(artDir, 'results.log'),
  ftdi: path.join(artDir, 'ftdi.log'), qemu: path.join(artDir, 'qemu.log'), summary: path.join(artDir, 'summary.json'),
};

const guestTimeoutS = Math.max(20, timeoutS - 30);  // guest gives up first, so it can still report + dump
const shq = (s) => `'${String(s).replace(/'/g, `'\\''`)}'`;
const env = {
  KTEST_REPO: REPO, KTEST_SCRIPT: script, KTEST_NAME: name, KTEST_NODE: nodeBin,
  KTEST_MODULES_DIR: modulesDir, KTEST_GUEST_TIMEOUT: guestTimeoutS, KTEST_FTDI: ftdiMode,
  KTEST_RESULTS_DEV: '/dev/ttyS1', KTEST_HOST_ARTIFACTS: artDir,
  ...(opt.forward.length ? { KTEST_NET_FORWARDS: opt.forward.map(([h, g]) => `${h}:${g}`).join(' ') } : {}),
  ...(shareDir ? { KTEST_SHARE: shareDir, KTEST_SHARE_TAG: 'ktestshare' } : {}),
};
const envText = Object.entries(env).map(([k, v]) => `${k}=${shq(v)}`).join('\n') + '\n';
const envFile = path.join(runDir, 'guest.env');
fs.writeFileSync(envFile, envText);
fs.writeFileSync(path.join(artDir, 'guest.env'), envText);

const t0 = Date.now();
const since = () => ((Date.now() - t0) / 1000).toFixed(1);
const say = (s) => console.log(`[ktest ${name} +${since()}s] ${s}`);

// ------------------------------------------------------------------------------------------ FTDI peer
const ftdiLog = fs.createWriteStream(files.ftdi);
const flog = (s) => ftdiLog.write(`[+${since()}s] ${s}\n`);
// A peer must NEVER stop reading from qemu (no pause(), no pipe() backpressure): qemu's usb-serial writes
// guest->chardev data with a blocking write_all under its big lock, so if the peer stops reading while
// qemu cannot deliver peer->guest data, the whole VM freezes (seen with c.pipe(c) after ~70 KB).
// Buffer in the peer instead (socket.write queues without limit).
async function makeFtdiHandler(mode) {
  if (mode === 'echo') return (c) => c.on('data', (d) => c.write(d));
  if (mode === 'sink') return (c) => c.resume();
  if (mode === 'pong') {
    return (c) => {
      let buf = '';
      c.on('data', (d) => {
        buf += d.toString('latin1');
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i).replace(/\r$/, ''); buf = buf.slice(i + 1);
          c.write(`PONG ${line}\r\n`);
        }
      });
    };
  }
  // a module: export default function (socket, { log, name, artifacts }) { ... }  (same rule: keep reading)
  const p = path.resolve(path.isAbsolute(mode) ? mode : path.join(path.dirname(script), mode));
  if (!fs.existsSync(p)) fail(`--ftdi: unknown mode or missing peer module '${mode}'`);
  const mod = await import(pathToFileURL(p).href);
  if (typeof mod.default !== 'function') fail(`FTDI peer module ${p} has no default export function`);
  return (c) => mod.default(c, { log: flog, name, artifacts: artDir });
}
let ftdiServer = null;
if (ftdiMode !== 'none') {
  const handler = await makeFtdiHandler(ftdiMode);
  ftdiServer = net.createServer((c) => {
    let rx = 0, tx = 0;
    const origWrite = c.write.bind(c);
    c.write = (d, ...rest) => { tx += d.length; return origWrite(d, ...rest); };
    flog(`qemu connected (mode ${ftdiMode})`);
    c.on('data', (d) => { rx += d.length; });
    c.on('error', (e) => flog(`socket error: ${e.message}`));
    c.on('close', () => flog(`qemu disconnected: ${rx} bytes from guest, ${tx} bytes to guest`));
    try { handler(c); } catch (e) { flog(`peer handler threw: ${e.stack || e}`); }
  });
  await new Promise((res, rej) => ftdiServer.once('error', rej).listen(sock.ftdi, res));
  flog(`listening on ${sock.ftdi}, mode ${ftdiMode}`);
}

// ------------------------------------------------------------------------------------------ result channel
const results = { lines: [], pass: 0, fail: 0, metrics: [], booted: null, done: null };
const resultsOut = fs.createWriteStream(files.results);
let resultsConnClosed = null;
function onResultLine(raw) {
  const line = raw.replace(/\r/g, '').trim();
  if (!line) return;
  if (!line.startsWith('KTEST ')) { resultsOut.write(`# ${line}\n`); return; }
  results.lines.push(line);
  resultsOut.write(line + '\n');
  const [, kind, ...rest] = line.split(/\s+/);
  if (kind === 'PASS') results.pass++;
  else if (kind === 'FAIL') results.fail++;
  else if (kind === 'METRIC') results.metrics.push({ name: rest[0], value: rest[1], unit: rest[2] || '' });
  else if (kind === 'BOOTED') {
    results.booted = { hostS: (Date.now() - t0) / 1000, line };
    const up = /uptime=([\d.]+)/.exec(line);
    say(`guest booted (${results.booted.hostS.toFixed(1)} s after qemu start, guest uptime ${up ? up[1] : '?'} s)`);
    return;
  } else if (kind === 'DONE') { results.done = { rc: Number(rest[0]), line }; }
  say(line);
}
const resultsServer = net.createServer((c) => {
  let buf = '';
  const closed = new Promise((res) => c.on('close', res));
  resultsConnClosed = closed;
  c.on('data', (d) => {
    buf += d.toString('utf8');
    let i;
    while ((i = buf.indexOf('\n')) >= 0) { onResultLine(buf.slice(0, i)); buf = buf.slice(i + 1); }
  });
  c.on('end', () => { if (buf) onResultLine(buf); buf = ''; });
  c.on('error', () => {});
});
await new Promise((res, rej) => resultsServer.once('error', rej).listen(sock.results, res));

// ------------------------------------------------------------------------------------------ qemu
const qesc = (p) => p.replace(/,/g, ',,');   // qemu option values: ',' must be doubled
const accel = process.env.KTEST_ACCEL || 'tcg,thread=multi';
const append = [
  'console=ttyS0', 'panic=-1', 'quiet', 'loglevel=4', 'mitigations=off', 'tsc=reliable',
  `ktest_env=${envFile}`,
].join(' ');
if (/\s|"/.test(envFile)) fail(`env file path unusable on the kernel command line: ${envFile}`);
const qargs = [
  '-nodefaults', '-no-user-config', '-accel', accel, '-cpu', 'max', '-smp', String(smp), '-m', String(memMB),
  '-display', 'none', '-monitor', 'none', '-no-reboot',
  '-kernel', vmlinuz, '-initrd', initrd, '-append', append,
  '-chardev', `file,id=con,path=${qesc(files.console)}`, '-serial', 'chardev:con',
  '-chardev', `socket,id=res,path=${qesc(sock.results)}`, '-serial', 'chardev:res',
  '-virtfs', 'local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap',
  '-device', 'qemu-xhci,id=xhci',
];
if (opt.forward.length) {   // opt-in: isolated user-mode NIC, only the forwards reach it (guest 10.0.2.15)
  const fwd = opt.forward.map(([h, g]) => `hostfwd=tcp:127.0.0.1:${h}-:${g}`).join(',');
  qargs.push('-netdev', `user,id=net0,restrict=on,${fwd}`, '-device', 'virtio-net-pci,netdev=net0');
}
if (shareDir) {   // opt-in: a read-write host directory, mounted by the guest at the same path
  qargs.push('-virtfs', `local,path=${qesc(shareDir)},mount_tag=ktestshare,security_model=none`);
}
if (ftdiServer) {
  qargs.push('-chardev', `socket,id=ftdi,path=${qesc(sock.ftdi)}`, '-device', 'usb-serial,bus=xhci.0,chardev=ftdi');
}
const loadavg = () => { try { return fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' '); } catch { return '?'; } };
resultsOut.write(`# host: ${os.cpus().length} CPUs, loadavg at start ${loadavg()}, kernel ${kver}, timeout ${timeoutS}s, FTDI peer ${ftdiMode}\n`);
say(`kernel ${kver}, ${smp} vCPU ${memMB} MiB, accel ${accel}, timeout ${timeoutS}s (guest ${guestTimeoutS}s), FTDI peer ${ftdiMode}` +
  (opt.forward.length ? `, forwards ${opt.forward.map(([h, g]) => `127.0.0.1:${h}->guest:${g}`).join(' ')}` : '') + (shareDir ? `, share ${shareDir}` : ''));
say(`artifacts: ${artDir}`);
const qemuLog = fs.createWriteStream(files.qemu);
qemuLog.write(`${qemuBin} ${qargs.map((a) => (/[\s"']/.test(a) ? JSON.stringify(a) : a)).join(' ')}\n\n`);
const qemu = spawn(qemuBin, qargs, { stdio: ['ignore', 'pipe', 'pipe'] });
qemu.stdout.pipe(qemuLog, { end: false });
qemu.stderr.pipe(qemuLog, { end: false });

let killedFor = null;
function killQemu(reason) {
  if (killedFor || qemu.exitCode !== null || qemu.signalCode !== null) return;
  killedFor = reason;
  say(`killing qemu: ${reason}`);
  qemu.kill('SIGTERM');
  setTimeout(() => { if (qemu.exitCode === null && qemu.signalCode === null) qemu.kill('SIGKILL'); }, 5000).unref();
}
const hardTimer = setTimeout(() => killQemu(`hard timeout ${timeoutS}s`), timeoutS * 1000);
const bootTimer = setTimeout(() => { if (!results.booted) killQemu(`guest did not reach guest-init within ${BOOT_LIMIT_S}s`); }, BOOT_LIMIT_S * 1000);
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => { killQemu(`runner got ${sig}`); });
}
let lastConsoleSize = 0;
function streamConsole() {   // --verbose: stream the console as it grows
  if (!opt.verbose) return;
  try {
    const st = fs.statSync(files.console);
    if (st.size > lastConsoleSize) {
      const fd = fs.openSync(files.console, 'r');
      const b = Buffer.alloc(st.size - lastConsoleSize);
      fs.readSync(fd, b, 0, b.length, lastConsoleSize); fs.closeSync(fd);
      lastConsoleSize = st.size;
      process.stdout.write(cleanConsole(b.toString('utf8')));
    }
  } catch { /* not there yet */ }
}
const progress = setInterval(streamConsole, 500);

const exit = await new Promise((res) => qemu.on('exit', (code, signal) => res({ code, signal })));
clearTimeout(hardTimer); clearTimeout(bootTimer); clearInterval(progress); streamConsole();
if (resultsConnClosed) await Promise.race([resultsConnClosed, new Promise((r) => setTimeout(r, 2000))]);
resultsServer.close(); ftdiServer?.close();
const wallS = (Date.now() - t0) / 1000;

// ------------------------------------------------------------------------------------------ verdict
function cleanConsole(s) {
  // eslint-disable-next-line no-control-regex -- stripping the guest's terminal escape sequences
  return s.replace(/\x1b\[[0-9;?]*[A-Za-z]|\x1bc/g, '').replace(/\r(?!\n)/g, '\n').replace(/\r/g, '');
}
let harnessFail = null;
if (killedFor) harnessFail = `qemu killed: ${killedFor}`;
else if (!results.booted) harnessFail = `guest never reached guest-init (qemu exit ${exit.code ?? exit.signal}; see console.log / qemu.log)`;
else if (!results.done) harnessFail = `guest ended without DONE (kernel panic or crash? qemu exit ${exit.code ?? exit.signal})`;
else if (results.done.rc !== 0) harnessFail = `guest script exited with rc ${results.done.rc}`;
else if (results.pass === 0 && results.fail === 0) harnessFail = 'guest script reported no PASS/FAIL results';
if (harnessFail) onResultLine(`KTEST FAIL ${name}.harness ${harnessFail}`);
resultsOut.write(`# host: loadavg at end ${loadavg()}\n`);
if (results.booted) onResultLine(`KTEST METRIC ${name}.boot_to_init_s ${results.booted.hostS.toFixed(1)} s`);
onResultLine(`KTEST METRIC ${name}.guest_wall_s ${wallS.toFixed(1)} s`);
await new Promise((r) => resultsOut.end(r));
await new Promise((r) => ftdiLog.end(r));
qemu.stdout.unpipe(qemuLog); qemu.stderr.unpipe(qemuLog);
await new Promise((r) => qemuLog.end(r));
fs.rmSync(runDir, { recursive: true, force: true });

const ok = !harnessFail && results.fail === 0 && results.pass > 0;
fs.writeFileSync(files.summary, JSON.stringify({
  name, script, ok, pass: results.pass, fail: results.fail, harnessFail, metrics: results.metrics,
  bootToInitS: results.booted?.hostS ?? null, wallS, kernel: kver, timeoutS, ftdiMode, qemuExit: exit,
}, null, 2) + '\n');

if (!ok) {
  const con = fs.existsSync(files.console) ? cleanConsole(fs.readFileSync(files.console, 'utf8')).split('\n') : [];
  const dBeg = con.indexOf('----- ktest dmesg begin -----');
  const dEnd = con.indexOf('----- ktest dmesg end -----');
  const main = dBeg >= 0 ? con.slice(0, dBeg) : con;
  console.log(`\n===== ${name}: FAILED — last console lines (${files.console}) =====`);
  console.log(main.slice(-80).join('\n'));
  if (dBeg >= 0) {
    console.log(`===== ${name}: last kernel messages =====`);
    console.log(con.slice(dBeg + 1, dEnd >= 0 ? dEnd : undefined).slice(-30).join('\n'));
  }
  const q = fs.existsSync(files.qemu) ? fs.readFileSync(files.qemu, 'utf8').split('\n').slice(1).filter(Boolean) : [];
  if (q.length) console.log(`===== qemu output =====\n${q.slice(-15).join('\n')}`);
  for (const l of results.lines.filter((x) => x.startsWith('KTEST FAIL'))) console.log(l);
}
say(`${ok ? 'OK' : 'FAILED'}: ${results.pass} passed, ${results.fail} failed, wall ${wallS.toFixed(1)} s`);
process.exit(ok ? 0 : 1);
