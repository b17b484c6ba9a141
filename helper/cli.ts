// remote-usb-helper: the privileged helper of Remote USB, bundled to dist/helper.js.
//
// Runs as root for one short call, through pkexec (polkit action dev.remoteusb.helper.attach, see
// helper/README.md) or sudo - never setuid. It attaches the connected unix stream socket it receives
// as stdin to a vhci_hcd port, detaches a port (only one the caller attached, unless the caller is root),
// loads vhci-hcd, prints vhci's status, and installs or uninstalls itself with its polkit files. Every
// argument is validated before use (validate.ts); the only things ever written are vhci's attach/detach
// files (values built from validated numbers), the port ownership records in /run/remote-usb-helper
// (owners.ts) and, for install/uninstall, the helper's own files. No shell is ever used.
//
// Exit codes (same table in errors.ts and README.md):
//   0 ok                 3 stdin is not a connected AF_UNIX SOCK_STREAM socket   6 not root
//   1 internal error     4 vhci_hcd not loaded (`remote-usb-helper load`)       7 install refused/failed
//   2 usage/bad argument 5 port busy / kernel refused the write (errno shown)   8 detach: port not attached
//                                                                             9 detach: another user's port
// Errors are one line on stderr: `remote-usb-helper: <what> (<hint>)`; success is one line on stdout.
//
// This file is the only place that binds the modules to the real machine: the paths below are fixed
// constants, and no environment variable or flag can point the helper at another sysfs or policy path.

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { Exit, HelperError } from './errors';
import { realProbe } from './install';
import {
  DEFAULT_INSTALL_DIR,
  ETC_GROUP,
  MODPROBE,
  MODPROBE_ARGS,
  MODPROBE_ENV,
  OWNERS_DIR,
  PKEXEC,
  POLICY_PATH,
  PROC_NET_UNIX,
  PROC_SELF_FD,
  RULES_PATH,
  SYSFS_VHCI,
} from './paths';
import { Host, run } from './run';
import { StdinVerdict, checkStdinSocket } from './socket';
import { ModprobeResult } from './vhci';

const UID = /^[0-9]{1,10}$/;

function fdLink(fd: number): string | null {
  try {
    return fs.readlinkSync(`${PROC_SELF_FD}/${fd}`);
  } catch {
    return null;
  }
}

const stdinLink = fdLink(0);

function stdinVerdict(): StdinVerdict {
  if (stdinLink === null || !stdinLink.startsWith('socket:')) return checkStdinSocket(stdinLink, '');
  let table: string;
  try {
    table = fs.readFileSync(PROC_NET_UNIX, 'latin1');
  } catch {
    return { ok: false, reason: `cannot read ${PROC_NET_UNIX} to inspect fd 0` };
  }
  return checkStdinSocket(stdinLink, table);
}

/** One line to stdout/stderr - unless that fd is the very socket we hand to vhci (a caller could pass
 * it as stdout too), where text would corrupt the USB/IP stream. */
function writeLine(fd: 1 | 2, text: string): void {
  if (stdinLink !== null && stdinLink.startsWith('socket:') && fdLink(fd) === stdinLink) return;
  try {
    fs.writeSync(fd, `${text}\n`);
  } catch {
    // the caller stopped listening; the exit code still tells it what happened
  }
}

function modprobe(): ModprobeResult {
  const r = spawnSync(MODPROBE, MODPROBE_ARGS, {
    env: { ...MODPROBE_ENV },
    cwd: '/',
    stdio: ['ignore', 'pipe', 'pipe'], // never our fd 0: it may be the caller's socket
    shell: false,
    timeout: 60_000,
    maxBuffer: 64 * 1024,
    encoding: 'utf8',
  });
  return { status: r.status, error: r.error, stderr: r.stderr ?? '' };
}

function requester(): string {
  const pk = process.env.PKEXEC_UID;
  if (pk !== undefined) return UID.test(pk) ? `uid ${pk} via pkexec` : 'pkexec (PKEXEC_UID unreadable)';
  const sudo = process.env.SUDO_UID;
  if (sudo !== undefined && UID.test(sudo)) return `root via sudo from uid ${sudo}`;
  return `uid ${process.getuid?.() ?? '?'}`;
}

/** The uid the request is for. pkexec sets PKEXEC_UID to the caller's uid; without it we were run by root
 *  (directly or through sudo), who may do anything. A PKEXEC_UID that is not a uid is refused. */
function callerUid(): number {
  const pk = process.env.PKEXEC_UID;
  if (pk !== undefined) {
    if (!UID.test(pk) || Number(pk) > 0xffffffff) throw new HelperError(Exit.INTERNAL, 'PKEXEC_UID is not a uid', 'run the helper through pkexec or sudo');
    return Number(pk);
  }
  return process.getuid?.() ?? 0;
}

/** install copies the running file, so it must be the self-contained bundle (dist/helper.js). */
function helperSource(): Buffer {
  const self = __filename;
  const others = Object.keys(require.cache).filter((f) => f !== self && f !== require.main?.filename);
  if (others.length > 0) {
    throw new HelperError(
      Exit.INSTALL,
      `install must run from the bundled helper, but ${self} loads ${others[0]}`,
      'run `npm run build`, then `sudo node dist/helper.js install`',
    );
  }
  return fs.readFileSync(self);
}

function installNotes(group: string | undefined): string[] {
  const notes: string[] = [];
  if (!fs.existsSync(PKEXEC)) notes.push(`${PKEXEC} not found: install pkexec (Debian/Ubuntu: apt install pkexec)`);
  if (group === undefined) {
    notes.push('users will be asked for an administrator password once per session (auth_admin_keep); --group <name> allows a group without one');
  } else {
    let known = false;
    try {
      known = fs.readFileSync(ETC_GROUP, 'utf8').split('\n').some((l) => l.startsWith(`${group}:`));
    } catch {
      // not fatal: the group may come from NSS (LDAP, sssd)
    }
    notes.push(
      known
        ? `members of group ${group} may attach and detach without a password (they must have logged in since joining it)`
        : `group ${group} is not in ${ETC_GROUP}: create it (groupadd ${group}) and add users (usermod -aG ${group} <user>)`,
    );
  }
  return notes;
}

const host: Host = {
  sysfsDir: SYSFS_VHCI,
  isRoot: () => process.geteuid?.() === 0,
  stdinVerdict,
  modprobe,
  requester,
  callerUid,
  ownersDir: OWNERS_DIR,
  out: (line) => writeLine(1, line),
  err: (line) => writeLine(2, line),
  install: {
    defaultDir: DEFAULT_INSTALL_DIR,
    defaultNode: () => process.execPath,
    helperSource,
    policyPath: POLICY_PATH,
    rulesPath: RULES_PATH,
    probe: realProbe,
    notes: installNotes,
  },
};

process.umask(0o022);
process.exitCode = run(process.argv.slice(2), host);
