/**
 * vhci_hcd status parsing (the helper's parser, which the client core uses too) and the client's port choice. The samples are built from the kernel's format strings
 * (drivers/usb/usbip/vhci_sysfs.c: status_show, port_show_vhci) for the kernels we meet.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  isPortFree,
  pickFreePort,
  readVhciStatus,
  vhciHubFor,
  vhciSpeedFor,
  VhciPort,
} from '../../extension/core/usbip/vhci-status.js';
import { Exit, HelperError } from '../../helper/errors.js';
import { USB_SPEED_FULL, USB_SPEED_HIGH, USB_SPEED_LOW, USB_SPEED_SUPER, USB_SPEED_SUPER_PLUS } from '../../helper/validate.js';
import { parseStatus, VDEV_ST_NOTASSIGNED, VDEV_ST_NULL, VDEV_ST_USED } from '../../helper/vhci.js';

/**
 * Linux 6.1, VHCI_HC_PORTS 8, one controller: a high-speed device on hs port 0 (sockfd 3), a device
 * still enumerating on hs port 2 (NOTASSIGNED prints zeros), a super-speed device on ss port 8.
 * Header: "hub port sta spd dev      sockfd local_busid\n"; lines: "hs  %04u %03u " then
 * "%03u %08x %06u %s" when VDEV_ST_USED, else "000 00000000 000000 0-0".
 */
const STATUS_6_1 = [
  'hub port sta spd dev      sockfd local_busid',
  'hs  0000 006 003 00010002 000003 3-1',
  'hs  0001 004 000 00000000 000000 0-0',
  'hs  0002 005 000 00000000 000000 0-0',
  'hs  0003 004 000 00000000 000000 0-0',
  'hs  0004 004 000 00000000 000000 0-0',
  'hs  0005 004 000 00000000 000000 0-0',
  'hs  0006 004 000 00000000 000000 0-0',
  'hs  0007 004 000 00000000 000000 0-0',
  'ss  0008 006 005 0002000a 000004 4-1',
  'ss  0009 004 000 00000000 000000 0-0',
  'ss  0010 004 000 00000000 000000 0-0',
  'ss  0011 004 000 00000000 000000 0-0',
  'ss  0012 004 000 00000000 000000 0-0',
  'ss  0013 004 000 00000000 000000 0-0',
  'ss  0014 004 000 00000000 000000 0-0',
  'ss  0015 004 000 00000000 000000 0-0',
  '',
].join('\n');

/** Before Linux 4.13: no hub column (USB 2 ports only) and a socket pointer ("%16p") in place of sockfd. */
const STATUS_OLD = [
  'port sta spd dev      socket           local_busid',
  '0000 006 002 00010003 ffff8800b9a3c000 3-1',
  '0001 004 000 00000000 0000000000000000 0-0',
  '',
].join('\n');

/** All ports busy. */
function allBusy(ports: VhciPort[]): VhciPort[] {
  return ports.map((p) => ({ ...p, sta: VDEV_ST_USED }));
}

describe('parseStatus (helper/vhci.ts) on the formats the client meets', () => {
  test('Linux 6.1 format: every field of every port', () => {
    const ports = parseStatus(STATUS_6_1);
    assert.equal(ports.length, 16);
    assert.deepEqual(ports[0], { hub: 'hs', port: 0, sta: VDEV_ST_USED, spd: USB_SPEED_HIGH, devid: 0x00010002, localBusid: '3-1' });
    assert.deepEqual(ports[1], { hub: 'hs', port: 1, sta: VDEV_ST_NULL, spd: 0, devid: 0, localBusid: '0-0' });
    assert.equal(ports[2].sta, VDEV_ST_NOTASSIGNED);
    assert.deepEqual(ports[8], { hub: 'ss', port: 8, sta: VDEV_ST_USED, spd: USB_SPEED_SUPER, devid: 0x0002000a, localBusid: '4-1' });
    assert.deepEqual(ports.map((p) => p.hub).join(''), 'hs'.repeat(8) + 'ss'.repeat(8));
    assert.deepEqual(ports.map((p) => p.port), [...Array(16).keys()]);
  });

  test('the not-ready filler (16-digit sockfd) and unpadded sockfd of some kernels', () => {
    const ports = parseStatus(
      'hub port sta spd dev      sockfd local_busid\n' +
        'hs  0000 005 000 00000000 0000000000000000 0-0\n' +
        'hs  0001 006 002 00010004 7 3-2\n',
    );
    assert.deepEqual(ports.map((p) => [p.port, p.sta, p.localBusid]), [[0, 5, '0-0'], [1, 6, '3-2']]);
  });

  test('pre-4.13 format: no hub column, socket pointer instead of sockfd', () => {
    assert.deepEqual(parseStatus(STATUS_OLD), [
      { hub: undefined, port: 0, sta: VDEV_ST_USED, spd: USB_SPEED_FULL, devid: 0x00010003, localBusid: '3-1' },
      { hub: undefined, port: 1, sta: VDEV_ST_NULL, spd: 0, devid: 0, localBusid: '0-0' },
    ]);
  });

  test('a header alone has no ports; a line it does not understand is an error naming it', () => {
    assert.deepEqual(parseStatus('hub port sta spd dev      sockfd local_busid\n'), []);
    assert.throws(() => parseStatus('hub port sta spd dev      sockfd local_busid\nhs  00x0 004 000 00000000 000000 0-0\n'), {
      message: 'cannot parse vhci status: line 2: bad port (unknown kernel status format; please report it)',
    });
    assert.throws(() => parseStatus('hs  0000 004 000 00000000\n'), /no port column in header/);
  });
});

describe('choosing a port', () => {
  const ports = parseStatus(STATUS_6_1);

  test('speeds map to enum usb_device_speed', () => {
    assert.deepEqual(
      (['low', 'full', 'high', 'super', 'superPlus'] as const).map(vhciSpeedFor),
      [USB_SPEED_LOW, USB_SPEED_FULL, USB_SPEED_HIGH, USB_SPEED_SUPER, USB_SPEED_SUPER_PLUS],
    );
    assert.deepEqual([1, 2, 3, 4, 5, 6].map(vhciHubFor), ['hs', 'hs', 'hs', 'hs', 'ss', 'ss']);
    assert.throws(() => vhciHubFor(0), { message: 'USB speed 0 cannot be attached to vhci_hcd (it takes 1..6)' });
    assert.throws(() => vhciHubFor(7), RangeError);
  });

  test('low, full and high speed take the lowest free hs port; super speed the lowest free ss port', () => {
    assert.ok(isPortFree(ports[1]) && !isPortFree(ports[0]) && !isPortFree(ports[2]));
    for (const speed of ['low', 'full', 'high', USB_SPEED_HIGH] as const) {
      assert.equal(pickFreePort(ports, speed)?.port, 1, String(speed));
    }
    assert.equal(pickFreePort(ports, 'super')?.port, 9);
    assert.equal(pickFreePort(ports, 'superPlus')?.hub, 'ss');
    assert.equal(pickFreePort([...ports].reverse(), 'high')?.port, 1, 'order of the input does not matter');
  });

  test('all busy, or no ss hub (old kernels): undefined', () => {
    assert.equal(pickFreePort(allBusy(ports), 'high'), undefined);
    assert.equal(pickFreePort(allBusy(ports), 'super'), undefined);
    assert.equal(pickFreePort(ports.filter((p) => p.hub === 'ss' || p.sta !== VDEV_ST_NULL), 'full'), undefined);
    assert.equal(pickFreePort(parseStatus(STATUS_OLD), 'super'), undefined);
    assert.equal(pickFreePort(parseStatus(STATUS_OLD), 'high')?.port, 1);
    assert.equal(pickFreePort([], 'low'), undefined);
  });
});

describe('readVhciStatus', () => {
  test('reads status and status.N of a multi-controller vhci_hcd.0, sorted by port', async () => {
    const root = await mkdtemp(join(tmpdir(), 'vhci-'));
    try {
      const dir = join(root, 'vhci_hcd.0');
      await mkdir(dir);
      // Controller 1's ports are 16..31 (pdev_nr * VHCI_PORTS + i); its file is status.1.
      const second = STATUS_6_1.replace(/^(hs|ss) {2}00(\d\d)/gm, (_m, hub: string, n: string) => `${hub}  00${String(Number(n) + 16).padStart(2, '0')}`);
      await writeFile(join(dir, 'status.1'), second);
      await writeFile(join(dir, 'status'), STATUS_6_1);
      for (const other of ['attach', 'detach', 'nports', 'usbip_debug']) await writeFile(join(dir, other), '');
      const ports = readVhciStatus(root);
      assert.deepEqual(ports.map((p) => p.port), [...Array(32).keys()]);
      assert.equal(pickFreePort(allBusy(ports.slice(0, 16)).concat(ports.slice(16)), 'high')?.port, 17);
      assert.throws(() => readVhciStatus(join(root, 'missing')), (e: unknown) => e instanceof HelperError && e.exitCode === Exit.NO_VHCI);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
