#!/usr/bin/env node
// Runs the real VS Code suite (out/test/vscode/suite/*.test.js) inside a real extension host: code-server
// (VS Code 1.139, on Node 24, from the cache test/vscode/setup.sh fills) driven by Debian's Chromium
// through playwright-core. The repo root is loaded as the extension under development.
//
//   npm run test:vscode        (= setup.sh, node esbuild.mjs --vscode, then this file)
//
// What it does: starts code-server on 127.0.0.1 (a free port, password auth with a random password, a
// fresh user-data/extensions dir, the smoke-test driver on), logs in through the log-in page, opens
// /?folder=<temp workspace>&payload=[extensionDevelopmentPath, extensionTestsPath], streams mocha's report,
// takes the screenshots the suite asks for (suite/screenshot.ts), waits for window.codeAutomationExit(code),
// then stops Chromium and code-server's whole process group. Prints "N passed, N failed"; exits non-zero
// when a test failed, nothing ran, or the run timed out.
//
// Environment:
//   REMOTE_USB_VSCODE_CACHE      where setup.sh put Node 24 and code-server (~/.cache/remote-usb-vscode)
//   REMOTE_USB_VSCODE_SCREENSHOTS where the screenshots go (out/test/vscode/screenshots)
//   REMOTE_USB_VSCODE_TIMEOUT_S  overall time limit in seconds (600)
//   REMOTE_USB_VSCODE_KEEP=1     keep the temp dir (code-server and extension host logs, profile)
//   REMOTE_USB_VSCODE_GREP       only run tests whose full title matches this regular expression
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  CHROMIUM, CODE_SERVER, CODE_SERVER_VERSION, NODE24, NODE_VERSION, OUT, REPO, RunError, SETTINGS, SHOTS,
  codeServerArgs, followSuite, makeLog, openWorkbench, printDiagnostics, printTail, requireFiles, secs, sleep, t0, testUrl,
} from './lib.mjs';

const SUITE = path.join(OUT, 'suite', 'index.js');
const TIMEOUT_S = Number(process.env.REMOTE_USB_VSCODE_TIMEOUT_S || 600);
const KEEP = process.env.REMOTE_USB_VSCODE_KEEP === '1';
const log = makeLog('vscode-run');

let tmp; // everything of this run: profile, extensions, workspace, Chromium profile, logs, report, requests
let server; // code-server child (leader of its own process group)
let serverExit; // resolves with a description once code-server is gone
let context; // Playwright browser context
const browserErrors = [];

async function main() {
  requireFiles([
    ['Node 24', NODE24, 'run test/vscode/setup.sh'],
    ['code-server', CODE_SERVER, 'run test/vscode/setup.sh'],
    ['chromium', CHROMIUM, 'run test/vscode/setup.sh (apt-get install chromium)'],
    ['the extension bundle', path.join(REPO, 'dist', 'extension.js'), 'run node esbuild.mjs --vscode'],
    ['the suite', SUITE, 'run node esbuild.mjs --vscode'],
  ]);

  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'remote-usb-vscode-'));
  const dirs = { data: path.join(tmp, 'data'), ext: path.join(tmp, 'extensions'), ws: path.join(tmp, 'workspace'), chrome: path.join(tmp, 'chromium') };
  for (const d of Object.values(dirs)) fs.mkdirSync(d, { recursive: true, mode: 0o700 });
  fs.mkdirSync(path.join(dirs.data, 'User'), { recursive: true });
  fs.writeFileSync(path.join(dirs.data, 'User', 'settings.json'), JSON.stringify(SETTINGS, null, 2));
  // a config file of our own, so code-server neither reads nor creates ~/.config/code-server/config.yaml
  const config = path.join(tmp, 'code-server.yaml');
  fs.writeFileSync(config, 'cert: false\n', { mode: 0o600 });

  // The suite learns these through the payload's extensionEnvironment (honoured by VS Code 1.139).
  const reportFile = path.join(tmp, 'mocha-report.txt'); // suite/index.ts appends mocha's report
  const requestDir = path.join(tmp, 'screenshot-requests'); // suite/screenshot.ts asks for screenshots here
  fs.mkdirSync(requestDir, { mode: 0o700 });
  fs.mkdirSync(SHOTS, { recursive: true });

  // ------------------------------------------------------------------------------------------ code-server
  const password = randomBytes(24).toString('base64url');
  const env = { ...process.env, PASSWORD: password, PATH: `${path.dirname(NODE24)}:${process.env.PATH}` };
  // Inherited from a VS Code terminal these would turn code-server into a client of that VS Code.
  for (const k of Object.keys(env)) if (k.startsWith('VSCODE_') || k === 'ELECTRON_RUN_AS_NODE') delete env[k];
  const serverLog = path.join(tmp, 'code-server.log');
  const logFd = fs.openSync(serverLog, 'a');
  const args = [CODE_SERVER, ...codeServerArgs({ config, bindAddr: '127.0.0.1:0', dataDir: dirs.data, extDir: dirs.ext })];
  let t = Date.now();
  server = spawn(NODE24, args, { cwd: dirs.ws, env, stdio: ['ignore', logFd, logFd], detached: true });
  fs.closeSync(logFd);
  serverExit = new Promise((resolve) => server.on('exit', (code, signal) => resolve(`code-server exited (${signal ?? `code ${code}`})`)));
  server.on('error', (err) => log(`code-server: ${err.message}`));
  log(`code-server ${CODE_SERVER_VERSION} on Node ${NODE_VERSION} starting (pid ${server.pid}, logs in ${tmp})`);

  const base = await serverUrl(serverLog);
  log(`code-server listening on ${base} after ${secs(t)}`);

  // ------------------------------------------------------------------------------------------ Chromium
  t = Date.now();
  let page, exited;
  ({ context, page, exited } = await openWorkbench({ chromeDir: dirs.chrome, base, password, browserErrors }));
  log(`Chromium up and logged in after ${secs(t)}`);

  const url = testUrl({ base, folder: dirs.ws, suite: SUITE, env: { REMOTE_USB_VSCODE_REPORT: reportFile, REMOTE_USB_VSCODE_REQUESTS: requestDir,
    ...(process.env.REMOTE_USB_VSCODE_GREP ? { REMOTE_USB_VSCODE_GREP: process.env.REMOTE_USB_VSCODE_GREP } : {}) } });
  t = Date.now();
  await page.goto(url);

  // ------------------------------------------------------------------------------------------ the run
  const { result, ran, passed, failed, pending, shots } = await followSuite({
    page, exited, stop: serverExit.then((why) => ({ why })), reportFile, requestDir,
    deadline: t0 + TIMEOUT_S * 1000, timeoutHint: `after ${TIMEOUT_S} s, REMOTE_USB_VSCODE_TIMEOUT_S`, log,
  });
  const ok = result.code === 0 && ran && failed === 0 && passed > 0;
  log(result.why ?? `the extension host finished the suite with exit code ${result.code} after ${secs(t)}`);
  if (!ran) log('no mocha summary in the report: the suite did not run to its end');
  else if (passed + failed === 0) log('no test ran');
  if (!ok) printDiagnostics(serverLog, path.join(dirs.data, 'logs'), browserErrors);
  if (shots.size) log(`${shots.size} screenshot${shots.size === 1 ? '' : 's'} in ${path.relative(REPO, SHOTS) || SHOTS}/: ${[...shots].join(' ')}`);
  console.log(`${passed} passed, ${ran ? failed : '?'} failed${pending > 0 ? `, ${pending} pending` : ''}`);
  return ok ? 0 : 1;
}

/** Waits for code-server to say where it listens (it binds port 0: the kernel picks a free port). */
async function serverUrl(serverLog) {
  const deadline = Date.now() + 60_000;
  let gone;
  void serverExit.then((why) => (gone = why));
  while (Date.now() < deadline) {
    const m = fs.readFileSync(serverLog, 'utf8').match(/HTTP server listening on (http:\/\/127\.0\.0\.1:\d+)/);
    if (m) {
      for (;;) { // and wait until it answers
        const res = await fetch(`${m[1]}/healthz`).catch(() => undefined);
        if (res?.ok) return m[1];
        if (gone || Date.now() > deadline) break;
        await sleep(100);
      }
    }
    if (gone) break;
    await sleep(100);
  }
  printTail('code-server log', serverLog, 40);
  throw new RunError(gone ? `${gone} before it was ready` : 'code-server did not come up within 60 s');
}

let cleaning;
/** Stops Chromium and code-server's whole process group (extension host, file watcher, pty host…). */
function cleanup() {
  cleaning ??= (async () => {
    const browser = context ? Promise.race([context.close().catch(() => {}), sleep(10_000)]) : undefined;
    if (server?.pid && server.exitCode === null && server.signalCode === null) {
      try { process.kill(-server.pid, 'SIGTERM'); } catch { /* already gone */ }
      await Promise.race([serverExit, sleep(5_000)]);
    }
    // whatever survived in the group (an extension host child ignoring SIGTERM), and the leader if it hung
    if (server?.pid) {
      try { process.kill(-server.pid, 'SIGKILL'); } catch { /* nothing left */ }
    }
    await browser;
    if (tmp && !KEEP) fs.rmSync(tmp, { recursive: true, force: true });
    else if (tmp) log(`kept ${tmp} (REMOTE_USB_VSCODE_KEEP=1)`);
  })();
  return cleaning;
}

for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    log(`${sig}: stopping`);
    void cleanup().then(() => process.exit(130));
  });
}

let code;
try {
  code = await main();
} catch (err) {
  log(`ERROR: ${err instanceof RunError ? err.message : err?.stack ?? err}`);
  code = 1;
}
await cleanup();
log(`done in ${secs()}`);
process.exit(code);
