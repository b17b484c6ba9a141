/**
 * The bench's persistent identity: a 32-byte secret key in `<state_dir>/secret.key` (hex, mode 0600).
 * Created on first run only. A key that exists but cannot be read or parsed is an error, never a reason
 * to make a new one: a silently new identity would lock every paired client out.
 */
import { chmodSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../../helper/atomic-write.js';
import { generateSecretKey } from '../net/iroh.js';

export class IdentityError extends Error {
  override name = 'IdentityError';
}

export function keyFile(stateDir: string): string {
  return join(stateDir, 'secret.key');
}

export function ensureStateDir(stateDir: string): void {
  try {
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  } catch (e) {
    throw new IdentityError(`cannot create state directory ${stateDir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

/** Reads the key, creating it when (and only when) the file does not exist yet. */
export function loadOrCreateSecretKey(stateDir: string, create = true): { key: Uint8Array; created: boolean } {
  const file = keyFile(stateDir);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && create) {
      ensureStateDir(stateDir);
      const key = generateSecretKey();
      writeFileAtomic(file, Buffer.from(key).toString('hex') + '\n', { mode: 0o600 });
      return { key, created: true };
    }
    if (code === 'ENOENT') throw new IdentityError(`${file}: no identity yet (start the daemon once to create it)`);
    throw new IdentityError(`${file}: cannot read the identity key (${code ?? (e as Error).message}); fix its permissions — refusing to create a new identity`);
  }
  const hex = text.trim();
  if (!/^[0-9a-f]{64}$/i.test(hex)) {
    throw new IdentityError(`${file}:1: not a 64-hex-digit secret key; restore it from a backup or delete it to create a new identity (paired clients must then pair again)`);
  }
  const mode = statSync(file).mode & 0o777;
  if ((mode & 0o077) !== 0) {
    // Tighten rather than refuse: the key is still ours, and the daemon user owns it.
    try { chmodSync(file, 0o600); } catch { throw new IdentityError(`${file}: readable by others (mode ${mode.toString(8)}) and cannot be fixed; run chmod 600 on it`); }
  }
  return { key: new Uint8Array(Buffer.from(hex, 'hex')), created: false };
}
