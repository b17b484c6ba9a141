/**
 * Logging for the daemon and the client core. Under systemd (JOURNAL_STREAM set) lines carry the
 * `<N>` priority prefix journald understands and no timestamp (journald adds its own); elsewhere they
 * get an ISO timestamp and a level word.
 */
export type LogLevel = 'error' | 'warn' | 'info' | 'debug';
export const LOG_LEVELS: readonly LogLevel[] = ['error', 'warn', 'info', 'debug'];

export interface Logger {
  error(message: string): void;
  warn(message: string): void;
  info(message: string): void;
  debug(message: string): void;
}

/** syslog priorities (sd-daemon.h): err 3, warning 4, info 6, debug 7. */
const PRIORITY: Record<LogLevel, number> = { error: 3, warn: 4, info: 6, debug: 7 };

/**
 * Control characters (C0, DEL, C1), line and paragraph separators and bidi overrides, which would let
 * text from outside — a client's name, a bench's error message, a USB device's product string — forge
 * log lines, move a terminal's cursor, set its clipboard (OSC 52) or reorder what a reader sees.
 */
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const UNPRINTABLE = /[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

/** `text` with every unprintable character shown as an escape (`\x1b`, `\u202e`): safe for a terminal or a log line. */
export function printable(text: string): string {
  return text.replace(UNPRINTABLE, (ch) => {
    const c = ch.charCodeAt(0);
    return c <= 0xff ? `\\x${c.toString(16).padStart(2, '0')}` : `\\u${c.toString(16).padStart(4, '0')}`;
  });
}

/** True when `text` has nothing `printable` would escape. */
export function isPrintable(text: string): boolean {
  return printable(text) === text;
}

/** Every line is made printable: a message carrying text from a peer cannot forge another line. */
export function createLogger(level: LogLevel = 'info', write: (line: string) => void = (l) => process.stderr.write(l + '\n')): Logger {
  const max = LOG_LEVELS.indexOf(level);
  const journald = Boolean(process.env.JOURNAL_STREAM);
  const emit = (l: LogLevel, message: string): void => {
    if (LOG_LEVELS.indexOf(l) > max) return;
    const line = printable(message);
    write(journald ? `<${PRIORITY[l]}>${line}` : `${new Date().toISOString()} ${l.padEnd(5)} ${line}`);
  };
  return {
    error: (m) => emit('error', m),
    warn: (m) => emit('warn', m),
    info: (m) => emit('info', m),
    debug: (m) => emit('debug', m),
  };
}

export const silentLogger: Logger = { error() {}, warn() {}, info() {}, debug() {} };
