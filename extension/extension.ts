/** VS Code entry point (being written: see the Remote USB view, status bar, commands). */
import * as vscode from 'vscode';

export function activate(context: vscode.ExtensionContext): { version: string } {
  const log = vscode.window.createOutputChannel('Remote USB', { log: true });
  context.subscriptions.push(log);
  log.info('Remote USB activated');
  return { version: String(context.extension.packageJSON.version) };
}

export function deactivate(): void {}
