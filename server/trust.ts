/**
 * Who may use this bench: the allowlist of client endpoint ids, and one-time pairing codes that let a new
 * client add itself. Both live in files under the state directory so `remote-usb-server pair` (a separate
 * process) and the running daemon share them; every change is an atomic replace.
 *
 * A pairing code is 10 Crockford-base32 characters (50 bits) shown as XXXXX-XXXXX, stored only as a
 * SHA-256 hash with an expiry, and deleted when used. After MAX_FAILED_ATTEMPTS wrong codes every pending
 * code is revoked, so guessing is hopeless.
 */
import { createHash, randomInt, timingSafeEqual } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parse, stringify, TomlError } from 'smol-toml';
import { writeFileAtomic } from './atomic-file.js';
import { ensureStateDir } from './identity.js';

export interface AllowedClient {
  id: string;
  name: string;
  added: string;
}

export class TrustError extends Error {
  override name = 'TrustError';
}

const CODE_ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ'; // Crockford: no I, L, O, U
export const MAX_FAILED_ATTEMPTS = 10;

function hashCode(code: string): string {
  return createHash('sha256').update(normalizeCode(code)).digest('hex');
}

/** Uppercase, no separators; the Crockford look-alikes (O→0, I/L→1) read as the digits they resemble. */
export function normalizeCode(code: string): string {
  return code.toUpperCase().replace(/[\s-]/g, '').replace(/O/g, '0').replace(/[IL]/g, '1');
}

export class TrustStore {
  private cache?: { mtimeMs: number; clients: AllowedClient[] };
  private failedAttempts = 0;

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
        throw new TrustError(`${this.allowlistFile}: client #${i + 1}: id must be a 64-hex-digit endpoint id`);
      }
      return { id: c.id, name: typeof c.name === 'string' ? c.name : c.id.slice(0, 10), added: String(c.added ?? '') };
    });
    this.cache = { mtimeMs, clients };
    return clients;
  }

  isAllowed(id: string): boolean {
    return this.clients().some((c) => c.id === id);
  }

  nameOf(id: string): string | undefined {
    return this.clients().find((c) => c.id === id)?.name;
  }

  allow(id: string, name: string): void {
    const clients = this.clients().filter((c) => c.id !== id);
    clients.push({ id, name: name.slice(0, 128), added: new Date().toISOString() });
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
    writeFileAtomic(this.allowlistFile, header + stringify({ client: clients }) + '\n', 0o600);
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
    const all = this.pendingCodes();
    const live = all.filter((c) => c.expires > now);
    const wanted = Buffer.from(hashCode(code), 'hex');
    const match = live.find((c) => timingSafeEqual(Buffer.from(c.hash, 'hex'), wanted));
    if (!match) {
      this.failedAttempts++;
      if (this.failedAttempts >= MAX_FAILED_ATTEMPTS) {
        this.writeCodes([]);
        this.failedAttempts = 0;
        return { ok: false, reason: `too many wrong pairing codes: every pending code was revoked; run 'remote-usb-server pair' again` };
      }
      const expired = all.some((c) => c.expires <= now && timingSafeEqual(Buffer.from(c.hash, 'hex'), wanted));
      return { ok: false, reason: expired ? 'pairing code expired; ask for a new one' : 'pairing code unknown or already used' };
    }
    this.writeCodes(live.filter((c) => c !== match));
    this.allow(clientId, clientName);
    return { ok: true };
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
    writeFileAtomic(this.pairingFile, '# Pending one-time pairing codes (hashed). Managed by remote-usb-server.\n' + stringify(body) + '\n', 0o600);
  }
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
