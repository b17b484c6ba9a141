/** The sysfs tty resolver against fake /sys trees (cdc_acm, usb-serial, multi-port, none). */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ttyOfUsbDevice } from '../../server/shared/serial/sysfs-tty.js';

const root = mkdtempSync(join(tmpdir(), 'remote-usb-sysfs-'));
after(() => rmSync(root, { recursive: true, force: true }));
const devices = join(root, 'bus', 'usb', 'devices');
function dir(...parts: string[]): void {
  mkdirSync(join(devices, ...parts), { recursive: true });
}
// a Pico with cdc_acm: the tty hangs off the communication interface
dir('1-1.2'); dir('1-1.2:1.0', 'tty', 'ttyACM0'); dir('1-1.2:1.1');
// an FTDI cable (ftdi_sio): ttyUSB0 directly in the interface
dir('1-1.3'); dir('1-1.3:1.0', 'ttyUSB0'); writeFileSync(join(devices, '1-1.3:1.0', 'bInterfaceClass'), 'ff\n');
// an FT2232 with two ports: interface 0's is the device's
dir('1-1.4'); dir('1-1.4:1.1', 'ttyUSB2'); dir('1-1.4:1.0', 'ttyUSB1');
// a keyboard: interfaces, no tty
dir('1-1.5'); dir('1-1.5:1.0', 'driver');
// a device whose bus id is a prefix of another's
dir('1-1.20'); dir('1-1.20:1.0', 'tty', 'ttyACM7');
// cdc_acm interface with an unrelated entry in tty/
dir('2-1'); dir('2-1:1.0', 'tty', 'not-a-tty'); dir('2-1:1.2', 'tty', 'ttyACM3');

test('cdc_acm: <busid>:<cfg>.<if>/tty/ttyACM*', () => {
  assert.equal(ttyOfUsbDevice('1-1.2', root), '/dev/ttyACM0');
  assert.equal(ttyOfUsbDevice('1-1.20', root), '/dev/ttyACM7');
  assert.equal(ttyOfUsbDevice('2-1', root), '/dev/ttyACM3');
});

test('usb-serial drivers: <busid>:<cfg>.<if>/ttyUSB*; the lowest interface wins', () => {
  assert.equal(ttyOfUsbDevice('1-1.3', root), '/dev/ttyUSB0');
  assert.equal(ttyOfUsbDevice('1-1.4', root), '/dev/ttyUSB1');
});

test('no tty, unknown device, missing sysfs', () => {
  assert.equal(ttyOfUsbDevice('1-1.5', root), undefined);
  assert.equal(ttyOfUsbDevice('1-1', root), undefined);
  assert.equal(ttyOfUsbDevice('9-9', root), undefined);
  assert.equal(ttyOfUsbDevice('1-1.2', join(root, 'nowhere')), undefined);
});
