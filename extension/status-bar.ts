/**
 * One status bar item: benches online and devices attached at a glance, the error colour when a bench
 * is unreachable, a markdown tooltip with command links; a click opens the actions quick pick.
 */
import * as vscode from 'vscode';
import { AttachManager } from './attachments.js';
import { BenchManager } from './benches.js';
import { statusTooltipMarkdown } from './format.js';
import { Command, STATUS_BAR_ID } from './contributions.js';
import { heldOn } from './tree.js';

export class StatusBar implements vscode.Disposable {
  readonly item = vscode.window.createStatusBarItem(STATUS_BAR_ID, vscode.StatusBarAlignment.Left, 50);
  private readonly disposables: vscode.Disposable[] = [this.item];
  private timer?: NodeJS.Timeout;

  constructor(private readonly benches: BenchManager, private readonly attachments: AttachManager) {
    this.item.name = 'Remote USB';
    this.item.command = Command.showActions;
    // several events often arrive together (hot-plug, state): redraw once per tick
    const later = (): void => {
      if (this.timer) return;
      this.timer = setTimeout(() => { this.timer = undefined; this.update(); }, 50);
    };
    this.disposables.push(benches.onDidChange(later), attachments.onDidChange(later));
    this.update();
    this.item.show();
  }

  update(): void {
    const all = this.benches.list();
    const online = all.filter((b) => b.state === 'online');
    const trouble = all.filter((b) => b.state !== 'online' && b.state !== 'connecting');
    const attached = this.attachments.list();
    if (all.length === 0) {
      this.item.text = '$(plug) Remote USB';
    } else {
      this.item.text = `$(${trouble.length > 0 ? 'warning' : 'plug'}) ${online.length}/${all.length} bench${all.length === 1 ? '' : 'es'}${attached.length > 0 ? ` · ${attached.length} attached` : ''}`;
    }
    this.item.backgroundColor = trouble.length > 0 ? new vscode.ThemeColor('statusBarItem.errorBackground') : undefined;
    this.item.color = trouble.length > 0 ? new vscode.ThemeColor('statusBarItem.errorForeground') : undefined;

    const tip = new vscode.MarkdownString(undefined, true);
    tip.isTrusted = { enabledCommands: [Command.addBench, Command.pairBench, Command.attachDevice, Command.detachAll, Command.openSerialMonitor, Command.showLogs, Command.refresh] };
    tip.appendMarkdown(statusTooltipMarkdown(
      all.map((b) => ({ name: b.name, state: b.state, rttMs: b.rttMs, path: b.path, deviceCount: b.devices.length, detail: b.detail, held: heldOn(b) })),
      attached.map((a) => ({ product: a.bench.device(a.deviceId)?.product ?? a.deviceId, localTty: a.localTty, rate: a.rate })),
    ));
    this.item.tooltip = tip;
  }

  dispose(): void {
    clearTimeout(this.timer);
    for (const d of this.disposables) d.dispose();
  }
}
