/**
 * Auto-attach: attaches devices the `remoteUsb.autoAttach` rules match as soon as a bench shows them,
 * again after a reconnect, and follows a board that re-enumerates: when a device we attached leaves and
 * a device appears on the same bench port within two minutes (a board resetting into its bootloader
 * comes back with another PID there), that one is attached too.
 */
import * as vscode from 'vscode';
import type { Logger } from '../server/shared/log.js';
import type { DeviceInfo } from '../server/protocol/messages.js';
import { AttachManager, keyOf } from './attachments.js';
import { Bench, BenchManager } from './benches.js';
import { AutoAttachRule, checkRule, ReenumerationTracker, ruleMatches } from './core/auto-attach-rules.js';
import { ErrorReporter } from './errors.js';
import { autoAttachRules } from './settings.js';

export interface AutoAttachEvent {
  bench: string;
  device: string;
  why: 'rule' | 're-enumerated';
  outcome: 'attached' | 'failed';
  error?: string;
}

export class AutoAttach implements vscode.Disposable {
  private rules: AutoAttachRule[] = [];
  private readonly reenumeration = new ReenumerationTracker();
  /** Devices we tried and failed on, so a broken setup does not retry in a loop (cleared when they leave). */
  private readonly failed = new Set<string>();
  private readonly disposables: vscode.Disposable[] = [];
  /** What it did, newest last (tests and the log read it). */
  readonly history: AutoAttachEvent[] = [];

  constructor(
    benches: BenchManager,
    private readonly attachments: AttachManager,
    private readonly errors: ErrorReporter,
    private readonly log: Logger,
  ) {
    this.loadRules();
    this.disposables.push(
      vscode.workspace.onDidChangeConfiguration((e) => {
        if (!e.affectsConfiguration('remoteUsb.autoAttach')) return;
        this.loadRules();
        this.failed.clear();
        for (const b of benches.list()) this.scan(b);
      }),
      benches.onDidChange((c) => {
        if (c) this.scan(c.bench);
      }),
      attachments.onDidChange((c) => {
        // 'local': detached here on purpose (the user, Detach All, shutdown) — never follow that one back in.
        if (c.detached) this.reenumeration.deviceLeft(keyOf(c.bench.id, c.deviceId), c.detached.reason === 'local');
      }),
    );
  }

  private loadRules(): void {
    const raw = autoAttachRules();
    const perRule = raw.map((r, i) => checkRule(r, i));
    const problems = perRule.flat();
    for (const p of problems) this.log.warn(p);
    if (problems.length > 0) {
      void vscode.window.showWarningMessage(`Remote USB: ${problems[0]}${problems.length > 1 ? ` (and ${problems.length - 1} more)` : ''}. Fix it in settings.`, 'Open Settings').then((c) => {
        if (c) void vscode.commands.executeCommand('workbench.action.openSettings', 'remoteUsb.autoAttach');
      });
    }
    this.rules = raw.filter((_, i) => perRule[i].length === 0);
  }

  /** Why this device should be attached now, if it should. */
  private reasonFor(bench: Bench, d: DeviceInfo): 'rule' | 're-enumerated' | undefined {
    if (this.reenumeration.follows(keyOf(bench.id, d.id))) return 're-enumerated';
    if (this.rules.some((r) => ruleMatches(r, bench.name, d))) return 'rule';
    return undefined;
  }

  private scan(bench: Bench): void {
    if (bench.state !== 'online') return;
    const present = new Set(bench.devices.map((d) => d.id));
    for (const key of this.failed) if (key.startsWith(`${bench.id}/`) && !present.has(key.slice(bench.id.length + 1))) this.failed.delete(key);
    for (const d of bench.devices) {
      const key = keyOf(bench.id, d.id);
      if (!d.shared || (d.claimedBy !== undefined && !d.mine) || this.failed.has(key)) continue;
      if (this.attachments.get(bench.id, d.id) || this.attachments.isAttaching(bench.id, d.id)) continue;
      const why = this.reasonFor(bench, d);
      if (!why) continue;
      this.log.info(`auto-attach: ${d.product ?? d.id} (${d.id}) on ${bench.name} (${why === 'rule' ? 'matches a rule' : 're-enumerated on a port we had attached'})`);
      this.attachments.attach(bench, d.id, why).then(
        () => this.history.push({ bench: bench.name, device: d.id, why, outcome: 'attached' }),
        (e: Error) => {
          this.failed.add(key);
          this.history.push({ bench: bench.name, device: d.id, why, outcome: 'failed', error: e.message });
          void this.errors.show(e, `Auto-attach of ${d.product ?? d.id} failed`, () => { this.failed.delete(key); this.scan(bench); });
        },
      );
    }
  }

  dispose(): void {
    for (const d of this.disposables) d.dispose();
  }
}
