// The one module that touches vhci_hcd's sysfs files (one owner per edge of the system: README "Layout"). Every function
// takes the sysfs directory as a parameter so tests can use a fake tree; the CLI always passes the
// fixed SYSFS_VHCI from paths.ts.
//
// Kernel contract (drivers/usb/usbip/vhci_sysfs.c):
// - attach: `sscanf(buf, "%u %u %u %u", &port, &sockfd, &devid, &speed)`; sockfd is looked up in the
//   *writing* process, so we always write sockfd 0 (our stdin, checked by socket.ts), never a number
//   from argv. port -> controller `port / VHCI_PORTS`, root-hub port `port % VHCI_HC_PORTS`; the hub is
//   chosen by *speed* (>= USB_SPEED_SUPER: the super-speed hub) while detach chooses it by the *port
//   number* (`(port / VHCI_HC_PORTS) % 2`). A super-speed device written to a high-speed port number
//   would land on the ss hub and could then not be detached by that number, so we require speed and
//   port hub to agree. Errors: EINVAL (bad values, not a SOCK_STREAM socket), EBUSY (port in use;
//   older kernels EINVAL), EAGAIN (controller not ready). Speed 6 (super-plus) is accepted by newer
//   kernels only; older ones answer EINVAL.
// - detach: `kstrtoint(buf, 10, &port)`; EINVAL when nothing is attached.
// - status, status.1, ...: one file per controller, header then one line per port, e.g.
//     hub port sta spd dev      sockfd local_busid
//     hs  0002 006 003 00010002 000000 2-3
//   Kernels before 4.13 have no `hub` column (and a socket pointer instead of sockfd).

import * as fs from 'node:fs';
import * as path from 'node:path';
import { Exit, HelperError, errnoText, isErrno } from './errors';
import { MAX_PORT, SPEED_NAMES, USB_SPEED_SUPER, UsbSpeed } from './validate';

/** kernel: drivers/usb/usbip/usbip_common.h enum usbip_device_status */
export const VDEV_ST_NULL = 0x04;
export const VDEV_ST_NOTASSIGNED = 0x05;
export const VDEV_ST_USED = 0x06;
export const VDEV_ST_ERROR = 0x07;

export const STATE_NAMES: Readonly<Record<number, string>> = {
  [VDEV_ST_NULL]: 'free',
  [VDEV_ST_NOTASSIGNED]: 'attaching',
  [VDEV_ST_USED]: 'used',
  [VDEV_ST_ERROR]: 'error',
};

export type Hub = 'hs' | 'ss';

export interface VhciPort {
  port: number;
  /** undefined on kernels whose status has no hub column */
  hub: Hub | undefined;
  sta: number;
  spd: number;
  devid: number;
  localBusid: string;
}

const NOT_LOADED_HINT = 'run `remote-usb-helper load` or `sudo modprobe vhci-hcd`';
/** sysfs attributes are at most a page; anything much bigger is not vhci's status. */
const MAX_STATUS_BYTES = 64 * 1024;
const STATUS_FILE = /^status(?:\.([1-9][0-9]{0,2}))?$/;

function badStatus(file: string, what: string): HelperError {
  return new HelperError(Exit.INTERNAL, `cannot parse vhci ${file}: ${what}`, 'unknown kernel status format; please report it');
}

const FIELD: Record<string, RegExp> = {
  hub: /^(?:hs|ss)$/,
  port: /^[0-9]{1,5}$/,
  sta: /^[0-9]{1,3}$/,
  spd: /^[0-9]{1,3}$/,
  dev: /^[0-9a-f]{8}$/,
  local_busid: /^[0-9]+-[0-9]+(?:\.[0-9]+)*$/,
};

/** Parses one status file. Columns are found by their header names, so an added column does not break us. */
export function parseStatus(text: string, file = 'status'): VhciPort[] {
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  const header = (lines.shift() ?? '').trim().split(/\s+/);
  const col = (name: string): number => header.indexOf(name);
  for (const required of ['port', 'sta', 'spd', 'dev', 'local_busid']) {
    if (col(required) < 0) throw badStatus(file, `no ${required} column in header`);
  }
  const ports: VhciPort[] = [];
  for (const [i, line] of lines.entries()) {
    const tok = line.trim().split(/\s+/);
    if (tok.length !== header.length) throw badStatus(file, `line ${i + 2} has ${tok.length} fields, header has ${header.length}`);
    for (const [name, re] of Object.entries(FIELD)) {
      const c = col(name);
      if (c >= 0 && !re.test(tok[c])) throw badStatus(file, `line ${i + 2}: bad ${name}`);
    }
    const hubCol = col('hub');
    ports.push({
      port: Number(tok[col('port')]),
      hub: hubCol >= 0 ? (tok[hubCol] as Hub) : undefined,
      sta: Number(tok[col('sta')]),
      spd: Number(tok[col('spd')]),
      devid: parseInt(tok[col('dev')], 16),
      localBusid: tok[col('local_busid')],
    });
  }
  return ports;
}

export function vhciLoaded(sysfsDir: string): boolean {
  try {
    return fs.statSync(sysfsDir).isDirectory();
  } catch {
    return false;
  }
}

export function requireVhci(sysfsDir: string): void {
  if (!vhciLoaded(sysfsDir)) throw new HelperError(Exit.NO_VHCI, `vhci_hcd is not loaded (${sysfsDir} is missing)`, NOT_LOADED_HINT);
}

/** All ports of all controllers (status, status.1, ...), sorted, capped at MAX_PORT. */
export function readPorts(sysfsDir: string): VhciPort[] {
  let names: string[];
  try {
    names = fs.readdirSync(sysfsDir).filter((n) => STATUS_FILE.test(n));
  } catch (e) {
    if (isErrno(e, 'ENOENT')) requireVhci(sysfsDir);
    throw new HelperError(Exit.NO_VHCI, `cannot list ${sysfsDir}: ${errnoText(e)}`, NOT_LOADED_HINT);
  }
  if (!names.includes('status')) throw new HelperError(Exit.NO_VHCI, `${sysfsDir} has no status file`, NOT_LOADED_HINT);
  const byNumber = new Map<number, VhciPort>();
  for (const name of names) {
    const file = path.join(sysfsDir, name);
    let text: string;
    try {
      text = fs.readFileSync(file, 'latin1');
    } catch (e) {
      throw new HelperError(Exit.NO_VHCI, `cannot read ${file}: ${errnoText(e)}`, NOT_LOADED_HINT);
    }
    if (text.length > MAX_STATUS_BYTES) throw badStatus(name, `${text.length} bytes`);
    for (const p of parseStatus(text, name)) {
      if (byNumber.has(p.port)) throw badStatus(name, `port ${p.port} listed twice`);
      byNumber.set(p.port, p);
    }
  }
  return [...byNumber.values()].filter((p) => p.port <= MAX_PORT).sort((a, b) => a.port - b.port);
}

function portRange(ports: readonly VhciPort[]): string {
  if (ports.length === 0) return 'this machine has no vhci ports';
  return `valid ports here: ${ports[0].port}..${ports[ports.length - 1].port}; see \`remote-usb-helper status\``;
}

export function findPort(ports: readonly VhciPort[], port: number): VhciPort {
  const p = ports.find((x) => x.port === port);
  if (!p) throw new HelperError(Exit.USAGE, `port ${port} is not a vhci port on this machine`, portRange(ports));
  return p;
}

export function hubForSpeed(speed: UsbSpeed): Hub {
  return speed >= USB_SPEED_SUPER ? 'ss' : 'hs';
}

const HUB_NAMES: Record<Hub, string> = { hs: 'high-speed (hs)', ss: 'super-speed (ss)' };

/** The exact bytes written to `attach`. sockfd is always 0: our stdin. */
export function attachLine(port: number, devid: number, speed: UsbSpeed): string {
  return `${port} 0 ${devid} ${speed}`;
}

/** Opens an existing attribute write-only (never O_CREAT, never through a symlink) and writes once. */
export function writeAttribute(file: string, text: string, verb: string): void {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_NOFOLLOW);
  } catch (e) {
    if (isErrno(e, 'ENOENT')) throw new HelperError(Exit.NO_VHCI, `${file} is missing`, NOT_LOADED_HINT);
    throw new HelperError(Exit.REFUSED, `cannot open ${file}: ${errnoText(e)}`, 'see dmesg');
  }
  try {
    const n = fs.writeSync(fd, text);
    if (n !== Buffer.byteLength(text)) {
      throw new HelperError(Exit.REFUSED, `short write to ${file} (${n} bytes)`, 'see dmesg');
    }
  } catch (e) {
    if (e instanceof HelperError) throw e;
    const hints: Record<string, string> = {
      EBUSY: 'the port is in use; pick a free port from `remote-usb-helper status`',
      EAGAIN: 'the vhci controller is not ready; retry',
      EINVAL:
        verb === 'detach'
          ? 'nothing attached there, or a bad port; see dmesg'
          : 'port in use (older kernels), speed not supported, or stdin not a stream socket; see dmesg',
    };
    const code = (e as NodeJS.ErrnoException).code ?? '';
    throw new HelperError(Exit.REFUSED, `kernel refused ${verb} (${errnoText(e)})`, hints[code] ?? 'see dmesg');
  } finally {
    fs.closeSync(fd);
  }
}

export interface AttachRequest {
  port: number;
  devid: number;
  speed: UsbSpeed;
}

/** Checks the port against the kernel's list, then writes `<port> 0 <devid> <speed>` to `attach`. */
export function attach(sysfsDir: string, req: AttachRequest): string {
  requireVhci(sysfsDir);
  const ports = readPorts(sysfsDir);
  const p = findPort(ports, req.port);
  const want = hubForSpeed(req.speed);
  if (p.hub !== undefined && p.hub !== want) {
    throw new HelperError(
      Exit.USAGE,
      `port ${req.port} is a ${HUB_NAMES[p.hub]} port but speed ${req.speed} (${SPEED_NAMES[req.speed]}) needs a ${HUB_NAMES[want]} port`,
      'pick a free port of the right hub from `remote-usb-helper status`',
    );
  }
  if (p.sta !== VDEV_ST_NULL) {
    throw new HelperError(
      Exit.REFUSED,
      `port ${req.port} is busy (${STATE_NAMES[p.sta] ?? `state ${p.sta}`})`,
      'pick a free port from `remote-usb-helper status`, or detach this one first',
    );
  }
  const line = attachLine(req.port, req.devid, req.speed);
  writeAttribute(path.join(sysfsDir, 'attach'), line, 'attach');
  return line;
}

/** Writes `<port>` to `detach`; exit 8 if nothing is attached there. `authorize` sees the port as vhci
 *  reports it just before the write and throws to refuse (run.ts: only the user who attached it). */
export function detach(sysfsDir: string, port: number, authorize: (p: VhciPort) => void = () => {}): string {
  requireVhci(sysfsDir);
  const p = findPort(readPorts(sysfsDir), port);
  if (p.sta === VDEV_ST_NULL) {
    throw new HelperError(Exit.NOT_ATTACHED, `port ${port} has nothing attached`, 'nothing to detach');
  }
  authorize(p);
  const line = String(port);
  writeAttribute(path.join(sysfsDir, 'detach'), line, 'detach');
  return line;
}

/** Writes `<port>` to `detach` without any check: taking back an attach the helper could not finish. */
export function undoAttach(sysfsDir: string, port: number): void {
  writeAttribute(path.join(sysfsDir, 'detach'), String(port), 'detach');
}

export interface ModprobeResult {
  /** exit status, or null if it was killed or could not start */
  status: number | null;
  /** spawn error (e.g. ENOENT) */
  error?: Error;
  stderr: string;
}

/** `load`: runs modprobe only when vhci_hcd.0 is missing. Returns false if it was already loaded. */
export function loadVhci(sysfsDir: string, modprobe: () => ModprobeResult, waitMs = 2000): boolean {
  if (vhciLoaded(sysfsDir)) return false;
  const r = modprobe();
  const moduleHint = "is the module installed? (Ubuntu: linux-modules-extra-$(uname -r)); see dmesg";
  if (r.error) {
    throw new HelperError(Exit.NO_VHCI, `cannot run modprobe: ${errnoText(r.error)}`, 'install kmod, or load vhci-hcd yourself');
  }
  if (r.status !== 0) {
    const first = r.stderr.split('\n').find((l) => l.trim() !== '') ?? '';
    throw new HelperError(
      Exit.NO_VHCI,
      `modprobe vhci-hcd failed (${r.status === null ? 'killed' : `exit ${r.status}`}${first ? `: ${first.slice(0, 160)}` : ''})`,
      moduleHint,
    );
  }
  // The platform device is registered by the module's init, so it is normally there already.
  const deadline = Date.now() + waitMs;
  while (!vhciLoaded(sysfsDir)) {
    if (Date.now() >= deadline) {
      throw new HelperError(Exit.NO_VHCI, `modprobe succeeded but ${sysfsDir} did not appear`, moduleHint);
    }
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
  }
  return true;
}

export function formatStatus(ports: readonly VhciPort[]): string[] {
  const rows = ports.map((p) => {
    const used = p.sta !== VDEV_ST_NULL;
    return [
      String(p.port),
      p.hub ?? '-',
      STATE_NAMES[p.sta] ?? `state-${p.sta}`,
      used ? (SPEED_NAMES[p.spd as UsbSpeed] ?? String(p.spd)) : '-',
      used ? `0x${p.devid.toString(16).padStart(8, '0')}` : '-',
      used ? p.localBusid : '-',
    ];
  });
  const head = ['port', 'hub', 'state', 'speed', 'devid', 'local_busid'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  return [head, ...rows].map((r) => r.map((c, i) => c.padEnd(widths[i])).join(' ').trimEnd());
}
