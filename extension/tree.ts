/**
 * The Remote USB tree: benches → devices (and the extra serial ports a bench shares). Nodes are cached
 * objects, so a change fires for that node alone and VS Code redraws only it. `contextValue` drives the
 * inline actions and context menus declared in package.json (`viewItem =~ /^device\.available/` …).
 */
import * as vscode from 'vscode';
import type { DeviceInfo } from '../server/protocol/messages.js';
import { AttachManager } from './attachments.js';
import { benchTooltipMarkdown, escapeMarkdown, formatLink, formatRate, formatRtt, HeldDevice } from './format.js';
import { Bench, BenchManager } from './benches.js';
import { vidPidOf } from './core/auto-attach-rules.js';
import { Command, contextValue, DeviceState } from './contributions.js';

export type Node = BenchNode | DeviceNode | TtyNode;

export class BenchNode {
  readonly kind = 'bench';
  constructor(readonly bench: Bench) {}
}
export class DeviceNode {
  readonly kind = 'device';
  constructor(readonly bench: Bench, readonly deviceId: string) {}
}
export class TtyNode {
  readonly kind = 'tty';
  constructor(readonly bench: Bench, readonly path: string) {}
}

export type { DeviceState } from './contributions.js';

export function deviceState(d: DeviceInfo, attachments: AttachManager, benchId: string): DeviceState {
  if (attachments.get(benchId, d.id)) return 'attached';
  if (attachments.isAttaching(benchId, d.id)) return 'attaching';
  if (!d.shared) return 'not-shared';
  if (d.claimedBy !== undefined) return d.mine ? 'mine' : 'in-use';
  return 'available';
}

const STATE_WORDS: Record<DeviceState, string> = {
  available: 'available',
  attaching: 'attaching…',
  attached: 'attached here',
  mine: 'held by this machine',
  'in-use': 'in use',
  'not-shared': 'not shared',
};

const STATE_ICONS: Record<DeviceState, vscode.ThemeIcon> = {
  available: new vscode.ThemeIcon('plug'),
  attaching: new vscode.ThemeIcon('loading~spin'),
  attached: new vscode.ThemeIcon('pass-filled', new vscode.ThemeColor('testing.iconPassed')),
  mine: new vscode.ThemeIcon('pass', new vscode.ThemeColor('testing.iconPassed')),
  'in-use': new vscode.ThemeIcon('lock', new vscode.ThemeColor('list.warningForeground')),
  'not-shared': new vscode.ThemeIcon('circle-slash', new vscode.ThemeColor('disabledForeground')),
};

/** Who holds which of the bench's devices (the tooltips show it). */
export function heldOn(b: Bench): HeldDevice[] {
  return b.devices.filter((d) => d.claimedBy !== undefined).map((d) => ({ label: deviceLabel(d), id: d.id, claimedBy: d.claimedBy!, mine: d.mine }));
}

export function deviceLabel(d: DeviceInfo): string {
  return d.product || d.manufacturer || `USB device ${vidPidOf(d)}`;
}

export class BenchTreeProvider implements vscode.TreeDataProvider<Node>, vscode.Disposable {
  private readonly changed = new vscode.EventEmitter<Node | undefined>();
  readonly onDidChangeTreeData = this.changed.event;
  private readonly benchNodes = new Map<string, BenchNode>();
  private readonly deviceNodes = new Map<string, DeviceNode>();
  private readonly ttyNodes = new Map<string, TtyNode>();
  private readonly disposables: vscode.Disposable[] = [this.changed];

  constructor(private readonly benches: BenchManager, private readonly attachments: AttachManager) {
    this.disposables.push(
      benches.onDidChange((c) => {
        if (!c) return this.changed.fire(undefined);
        // a device change redraws that device; anything else the bench (and its children)
        this.changed.fire(c.deviceId !== undefined ? this.deviceNodes.get(`${c.bench.id}/${c.deviceId}`) ?? this.benchNode(c.bench) : this.benchNode(c.bench));
      }),
      attachments.onDidChange((c) => this.changed.fire(this.deviceNodes.get(`${c.bench.id}/${c.deviceId}`) ?? this.benchNode(c.bench))),
    );
  }

  private benchNode(b: Bench): BenchNode {
    let n = this.benchNodes.get(b.id);
    if (!n || n.bench !== b) this.benchNodes.set(b.id, (n = new BenchNode(b)));
    return n;
  }

  private deviceNode(b: Bench, id: string): DeviceNode {
    const key = `${b.id}/${id}`;
    let n = this.deviceNodes.get(key);
    if (!n || n.bench !== b) this.deviceNodes.set(key, (n = new DeviceNode(b, id)));
    return n;
  }

  private ttyNode(b: Bench, path: string): TtyNode {
    const key = `${b.id}/${path}`;
    let n = this.ttyNodes.get(key);
    if (!n || n.bench !== b) this.ttyNodes.set(key, (n = new TtyNode(b, path)));
    return n;
  }

  getChildren(node?: Node): Node[] {
    if (!node) return this.benches.list().map((b) => this.benchNode(b));
    if (node.kind !== 'bench') return [];
    const b = node.bench;
    // While a bench reconnects, the devices attached here stay in view (their 30 s grace is running).
    const shown = b.state === 'online' ? b.devices : (b.client?.devices ?? []).filter((d) => this.attachments.get(b.id, d.id));
    const devices = [...shown].sort((x, y) => x.id.localeCompare(y.id, undefined, { numeric: true }));
    return [...devices.map((d) => this.deviceNode(b, d.id)), ...b.ttys.map((t) => this.ttyNode(b, t))];
  }

  getParent(node: Node): Node | undefined {
    return node.kind === 'bench' ? undefined : this.benchNode(node.bench);
  }

  getTreeItem(node: Node): vscode.TreeItem {
    if (node.kind === 'bench') return this.benchItem(node.bench);
    if (node.kind === 'tty') return this.ttyItem(node);
    const d = node.bench.device(node.deviceId);
    if (!d) return new vscode.TreeItem(node.deviceId);
    return this.deviceItem(node.bench, d);
  }

  private benchItem(b: Bench): vscode.TreeItem {
    const item = new vscode.TreeItem(b.name, vscode.TreeItemCollapsibleState.Expanded);
    item.id = `bench:${b.id}`;
    const state = b.state;
    // a relayed connection is worth seeing at a glance (slower; often a firewall); direct is the normal case
    const rtt = b.path === 'relay' ? formatLink('relay', b.rttMs) : formatRtt(b.rttMs);
    item.description = state === 'online' ? `online${rtt ? ` · ${rtt}` : ''}` : state === 'refused' ? 'refused' : state === 'invalid' ? 'bad address' : state === 'connecting' ? 'connecting…' : 'offline';
    item.iconPath = state === 'online'
      ? new vscode.ThemeIcon('vm-active', new vscode.ThemeColor('testing.iconPassed'))
      : state === 'connecting'
        ? new vscode.ThemeIcon('loading~spin')
        : new vscode.ThemeIcon('vm-outline', new vscode.ThemeColor('list.errorForeground'));
    item.contextValue = contextValue({ kind: 'bench', state });
    const tip = new vscode.MarkdownString(undefined, true);
    tip.isTrusted = { enabledCommands: [Command.refresh, Command.pairBench, Command.showLogs] };
    tip.appendMarkdown(benchTooltipMarkdown({
      name: b.name, id: b.id, state, rttMs: b.rttMs, path: b.path, detail: b.detail, deviceCount: b.devices.length,
      held: heldOn(b),
    }));
    item.tooltip = tip;
    return item;
  }

  private deviceItem(b: Bench, d: DeviceInfo): vscode.TreeItem {
    const state = deviceState(d, this.attachments, b.id);
    const item = new vscode.TreeItem(deviceLabel(d), vscode.TreeItemCollapsibleState.None);
    item.id = `device:${b.id}/${d.id}`;
    const attached = this.attachments.get(b.id, d.id);
    const where = state === 'in-use' ? `in use by ${d.claimedBy}` : STATE_WORDS[state];
    const local = attached?.localTty ?? attached?.localBusid;
    const rate = attached?.rate ? ` · ↓${formatRate(attached.rate.inBps)} ↑${formatRate(attached.rate.outBps)}` : '';
    // the state first: a narrow side bar cuts the end of the description, and the state is what matters
    item.description = `${where}${local ? ` (${local})` : ''} · ${vidPidOf(d)} · ${d.serial ? `${d.serial} · ` : ''}${d.speed}${rate}`;
    item.iconPath = STATE_ICONS[state];
    // a board attached here has no tty on the bench any more, but its local one opens in the monitor
    item.contextValue = contextValue({ kind: 'device', state, serial: d.tty !== undefined || attached?.localTty !== undefined });
    const tip = new vscode.MarkdownString(undefined, true);
    tip.appendMarkdown(`**${escapeMarkdown(deviceLabel(d))}**${d.manufacturer ? ` — ${escapeMarkdown(d.manufacturer)}` : ''}\n\n`);
    const rows: [string, string][] = [
      ['VID:PID', vidPidOf(d)],
      ['Serial', d.serial ?? '—'],
      ['Bus id on bench', d.id],
      ['Speed', d.speed],
      ['Interfaces', d.interfaces.map((i) => `${i.number}: class ${i.class.toString(16).padStart(2, '0')}${i.driver ? ` (${i.driver})` : ''}`).join(', ') || '—'],
      ['State', where],
    ];
    if (d.tty) rows.push(['Serial port on bench', d.tty]);
    if (attached) rows.push(['Here', `vhci port ${attached.port}${attached.localBusid ? `, bus id ${attached.localBusid}` : ''}${attached.localTty ? `, ${attached.localTty}` : ''}`]);
    if (attached) rows.push(['Traffic', `${(attached.attachment.traffic.bytesIn / 1e6).toFixed(2)} MB in, ${(attached.attachment.traffic.bytesOut / 1e6).toFixed(2)} MB out, ${attached.attachment.traffic.urbs} URBs`]);
    tip.appendMarkdown(rows.map(([k, v]) => `${k}: ${escapeMarkdown(v)}`).join('  \n'));
    item.tooltip = tip;
    return item;
  }

  private ttyItem(node: TtyNode): vscode.TreeItem {
    const item = new vscode.TreeItem(node.path, vscode.TreeItemCollapsibleState.None);
    item.id = `tty:${node.bench.id}/${node.path}`;
    item.description = 'serial port on the bench';
    item.iconPath = new vscode.ThemeIcon('terminal');
    item.contextValue = contextValue({ kind: 'tty' });
    item.tooltip = `${node.path} on ${node.bench.name}, shared by the bench's config: open a serial monitor on it.`;
    return item;
  }

  dispose(): void {
    for (const d of this.disposables) d.dispose();
  }
}

