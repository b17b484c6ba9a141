// The one atomic file writer of the project. The helper's install (as root), the bench install and the
// daemon (allowlist, pairing codes, identity key) all write through it, so a fix here fixes all three.
// Before writing it removes temp files next to the target whose writer was killed mid-write (their pid is
// gone): harmless, but not left to pile up.
// It lives in helper/ because helper/ may import nothing from the other folders (it is bundled standalone
// and runs as root), while server/ may import helper/ (it already uses walkTrusted); a module under
// server/ could not serve the helper.
//
// A crash or a full disk leaves the old file or the new one, never a torn or truncated one:
//   1. a temp file next to the target, created O_EXCL | O_NOFOLLOW (never through a planted symlink),
//   2. every byte written: write(2) may write fewer bytes than asked (a nearly full disk does), so the
//      writer loops until all are written or the kernel reports the error (ENOSPC, EDQUOT, EIO),
//   3. owner and mode set on the fd, the file fsynced, closed, renamed over the target,
//   4. the directory fsynced (best effort: some file systems refuse it; the rename is atomic anyway).
// On any error before the rename the temp file is removed and the target is left untouched; the error
// names the target.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { errnoText } from './errors';

export interface AtomicWriteOptions {
  /** mode of the new file, set with fchmod (so the umask does not change it) */
  mode: number;
  /** owner of the new file (fchown); unchanged (the writer's) when absent */
  owner?: { uid: number; gid: number };
}

export class AtomicWriteError extends Error {
  override name = 'AtomicWriteError';
  /** the errno code of the failing step ('ENOSPC', …), 'ESHORTWRITE' when write(2) wrote nothing */
  readonly code: string | undefined;
  constructor(readonly file: string, override readonly cause: unknown) {
    const code = (cause as NodeJS.ErrnoException | undefined)?.code;
    super(`writing ${file} failed: ${code === 'ESHORTWRITE' ? (cause as Error).message : errnoText(cause)}; the previous ${path.basename(file)} is unchanged`);
    this.code = code;
  }
}

/** The temp file's name: hidden, next to the target, with the writer's pid (the ones whose writer died are
 *  removed by the next write). */
export function tempNameFor(file: string, pid = process.pid): string {
  return path.join(path.dirname(file), `.${path.basename(file)}.${pid}.tmp`);
}

export function writeFileAtomic(file: string, data: string | Uint8Array, o: AtomicWriteOptions): void {
  const buf = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  const tmp = tempNameFor(file);
  removeStaleTemps(file);
  try {
    fs.rmSync(tmp, { force: true }); // a leftover of an earlier writer with our pid; unlink never follows a link
    const fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600);
    try {
      for (let off = 0; off < buf.length; ) {
        const n = fs.writeSync(fd, buf, off, buf.length - off);
        if (!(n > 0)) {
          throw Object.assign(new Error(`short write: ${off} of ${buf.length} bytes written, then write(2) wrote nothing`), { code: 'ESHORTWRITE' });
        }
        off += n;
      }
      if (o.owner) fs.fchownSync(fd, o.owner.uid, o.owner.gid);
      fs.fchmodSync(fd, o.mode);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
  } catch (e) {
    try { fs.rmSync(tmp, { force: true }); } catch { /* the error below is the one that matters */ }
    throw new AtomicWriteError(file, e);
  }
  try {
    const dfd = fs.openSync(path.dirname(file), fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
    try { fs.fsyncSync(dfd); } finally { fs.closeSync(dfd); }
  } catch {
    // some file systems refuse fsync on a directory; the file itself is complete and renamed
  }
}

/** Temp files of writers that were killed mid-write (their pid is gone): harmless, but not left to pile up. */
function removeStaleTemps(file: string): void {
  const prefix = `.${path.basename(file)}.`;
  let names: string[];
  try {
    names = fs.readdirSync(path.dirname(file));
  } catch {
    return;
  }
  for (const name of names) {
    if (!name.startsWith(prefix) || !name.endsWith('.tmp')) continue;
    const pid = Number(name.slice(prefix.length).split('.')[0]);
    if (!Number.isInteger(pid) || pid === process.pid || alive(pid)) continue;
    try { fs.unlinkSync(path.join(path.dirname(file), name)); } catch { /* another writer got it */ }
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
