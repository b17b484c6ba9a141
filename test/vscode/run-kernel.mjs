#!/usr/bin/env node
// "Attach with one click" in a real VS Code against a real kernel (npm run test:vscode:kernel).
//
// The extension host runs INSIDE the qemu guest of test/kernel/ (Debian's kernel under TCG, the host's / over
// 9p), where vhci_hcd, a CDC-ACM gadget on dummy_hcd, our daemon on the real `usb` backend, our helper + the
// real pkexec/polkit, and code-server (as the unprivileged user alice) all live; the browser runs here. This
// file boots the guest with test/vscode/kernel/vscode-attach.sh through test/kernel/run-guest.mjs, giving it
//   --forward <free port>:8080   the guest's code-server on 127.0.0.1:<port> (qemu user networking, isolated)
//   --share <tmp>/share          a read-write 9p directory, mounted in the guest at the same path
// then waits for code-server, logs in with Chromium (lib.mjs, as run.mjs does), opens the workbench with the
// repo as extensionDevelopmentPath and out/test/vscode/suite-kernel/ as the tests, follows mocha's report
// and the suite's screenshot / ui requests (all files in the shared directory), tells the guest it is done
// and collects the guest's own checks (no vhci port left in use, cdc_acm back on the bench side).
// Prints the timings and "N passed, N failed" (mocha tests + the guest's KTEST checks).
//
// Environment: REMOTE_USB_VSCODE_CACHE, REMOTE_USB_VSCODE_SCREENSHOTS as for run.mjs;
//   REMOTE_USB_VSCODE_KERNEL_TIMEOUT_S  the guest's whole life (900); REMOTE_USB_VSCODE_KEEP=1 keeps the tmp dir;
//   KTEST_VERBOSE=1 streams the guest console.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import {
  CACHE, CHROMIUM, CODE_SERVER, CODE_SERVER_VERSION, NODE24, OUT, REPO, RunError, SETTINGS, SHOTS, codeServerArgs,
  followSuite, makeLog, openWorkbench, printDiagnostics, printTail, requireFiles, secs, sleep, t0, testUrl,
} from './lib.mjs';

const SUITE = path.join(OUT, 'suite-kernel', 'index.js');
const SCENARIO = path.join(REPO, 'test', 'vscode', 'kernel', 'vscode-attach.sh');
const RUN_GUEST = path.join(REPO, 'test', 'kernel', 'run-guest.mjs');
const ART = path.join(REPO, 'test-artifacts', 'kernel', 'vscode-attach');
const GUEST_PORT = 8080;
const TIMEOUT_S = Number(process.env.REMOTE_USB_VSCODE_KERNEL_TIMEOUT_S || 900);
const KEEP = process.env.REMOTE_USB_VSCODE_KEEP === '1';
const log = makeLog('vscode-kernel');

let tmp;
let guest; // run-guest.mjs child
let guestExit; // resolves with its exit code
let context;
const browserErrors = [];
const timings = [];
const mark = (what, since) => { timings.push([what, (Date.now() - since) / 1000]); log(`${what}: ${secs(since)}`); };

async function freePort() {
  const srv = net.createServer();
  await new Promise((res, rej) => srv.once('error', rej).listen(0, '127.0.0.1', res));
  const { port } = srv.address();
  await new Promise((res) => srv.close(res));
  return port;
}

async function main() {
  requireFiles([
    ['Node 24', NODE24, 'run test/vscode/setup.sh'],
    ['code-server', CODE_SERVER, 'run test/vscode/setup.sh'],
    ['chromium', CHROMIUM, 'run test/vscode/setup.sh (apt-get install chromium)'],
    ['the kernel', path.join(REPO, 'build', 'kernel', 'linux.version'), 'run test/kernel/setup.sh'],
    ['the bundles', path.join(REPO, 'dist', 'server.js'), 'run node esbuild.mjs --vscode'],
    ['the kernel suite', SUITE, 'run node esbuild.mjs --vscode'],
  ]);

  tmp = fs.mkdtempSync(path.join('/tmp', 'rusb-vk-')); // short, no spaces: it is a 9p export and a guest mount point
  const share = path.join(tmp, 'share');
  const requestDir = path.join(share, 'requests');
  const reportFile = path.join(share, 'mocha-report.txt');
  fs.mkdirSync(requestDir, { recursive: true });
  fs.chmodSync(tmp, 0o711); fs.chmodSync(share, 0o777); fs.chmodSync(requestDir, 0o777); // alice (in the guest) writes here
  fs.mkdirSync(SHOTS, { recursive: true });
  const password = randomBytes(24).toString('base64url');
  const guestCs = '/run/ktest/vscode/cs'; // tmpfs in the guest (see vscode-attach.sh)
  fs.writeFileSync(path.join(share, 'host.json'), JSON.stringify({
    password, cacheDir: CACHE, node24: NODE24, codeServer: CODE_SERVER, codeServerVersion: CODE_SERVER_VERSION, settings: SETTINGS,
    args: codeServerArgs({ config: `${guestCs}/code-server.yaml`, bindAddr: `0.0.0.0:${GUEST_PORT}`, dataDir: `${guestCs}/data`, extDir: `${guestCs}/ext` }),
  }), { mode: 0o644 });

  // ------------------------------------------------------------------------------------------ the guest
  const hostPort = await freePort();
  const tBoot = Date.now();
  guest = spawn(process.execPath, [RUN_GUEST, SCENARIO, String(TIMEOUT_S), '--forward', `${hostPort}:${GUEST_PORT}`, '--share', share, '--artifacts', ART],
    { stdio: ['ignore', 'pipe', 'inherit'] });
  guestExit = new Promise((resolve) => guest.on('exit', (code, signal) => resolve(code ?? signal)));
  let booted = false;
  let buf = '';
  guest.stdout.on('data', (d) => {
    process.stdout.write(d);
    buf += d.toString();
    if (!booted && /guest booted/.test(buf)) { booted = true; mark('guest boot (qemu start -> guest-init)', tBoot); }
  });
  const gone = guestExit.then((code) => ({ why: `the guest ended early (run-guest.mjs exit ${code})` }));
  let ended;
  void gone.then((r) => (ended = r));

  // bench.json from the guest, then code-server answering through the forwarded port
  const base = `http://127.0.0.1:${hostPort}`;
  const benchFile = path.join(share, 'bench.json');
  const waitUntil = async (what, limitS, cond) => {
    const end = Date.now() + limitS * 1000;
    while (!(await cond())) {
      if (ended) throw new RunError(`${ended.why} while waiting for ${what}`);
      if (Date.now() > end) throw new RunError(`${what}: not within ${limitS} s`);
      await sleep(500);
    }
  };
  await waitUntil('the bench ticket and pairing code from the guest', 300, () => fs.existsSync(benchFile));
  const bench = JSON.parse(fs.readFileSync(benchFile, 'utf8'));
  log(`bench in the guest: ${bench.vidPid} at ${bench.busid} (bench tty ${bench.benchTty}), pairing code received`);
  const tCs = Date.now();
  await waitUntil(`code-server in the guest (${base}/healthz)`, 360, async () => (await fetch(`${base}/healthz`, { signal: AbortSignal.timeout(5000) }).catch(() => undefined))?.ok === true);
  mark('code-server up in the guest, seen through the forward (after the bench was ready)', tCs);

  // ------------------------------------------------------------------------------------------ Chromium
  let t = Date.now();
  let page, exited;
  ({ context, page, exited } = await openWorkbench({ chromeDir: path.join(tmp, 'chromium'), base, password, browserErrors, loginTimeoutMs: 120_000 }));
  mark('Chromium up and logged in', t);
  const url = testUrl({ base, folder: `${guestCs}/ws`, suite: SUITE, env: {
    REMOTE_USB_VSCODE_REPORT: reportFile, REMOTE_USB_VSCODE_REQUESTS: requestDir, REMOTE_USB_KERNEL_BENCH: JSON.stringify(bench),
  } });
  t = Date.now();
  await page.goto(url, { timeout: 180_000 });
  let firstReport;
  const watchStart = setInterval(() => { if (!firstReport && fs.existsSync(reportFile) && fs.statSync(reportFile).size > 0) { firstReport = true; mark('workbench + extension host started the suite', t); } }, 250);
  const run = await followSuite({
    page, exited, stop: gone, reportFile, requestDir,
    deadline: tBoot + (TIMEOUT_S - 60) * 1000, timeoutHint: `REMOTE_USB_VSCODE_KERNEL_TIMEOUT_S=${TIMEOUT_S} minus the guest's own checks`, log,
  });
  clearInterval(watchStart);
  mark('suite (page load -> codeAutomationExit)', t);
  const { result, ran, passed, failed, pending, shots } = run;
  log(result.why ?? `the extension host finished the suite with exit code ${result.code}`);

  // ------------------------------------------------------------------------------------------ the guest's checks
  fs.writeFileSync(path.join(share, 'done'), result.why ?? `suite exit ${result.code}, ${passed} passing, ${failed} failing`);
  await Promise.race([context.close().catch(() => {}), sleep(10_000)]);
  context = undefined;
  t = Date.now();
  const guestCode = await Promise.race([guestExit, sleep(180_000).then(() => 'still running after 180 s')]);
  mark('guest checks + power-off', t);
  const results = fs.existsSync(path.join(ART, 'results.log')) ? fs.readFileSync(path.join(ART, 'results.log'), 'utf8') : '';
  const kpass = (results.match(/^KTEST PASS /gm) ?? []).length;
  const kfail = (results.match(/^KTEST FAIL /gm) ?? []).length;
  const metric = (n) => results.match(new RegExp(`^KTEST METRIC \\S*${n} (\\S+) (\\S*)`, 'm'));
  const cs = metric('code_server_listen_ms');
  if (cs) timings.push(['code-server start in the guest (spawn -> listening, TCG)', Number(cs[1]) / 1000]);

  const ok = result.code === 0 && ran && failed === 0 && passed > 0 && guestCode === 0 && kfail === 0 && kpass > 0;
  if (!ok) {
    printDiagnostics(path.join(share, 'guest-logs', 'code-server.log'), path.join(share, 'guest-logs', 'vscode-logs'), browserErrors);
    printTail('daemon log (guest)', path.join(share, 'guest-logs', 'daemon.log'), 40);
    for (const l of results.split('\n').filter((x) => x.startsWith('KTEST FAIL'))) console.log(l);
    log(`guest artifacts: ${path.relative(REPO, ART)}/ (console.log, results.log)`);
  }
  if (shots.size) log(`${shots.size} screenshot${shots.size === 1 ? '' : 's'} in ${path.relative(REPO, SHOTS) || SHOTS}/: ${[...shots].join(' ')}`);
  console.log('[vscode-kernel] ===== timings =====');
  for (const [what, s] of timings) console.log(`  ${what.padEnd(80)} ${s.toFixed(1).padStart(7)} s`);
  console.log(`  ${'total'.padEnd(80)} ${((Date.now() - t0) / 1000).toFixed(1).padStart(7)} s`);
  console.log(`[vscode-kernel] suite in the guest's VS Code: ${passed} passed, ${ran ? failed : '?'} failed${pending ? `, ${pending} pending` : ''}; guest checks: ${kpass} passed, ${kfail} failed (run-guest.mjs exit ${guestCode})`);
  const allFailed = (ran ? failed : 1) + kfail + (guestCode === 0 ? 0 : kfail === 0 ? 1 : 0);
  console.log(`${passed + kpass} passed, ${allFailed} failed`);
  return ok ? 0 : 1;
}

let cleaning;
/** Closes Chromium; tells the guest to finish (graceful: gives it 90 s for its checks and logs) and stops qemu. */
function cleanup(graceful = false) {
  cleaning ??= (async () => {
    if (context) await Promise.race([context.close().catch(() => {}), sleep(10_000)]);
    if (guest && guest.exitCode === null && guest.signalCode === null) {
      if (tmp) try { fs.writeFileSync(path.join(tmp, 'share', 'done'), 'the host runner stopped'); } catch { /* gone */ }
      if (graceful) await Promise.race([guestExit, sleep(90_000)]);
      guest.kill('SIGTERM'); // run-guest.mjs stops qemu
      await Promise.race([guestExit, sleep(15_000)]);
    }
    if (tmp && !KEEP) fs.rmSync(tmp, { recursive: true, force: true });
    else if (tmp) log(`kept ${tmp} (REMOTE_USB_VSCODE_KEEP=1)`);
  })();
  return cleaning;
}
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => { log(`${sig}: stopping`); void cleanup().then(() => process.exit(130)); });
}

let code;
try {
  code = await main();
} catch (err) {
  log(`ERROR: ${err instanceof RunError ? err.message : err?.stack ?? err}`);
  await cleanup(true);
  if (tmp && fs.existsSync(tmp)) {
    printTail('code-server log (guest)', path.join(tmp, 'share', 'guest-logs', 'code-server.log'), 40);
  }
  console.log('0 passed, 1 failed');
  code = 1;
}
await cleanup();
log(`done in ${secs()}`);
process.exit(code);
