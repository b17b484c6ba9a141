/** Plain-text table of devices for `remote-usb-server list`, `remote-usb list` and the demo. */
import { printable } from './text.js';
import type { DeviceInfo } from '../protocol/messages.js';

/** What the table shows of a device: the bench's own listing and a client's (`DeviceInfo`) both fit. */
export type TableDevice = Pick<DeviceInfo, 'id' | 'vendorId' | 'productId' | 'product' | 'serial' | 'speed'> & {
  interfaces: readonly { driver?: string }[];
  shared?: string | boolean;
  claimedBy?: string;
};

const hex4 = (n: number): string => n.toString(16).padStart(4, '0');

export function deviceTable(devices: readonly TableDevice[]): string {
  if (devices.length === 0) return '(no USB devices)';
  const rows = devices.map((d) => [
    d.id,
    `${hex4(d.vendorId)}:${hex4(d.productId)}`,
    d.product ?? '',
    d.serial ?? '',
    d.speed,
    d.interfaces.map((i) => i.driver ?? '-').join(',') || '-',
    d.claimedBy ? `in use by ${d.claimedBy}` : d.shared === false ? 'not shared' : typeof d.shared === 'string' ? d.shared : 'available',
  ].map(printable)); // product and serial come from the device, names from other clients
  const head = ['BUS ID', 'VID:PID', 'PRODUCT', 'SERIAL', 'SPEED', 'DRIVERS', 'STATE'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  return [head, ...rows].map((r) => r.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd()).join('\n');
}
