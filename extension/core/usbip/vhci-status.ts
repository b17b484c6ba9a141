/**
 * vhci_hcd's port table: parsing /sys/devices/platform/vhci_hcd.0/status (and status.1, status.2 … when
 * the kernel was built with several controllers) and choosing a free port to attach to.
 *
 * kernel: drivers/usb/usbip/vhci_sysfs.c (status_show, port_show_vhci). Current kernels (6.1 included):
 *
 *   hub port sta spd dev      sockfd local_busid
 *   hs  0000 006 003 00010002 000003 3-1
 *   hs  0001 004 000 00000000 000000 0-0
 *   …
 *   ss  0008 004 000 00000000 000000 0-0
 *
 * `hub` hs/ss: each controller has a USB 2 root hub and a USB 3 root hub of VHCI_HC_PORTS ports each
 * (8 by default), the hs ports first. `port` is the number `attach` and `detach` take (global across
 * controllers). `sta` is enum usbip_device_status (VDEV_ST_*), `spd` enum usb_device_speed, `dev` the
 * devid in hex, `sockfd` the fd number the attaching process passed; the last three and `local_busid`
 * are zero / "0-0" unless the port is VDEV_ST_USED. Older kernels differ, and parse too: before 4.13
 * there is no `hub` column (and no USB 3 hub); before a late-2017 fix the header says `socket` and the
 * column is a kernel pointer (`sockfd` is then undefined); for a while sockfd was not zero-padded.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  USB_SPEED_FULL,
  USB_SPEED_HIGH,
  USB_SPEED_LOW,
  USB_SPEED_SUPER,
  USB_SPEED_SUPER_PLUS,
  VDEV_ST_NULL,
} from './constants.js';

/** vhci's two root hubs: USB 2 ('hs', for low/full/high speed) and USB 3 ('ss', super speed and up). */
export type VhciHub = 'hs' | 'ss';

export interface VhciPort {
  hub: VhciHub;
  /** The port number to write to `attach` / `detach`. */
  port: number;
  /** enum usbip_device_status: VDEV_ST_NULL (4) free, VDEV_ST_NOTASSIGNED (5), VDEV_ST_USED (6), VDEV_ST_ERROR (7). */
  status: number;
  /** enum usb_device_speed of the attached device; 0 unless the port is in use. */
  speed: number;
  devid: number;
  /** undefined on kernels that print a socket pointer instead. */
  sockfd: number | undefined;
  /** The kernel's local_busid: the attached device's name on this machine ("3-1"), "0-0" if none. */
  busid: string;
}

export type UsbSpeedName = 'low' | 'full' | 'high' | 'super' | 'superPlus';

const SPEEDS: Record<UsbSpeedName, number> = {
  low: USB_SPEED_LOW,
  full: USB_SPEED_FULL,
  high: USB_SPEED_HIGH,
  super: USB_SPEED_SUPER,
  superPlus: USB_SPEED_SUPER_PLUS,
};

/** The enum usb_device_speed number vhci's `attach` takes for a device speed (kernel: include/uapi/linux/usb/ch9.h). */
export function vhciSpeedFor(speed: UsbSpeedName): number {
  const value = SPEEDS[speed];
  if (value === undefined) throw new RangeError(`unknown USB speed '${String(speed)}'`);
  return value;
}

/**
 * The root hub a device of this speed must be attached to. vhci_sysfs.c attach_store picks the hub
 * the same way: speed >= USB_SPEED_SUPER goes to the USB 3 hub. It accepts LOW..SUPER_PLUS only.
 */
export function vhciHubFor(speed: UsbSpeedName | number): VhciHub {
  const value = typeof speed === 'number' ? speed : vhciSpeedFor(speed);
  if (!Number.isInteger(value) || value < USB_SPEED_LOW || value > USB_SPEED_SUPER_PLUS) {
    throw new RangeError(`USB speed ${value} cannot be attached to vhci_hcd (it takes ${USB_SPEED_LOW}..${USB_SPEED_SUPER_PLUS})`);
  }
  return value >= USB_SPEED_SUPER ? 'ss' : 'hs';
}

/** A port `attach` will accept: nothing attached (VDEV_ST_NULL). */
export function isPortFree(port: VhciPort): boolean {
  return port.status === VDEV_ST_NULL;
}

/** The lowest-numbered free port on the hub this speed needs, or undefined when all are busy. */
export function pickFreePort(ports: readonly VhciPort[], speed: UsbSpeedName | number): VhciPort | undefined {
  const hub = vhciHubFor(speed);
  let best: VhciPort | undefined;
  for (const p of ports) {
    if (p.hub === hub && isPortFree(p) && (best === undefined || p.port < best.port)) best = p;
  }
  return best;
}

const DECIMAL = /^\d+$/;
const HEX = /^[0-9a-fA-F]+$/;

/** Parses the text of one vhci status file. Throws an Error naming the line it does not understand. */
export function parseVhciStatus(text: string): VhciPort[] {
  const ports: VhciPort[] = [];
  let socketIsFd = true; // the header tells; kernels ≥ 4.14 say "sockfd"
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '') continue;
    const fields = line.split(/\s+/);
    if (fields[0] === 'hub' || fields[0] === 'port') {
      socketIsFd = fields.includes('sockfd');
      continue;
    }
    const hasHub = fields[0] === 'hs' || fields[0] === 'ss';
    const [hub, port, sta, spd, dev, sock, busid] = hasHub ? fields : ['hs', ...fields];
    if (
      fields.length !== (hasHub ? 7 : 6) ||
      !DECIMAL.test(port) ||
      !DECIMAL.test(sta) ||
      !DECIMAL.test(spd) ||
      !HEX.test(dev) ||
      (socketIsFd && !DECIMAL.test(sock))
    ) {
      throw new Error(`unrecognised line in vhci_hcd status: "${line}"`);
    }
    ports.push({
      hub: hub as VhciHub,
      port: Number.parseInt(port, 10),
      status: Number.parseInt(sta, 10),
      speed: Number.parseInt(spd, 10),
      devid: Number.parseInt(dev, 16),
      sockfd: socketIsFd ? Number.parseInt(sock, 10) : undefined,
      busid,
    });
  }
  return ports;
}

/**
 * Reads and parses every status file of vhci_hcd (`status`, `status.1`, …, all under vhci_hcd.0),
 * sorted by port. `root` is a parameter for tests. Rejects with ENOENT when vhci_hcd is not loaded.
 */
export async function readVhciStatus(root = '/sys/devices/platform'): Promise<VhciPort[]> {
  const dir = join(root, 'vhci_hcd.0');
  const files = (await readdir(dir))
    .map((name) => ({ name, match: /^status(?:\.(\d+))?$/.exec(name) }))
    .filter((f) => f.match !== null)
    .sort((a, b) => Number(a.match?.[1] ?? 0) - Number(b.match?.[1] ?? 0));
  const ports: VhciPort[] = [];
  for (const f of files) ports.push(...parseVhciStatus(await readFile(join(dir, f.name), 'utf8')));
  return ports.sort((a, b) => a.port - b.port);
}
