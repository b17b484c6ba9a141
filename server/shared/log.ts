/**
 * Logging for the daemon and the client core. Under systemd (JOURNAL_STREAM set) lines carry the
 * `<N>` priority prefix journald understands and no timestamp (journald adds its own); elsewhere they
 * get an ISO timestamp and a level word.
 */
import { printable } from './text.js';

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
