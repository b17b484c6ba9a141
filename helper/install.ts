// `install` / `uninstall` (run once with sudo). Paths are parameters so tests can install into a
// temporary tree; the CLI passes only the fixed polkit paths from paths.ts plus the validated
// --dir/--node/--group flags.
//
// Safety rule: the launcher's interpreter (node) and the installed helper are executed as root by
// pkexec for any authorised user, so nobody but root may be able to change them or anything on the way
// to them. walkTrusted() resolves a path the way the kernel does, one component at a time, following
// every symlink, and refuses (exit 7, naming the culprit) any directory, symlink or file on the way that
// is not owned by root or is writable by group or others.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { AtomicWriteError, writeFileAtomic as writeAtomic } from './atomic-write';
import { Exit, HelperError, errnoText, isErrno } from './errors';
import {
  HELPER_JS_NAME,
  LAUNCHER_NAME,
  MANIFEST_NAME,
  hasMarker,
  launcherScript,
  policyExecPath,
  policyXml,
  rulesJs,
} from './templates';

export interface StatLike {
  uid: number;
  mode: number;
  isSymbolicLink(): boolean;
  isDirectory(): boolean;
  isFile(): boolean;
}

/** The two file-system questions the safety check asks; tests substitute a fake. */
export interface FsProbe {
  lstat(p: string): StatLike;
  readlink(p: string): string;
}

export const realProbe: FsProbe = {
  lstat: (p) => fs.lstatSync(p),
  readlink: (p) => fs.readlinkSync(p),
};

const MAX_SYMLINKS = 40;

function unsafe(what: string, hint: string): HelperError {
  return new HelperError(Exit.INSTALL, `unsafe install: ${what}`, hint);
}

function modeText(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, '0');
}

export interface WalkResult {
  /** the resolved path of the part that exists (no symlinks in it) */
  real: string;
  /** components below `real` that do not exist yet (only with allowMissing) */
  missing: string[];
}

/**
 * Resolves `target` from / one component at a time and checks each directory, symlink and the final
 * entry: owned by uid 0, and (except symlinks, whose mode means nothing) not writable by group/other.
 * @param role e.g. 'the node binary', used in messages
 */
export function walkTrusted(
  target: string,
  probe: FsProbe,
  opts: { role: string; hint: string; allowMissing?: boolean },
): WalkResult {
  let links = 0;
  const check = (p: string, st: StatLike): void => {
    if (st.uid !== 0) throw unsafe(`${p} (on the path to ${opts.role}) is not owned by root (uid ${st.uid})`, opts.hint);
    if (!st.isSymbolicLink() && (st.mode & 0o022) !== 0) {
      throw unsafe(`${p} (on the path to ${opts.role}) is writable by group or others (mode ${modeText(st.mode)})`, opts.hint);
    }
  };
  const lstat = (p: string): StatLike | undefined => {
    try {
      return probe.lstat(p);
    } catch (e) {
      if (isErrno(e, 'ENOENT')) return undefined;
      throw unsafe(`cannot inspect ${p}: ${errnoText(e)}`, opts.hint);
    }
  };
  const root = lstat('/');
  if (!root) throw unsafe('/ does not exist', opts.hint);
  check('/', root);

  // `cur` is always a real (symlink-free) existing directory; `..` is therefore its plain parent.
  const walk = (p: string, start: string, allowMissing: boolean): WalkResult => {
    let cur = p.startsWith('/') ? '/' : start;
    const comps = p.split('/').filter((c) => c !== '' && c !== '.');
    for (let i = 0; i < comps.length; i++) {
      const c = comps[i];
      if (c === '..') {
        cur = path.posix.dirname(cur);
        continue;
      }
      const next = cur === '/' ? `/${c}` : `${cur}/${c}`;
      const st = lstat(next);
      if (!st) {
        if (allowMissing && !comps.slice(i).includes('..')) return { real: cur, missing: comps.slice(i) };
        throw unsafe(`${next} (on the path to ${opts.role}) does not exist`, opts.hint);
      }
      check(next, st);
      if (st.isSymbolicLink()) {
        if (++links > MAX_SYMLINKS) throw unsafe(`too many symbolic links resolving ${target}`, opts.hint);
        cur = walk(probe.readlink(next), cur, false).real;
      } else {
        cur = next;
      }
      if (i < comps.length - 1) {
        const dirSt = st.isSymbolicLink() ? lstat(cur) : st;
        if (!dirSt?.isDirectory()) throw unsafe(`${next} (on the path to ${opts.role}) is not a directory`, opts.hint);
      }
    }
    return { real: cur, missing: [] };
  };
  return walk(target, '/', opts.allowMissing ?? false);
}

const NODE_HINT = 'use a root-owned node outside user-writable directories, e.g. --node /usr/bin/node';
const DIR_HINT = 'choose a --dir whose parents are root-owned and not group/world-writable (default /usr/local/libexec/remote-usb)';

/** The node binary: trusted path, a regular executable file. Returns its real path. */
export function checkNode(node: string, probe: FsProbe): string {
  const { real } = walkTrusted(node, probe, { role: `the node binary ${node}`, hint: NODE_HINT });
  const st = probe.lstat(real);
  if (!st.isFile()) throw unsafe(`node binary ${real} is not a regular file`, NODE_HINT);
  if ((st.mode & 0o111) === 0) throw unsafe(`node binary ${real} is not executable (mode ${modeText(st.mode)})`, NODE_HINT);
  return real;
}

/** The install directory: trusted path; the part that does not exist yet is returned for creation. */
export function checkInstallDir(dir: string, probe: FsProbe): WalkResult {
  const r = walkTrusted(dir, probe, { role: `the install directory ${dir}`, hint: DIR_HINT, allowMissing: true });
  if (r.missing.length === 0 && !probe.lstat(r.real).isDirectory()) throw unsafe(`${dir} is not a directory`, DIR_HINT);
  return r;
}

export interface InstallOptions {
  dir: string;
  node: string;
  group?: string;
  /** the bundled helper (dist/helper.js) to copy */
  helperSource: Buffer;
  policyPath: string;
  rulesPath: string;
  probe?: FsProbe;
}

export interface UninstallOptions {
  dir: string;
  policyPath: string;
  rulesPath: string;
  probe?: FsProbe;
}

export interface Report {
  written: string[];
  removed: string[];
  notes: string[];
}

interface Manifest {
  writtenBy: string;
  createdDirs: string[];
}

function isRoot(): boolean {
  return process.geteuid?.() === 0;
}

function readIfExists(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (e) {
    if (isErrno(e, 'ENOENT')) return undefined;
    throw new HelperError(Exit.INSTALL, `cannot read ${file}: ${errnoText(e)}`, 'check the file and retry');
  }
}

function failed(action: string, file: string, e: unknown): HelperError {
  return new HelperError(Exit.INSTALL, `${action} ${file} failed: ${errnoText(e)}`, 'nothing else was changed after this step; fix it and rerun');
}

/** helper/atomic-write.ts with root as the owner (when we are root), as an install error (exit 7). */
export function installFile(file: string, data: string | Buffer, mode: number): void {
  try {
    writeAtomic(file, data, { mode, owner: isRoot() ? { uid: 0, gid: 0 } : undefined });
  } catch (e) {
    if (e instanceof AtomicWriteError) throw new HelperError(Exit.INSTALL, e.message, 'nothing else was changed after this step; fix it and rerun');
    throw failed('writing', file, e);
  }
}

function removeIfExists(file: string, report: Report): void {
  try {
    fs.unlinkSync(file);
    report.removed.push(file);
  } catch (e) {
    if (!isErrno(e, 'ENOENT')) throw failed('removing', file, e);
  }
}

function readManifest(file: string, realDir: string): Manifest | undefined {
  const text = readIfExists(file);
  if (text === undefined) return undefined;
  try {
    const m = JSON.parse(text) as Partial<Manifest>;
    // Only the install dir and its ancestors may be listed; anything else is ignored.
    const dirs = Array.isArray(m.createdDirs)
      ? m.createdDirs.filter((d): d is string => typeof d === 'string' && (d === realDir || realDir.startsWith(`${d}/`)))
      : [];
    return { writtenBy: String(m.writtenBy), createdDirs: dirs };
  } catch {
    return undefined;
  }
}

export function install(o: InstallOptions): Report {
  const probe = o.probe ?? realProbe;
  const report: Report = { written: [], removed: [], notes: [] };

  // 1. Checks. Nothing is written until all of them pass.
  checkNode(o.node, probe);
  const dir = checkInstallDir(o.dir, probe);
  const polkitHint = 'install polkit and pkexec first (Debian/Ubuntu: apt install pkexec polkitd)';
  for (const file of o.group ? [o.policyPath, o.rulesPath] : [o.policyPath]) {
    const d = path.dirname(file);
    if (!fs.statSync(d, { throwIfNoEntry: false })?.isDirectory()) throw new HelperError(Exit.INSTALL, `polkit directory ${d} is missing`, polkitHint);
  }
  const launcher = path.join(o.dir, LAUNCHER_NAME);
  const helperJs = path.join(o.dir, HELPER_JS_NAME);
  const manifestFile = path.join(o.dir, MANIFEST_NAME);
  const foreign = (file: string): HelperError =>
    new HelperError(Exit.INSTALL, `${file} exists and was not written by remote-usb-helper`, 'move it away first; install never overwrites foreign files');
  for (const file of o.group ? [o.policyPath, o.rulesPath, launcher] : [o.policyPath, launcher]) {
    const text = readIfExists(file);
    if (text !== undefined && !hasMarker(text)) throw foreign(file);
  }
  const previous = readManifest(manifestFile, path.join(dir.real, ...dir.missing));
  const launcherText = readIfExists(launcher);
  if (previous === undefined && launcherText === undefined && readIfExists(helperJs) !== undefined) throw foreign(helperJs);

  // 2. Directories (0755 root:root), remembered so that uninstall removes exactly these.
  const created = new Set(previous?.createdDirs ?? []);
  let cur = dir.real;
  for (const c of dir.missing) {
    cur = path.join(cur, c);
    try {
      fs.mkdirSync(cur, { mode: 0o755 });
      if (isRoot()) fs.chownSync(cur, 0, 0);
      fs.chmodSync(cur, 0o755);
    } catch (e) {
      throw failed('creating', cur, e);
    }
    created.add(cur);
    report.written.push(`${cur}/`);
  }

  // 3. Files. The helper and launcher first, so the policy never names a launcher that is not there.
  installFile(helperJs, o.helperSource, 0o755);
  report.written.push(helperJs);
  installFile(launcher, launcherScript(o.node, helperJs), 0o755);
  report.written.push(launcher);
  const manifest: Manifest = { writtenBy: 'remote-usb-helper install', createdDirs: [...created].sort() };
  installFile(manifestFile, `${JSON.stringify(manifest, null, 2)}\n`, 0o644);
  report.written.push(manifestFile);
  installFile(o.policyPath, policyXml(launcher), 0o644);
  report.written.push(o.policyPath);
  if (o.group) {
    installFile(o.rulesPath, rulesJs(o.group), 0o644);
    report.written.push(o.rulesPath);
  } else {
    // an earlier `install --group` wrote one; this install asked for no group rule
    const rules = readIfExists(o.rulesPath);
    if (rules !== undefined && hasMarker(rules)) removeIfExists(o.rulesPath, report);
    else if (rules !== undefined) report.notes.push(`left ${o.rulesPath}: not written by remote-usb-helper`);
  }
  return report;
}

export function uninstall(o: UninstallOptions): Report {
  const probe = o.probe ?? realProbe;
  const report: Report = { written: [], removed: [], notes: [] };
  const dir = checkInstallDir(o.dir, probe);
  const launcher = path.join(o.dir, LAUNCHER_NAME);

  const policy = readIfExists(o.policyPath);
  if (policy !== undefined) {
    if (!hasMarker(policy)) {
      report.notes.push(`left ${o.policyPath}: not written by remote-usb-helper`);
    } else {
      const exec = policyExecPath(policy);
      if (exec !== undefined && exec !== launcher) {
        throw new HelperError(
          Exit.USAGE,
          `${o.policyPath} belongs to an install in ${path.dirname(exec)}, not ${o.dir}`,
          `run: remote-usb-helper uninstall --dir ${path.dirname(exec)}`,
        );
      }
      removeIfExists(o.policyPath, report);
    }
  }
  const rules = readIfExists(o.rulesPath);
  if (rules !== undefined) {
    if (hasMarker(rules)) removeIfExists(o.rulesPath, report);
    else report.notes.push(`left ${o.rulesPath}: not written by remote-usb-helper`);
  }

  if (dir.missing.length === 0) {
    const manifest = readManifest(path.join(o.dir, MANIFEST_NAME), dir.real);
    const launcherText = readIfExists(launcher);
    const ours = manifest !== undefined || (launcherText !== undefined && hasMarker(launcherText));
    if (launcherText !== undefined && !hasMarker(launcherText)) {
      report.notes.push(`left ${launcher}: not written by remote-usb-helper`);
    } else {
      removeIfExists(launcher, report);
    }
    if (ours) {
      removeIfExists(path.join(o.dir, HELPER_JS_NAME), report);
      removeIfExists(path.join(o.dir, MANIFEST_NAME), report);
    }
    // deepest first; a directory that is not empty (someone else's files) is left alone
    for (const d of [...(manifest?.createdDirs ?? [])].sort((a, b) => b.length - a.length)) {
      try {
        fs.rmdirSync(d);
        report.removed.push(`${d}/`);
      } catch (e) {
        if (isErrno(e, 'ENOTEMPTY') || isErrno(e, 'EEXIST')) report.notes.push(`left ${d}/: not empty`);
        else if (!isErrno(e, 'ENOENT')) throw failed('removing', d, e);
      }
    }
  }
  if (report.removed.length === 0) report.notes.push('nothing to uninstall');
  return report;
}
