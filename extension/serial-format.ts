/**
 * Turning received serial bytes into terminal text (no `vscode` import: unit-tested in node): text mode
 * with bare LF made CRLF for the terminal, optional per-line timestamps, or a hex dump. Stateful,
 * because lines and hex rows span chunks.
 */
export interface RenderOptions {
  hex: boolean;
  timestamps: boolean;
}

export class SerialRenderer {
  private atLineStart = true;
  private lastWasCR = false;
  private hexColumn = 0;
  private hexAscii = '';

  constructor(public options: RenderOptions, private readonly now: () => Date = () => new Date()) {}

  /** Terminal text for a chunk of received bytes. */
  render(chunk: Uint8Array): string {
    return this.options.hex ? this.renderHex(chunk) : this.renderText(chunk);
  }

  /** Call when switching views, so a half-finished row or line ends cleanly. */
  flush(): string {
    let out = '';
    if (this.hexColumn > 0) out += this.padHexRow() + '\r\n';
    else if (!this.atLineStart) out += '\r\n';
    this.hexColumn = 0;
    this.hexAscii = '';
    this.atLineStart = true;
    this.lastWasCR = false;
    return out;
  }

  private stamp(): string {
    const d = this.now();
    const p = (n: number, w = 2): string => String(n).padStart(w, '0');
    return `\x1b[2m[${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}]\x1b[0m `;
  }

  private renderText(chunk: Uint8Array): string {
    // latin1 keeps one char per byte for control handling; UTF-8 is decoded per run of printable bytes
    let out = '';
    let run: number[] = [];
    const flushRun = (): void => {
      if (run.length > 0) out += Buffer.from(run).toString('utf8');
      run = [];
    };
    for (const b of chunk) {
      if (this.atLineStart && this.options.timestamps && b !== 0x0a) {
        flushRun();
        out += this.stamp();
        this.atLineStart = false;
      }
      if (b === 0x0a) {
        flushRun();
        out += this.lastWasCR ? '\n' : '\r\n';
        this.atLineStart = true;
      } else if (b === 0x0d) {
        flushRun();
        out += '\r';
      } else {
        run.push(b);
        this.atLineStart = false;
      }
      this.lastWasCR = b === 0x0d;
    }
    flushRun();
    return out;
  }

  private renderHex(chunk: Uint8Array): string {
    let out = '';
    for (const b of chunk) {
      if (this.hexColumn === 0 && this.options.timestamps) out += this.stamp();
      out += b.toString(16).padStart(2, '0') + ' ';
      this.hexAscii += b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.';
      if (++this.hexColumn === 16) {
        out += ` ${this.hexAscii}\r\n`;
        this.hexColumn = 0;
        this.hexAscii = '';
      }
    }
    return out;
  }

  private padHexRow(): string {
    return '   '.repeat(16 - this.hexColumn) + ` ${this.hexAscii}`;
  }
}

export type LineEnding = 'CRLF' | 'LF' | 'CR' | 'none';

const ENDINGS: Record<LineEnding, string> = { CRLF: '\r\n', LF: '\n', CR: '\r', none: '' };

/** What typing sends: Enter (the terminal's CR) becomes the configured line ending. */
export function encodeTyped(text: string, ending: LineEnding): Buffer {
  return Buffer.from(text.replace(/\r\n?|\n/g, ENDINGS[ending]), 'utf8');
}

/** What local echo shows for typed text. */
export function echoTyped(text: string): string {
  return text.replace(/\r\n?|\n/g, '\r\n').replace(/\x7f/g, '\b \b');
}
