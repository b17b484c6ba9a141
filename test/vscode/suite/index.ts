/**
 * Mocha entry of the real VS Code suite: the extension host loads this file (extensionTestsPath) and calls
 * run(). It runs every *.test.js next to it (tdd ui: suite/test/suiteSetup…, spec reporter, no colour).
 *
 * The extension host turns console.log into something the outside cannot see (in code-server it goes to
 * the host's own log), so mocha's report is also appended to a file the runner (test/vscode/run.mjs)
 * follows and prints: $REMOTE_USB_VSCODE_REPORT, or out/test/vscode/mocha-report.txt.
 * $REMOTE_USB_VSCODE_GREP (a regular expression) runs only the tests whose full title matches.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as util from 'node:util';
import Mocha from 'mocha';
import * as vscode from 'vscode';

/** out/test/vscode/ (this file is bundled to out/test/vscode/suite/index.js) */
const OUT_DIR = path.resolve(__dirname, '..');

export function run(): Promise<void> {
  const report = process.env.REMOTE_USB_VSCODE_REPORT || path.join(OUT_DIR, 'mocha-report.txt');
  fs.mkdirSync(path.dirname(report), { recursive: true });
  fs.writeFileSync(report, '');
  const log = (...args: unknown[]): void => {
    fs.appendFileSync(report, util.format(...args) + '\n');
    console.log(...args);
  };
  // The spec reporter writes through Base.consoleLog (console.log itself cannot be replaced in the host).
  Mocha.reporters.Base.consoleLog = log;

  const mocha = new Mocha({ ui: 'tdd', reporter: 'spec', color: false, timeout: 60_000 });
  if (process.env.REMOTE_USB_VSCODE_GREP) mocha.grep(new RegExp(process.env.REMOTE_USB_VSCODE_GREP));
  const files = fs.readdirSync(__dirname).filter((f) => f.endsWith('.test.js')).sort();
  for (const f of files) mocha.addFile(path.join(__dirname, f));
  log(`[vscode-suite] VS Code ${vscode.version} (${vscode.env.appName}), Node ${process.version}; ${files.length} test files: ${files.join(' ')}`);

  return new Promise((resolve, reject) => {
    try {
      mocha.run((failures) => {
        if (failures > 0) reject(new Error(`${failures} test${failures === 1 ? '' : 's'} failed`));
        else resolve();
      });
    } catch (err) {
      log(`[vscode-suite] mocha could not run: ${(err as Error).stack ?? err}`);
      reject(err);
    }
  });
}

