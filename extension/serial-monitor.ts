/**
 * The serial monitor: a terminal (Pseudoterminal) on a serial port — the bench's tty streamed over the
 * protocol, or this machine's tty when the board is attached here. Port settings, DTR/RTS, hex view,
 * timestamps, local echo, logging to a file (the bytes exactly as received) and sending a file are
 * palette commands acting on the active monitor, and Ctrl+T keys inside it (like picocom/miniterm).
 * It says clearly when it waits for the port (board reset, bench reconnecting) and carries on after.
 */
import { createWriteStream, WriteStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import * as vscode from 'vscode';
import { Logger } from '../server/shared/log.js';
import { printable } from '../server/shared/text.js';
import { LineEnding, SerialRenderer, echoTyped, encodeTyped } from './serial-format.js';
import { SerialDefaults, serialDefaults } from './settings.js';

export type PortState = 'open' | 'waiting' | 'closed';

export interface PortSettings {
  baud: number;
  dataBits: 5 | 6 | 7 | 8;
  parity: 'none' | 'even' | 'odd' | 'mark' | 'space';
  stopBits: 1 | 1.5 | 2;
}

/** What the monitor needs of a port (the client core's SerialSession and the local tty both have it). */
export interface MonitorPort {
  readonly path: string;
  readonly state: PortState;
  on(event: 'data', listener: (data: Buffer) => void): unknown;
  on(event: 'state', listener: (state: PortState, detail: string | undefined) => void): unknown;
  write(data: Uint8Array): void;
  set(options: Partial<PortSettings> & { dtr?: boolean; rts?: boolean; brk?: boolean }): Promise<void>;
  close(): Promise<void>;
}

/** Opens the port with the given settings (and DTR/RTS raised); rejects with a readable error. */
export type PortOpener = (settings: PortSettings) => Promise<MonitorPort>;

const CTRL_T = '\x14';
const HELP = [
  'Ctrl+T then:  h help · x hex view · t timestamps · e local echo · n line ending · d toggle DTR · r toggle RTS',
  '              b break · s port settings · l log to file · f send file · c clear · q close',
];

const dim = (s: string): string => `\x1b[2m${s}\x1b[0m`;
const yellow = (s: string): string => `\x1b[33m${s}\x1b[0m`;
const green = (s: string): string => `\x1b[32m${s}\x1b[0m`;
const red = (s: string): string => `\x1b[31m${s}\x1b[0m`;

export class SerialMonitor implements vscode.Pseudoterminal {
  private readonly writeEmitter = new vscode.EventEmitter<string>();
  private readonly closeEmitter = new vscode.EventEmitter<number | void>();
  readonly onDidWrite = this.writeEmitter.event;
  readonly onDidClose = this.closeEmitter.event;
  private port?: MonitorPort;
  private readonly renderer: SerialRenderer;
  private escape = false;
  private dtr = true;
  private rts = true;
  private logFile?: WriteStream;
  private readonly options: SerialDefaults;
  settings: PortSettings;
  /** Everything written to the terminal (for the tests) and every byte received. */
  transcript = '';
  received = 0;
  terminal?: vscode.Terminal;
  private closed = false;

  constructor(
    readonly title: string,
    private readonly open_: PortOpener,
    private readonly log: Logger,
    private readonly onClosed: (m: SerialMonitor) => void,
  ) {
    this.options = serialDefaults();
    this.settings = { baud: this.options.baudRate, dataBits: this.options.dataBits, parity: this.options.parity, stopBits: this.options.stopBits };
    this.renderer = new SerialRenderer({ hex: this.options.hexView, timestamps: this.options.timestamps });
  }

  get path(): string | undefined {
    return this.port?.path;
  }

  get state(): PortState | 'opening' {
    return this.port?.state ?? 'opening';
  }

  get view(): { hex: boolean; timestamps: boolean; localEcho: boolean; lineEnding: LineEnding; dtr: boolean; rts: boolean; logging: boolean } {
    return { ...this.renderer.options, localEcho: this.options.localEcho, lineEnding: this.options.lineEnding, dtr: this.dtr, rts: this.rts, logging: Boolean(this.logFile) };
  }

  setLineEnding(ending: LineEnding): void {
    this.options.lineEnding = ending;
    this.note(dim(`[Enter sends ${ending === 'none' ? 'nothing' : ending}]`));
  }

  private out(text: string): void {
    this.transcript += text;
    this.writeEmitter.fire(text);
  }

  private note(text: string): void {
    this.out(this.renderer.flush() + text + '\r\n');
  }

  private describe(): string {
    const s = this.settings;
    return `${s.baud} ${s.dataBits}${s.parity[0].toUpperCase()}${s.stopBits}`;
  }

  open(): void {
    this.out(dim(`Remote USB serial monitor — ${this.title}. Ctrl+T H for help.`) + '\r\n');
    void this.connect();
  }

  private async connect(): Promise<void> {
    this.note(dim(`opening (${this.describe()})…`));
    try {
      const port = await this.open_(this.settings);
      if (this.closed) { await port.close(); return; }
      this.port = port;
      port.on('data', (data) => this.onData(data));
      port.on('state', (state, detail) => this.onState(state, detail));
      this.note(green(`[connected to ${port.path}, ${this.describe()}]`));
    } catch (e) {
      const message = (e as Error).message;
      this.log.error(`serial monitor ${this.title}: ${message}`);
      this.note(red(`[cannot open: ${printable(message)}]`) + '\r\n' + dim('Press any key to close this terminal.'));
    }
  }

  private onData(data: Buffer): void {
    this.received += data.length;
    this.logFile?.write(data);
    this.out(this.renderer.render(data));
  }

  private onState(state: PortState, raw: string | undefined): void {
    const detail = raw === undefined ? undefined : printable(raw); // the bench's words, into a terminal
    if (state === 'open') this.note(green(`[connected again to ${this.port?.path}]`));
    else if (state === 'waiting') this.note(yellow(`[waiting: ${detail ?? 'the port went away; it reopens when it comes back'}]`));
    else this.note(red(`[port closed${detail ? `: ${detail}` : ''}]`) + '\r\n' + dim('Press any key to close this terminal.'));
  }

  handleInput(data: string): void {
    if (!this.port || this.port.state === 'closed') {
      this.close();
      return;
    }
    for (const piece of data.split(new RegExp(`(${CTRL_T})`))) {
      if (piece === '') continue;
      if (piece === CTRL_T && !this.escape) { this.escape = true; continue; }
      if (this.escape) {
        this.escape = false;
        void this.command(piece[0].toLowerCase());
        if (piece.length > 1) this.type(piece.slice(1));
        continue;
      }
      this.type(piece);
    }
  }

  private type(text: string): void {
    if (this.port?.state !== 'open') {
      this.note(yellow('[not sent: the port is not open]'));
      return;
    }
    const bytes = encodeTyped(text, this.options.lineEnding);
    if (bytes.length > 0) this.port.write(bytes);
    if (this.options.localEcho) this.out(echoTyped(text));
  }

  /** Runs one Ctrl+T command key. */
  async command(key: string): Promise<void> {
    switch (key) {
      case 'h': case '?': this.note(dim(HELP.join('\r\n'))); break;
      case 'x': this.toggleHex(); break;
      case 't': this.toggleTimestamps(); break;
      case 'e': this.toggleEcho(); break;
      case 'n': await vscode.commands.executeCommand('remoteUsb.serial.changeLineEnding'); break;
      case 'd': await this.setDtr(!this.dtr); break;
      case 'r': await this.setRts(!this.rts); break;
      case 'b': await this.port?.set({ brk: true }); setTimeout(() => void this.port?.set({ brk: false }), 250); this.note(dim('[break sent]')); break;
      case 's': await vscode.commands.executeCommand('remoteUsb.serial.changeSettings'); break;
      case 'l': await vscode.commands.executeCommand('remoteUsb.serial.logToFile'); break;
      case 'f': await vscode.commands.executeCommand('remoteUsb.serial.sendFile'); break;
      case 'c': this.out('\x1b[2J\x1b[3J\x1b[H'); break;
      case 'q': this.close(); break;
      case CTRL_T: this.type(CTRL_T); break;
      default: this.note(dim(`[unknown command key; Ctrl+T H for help]`));
    }
  }

  toggleHex(): void {
    this.out(this.renderer.flush());
    this.renderer.options.hex = !this.renderer.options.hex;
    this.note(dim(`[hex view ${this.renderer.options.hex ? 'on' : 'off'}]`));
  }

  toggleTimestamps(): void {
    this.renderer.options.timestamps = !this.renderer.options.timestamps;
    this.note(dim(`[timestamps ${this.renderer.options.timestamps ? 'on' : 'off'}]`));
  }

  toggleEcho(): void {
    this.options.localEcho = !this.options.localEcho;
    this.note(dim(`[local echo ${this.options.localEcho ? 'on' : 'off'}]`));
  }

  async setDtr(on: boolean): Promise<void> {
    await this.port?.set({ dtr: on });
    this.dtr = on;
    this.note(dim(`[DTR ${on ? 'on' : 'off'}]`));
  }

  async setRts(on: boolean): Promise<void> {
    await this.port?.set({ rts: on });
    this.rts = on;
    this.note(dim(`[RTS ${on ? 'on' : 'off'}]`));
  }

  async applySettings(next: PortSettings): Promise<void> {
    await this.port?.set(next);
    this.settings = next;
    this.note(dim(`[port settings: ${this.describe()}]`));
  }

  /** Starts (or, with undefined, stops) writing every received byte to a file, exactly as received. */
  async logTo(file: string | undefined): Promise<void> {
    const old = this.logFile;
    this.logFile = undefined;
    if (old) await new Promise<void>((r) => old.end(r));
    if (!file) { this.note(dim('[logging stopped]')); return; }
    const stream = createWriteStream(file, { flags: 'a' });
    await new Promise<void>((resolve, reject) => { stream.once('open', () => resolve()); stream.once('error', reject); });
    stream.on('error', (e) => { this.note(red(`[log file: ${e.message}]`)); this.logFile = undefined; });
    this.logFile = stream;
    this.note(dim(`[logging to ${file}]`));
  }

  /** Sends a file's bytes as they are, in pieces, with progress; cancellable. */
  async sendFile(file: string, progress?: vscode.Progress<{ increment?: number; message?: string }>, token?: vscode.CancellationToken): Promise<number> {
    const bytes = await readFile(file);
    const piece = 4096;
    let sent = 0;
    for (let i = 0; i < bytes.length; i += piece) {
      if (token?.isCancellationRequested) break;
      if (this.port?.state !== 'open') throw new Error('the port closed while sending');
      const chunk = bytes.subarray(i, i + piece);
      this.port.write(chunk);
      sent += chunk.length;
      progress?.report({ increment: (chunk.length / bytes.length) * 100, message: `${sent} of ${bytes.length} bytes` });
      // let the data drain at roughly the line rate so a slow port does not buffer megabytes
      await new Promise((r) => setTimeout(r, Math.min(200, Math.ceil((chunk.length * 10 * 1000) / Math.max(this.settings.baud, 9600)))));
    }
    this.note(dim(`[sent ${sent} bytes of ${file}]`));
    return sent;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    void this.logTo(undefined);
    void this.port?.close().catch((e: Error) => this.log.warn(`closing ${this.port?.path}: ${e.message}`));
    this.closeEmitter.fire();
    this.onClosed(this);
  }
}
