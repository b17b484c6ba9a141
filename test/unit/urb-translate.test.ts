/** The bridge's pure half: CMD_SUBMIT → bench request, bench answer → RET_SUBMIT fields. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { encodeCmdSubmit, UsbipCmdSubmit, UsbipDecoder } from '../../extension/core/usbip/codec.js';
import { USBIP_DIR_IN, USBIP_DIR_OUT, USBIP_URB_SHORT_NOT_OK, USBIP_URB_ZERO_PACKET } from '../../extension/core/usbip/constants.js';
import { UrbStatus } from '../../server/protocol/urb.js';
import { EndpointTable, parseConfigurationDescriptor } from '../../extension/core/usbip/endpoints.js';
import { isRefusal, replyOf, requestOf } from '../../extension/core/usbip/urb-translate.js';
import { configurationDescriptor } from '../../server/usb/descriptors.js';

const endpoints = new EndpointTable([parseConfigurationDescriptor(configurationDescriptor(1, [
  { number: 0, class: 0xff, subclass: 0, protocol: 0, endpoints: [
    { address: 0x01, type: 'bulk', maxPacketSize: 512, interval: 0 },
    { address: 0x82, type: 'interrupt', maxPacketSize: 8, interval: 4 },
  ] },
]))], 1);

function cmd(fields: Partial<UsbipCmdSubmit> & { direction: number; ep: number }): UsbipCmdSubmit {
  const c = { seqnum: 1, devid: 1, transfer_flags: 0, transfer_buffer_length: 0, start_frame: 0, number_of_packets: 0, interval: 0, setup: Buffer.alloc(8), data: Buffer.alloc(0), ...fields };
  const d = new UsbipDecoder();
  d.push(encodeCmdSubmit(c as never));
  return d.next() as UsbipCmdSubmit;
}

test('control: the setup packet decides, a data stage must agree with the URB direction', () => {
  const getDesc = Buffer.from([0x80, 6, 0, 1, 0, 0, 18, 0]);
  const ok = requestOf(cmd({ direction: USBIP_DIR_IN, ep: 0, transfer_buffer_length: 64, setup: getDesc }), endpoints);
  assert.ok(!isRefusal(ok));
  assert.deepEqual([ok.type, ok.ep, ok.length], ['control', 0x80, 18]);
  assert.deepEqual(ok.setup, getDesc, 'the 8 setup bytes go to the bench as the kernel sent them');
  const bad = requestOf(cmd({ direction: USBIP_DIR_OUT, ep: 0, transfer_buffer_length: 18, setup: getDesc, data: Buffer.alloc(18) }), endpoints);
  assert.ok(isRefusal(bad));
  assert.equal(bad.status, UrbStatus.EINVAL);
  assert.match(bad.why, /is IN but the URB is OUT/);
});

test('bulk and interrupt by descriptor; only URB_ZERO_PACKET travels; unknown endpoints are a stall', () => {
  const out = requestOf(cmd({ direction: USBIP_DIR_OUT, ep: 1, transfer_buffer_length: 4, data: Buffer.alloc(4), transfer_flags: USBIP_URB_ZERO_PACKET | USBIP_URB_SHORT_NOT_OK }), endpoints);
  assert.ok(!isRefusal(out));
  assert.deepEqual([out.type, out.ep, out.flags], ['bulk', 0x01, USBIP_URB_ZERO_PACKET]);
  const intr = requestOf(cmd({ direction: USBIP_DIR_IN, ep: 2, transfer_buffer_length: 8 }), endpoints);
  assert.ok(!isRefusal(intr));
  assert.deepEqual([intr.type, intr.ep, intr.length, intr.flags], ['interrupt', 0x82, 8, undefined]);
  const unknown = requestOf(cmd({ direction: USBIP_DIR_IN, ep: 5, transfer_buffer_length: 8 }), endpoints);
  assert.ok(isRefusal(unknown) && unknown.unknownEndpoint && unknown.status === UrbStatus.EPIPE);
});

test('replies: IN clamped to the buffer, URB_SHORT_NOT_OK makes a short read -EREMOTEIO, OUT reports what was taken', () => {
  const inUrb = { direction: USBIP_DIR_IN, transfer_buffer_length: 4, transfer_flags: 0 } as const;
  assert.deepEqual(replyOf(inUrb, { status: 0, actual: 6, data: Buffer.from('abcdef') }), { status: 0, actual: 4, data: Buffer.from('abcd'), clamped: true });
  assert.equal(replyOf({ ...inUrb, transfer_flags: USBIP_URB_SHORT_NOT_OK }, { status: 0, actual: 2, data: Buffer.from('ab') }).status, UrbStatus.EREMOTEIO);
  // a cancelled transfer hands over what it got, with its status
  assert.deepEqual(replyOf(inUrb, { status: -104, actual: 2, data: Buffer.from('ab') }), { status: -104, actual: 2, data: Buffer.from('ab'), clamped: false });
  assert.deepEqual(replyOf({ direction: USBIP_DIR_OUT, transfer_buffer_length: 10, transfer_flags: 0 }, { status: -110, actual: 7, data: Buffer.alloc(0) }), { status: -110, actual: 7, clamped: false });
});
