// Dispatch of remote-usb-helper's verbs, with everything that touches the machine behind a Host so
// tests can run every verb against a fake sysfs. cli.ts builds the only real Host, from the fixed paths.
//
// Order of checks (each stops with its exit code):
//   attach:    arguments (2) -> stdin socket (3) -> root (6) -> vhci loaded (4) -> port exists on this
//              machine and its hub fits the speed (2) -> port free (5) -> kernel write (5) -> record who
//              attached it (1; the port is detached again when that fails)
//   detach:    arguments (2) -> root (6) -> vhci loaded (4) -> port exists (2) -> attached (8) -> attached
//              by this caller, or the caller is root (9) -> write (5)
//   load:      arguments (2) -> root (6) -> modprobe only if vhci_hcd.0 is missing (4 on failure)
//   status:    arguments (2) -> vhci loaded (4); read-only, no root needed
//   install / uninstall: arguments (2) -> root (6) -> safety checks and writes (7)
// Everything a caller can get wrong about its own request is reported before anything privileged.

import { Exit, ExitCode, HelperError, errnoText, formatError } from './errors';
import { FsProbe, Report, install, uninstall } from './install';
import { checkOwnersDir, pruneOwners, readOwner, recordHolds, removeOwner, writeOwner } from './owners';
import { StdinVerdict } from './socket';
import { Command, HELP_TEXT, SPEED_NAMES, parseArgs } from './validate';
import { ModprobeResult, VhciPort, attach, detach, formatStatus, loadVhci, readPorts, requireVhci, undoAttach } from './vhci';

/** Bumped when verbs, arguments or exit codes change; `remote-usb-helper version` prints it. */
export const HELPER_VERSION = 2;

export interface InstallHost {
  defaultDir: string;
  defaultNode(): string;
  /** The bundled helper to copy; throws HelperError(INSTALL) when not running from the bundle. */
  helperSource(): Buffer;
  policyPath: string;
  rulesPath: string;
  probe?: FsProbe;
  /** Advice about the machine (pkexec present, group exists) printed after install. */
  notes(group: string | undefined): string[];
}

export interface Host {
  sysfsDir: string;
  /** Root-only directory of the port ownership records (owners.ts); cli.ts: /run/remote-usb-helper. */
  ownersDir: string;
  isRoot(): boolean;
  stdinVerdict(): StdinVerdict;
  modprobe(): ModprobeResult;
  /** Who asked, for the success line: `uid 1000 via pkexec`, `root via sudo from uid 1000`, `uid 0`. */
  requester(): string;
  /** The uid the request is for: PKEXEC_UID under pkexec, else our own (0: root, directly or via sudo).
   *  Throws when PKEXEC_UID is set but not a uid (fail closed). */
  callerUid(): number;
  out(line: string): void;
  err(line: string): void;
  install: InstallHost;
}

function requireRoot(host: Host, verb: string): void {
  if (!host.isRoot()) {
    throw new HelperError(Exit.NOT_ROOT, `${verb} must run as root`, 'run it through pkexec (see helper/README.md) or with sudo');
  }
}

/** After the kernel accepted an attach: record who made it (owners.ts). Without a record only root could
 *  detach the port, so when recording fails the port is detached again and the attach fails. */
function recordAttach(host: Host, r: { port: number; uid: number; devid: number; speed: number }): void {
  try {
    checkOwnersDir(host.ownersDir, true);
    pruneOwners(host.ownersDir, readPorts(host.sysfsDir));
    writeOwner(host.ownersDir, r);
  } catch (e) {
    try {
      undoAttach(host.sysfsDir, r.port);
    } catch {
      // the kernel frees the port anyway when the caller closes its end of the socket
    }
    const why = e instanceof HelperError ? e.what : errnoText(e);
    throw new HelperError(Exit.INTERNAL, `attached port ${r.port} but could not record who attached it (${why}); detached it again`, 'fix the state directory and retry');
  }
}

/** Only the user who attached a port (as recorded and still borne out by vhci's status) may detach it;
 *  root may detach anything. */
function authorizeDetach(host: Host, uid: number, p: VhciPort): void {
  if (uid === 0) return;
  const hint = `only the user who attached it may detach it, or root: sudo remote-usb-helper detach ${p.port}`;
  if (!checkOwnersDir(host.ownersDir, false)) {
    throw new HelperError(Exit.NOT_OWNER, `port ${p.port} was not attached by uid ${uid} through remote-usb-helper`, hint);
  }
  const r = readOwner(host.ownersDir, p.port);
  if (!r || !recordHolds(r, p)) {
    throw new HelperError(Exit.NOT_OWNER, `port ${p.port} was not attached by uid ${uid} through remote-usb-helper`, hint);
  }
  if (r.uid !== uid) throw new HelperError(Exit.NOT_OWNER, `port ${p.port} was attached by uid ${r.uid}, not by uid ${uid}`, hint);
}

function printReport(host: Host, r: Report): void {
  for (const f of r.written) host.out(`wrote ${f}`);
  for (const f of r.removed) host.out(`removed ${f}`);
  for (const n of r.notes) host.out(`note: ${n}`);
}

function dispatch(cmd: Command, host: Host): ExitCode {
  switch (cmd.verb) {
    case 'help':
      host.out(HELP_TEXT);
      return Exit.OK;
    case 'version':
      host.out(`remote-usb-helper ${HELPER_VERSION}`);
      return Exit.OK;
    case 'status':
      requireVhci(host.sysfsDir);
      for (const line of formatStatus(readPorts(host.sysfsDir))) host.out(line);
      return Exit.OK;
    case 'attach': {
      const v = host.stdinVerdict();
      if (!v.ok) {
        throw new HelperError(Exit.NOT_SOCKET, v.reason, 'pass one end of a connected AF_UNIX SOCK_STREAM socket pair as stdin (fd 0)');
      }
      requireRoot(host, 'attach');
      const uid = host.callerUid();
      attach(host.sysfsDir, cmd);
      recordAttach(host, { port: cmd.port, uid, devid: cmd.devid, speed: cmd.speed });
      host.out(`attached port ${cmd.port} (devid ${cmd.devid}, speed ${cmd.speed} ${SPEED_NAMES[cmd.speed]}, socket inode ${v.inode}) for ${host.requester()}`);
      return Exit.OK;
    }
    case 'detach': {
      requireRoot(host, 'detach');
      const uid = host.callerUid();
      detach(host.sysfsDir, cmd.port, (p) => authorizeDetach(host, uid, p));
      try {
        if (checkOwnersDir(host.ownersDir, false)) {
          removeOwner(host.ownersDir, cmd.port);
          pruneOwners(host.ownersDir, readPorts(host.sysfsDir));
        }
      } catch {
        // the port is detached; a record left behind is stale and pruned by the next run
      }
      host.out(`detached port ${cmd.port} for ${host.requester()}`);
      return Exit.OK;
    }
    case 'load':
      requireRoot(host, 'load');
      host.out(loadVhci(host.sysfsDir, () => host.modprobe()) ? 'loaded vhci-hcd' : 'vhci_hcd is already loaded');
      return Exit.OK;
    case 'install': {
      requireRoot(host, 'install');
      const h = host.install;
      const report = install({
        dir: cmd.dir ?? h.defaultDir,
        node: cmd.node ?? h.defaultNode(),
        group: cmd.group,
        helperSource: h.helperSource(),
        policyPath: h.policyPath,
        rulesPath: h.rulesPath,
        probe: h.probe,
      });
      report.notes.push(...h.notes(cmd.group));
      printReport(host, report);
      return Exit.OK;
    }
    case 'uninstall': {
      requireRoot(host, 'uninstall');
      const h = host.install;
      printReport(host, uninstall({ dir: cmd.dir ?? h.defaultDir, policyPath: h.policyPath, rulesPath: h.rulesPath, probe: h.probe }));
      return Exit.OK;
    }
  }
}

/** Runs one command line (without node and script) and returns the exit code; never throws. */
export function run(argv: readonly string[], host: Host): ExitCode {
  try {
    return dispatch(parseArgs(argv), host);
  } catch (e) {
    if (e instanceof HelperError) {
      host.err(formatError(e.what, e.hint));
      return e.exitCode;
    }
    host.err(formatError(`internal error: ${e instanceof Error ? e.message : String(e)}`, 'please report it with the command line you ran'));
    return Exit.INTERNAL;
  }
}
