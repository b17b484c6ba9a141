// Who attached which vhci port. The kernel does not record it, so the helper does: after a successful
// attach it writes one small root-owned record per port, and a detach by anyone but root must match it.
// A user may therefore detach only what they attached (issue #12, item 7); root may detach anything.
//
// Where: a directory only root can write (cli.ts: /run/remote-usb-helper, a tmpfs that is emptied on
// boot just like vhci's ports). It is created 0700; an existing one must be a real directory (lstat: a
// symlink is refused, never followed) owned by us and not group/other-accessible, else the helper
// stops. Records are written by helper/atomic-write.ts (temp O_EXCL|O_NOFOLLOW + rename) and read with
// O_NOFOLLOW, so a planted link is never followed.
//
// A record says: port, the caller's uid (PKEXEC_UID), and the device as vhci's status reports it
// (devid and speed). It holds only while vhci shows that port used by that devid at that speed; any other
// state (free, another device) makes it stale: it is ignored and pruned on the next attach or detach, so a
// stale record never blocks anyone. The one case a record cannot tell apart: after our device left the
// port, root attaches the *same* devid at the same speed to the same port outside the helper (plain
// `usbip attach`) before any helper run pruned the record; the earlier user could then detach it.
//
// Race, decided here: the ownership check and the write to `detach` are two steps, and the kernel has no
// "detach if still devid X". In between, the owner's device can leave and another can take the port;
// the window is one read of the status file long, and only the port's previous owner can hit it.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeFileAtomic } from './atomic-write';
import { Exit, HelperError, errnoText, isErrno } from './errors';
import { VDEV_ST_NULL, VhciPort } from './vhci';

export interface PortOwner {
  port: number;
  uid: number;
  devid: number;
  speed: number;
}

const RECORD = /^port-(0|[1-9][0-9]{0,2})$/;
const MAX_RECORD_BYTES = 256;

function stateError(dir: string, what: string): HelperError {
  return new HelperError(Exit.INTERNAL, `unsafe state directory ${dir}: ${what}`, `only root may own it, mode 0700; remove it (sudo rm -r ${dir}) and retry`);
}

/** Checks the directory (lstat: never through a symlink); creates it 0700 when `create` and missing.
 *  Returns false when it is missing and not created. */
export function checkOwnersDir(dir: string, create: boolean): boolean {
  let st = fs.lstatSync(dir, { throwIfNoEntry: false });
  if (!st && create) {
    try {
      fs.mkdirSync(dir, { mode: 0o700 });
    } catch (e) {
      if (!isErrno(e, 'EEXIST')) throw new HelperError(Exit.INTERNAL, `cannot create ${dir}: ${errnoText(e)}`, 'is /run writable by root?');
    }
    st = fs.lstatSync(dir, { throwIfNoEntry: false });
  }
  if (!st) return false;
  if (!st.isDirectory()) throw stateError(dir, st.isSymbolicLink() ? 'a symlink' : 'not a directory');
  const me = process.geteuid?.() ?? 0;
  if (st.uid !== me) throw stateError(dir, `owned by uid ${st.uid}`);
  if ((st.mode & 0o077) !== 0) throw stateError(dir, `mode ${(st.mode & 0o777).toString(8)}`);
  return true;
}

const recordPath = (dir: string, port: number): string => path.join(dir, `port-${port}`);

export function formatRecord(r: PortOwner): string {
  return `${JSON.stringify({ port: r.port, uid: r.uid, devid: r.devid, speed: r.speed })}\n`;
}

/** Strict: every field a whole number in its range, nothing else. */
export function parseRecord(text: string): PortOwner | undefined {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return undefined;
  const o = v as Record<string, unknown>;
  const int = (x: unknown, max: number): x is number => typeof x === 'number' && Number.isInteger(x) && x >= 0 && x <= max;
  if (Object.keys(o).sort().join() !== 'devid,port,speed,uid') return undefined;
  if (!int(o.port, 255) || !int(o.uid, 0xffffffff) || !int(o.devid, 0xffffffff) || !int(o.speed, 6)) return undefined;
  return { port: o.port, uid: o.uid, devid: o.devid, speed: o.speed };
}

/** The record for `port`; undefined when there is none or it cannot be read as one (treated as none). */
export function readOwner(dir: string, port: number): PortOwner | undefined {
  let fd: number;
  try {
    fd = fs.openSync(recordPath(dir, port), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  } catch (e) {
    if (isErrno(e, 'ENOENT') || isErrno(e, 'ELOOP')) return undefined;
    throw new HelperError(Exit.INTERNAL, `cannot read ${recordPath(dir, port)}: ${errnoText(e)}`, 'see the file');
  }
  try {
    if (!fs.fstatSync(fd).isFile()) return undefined;
    const buf = Buffer.alloc(MAX_RECORD_BYTES);
    const n = fs.readSync(fd, buf, 0, buf.length, 0);
    const r = parseRecord(buf.subarray(0, n).toString('utf8'));
    return r && r.port === port ? r : undefined;
  } finally {
    fs.closeSync(fd);
  }
}

/** Does the record still describe what vhci shows on its port? */
export function recordHolds(r: PortOwner, p: VhciPort): boolean {
  return p.port === r.port && p.sta !== VDEV_ST_NULL && p.devid === r.devid && p.spd === r.speed;
}

export function writeOwner(dir: string, r: PortOwner): void {
  writeFileAtomic(recordPath(dir, r.port), formatRecord(r), { mode: 0o600 });
}

export function removeOwner(dir: string, port: number): void {
  fs.rmSync(recordPath(dir, port), { force: true });
}

/** Removes every record vhci's ports no longer bear out. Returns the ports pruned. */
export function pruneOwners(dir: string, ports: readonly VhciPort[]): number[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return [];
  }
  const pruned: number[] = [];
  for (const name of names) {
    const m = RECORD.exec(name);
    if (!m) continue;
    const port = Number(m[1]);
    const r = readOwner(dir, port);
    const p = ports.find((x) => x.port === port);
    if (r && p && recordHolds(r, p)) continue;
    removeOwner(dir, port);
    pruned.push(port);
  }
  return pruned;
}
