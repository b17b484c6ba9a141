/**
 * Choosing a vhci_hcd port to attach to. Reading and parsing vhci's status files (status, status.1, …:
 * the port table, its formats on old and new kernels) is the helper's: helper/vhci.ts is the one module
 * that touches vhci_hcd's sysfs files, and helper/ imports nothing, so the client core imports it. This
 * adds what only the client decides: the speed to attach a device at and which free port to take.
 */
import { join } from 'node:path';
import type { Speed } from '../../../server/protocol/messages.js';
import { Hub, hubForSpeed, readPorts, VDEV_ST_NULL, VhciPort } from '../../../helper/vhci.js';
import { USB_SPEED_FULL, USB_SPEED_HIGH, USB_SPEED_LOW, USB_SPEED_SUPER, USB_SPEED_SUPER_PLUS, UsbSpeed } from '../../../helper/validate.js';

export type { VhciPort } from '../../../helper/vhci.js';
/** vhci's two root hubs: USB 2 ('hs', for low/full/high speed) and USB 3 ('ss', super speed and up). */
export type VhciHub = Hub;

/** A device speed vhci can attach: the protocol's, less 'unknown'. */
export type UsbSpeedName = Exclude<Speed, 'unknown'>;

const SPEEDS: Record<UsbSpeedName, UsbSpeed> = {
  low: USB_SPEED_LOW,
  full: USB_SPEED_FULL,
  high: USB_SPEED_HIGH,
  super: USB_SPEED_SUPER,
  superPlus: USB_SPEED_SUPER_PLUS,
};

/** The enum usb_device_speed number vhci's `attach` takes for a device speed (kernel: include/uapi/linux/usb/ch9.h). */
export function vhciSpeedFor(speed: UsbSpeedName): UsbSpeed {
  const value = SPEEDS[speed];
  if (value === undefined) throw new RangeError(`unknown USB speed '${String(speed)}'`);
  return value;
}

/** The root hub a device of this speed must be attached to (helper/vhci.ts hubForSpeed); vhci accepts LOW..SUPER_PLUS only. */
export function vhciHubFor(speed: UsbSpeedName | number): VhciHub {
  const value = typeof speed === 'number' ? speed : vhciSpeedFor(speed);
  if (!Number.isInteger(value) || value < USB_SPEED_LOW || value > USB_SPEED_SUPER_PLUS) {
    throw new RangeError(`USB speed ${value} cannot be attached to vhci_hcd (it takes ${USB_SPEED_LOW}..${USB_SPEED_SUPER_PLUS})`);
  }
  return hubForSpeed(value as UsbSpeed);
}

/** A port `attach` will accept: nothing attached (VDEV_ST_NULL). */
export function isPortFree(port: VhciPort): boolean {
  return port.sta === VDEV_ST_NULL;
}

/**
 * The lowest-numbered free port on the hub this speed needs, or undefined when all are busy. Kernels
 * before 4.13 print no hub column: their ports are all USB 2 ('hs').
 */
export function pickFreePort(ports: readonly VhciPort[], speed: UsbSpeedName | number): VhciPort | undefined {
  const hub = vhciHubFor(speed);
  let best: VhciPort | undefined;
  for (const p of ports) {
    if ((p.hub ?? 'hs') === hub && isPortFree(p) && (best === undefined || p.port < best.port)) best = p;
  }
  return best;
}

/**
 * Every port of every vhci_hcd controller, sorted by port (helper/vhci.ts readPorts: sysfs attributes,
 * read synchronously). `root` is a parameter for tests. Throws the helper's HelperError with exit code
 * Exit.NO_VHCI when vhci_hcd is not loaded, Exit.INTERNAL for a status format it does not know.
 */
export function readVhciStatus(root = '/sys/devices/platform'): VhciPort[] {
  return readPorts(join(root, 'vhci_hcd.0'));
}
