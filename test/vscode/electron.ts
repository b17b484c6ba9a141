/**
 * The same real VS Code suite, run in desktop VS Code by @vscode/test-electron, for machines that can
 * download it (this one cannot: use test/vscode/run.mjs, code-server + Chromium). On Linux without a
 * display, run it under xvfb-run. Screenshots are skipped (there is no browser to drive).
 *
 *   node esbuild.mjs --vscode && node out/test/vscode/electron.js      (npm run test:vscode:electron)
 *
 * Environment: VSCODE_VERSION ('stable', 'insiders' or e.g. '1.139.1'; default stable).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { runTests } from '@vscode/test-electron';

/** the repo root (this file is bundled to out/test/vscode/electron.js) */
const REPO = path.resolve(__dirname, '..', '..', '..');

async function main(): Promise<number> {
  const workspace = fs.mkdtempSync(path.join(os.tmpdir(), 'remote-usb-vscode-ws-'));
  const userData = fs.mkdtempSync(path.join(os.tmpdir(), 'remote-usb-vscode-udd-'));
  try {
    await runTests({
      version: process.env.VSCODE_VERSION || undefined,
      extensionDevelopmentPath: REPO,
      extensionTestsPath: path.join(REPO, 'out', 'test', 'vscode', 'suite', 'index.js'),
      launchArgs: [workspace, '--disable-extensions', '--disable-workspace-trust', '--skip-welcome',
        '--skip-release-notes', `--user-data-dir=${userData}`],
    });
    return 0;
  } catch (err) {
    console.error(`[vscode-electron] ${(err as Error).message ?? err}`);
    return 1;
  } finally {
    fs.rmSync(workspace, { recursive: true, force: true });
    fs.rmSync(userData, { recursive: true, force: true });
  }
}

main().then((code) => process.exit(code));
