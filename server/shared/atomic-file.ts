/**
 * The daemon's atomic replace (allowlist, pairing codes, identity key): helper/atomic-write.ts, the one
 * writer the helper and the installers use too (every byte written or an error, fsync, rename, fsync
 * of the directory; on failure the old file stays as it was and the error names the file). This wrapper
 * adds the clean-up of temp files whose writer was killed mid-write.
 */
import { readdirSync, unlinkSync } from 'node:fs';
import { dirname, basename, join } from 'node:path';
import { writeFileAtomic as writeAtomic } from '../../helper/atomic-write.js';

export { AtomicWriteError } from '../../helper/atomic-write.js';

export function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o600): void {
  removeStaleTemps(path);
  writeAtomic(path, data, { mode });
}

/** Temp files of writers that were killed mid-write (their pid is gone): harmless, but not left to pile up. */
function removeStaleTemps(path: string): void {
  const prefix = `.${basename(path)}.`;
  let names: string[];
  try {
    names = readdirSync(dirname(path));
  } catch {
    return;
  }
  for (const name of names) {
    if (!name.startsWith(prefix) || !name.endsWith('.tmp')) continue;
    const pid = Number(name.slice(prefix.length).split('.')[0]);
    if (!Number.isInteger(pid) || pid === process.pid || alive(pid)) continue;
    try { unlinkSync(join(dirname(path), name)); } catch { /* another writer got it */ }
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
