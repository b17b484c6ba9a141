/**
 * The open serial monitors (several at once, one terminal each) and the palette commands that act on
 * the active one. A monitor opens the bench's tty over the protocol, or — when the board is attached
 * here and `remoteUsb.serial.preferLocalTty` is on — this machine's tty.
 */
import * as vscode from 'vscode';
import type { Logger } from '../server/shared/log.js';
import type { DeviceInfo } from '../server/protocol/messages.js';
import { AttachManager } from './attachments.js';
import { Bench } from './benches.js';
import { Command, CommandHandler, ContextKey, SerialCommandId } from './contributions.js';
import { MonitorPort, PortOpener, PortSettings, SerialMonitor } from './serial-monitor.js';
import type { LineEnding } from './serial-format.js';
import { serialDefaults } from './settings.js';
import { deviceLabel } from './tree.js';

const BAUD_RATES = [300, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600, 1000000, 2000000];

export class SerialMonitors implements vscode.Disposable {
  readonly open = new Set<SerialMonitor>();

  constructor(private readonly attachments: AttachManager, private readonly log: Logger) {}

  /** The monitor of the active terminal, else the only one open. */
  active(): SerialMonitor | undefined {
    const term = vscode.window.activeTerminal;
    for (const m of this.open) if (m.terminal && m.terminal === term) return m;
    return this.open.size === 1 ? [...this.open][0] : undefined;
  }

  /** A monitor on a device: its local tty when attached here (and preferred), else the bench's. */
  openDevice(bench: Bench, d: DeviceInfo): SerialMonitor {
    const local = this.attachments.get(bench.id, d.id)?.localTty;
    if (local && serialDefaults().preferLocalTty) {
      return this.start(`${deviceLabel(d)} — ${local} (attached here)`, async (s) => {
        const { openLocalSerial } = await import('./core/local-serial.js');
        return (await openLocalSerial(local, { ...s, dtr: true, rts: true })) as MonitorPort;
      });
    }
    return this.openBench(bench, d.id, `${deviceLabel(d)} on ${bench.name}`);
  }

  /** A monitor on a bench port: a device id, or a tty the bench's config shares. */
  openBench(bench: Bench, port: string, title = `${port} on ${bench.name}`): SerialMonitor {
    return this.start(title, async (s) => {
      const client = bench.client;
      if (!client || client.state !== 'online') throw new Error(`bench ${bench.name} is ${bench.state}`);
      return (await client.openSerial(port, { ...s, dtr: true, rts: true })) as MonitorPort;
    });
  }

  private start(title: string, opener: PortOpener): SerialMonitor {
    const monitor = new SerialMonitor(title, opener, this.log, (m) => this.open.delete(m));
    monitor.terminal = vscode.window.createTerminal({ name: `Serial: ${title}`, pty: monitor, iconPath: new vscode.ThemeIcon('plug') });
    monitor.terminal.show();
    this.open.add(monitor);
    void vscode.commands.executeCommand('setContext', ContextKey.serialMonitorOpen, true);
    return monitor;
  }

  private need(): SerialMonitor {
    const m = this.active();
    if (!m) throw new Error('no serial monitor is active: open one with Remote USB: Open Serial Monitor…');
    return m;
  }

  /** The handlers of the serial monitor's commands (registered with the others in commands.ts). */
  commandHandlers(): Record<SerialCommandId, CommandHandler> {
    return {
      [Command.serialChangeSettings]: async (next?: Partial<PortSettings>) => {
        const m = this.need();
        if (next) return m.applySettings({ ...m.settings, ...next });
        const baud = await vscode.window.showQuickPick(
          [...BAUD_RATES.map(String), 'Other…'].map((b) => ({ label: b, description: Number(b) === m.settings.baud ? 'current' : undefined })),
          { placeHolder: `Baud rate (now ${m.settings.baud})` },
        );
        if (!baud) return undefined;
        let rate = Number(baud.label);
        if (baud.label === 'Other…') {
          const text = await vscode.window.showInputBox({ prompt: 'Baud rate', validateInput: (v) => (/^\d+$/.test(v) && Number(v) >= 50 && Number(v) <= 20_000_000 ? undefined : 'A whole number from 50 to 20000000') });
          if (!text) return undefined;
          rate = Number(text);
        }
        const frame = await vscode.window.showQuickPick(['8N1', '8E1', '8O1', '7E1', '7O1', '8N2', '7N1'].map((f) => ({ label: f })), { placeHolder: 'Data bits, parity, stop bits' });
        if (!frame) return undefined;
        const parity = ({ N: 'none', E: 'even', O: 'odd' } as const)[frame.label[1] as 'N' | 'E' | 'O'];
        return m.applySettings({ baud: rate, dataBits: Number(frame.label[0]) as 7 | 8, parity, stopBits: Number(frame.label[2]) as 1 | 2 });
      },
      [Command.serialToggleDtr]: () => { const m = this.need(); return m.setDtr(!m.view.dtr); },
      [Command.serialToggleRts]: () => { const m = this.need(); return m.setRts(!m.view.rts); },
      [Command.serialToggleHex]: () => this.need().toggleHex(),
      [Command.serialToggleTimestamps]: () => this.need().toggleTimestamps(),
      [Command.serialToggleEcho]: () => this.need().toggleEcho(),
      [Command.serialChangeLineEnding]: async (ending?: LineEnding) => {
        const m = this.need();
        const pick = ending ?? (await vscode.window.showQuickPick(
          (['CRLF', 'LF', 'CR', 'none'] as const).map((e) => ({ label: e, description: e === m.view.lineEnding ? 'current' : undefined })),
          { placeHolder: 'What Enter sends' },
        ))?.label;
        if (pick) m.setLineEnding(pick);
      },
      [Command.serialLogToFile]: async (file?: string | null) => {
        const m = this.need();
        if (file === null || (file === undefined && m.view.logging)) return m.logTo(undefined);
        const target = file ?? (await vscode.window.showSaveDialog({ title: 'Log received bytes to…', saveLabel: 'Log Here', filters: { Logs: ['log', 'txt', 'bin'] } }))?.fsPath;
        if (target) await m.logTo(target);
      },
      [Command.serialSendFile]: async (file?: string) => {
        const m = this.need();
        const source = file ?? (await vscode.window.showOpenDialog({ title: 'Send a file to the serial port', canSelectMany: false, openLabel: 'Send' }))?.[0]?.fsPath;
        if (!source) return undefined;
        return vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title: `Sending ${source.split('/').pop()}…`, cancellable: true }, (p, token) => m.sendFile(source, p, token));
      },
    };
  }

  dispose(): void {
    for (const m of [...this.open]) m.close();
  }
}
