/**
 * Who may use this bench: the allowlist of client endpoint ids, and one-time pairing codes that let a new
 * client add itself. Both live in files under the state directory so `remote-usb-server pair` (a separate
 * process) and the running daemon share them; every change is an atomic replace.
 *
 * A pairing code is 10 Crockford-base32 characters (50 bits) shown as XXXXX-XXXXX, stored only as a
 * SHA-256 hash with an expiry, and deleted when used.
 *
 * Guessing: one client id may try MAX_WRONG_CODES_PER_CLIENT wrong codes per WRONG_CODE_WINDOW_MS, and
 * then is refused without its code being looked at. Nothing a stranger does revokes or blocks the
 * admin's codes (an earlier global counter let ten fresh keys revoke them all): a guesser must make a
 * new key and a new QUIC handshake for every few guesses, and even at 1,000 guesses a second over a
 * code's 10 minutes the odds of a hit are 6·10^5 / 2^50 ≈ 5·10^-10.
 */
import { createHash, randomInt, timingSafeEqual } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parse, stringify, TomlError } from 'smol-toml';
import { writeFileAtomic } from '../helper/atomic-write.js';
import { ensureStateDir } from './shared/identity.js';
import { isPrintable, printable } from './shared/text.js';

export interface AllowedClient {
  id: string;
  name: string;
  added: string;
}

export class TrustError extends Error {
  override name = 'TrustError';
}

const CODE_ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ'; // Crockford: no I, L, O, U
export const MAX_WRONG_CODES_PER_CLIENT = 3;
export const WRONG_CODE_WINDOW_MS = 10 * 60_000;
/** Client ids whose wrong guesses are remembered; past this the oldest are forgotten (memory stays bounded). */
const MAX_TRACKED_GUESSERS = 4096;
export const MAX_CLIENT_NAME = 128;

/** Why `name` cannot be a client's name (shown on the bench and to other clients), or undefined. */
export function clientNameProblem(name: string): string | undefined {
  if (name.length === 0 || name.length > MAX_CLIENT_NAME || !isPrintable(name)) {
    return `a client name must be 1 to ${MAX_CLIENT_NAME} printable characters (no control characters), got '${printable(name.slice(0, MAX_CLIENT_NAME))}'`;
  }
  return undefined;
}

function hashCode(code: string): string {
  return createHash('sha256').update(normalizeCode(code)).digest('hex');
}

/** Uppercase, no separators; the Crockford look-alikes (O→0, I/L→1) read as the digits they resemble. */
export function normalizeCode(code: string): string {
  return code.toUpperCase().replace(/[\s-]/g, '').replace(/O/g, '0').replace(/[IL]/g, '1');
}

export class TrustStore {
  private cache?: { mtimeMs: number; clients: AllowedClient[] };
  /** Per client id: when its wrong guesses in the current window started, and how many. */
  private readonly wrongGuesses = new Map<string, { since: number; count: number }>();

  constructor(readonly allowlistFile: string, readonly stateDir: string) {}

  get pairingFile(): string {
    return join(this.stateDir, 'pairing.toml');
  }

  /** Current allowlist; re-read when the file changed, so removing a line revokes a client. */
  clients(): AllowedClient[] {
    let mtimeMs: number;
    try {
      mtimeMs = statSync(this.allowlistFile).mtimeMs;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw new TrustError(`${this.allowlistFile}: cannot read the allowlist (${(e as NodeJS.ErrnoException).code})`);
    }
    if (this.cache && this.cache.mtimeMs === mtimeMs) return this.cache.clients;
    const clients = readTable(this.allowlistFile, 'client').map((c, i) => {
      if (typeof c.id !== 'string' || !/^[0-9a-f]{64}$/.test(c.id)) {
        throw new TrustError(`${this.allowlistFile}:${entryLine(this.allowlistFile, 'client', i, 'id')}: client #${i + 1}: 'id' must be a 64-hex-digit endpoint id`);
      }
      if (c.name !== undefined && typeof c.name !== 'string') {
        throw new TrustError(`${this.allowlistFile}:${entryLine(this.allowlistFile, 'client', i, 'name')}: client #${i + 1}: 'name' must be a string`);
      }
      return { id: c.id, name: c.name ?? c.id.slice(0, 10), added: String(c.added ?? '') };
    });
    this.cache = { mtimeMs, clients };
    return clients;
  }

  /**
   * Reads the allowlist and the pending codes once, so a broken file stops the daemon at start — with
   * the file, line and key named — instead of leaving it running and refusing everyone.
   */
  check(): void {
    this.clients();
    this.pendingCodes();
  }

  isAllowed(id: string): boolean {
    return this.clients().some((c) => c.id === id);
  }

  nameOf(id: string): string | undefined {
    return this.clients().find((c) => c.id === id)?.name;
  }

  allow(id: string, name: string): void {
    const problem = clientNameProblem(name);
    if (problem) throw new TrustError(problem);
    const clients = this.clients().filter((c) => c.id !== id);
    clients.push({ id, name, added: new Date().toISOString() });
    this.writeClients(clients);
  }

  /** Removes a client; returns false when it was not there. */
  revoke(idOrName: string): boolean {
    const before = this.clients();
    const after = before.filter((c) => c.id !== idOrName && c.name !== idOrName && !c.id.startsWith(idOrName.length >= 8 ? idOrName : '\0'));
    if (after.length === before.length) return false;
    this.writeClients(after);
    return true;
  }

  private writeClients(clients: AllowedClient[]): void {
    ensureStateDir(dirname(this.allowlistFile));
    const header = '# Clients allowed to use this bench (remote-usb-server). Delete an entry to revoke that client.\n';
    writeFileAtomic(this.allowlistFile, header + stringify({ client: clients }) + '\n', { mode: 0o600 });
    this.cache = undefined;
  }

  /** Makes a new one-time code, valid for `minutes`. Returns it formatted as XXXXX-XXXXX. */
  createPairingCode(minutes: number): { code: string; expires: Date } {
    let raw = '';
    for (let i = 0; i < 10; i++) raw += CODE_ALPHABET[randomInt(CODE_ALPHABET.length)];
    const expires = new Date(Date.now() + minutes * 60_000);
    const codes = this.pendingCodes().filter((c) => c.expires > Date.now());
    codes.push({ hash: hashCode(raw), expires: expires.getTime() });
    this.writeCodes(codes);
    return { code: `${raw.slice(0, 5)}-${raw.slice(5)}`, expires };
  }

  /**
   * Uses a pairing code: if it is pending and unexpired, it is deleted and the client is allowed.
   * Returns why it failed otherwise.
   */
  redeemPairingCode(code: string, clientId: string, clientName: string): { ok: true } | { ok: false; reason: string } {
    const now = Date.now();
    const guesses = this.wrongGuesses.get(clientId);
    if (guesses && now - guesses.since > WRONG_CODE_WINDOW_MS) this.wrongGuesses.delete(clientId);
    else if (guesses && guesses.count >= MAX_WRONG_CODES_PER_CLIENT) {
      const minutes = Math.ceil((guesses.since + WRONG_CODE_WINDOW_MS - now) / 60_000);
      return { ok: false, reason: `too many wrong pairing codes from this client; try again in ${minutes} min` };
    }
    const nameProblem = clientNameProblem(clientName);
    if (nameProblem) return { ok: false, reason: nameProblem };
    const all = this.pendingCodes();
    const live = all.filter((c) => c.expires > now);
    const wanted = Buffer.from(hashCode(code), 'hex');
    const match = live.find((c) => timingSafeEqual(Buffer.from(c.hash, 'hex'), wanted));
    if (!match) {
      this.countWrongGuess(clientId, now);
      const expired = all.some((c) => c.expires <= now && timingSafeEqual(Buffer.from(c.hash, 'hex'), wanted));
      return { ok: false, reason: expired ? 'pairing code expired; ask for a new one' : 'pairing code unknown or already used' };
    }
    this.writeCodes(live.filter((c) => c !== match));
    this.allow(clientId, clientName);
    this.wrongGuesses.delete(clientId);
    return { ok: true };
  }

  private countWrongGuess(clientId: string, now: number): void {
    const g = this.wrongGuesses.get(clientId);
    if (g) {
      g.count++;
      return;
    }
    if (this.wrongGuesses.size >= MAX_TRACKED_GUESSERS) this.wrongGuesses.delete(this.wrongGuesses.keys().next().value!);
    this.wrongGuesses.set(clientId, { since: now, count: 1 });
  }

  /** When each pairing code that can still be used expires (for `remote-usb-server top`). */
  pendingPairing(now = Date.now()): Date[] {
    return this.pendingCodes().filter((c) => c.expires > now).map((c) => new Date(c.expires)).sort((a, b) => a.getTime() - b.getTime());
  }

  private pendingCodes(): { hash: string; expires: number }[] {
    try {
      statSync(this.pairingFile);
    } catch {
      return [];
    }
    return readTable(this.pairingFile, 'code')
      .filter((c) => typeof c.hash === 'string' && typeof c.expires === 'string')
      .map((c) => ({ hash: c.hash as string, expires: Date.parse(c.expires as string) }));
  }

  private writeCodes(codes: { hash: string; expires: number }[]): void {
    ensureStateDir(this.stateDir);
    const body = { code: codes.map((c) => ({ hash: c.hash, expires: new Date(c.expires).toISOString() })) };
    writeFileAtomic(this.pairingFile, '# Pending one-time pairing codes (hashed). Managed by remote-usb-server.\n' + stringify(body) + '\n', { mode: 0o600 });
  }
}

/**
 * The line of `key` in the `index`-th `[[table]]` of `file` (or of the table header when the key is not
 * there), for error messages; smol-toml reports lines only for syntax errors. '?' when not found.
 */
function entryLine(file: string, table: string, index: number, key: string): number | '?' {
  const lines = readFileSync(file, 'utf8').split('\n');
  const header = new RegExp(`^\\s*\\[\\[\\s*${table}\\s*\\]\\]`);
  const anyHeader = /^\s*\[/;
  const keyLine = new RegExp(`^\\s*${key}\\s*=`);
  let seen = -1;
  let headerLine: number | '?' = '?';
  for (let n = 0; n < lines.length; n++) {
    if (header.test(lines[n])) {
      if (++seen > index) break;
      if (seen === index) headerLine = n + 1;
    } else if (anyHeader.test(lines[n]) && seen === index) {
      break;
    } else if (seen === index && keyLine.test(lines[n])) {
      return n + 1;
    }
  }
  return headerLine;
}

function readTable(file: string, key: string): Record<string, unknown>[] {
  let doc: Record<string, unknown>;
  try {
    doc = parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    if (e instanceof TomlError) throw new TrustError(`${file}:${e.line}:${e.column}: ${e.message.split('\n')[0]}`);
    throw new TrustError(`${file}: ${(e as Error).message}`);
  }
  const v = doc[key] ?? [];
  if (!Array.isArray(v)) throw new TrustError(`${file}: '${key}' must be an array of tables ([[${key}]])`);
  return v as Record<string, unknown>[];
}
