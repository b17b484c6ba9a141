/**
 * The daemon's TOML config. Every problem is reported with file, line and key, and the daemon refuses
 * to start rather than guess. Unknown keys are errors too (a typo must not silently do nothing).
 */
import { existsSync, readFileSync } from 'node:fs';
import { homedir, hostname } from 'node:os';
import { join } from 'node:path';
import { parse, TomlError } from 'smol-toml';
import type { RelayChoice } from './net/iroh.js';
import { LOG_LEVELS, LogLevel } from './shared/log.js';

export interface ServerConfig {
  /** Where the config came from (for messages), or undefined for built-in defaults. */
  file?: string;
  name: string;
  listen: string;
  stateDir: string;
  allowlistFile: string;
  logLevel: LogLevel;
  pairingMinutes: number;
  relay: RelayChoice;
  sharing: SharingRules;
  /** Extra ttys shared as serial ports (the Pi's own UART, a hat's RS-485), beyond USB devices' own. */
  serialPorts: string[];
  /** `client_silence_s`: how long a client may be silent before its connection counts as dropped (default 20 s). */
  clientSilenceLimitMs?: number;
  /**
   * `resume_grace_s`: how long a dropped client keeps its devices and URBs for a resume (default 40 s;
   * 0 releases them at once, as before resume existed).
   */
  resumeGraceMs?: number;
}

export interface SharingRules {
  /** Patterns (see matchesDevicePattern); when non-empty, only matching devices are shared. */
  allow: string[];
  /** Patterns never shared (wins over allow). */
  deny: string[];
}

export const DEFAULT_PORT = 47100;

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export function defaultStateDir(): string {
  if (process.getuid?.() === 0) return '/var/lib/remote-usb';
  const xdg = process.env.XDG_STATE_HOME;
  return join(xdg && xdg.startsWith('/') ? xdg : join(homedir(), '.local', 'state'), 'remote-usb');
}

/** Config used when no file is given: the user's own file if present, else built-in defaults. */
export function defaultConfigPath(): string | undefined {
  const xdg = process.env.XDG_CONFIG_HOME;
  const p = join(xdg && xdg.startsWith('/') ? xdg : join(homedir(), '.config'), 'remote-usb', 'server.toml');
  return existsSync(p) ? p : undefined;
}

/** A device pattern: `VID:PID` in hex with `*` wildcards (`0483:*`), `serial:<text>`, or `port:<bus id>`. */
export function checkDevicePattern(p: string): string | undefined {
  if (/^([0-9a-fA-F]{4}|\*):([0-9a-fA-F]{4}|\*)$/.test(p)) return undefined;
  if (/^serial:.+$/.test(p)) return undefined;
  if (/^port:[0-9]+-[0-9.]+$/.test(p) || /^port:sim-\d+$/.test(p)) return undefined;
  return `'${p}' is not a device pattern (use VID:PID in hex with * wildcards, serial:<serial> or port:<bus id>)`;
}

export function matchesDevicePattern(p: string, d: { id: string; vendorId: number; productId: number; serial?: string }): boolean {
  if (p.startsWith('serial:')) return d.serial === p.slice(7);
  if (p.startsWith('port:')) return d.id === p.slice(5);
  const [v, pid] = p.split(':');
  const hex = (n: number): string => n.toString(16).padStart(4, '0');
  return (v === '*' || v.toLowerCase() === hex(d.vendorId)) && (pid === '*' || pid.toLowerCase() === hex(d.productId));
}

export function isShared(rules: SharingRules, d: { id: string; vendorId: number; productId: number; serial?: string }): boolean {
  if (rules.deny.some((p) => matchesDevicePattern(p, d))) return false;
  return rules.allow.length === 0 || rules.allow.some((p) => matchesDevicePattern(p, d));
}

const KNOWN: Record<string, readonly string[]> = {
  '': ['name', 'listen', 'state_dir', 'allowlist', 'log_level', 'pairing_minutes', 'client_silence_s', 'resume_grace_s', 'relay', 'sharing', 'serial'],
  relay: ['mode', 'urls'],
  sharing: ['allow', 'deny'],
  serial: ['ports'],
};

export function loadConfig(file?: string): ServerConfig {
  if (file === undefined) return resolveConfig({}, undefined, '');
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(`${file}: cannot read config (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  return parseConfig(text, file);
}

export function parseConfig(text: string, file = 'server.toml'): ServerConfig {
  let doc: Record<string, unknown>;
  try {
    doc = parse(text) as Record<string, unknown>;
  } catch (e) {
    if (e instanceof TomlError) {
      const first = e.message.split('\n')[0];
      throw new ConfigError(`${file}:${e.line}:${e.column}: ${first.replace(/^Invalid TOML document: /, '')}`);
    }
    throw new ConfigError(`${file}: ${(e as Error).message}`);
  }
  return resolveConfig(doc, file, text);
}

function resolveConfig(doc: Record<string, unknown>, file: string | undefined, text: string): ServerConfig {
  const where = (table: string, key: string): string => `${file ?? 'config'}:${lineOf(text, table, key)}: ${table ? `${table}.` : ''}${key}`;
  const bad = (table: string, key: string, why: string): never => {
    throw new ConfigError(`${where(table, key)}: ${why}`);
  };
  for (const [table, keys] of Object.entries(KNOWN)) {
    const t = table ? doc[table] : doc;
    if (t === undefined) continue;
    if (typeof t !== 'object' || t === null || Array.isArray(t)) bad('', table, 'must be a table ([' + table + '])');
    for (const k of Object.keys(t as object)) {
      if (!keys.includes(k)) bad(table, k, `unknown key (known: ${keys.join(', ')})`);
    }
  }
  const get = (table: string, key: string): unknown => (table ? (doc[table] as Record<string, unknown> | undefined)?.[key] : doc[key]);
  const str = (table: string, key: string, dflt: string): string => {
    const v = get(table, key);
    if (v === undefined) return dflt;
    if (typeof v !== 'string' || v.length === 0) bad(table, key, 'must be a non-empty string');
    return v as string;
  };
  const strList = (table: string, key: string): string[] => {
    const v = get(table, key);
    if (v === undefined) return [];
    if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) bad(table, key, 'must be a list of strings');
    return v as string[];
  };

  const name = str('', 'name', hostname());
  const listen = str('', 'listen', `0.0.0.0:${DEFAULT_PORT}`);
  if (!/^(\[[0-9a-fA-F:]+\]|\d{1,3}(\.\d{1,3}){3}):\d{1,5}$/.test(listen) || Number(listen.split(':').pop()) > 65535) {
    bad('', 'listen', `'${listen}' must be IP:PORT, e.g. "0.0.0.0:${DEFAULT_PORT}" or "[::]:${DEFAULT_PORT}"`);
  }
  const stateDir = str('', 'state_dir', defaultStateDir());
  if (!stateDir.startsWith('/')) bad('', 'state_dir', 'must be an absolute path');
  const allowlistFile = str('', 'allowlist', join(stateDir, 'clients.toml'));
  if (!allowlistFile.startsWith('/')) bad('', 'allowlist', 'must be an absolute path');
  const logLevel = str('', 'log_level', 'info') as LogLevel;
  if (!LOG_LEVELS.includes(logLevel)) bad('', 'log_level', `must be one of ${LOG_LEVELS.join(', ')}`);
  const pm = get('', 'pairing_minutes') ?? 10;
  if (typeof pm !== 'number' || !Number.isInteger(pm) || pm < 1 || pm > 1440) bad('', 'pairing_minutes', 'must be a whole number of minutes, 1..1440');
  const silence = get('', 'client_silence_s');
  if (silence !== undefined && (typeof silence !== 'number' || !(silence >= 1 && silence <= 3600))) bad('', 'client_silence_s', 'must be a number of seconds, 1..3600');
  const grace = get('', 'resume_grace_s');
  if (grace !== undefined && (typeof grace !== 'number' || !(grace >= 0 && grace <= 3600))) bad('', 'resume_grace_s', 'must be a number of seconds, 0..3600');

  const mode = str('relay', 'mode', 'default');
  const urls = strList('relay', 'urls');
  let relay: RelayChoice;
  if (mode === 'default' || mode === 'disabled') {
    if (urls.length > 0) bad('relay', 'urls', `only used with mode = "custom"`);
    relay = { mode };
  } else if (mode === 'custom') {
    if (urls.length === 0) bad('relay', 'urls', 'mode = "custom" needs at least one relay URL');
    for (const u of urls) if (!/^https?:\/\/[^\s]+$/.test(u)) bad('relay', 'urls', `'${u}' is not an http(s) URL`);
    relay = { mode, urls };
  } else {
    bad('relay', 'mode', `'${mode}' must be "default", "custom" or "disabled"`);
    throw new Error('unreachable');
  }
  const allow = strList('sharing', 'allow');
  const deny = strList('sharing', 'deny');
  for (const p of allow) { const e = checkDevicePattern(p); if (e) bad('sharing', 'allow', e); }
  for (const p of deny) { const e = checkDevicePattern(p); if (e) bad('sharing', 'deny', e); }

  const serialPorts = strList('serial', 'ports');
  for (const p of serialPorts) {
    if (!p.startsWith('/') || p.split('/').includes('..')) bad('serial', 'ports', `'${p}' must be an absolute tty path, e.g. "/dev/ttyAMA0"`);
  }
  if (new Set(serialPorts).size !== serialPorts.length) bad('serial', 'ports', 'lists a path twice');

  return { file, name, listen, stateDir, allowlistFile, logLevel, pairingMinutes: pm as number, relay, sharing: { allow, deny }, serialPorts,
    clientSilenceLimitMs: silence === undefined ? undefined : Math.round((silence as number) * 1000),
    resumeGraceMs: grace === undefined ? undefined : Math.round((grace as number) * 1000),
  };
}

/** 1-based line where `key` is set inside `[table]` (or at top level); else the table's header; else 0. */
export function lineOf(text: string, table: string, key: string): number {
  const lines = text.split('\n');
  let current = '';
  let tableLine = 0;
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i].trim();
    const header = /^\[([^\]]+)\]/.exec(l);
    if (header) {
      current = header[1].trim();
      if (table === '' && current === key) return i + 1;
      if (current === table) tableLine = i + 1;
      continue;
    }
    if (current === table && new RegExp(`^"?${key.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}"?\\s*=`).test(l)) return i + 1;
  }
  return tableLine;
}

/** "shared" / "not shared (deny rule)" for `list`. */
export function describeSharing(config: ServerConfig, d: { id: string; vendorId: number; productId: number; serial?: string }): string {
  return isShared(config.sharing, d) ? 'shared' : 'not shared';
}
