/**
 * Screenshots of the real workbench, asked for by tests running inside the extension host.
 *
 * The extension host cannot see the browser; the runner (test/vscode/run.mjs) drives it. It tells the
 * suite a private directory in $REMOTE_USB_VSCODE_REQUESTS (the payload's extensionEnvironment), and they
 * talk through files there:
 *   1. this side writes <id>.json  {"name", "selector"?} — or {"steps": [...]} for ui() — (to a temp name first, then renamed)
 *   2. the runner takes the shot, saves <screenshots>/<name>.png (out/test/vscode/screenshots/ unless
 *      $REMOTE_USB_VSCODE_SCREENSHOTS says otherwise), then writes <id>.done {"ok": true, "path"} or
 *      {"ok": false, "error"}
 *   3. this side reads the answer and removes both files.
 * Without a runner ($REMOTE_USB_VSCODE_REQUESTS unset: the @vscode/test-electron runner, which has no
 * browser to drive) screenshot() logs a line and does nothing.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';

const TIMEOUT_MS = 30_000;

export interface ScreenshotOptions {
  /** CSS (Playwright) selector of one element to capture instead of the whole window; its first match. */
  selector?: string;
}

/**
 * Saves a PNG of the workbench window (1400×850), or of one element, as <name>.png. Resolves once the file
 * is written; rejects if the runner reports an error (e.g. no element matches the selector) or does not
 * answer within 30 s. `name`: 1-100 letters, digits, '.', '_', '-'; the same name overwrites.
 */
export async function screenshot(name: string, opts: ScreenshotOptions = {}): Promise<void> {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/.test(name)) {
    throw new Error(`screenshot name '${name}' must be 1-100 letters, digits, '.', '_' or '-'`);
  }
  await ask({ name, selector: opts.selector }, `screenshot '${name}'`);
}

/** One user action in the workbench, done by the runner (Playwright) in the browser. */
export type UiStep =
  | { press: string } // a key, Playwright names: 'F1', 'Enter', 'Escape', 'ArrowDown'
  | { type: string } // text typed into whatever has focus
  | { click: string; text?: string } // CSS selector (+ text it must contain)
  | { waitFor: string; text?: string };

/**
 * Drives the real workbench like a user: the command palette, quick picks, status bar clicks. Returns
 * when every step ran; rejects naming the step that failed. Without a runner (test-electron) it rejects:
 * a UI test cannot pass without a UI.
 */
export async function ui(steps: UiStep[]): Promise<void> {
  if (!process.env.REMOTE_USB_VSCODE_REQUESTS) throw new Error('ui steps need the code-server runner (npm run test:vscode)');
  await ask({ steps }, 'ui steps');
}

/** Steps that run `Remote USB: <title>` from the command palette (F1, type, wait for its row, Enter). */
export function fromPalette(title: string): UiStep[] {
  return [
    { press: 'F1' },
    { waitFor: '.quick-input-widget' },
    { type: `Remote USB: ${title}` },
    { waitFor: '.quick-input-list .monaco-list-row', text: title },
    { press: 'Enter' },
  ];
}

/** True when a runner is there to take screenshots and drive the UI. */
export const hasRunner = (): boolean => Boolean(process.env.REMOTE_USB_VSCODE_REQUESTS);

async function ask(payload: object, what: string): Promise<void> {
  const dir = process.env.REMOTE_USB_VSCODE_REQUESTS;
  if (!dir) {
    console.log(`[screenshot] no screenshot runner (REMOTE_USB_VSCODE_REQUESTS is unset): skipping ${what}`);
    return;
  }
  const id = `${Date.now()}-${randomBytes(4).toString('hex')}`;
  const request = path.join(dir, `${id}.json`);
  const done = path.join(dir, `${id}.done`);
  fs.writeFileSync(`${request}.tmp`, JSON.stringify(payload));
  fs.renameSync(`${request}.tmp`, request);

  const deadline = Date.now() + TIMEOUT_MS;
  try {
    while (!fs.existsSync(done)) {
      if (Date.now() > deadline) {
        throw new Error(`${what}: the runner did not answer within ${TIMEOUT_MS / 1000} s (request ${request})`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    const answer = JSON.parse(fs.readFileSync(done, 'utf8')) as { ok: boolean; path?: string; error?: string };
    if (!answer.ok) throw new Error(`${what} failed: ${answer.error}`);
  } finally {
    fs.rmSync(request, { force: true });
    fs.rmSync(done, { force: true });
  }
}
