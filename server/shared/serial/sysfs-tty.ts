/**
 * Which tty a USB device's serial driver made on this machine, read from sysfs. Pure apart from the
 * file system, and rooted at `sysfsRoot`, so tests run it against a fake tree.
 *
 * cdc_acm puts the tty in a `tty/` directory of the interface (`1-1.2:1.0/tty/ttyACM0`); usb-serial
 * drivers (ftdi_sio, cp210x, ch341, pl2303) put a `ttyUSB0` directory in the interface itself. A
 * multi-port adapter (FT2232) has one per interface: the lowest interface's is the device's port.
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

const TTY_NAME = /^tty(ACM|USB)\d+$/;

export function ttyOfUsbDevice(busId: string, sysfsRoot = '/sys'): string | undefined {
  const devices = join(sysfsRoot, 'bus', 'usb', 'devices');
  let entries: string[];
  try {
    entries = readdirSync(devices);
  } catch {
    return undefined;
  }
  // Interfaces of this device: "<busId>:<config>.<interface>", lowest interface first.
  const prefix = `${busId}:`;
  const interfaces = entries
    .filter((n) => n.startsWith(prefix) && /^\d+\.\d+$/.test(n.slice(prefix.length)))
    .sort((a, b) => Number(a.split('.').pop()) - Number(b.split('.').pop()));
  for (const iface of interfaces) {
    const dir = join(devices, iface);
    const acm = list(join(dir, 'tty')).find((n) => TTY_NAME.test(n));
    if (acm) return `/dev/${acm}`;
    const usbSerial = list(dir).find((n) => TTY_NAME.test(n));
    if (usbSerial) return `/dev/${usbSerial}`;
  }
  return undefined;
}

function list(dir: string): string[] {
  try {
    return readdirSync(dir).sort();
  } catch {
    return [];
  }
}
