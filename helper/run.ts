// Dispatch of remote-usb-helper's verbs, with everything that touches the machine behind a Host so
// tests can run every verb against a fake sysfs. cli.ts builds the only real Host, from the fixed paths.
//
// Order of checks (each stops with its exit code):
//   attach:    arguments (2) -> stdin socket (3) -> root (6) -> vhci loaded (4) -> port exists on this
//              machine and its hub fits the speed (2) -> port free (5) -> kernel write (5)
//   detach:    arguments (2) -> root (6) -> vhci loaded (4) -> port exists (2) -> attached (8) -> write (5)
//   load:      arguments (2) -> root (6) -> modprobe only if vhci_hcd.0 is missing (4 on failure)
//   status:    arguments (2) -> vhci loaded (4); read-only, no root needed
//   install / uninstall: arguments (2) -> root (6) -> safety checks and writes (7)
// Everything a caller can get wrong about its own request is reported before anything privileged.

import { Exit, ExitCode, HelperError, formatError } from './errors';
import { FsProbe, Report, install, uninstall } from './install';
import { StdinVerdict } from './socket';
import { Command, HELP_TEXT, SPEED_NAMES, parseArgs } from './validate';
import { ModprobeResult, attach, detach, formatStatus, loadVhci, readPorts, requireVhci } from './vhci';

/** Bumped when verbs, arguments or exit codes change; `remote-usb-helper version` prints it. */
export const HELPER_VERSION = 1;

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
  isRoot(): boolean;
  stdinVerdict(): StdinVerdict;
  modprobe(): ModprobeResult;
  /** Who asked, for the success line: `uid 1000 via pkexec`, `root via sudo from uid 1000`, `uid 0`. */
  requester(): string;
  out(line: string): void;
  err(line: string): void;
  install: InstallHost;
}

function requireRoot(host: Host, verb: string): void {
  if (!host.isRoot()) {
    throw new HelperError(Exit.NOT_ROOT, `${verb} must run as root`, 'run it through pkexec (see helper/README.md) or with sudo');
  }
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
      attach(host.sysfsDir, cmd);
      host.out(`attached port ${cmd.port} (devid ${cmd.devid}, speed ${cmd.speed} ${SPEED_NAMES[cmd.speed]}, socket inode ${v.inode}) for ${host.requester()}`);
      return Exit.OK;
    }
    case 'detach':
      requireRoot(host, 'detach');
      detach(host.sysfsDir, cmd.port);
      host.out(`detached port ${cmd.port} for ${host.requester()}`);
      return Exit.OK;
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
