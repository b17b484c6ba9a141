/**
 * Tasks of type `remote-usb` (attach / detach / wait), so "attach before flash" is a `dependsOn` or a
 * `preLaunchTask`. The next task gets the device's local path from `${command:remoteUsb.devicePath}`
 * (its tty, else its bus id), which answers for the device the last attach task attached.
 */
import * as vscode from 'vscode';
import type { DeviceInfo } from '../server/protocol/messages.js';
import { AttachedDevice, AttachManager } from './attachments.js';
import { Bench, BenchManager } from './benches.js';
import { checkSelector, selectorMatches } from './core/auto-attach-rules.js';
import { describeError } from './errors.js';
import { Command } from './contributions.js';

export const TASK_TYPE = 'remote-usb';

interface RemoteUsbTaskDefinition extends vscode.TaskDefinition {
  action: 'attach' | 'detach' | 'wait';
  bench?: string;
  device?: string;
  timeout?: number;
}

export class TaskRunner {
  /** The device the last attach task attached (for remoteUsb.devicePath). */
  lastAttached?: AttachedDevice;

  constructor(private readonly benches: BenchManager, private readonly attachments: AttachManager) {}

  provider(): vscode.TaskProvider {
    return {
      provideTasks: () => [],
      resolveTask: (task) => {
        const def = task.definition as RemoteUsbTaskDefinition;
        if (def.type !== TASK_TYPE) return undefined;
        return new vscode.Task(def, task.scope ?? vscode.TaskScope.Workspace, task.name, 'Remote USB', this.execution(def), []);
      },
    };
  }

  execution(def: RemoteUsbTaskDefinition): vscode.CustomExecution {
    return new vscode.CustomExecution(async () => new TaskTerminal((say, token) => this.run(def, say, token)));
  }

  /** Runs one task; returns its exit code. */
  async run(def: RemoteUsbTaskDefinition, say: (line: string) => void, token: { cancelled: boolean }): Promise<number> {
    if (!['attach', 'detach', 'wait'].includes(def.action)) { say(`error: "action" must be attach, detach or wait (got ${JSON.stringify(def.action)})`); return 2; }
    const selector = def.device ?? '';
    const bad = checkSelector(selector);
    if (bad) { say(`error: "device": ${bad}`); return 2; }
    const timeoutS = def.timeout ?? 60;
    if (!(timeoutS > 0 && timeoutS <= 3600)) { say(`error: "timeout" must be 1..3600 seconds (got ${def.timeout})`); return 2; }

    if (def.action === 'detach') {
      const targets = this.attachments.list().filter((a) => (!def.bench || a.bench.name === def.bench) && selectorMatches(selector, a.bench.device(a.deviceId) ?? { id: a.deviceId, vendorId: -1, productId: -1 }));
      if (targets.length === 0) { say(`nothing to detach: no attached device matches '${selector}'`); return 0; }
      for (const t of targets) {
        await this.attachments.detach(t.bench.id, t.deviceId);
        say(`detached ${t.deviceId} from ${t.bench.name}`);
      }
      return 0;
    }

    say(`waiting for ${selector}${def.bench ? ` on ${def.bench}` : ''} (up to ${timeoutS} s)…`);
    const found = await this.waitFor(def.bench, selector, timeoutS * 1000, token);
    if (!found) {
      if (token.cancelled) { say('cancelled'); return 130; }
      say(`error: no bench shows a device matching '${selector}' after ${timeoutS} s${this.benches.list().length === 0 ? ' (no bench added yet: Remote USB: Add Bench…)' : ''}`);
      return 1;
    }
    const [bench, d] = found;
    say(`found ${d.product ?? d.id} (${d.id}) on ${bench.name}`);
    if (def.action === 'wait') return 0;

    try {
      const a = await this.attachments.attach(bench, d.id);
      say(`attached on vhci port ${a.port}; waiting for the kernel to name it…`);
      const deadline = Date.now() + 10_000;
      while (!a.localTty && Date.now() < deadline && !token.cancelled) {
        if (a.localBusid && !d.interfaces.some((i) => i.class === 0x02 || i.class === 0x0a || i.class === 0xff)) break;
        await new Promise((r) => setTimeout(r, 200));
      }
      this.lastAttached = a;
      say(`ready: ${a.localTty ?? `bus id ${a.localBusid ?? '(not named yet)'}`} — \${command:${Command.devicePath}} gives it to the next task`);
      return 0;
    } catch (e) {
      say(`error: ${describeError(e, 'attach failed').message}`);
      return 1;
    }
  }

  private async waitFor(benchName: string | undefined, selector: string, timeoutMs: number, token: { cancelled: boolean }): Promise<[Bench, DeviceInfo] | undefined> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      for (const b of this.benches.list()) {
        if (benchName && b.name !== benchName) continue;
        const d = b.devices.find((x) => selectorMatches(selector, x));
        if (d) return [b, d];
      }
      if (Date.now() >= deadline || token.cancelled) return undefined;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

/** A task's terminal: prints the steps, closes with the exit code. */
class TaskTerminal implements vscode.Pseudoterminal {
  private readonly writeEmitter = new vscode.EventEmitter<string>();
  private readonly closeEmitter = new vscode.EventEmitter<number>();
  readonly onDidWrite = this.writeEmitter.event;
  readonly onDidClose = this.closeEmitter.event;
  private readonly token = { cancelled: false };

  constructor(private readonly body: (say: (line: string) => void, token: { cancelled: boolean }) => Promise<number>) {}

  open(): void {
    const say = (line: string): void => this.writeEmitter.fire(`${line}\r\n`);
    this.body(say, this.token).then(
      (code) => this.closeEmitter.fire(code),
      (e: Error) => { say(`error: ${e.message}`); this.closeEmitter.fire(1); },
    );
  }

  close(): void {
    this.token.cancelled = true;
  }
}
