/**
 * USB/IP URB codec: golden bytes (written out by hand, one field per line), the captures printed in
 * the kernel's Documentation/usb/usbip_protocol.rst, round trips, truncation, random stream splits and
 * the exact errors for bad input.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { constants as osConstants, platform } from 'node:os';
import {
  decodeRetSubmit,
  decodeRetUnlink,
  encodeCmdSubmit,
  encodeCmdUnlink,
  encodeRetSubmit,
  encodeRetUnlink,
  UsbipCommand,
  UsbipDecoder,
  UsbipDirection,
  UsbipProtocolError,
  UsbipReply,
  UsbipReplyDecoder,
} from '../../extension/core/usbip/codec.js';
import {
  MAX_TRANSFER_BUFFER_LENGTH,
  USBIP_DIR_IN,
  USBIP_DIR_OUT,
  USBIP_HEADER_SIZE,
  USBIP_MAX_ISO_PACKETS,
  USBIP_URB_DIR_IN,
  USBIP_URB_ISO_ASAP,
} from '../../extension/core/usbip/constants.js';
import { encodeSetup, parseSetup, UrbStatus } from '../../server/protocol/urb.js';

/** Hex digits with `//` comments and any whitespace, as in the golden messages below. */
function hex(text: string): Buffer {
  const digits = text
    .split('\n')
    .map((line) => line.replace(/\/\/.*$/, ''))
    .join('')
    .replace(/\s+/g, '');
  assert.match(digits, /^([0-9a-f]{2})*$/, 'golden hex is malformed');
  return Buffer.from(digits, 'hex');
}

/** Deterministic PRNG (mulberry32), so a failing split can be replayed from its seed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function bytes(n: number, seed: number): Buffer {
  const rand = prng(seed);
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(rand() * 256);
  return b;
}

function decodeAll(chunks: readonly Buffer[]): UsbipCommand[] {
  const d = new UsbipDecoder();
  const out: UsbipCommand[] = [];
  for (const c of chunks) {
    d.push(c);
    for (let m = d.next(); m; m = d.next()) out.push(m);
  }
  d.end();
  return out;
}

function decodeOne(buf: Buffer): UsbipCommand {
  const all = decodeAll([buf]);
  assert.equal(all.length, 1);
  return all[0];
}

const ZERO_SETUP = Buffer.alloc(8);
const EMPTY = Buffer.alloc(0);

// ---------------------------------------------------------------------------------------------------
// Golden messages
// ---------------------------------------------------------------------------------------------------

// GET_DESCRIPTOR(DEVICE) on ep 0, the first URB vhci_hcd sends after attach.
const CMD_SUBMIT_GET_DESCRIPTOR = hex(`
  00000001  // command: USBIP_CMD_SUBMIT
  00000001  // seqnum: 1
  00010002  // devid: busnum 1 << 16 | devnum 2
  00000001  // direction: USBIP_DIR_IN
  00000000  // ep: 0
  00000200  // transfer_flags: USBIP_URB_DIR_IN
  00000012  // transfer_buffer_length: 18
  00000000  // start_frame: 0
  00000000  // number_of_packets: 0 (Linux's vhci sends urb->number_of_packets, 0 for non-ISO)
  00000000  // interval: 0
  80        // setup.bmRequestType: device-to-host, standard, device
  06        // setup.bRequest: GET_DESCRIPTOR
  0001      // setup.wValue: 0x0100 little-endian (DEVICE descriptor, index 0)
  0000      // setup.wIndex: 0
  1200      // setup.wLength: 18 little-endian
`);

const CMD_SUBMIT_GET_DESCRIPTOR_DECODED: UsbipCommand = {
  kind: 'submit',
  seqnum: 1,
  devid: 0x00010002,
  direction: USBIP_DIR_IN,
  ep: 0,
  transfer_flags: USBIP_URB_DIR_IN,
  transfer_buffer_length: 18,
  start_frame: 0,
  number_of_packets: 0,
  interval: 0,
  setup: Buffer.from([0x80, 0x06, 0x00, 0x01, 0x00, 0x00, 0x12, 0x00]),
  data: EMPTY,
};

// Its answer: 18 bytes of device descriptor.
const RET_SUBMIT_GET_DESCRIPTOR = hex(`
  00000003  // command: USBIP_RET_SUBMIT
  00000001  // seqnum: 1, echoed
  00000000  // devid: 0 (as Linux's stub sends; vhci ignores it)
  00000000  // direction: 0
  00000000  // ep: 0
  00000000  // status: 0
  00000012  // actual_length: 18
  00000000  // start_frame: 0
  00000000  // number_of_packets: 0
  00000000  // error_count: 0
  0000000000000000 // padding
  12 01     // data: bLength 18, bDescriptorType DEVICE
  0002      //   bcdUSB 2.00 (little-endian, as all USB descriptors)
  00 00 00  //   bDeviceClass, bDeviceSubClass, bDeviceProtocol
  40        //   bMaxPacketSize0 64
  6b1d 0401 //   idVendor 0x1d6b, idProduct 0x0104
  0001      //   bcdDevice 1.00
  01 02 03  //   iManufacturer, iProduct, iSerialNumber
  01        //   bNumConfigurations
`);
const DEVICE_DESCRIPTOR = RET_SUBMIT_GET_DESCRIPTOR.subarray(USBIP_HEADER_SIZE);

// A bulk OUT stall: no data in the reply.
const RET_SUBMIT_STALL = hex(`
  00000003  // command: USBIP_RET_SUBMIT
  00000007  // seqnum: 7
  00000000  // devid
  00000000  // direction
  00000000  // ep
  ffffffe0  // status: -EPIPE (-32)
  00000000  // actual_length: 0
  00000000  // start_frame
  00000000  // number_of_packets
  00000000  // error_count
  0000000000000000 // padding
`);

const CMD_UNLINK = hex(`
  00000002  // command: USBIP_CMD_UNLINK
  00000009  // seqnum: 9 (the unlink request's own)
  00010002  // devid
  00000000  // direction: 0 (vhci_tx.c leaves it zero)
  00000000  // ep: 0
  00000008  // unlink_seqnum: 8, the URB to cancel
  000000000000000000000000000000000000000000000000 // padding (24 bytes)
`);

const RET_UNLINK_CONNRESET = hex(`
  00000004  // command: USBIP_RET_UNLINK
  00000009  // seqnum: 9, the CMD_UNLINK's
  00000000  // devid
  00000000  // direction
  00000000  // ep
  ffffff98  // status: -ECONNRESET (-104): the URB was cancelled
  000000000000000000000000000000000000000000000000 // padding (24 bytes)
`);

// An isochronous OUT URB on ep 3: 6 bytes of data, then 2 iso packet descriptors.
const CMD_SUBMIT_ISO_OUT = hex(`
  00000001  // command: USBIP_CMD_SUBMIT
  0000000a  // seqnum: 10
  00010002  // devid
  00000000  // direction: USBIP_DIR_OUT
  00000003  // ep: 3
  00000002  // transfer_flags: USBIP_URB_ISO_ASAP
  00000006  // transfer_buffer_length: 6
  00000010  // start_frame: 16
  00000002  // number_of_packets: 2
  00000001  // interval: 1
  0000000000000000 // setup: unused
  a1a2a3b1b2b3     // data: 6 bytes
  00000000 00000003 00000000 00000000 // iso[0]: offset 0, length 3, actual_length 0, status 0
  00000003 00000003 00000000 00000000 // iso[1]: offset 3, length 3, actual_length 0, status 0
`);

// From Documentation/usb/usbip_protocol.rst "EXAMPLE": a HID's interrupt URBs, captured on the wire.
const DOC_CMD_INTR_IN = hex(`
  00000001 00000d05 0001000f 00000001 00000001  // CMD_SUBMIT seqnum 0xd05 devid 0x1000f IN ep 1
  00000200 00000040 ffffffff 00000000 00000004  // flags DIR_IN, length 64, start_frame -1, packets 0, interval 4
  00000000 00000000                             // setup
`);
const DOC_CMD_INTR_OUT = hex(`
  00000001 00000d06 0001000f 00000000 00000001  // CMD_SUBMIT seqnum 0xd06 devid 0x1000f OUT ep 1
  00000000 00000040 ffffffff 00000000 00000004  // flags 0, length 64, start_frame -1, packets 0, interval 4
  00000000 00000000                             // setup
  ffffffff860008a784ce5ae212376300000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
`);
const DOC_RET_INTR_OUT = hex(`
  00000003 00000d06 00000000 00000000 00000000  // RET_SUBMIT seqnum 0xd06
  00000000 00000040 ffffffff 00000000 00000000  // status 0, actual_length 64, start_frame -1, packets 0, errors 0
  00000000 00000000                             // padding
`);
const DOC_RET_INTR_IN = hex(`
  00000003 00000d05 00000000 00000000 00000000  // RET_SUBMIT seqnum 0xd05 (direction 0 although IN)
  00000000 00000040 ffffffff 00000000 00000000  // status 0, actual_length 64, start_frame -1, packets 0, errors 0
  00000000 00000000                             // padding
  ffffffff860011a784ce5ae2123763612891b1020100000400000000000000000000000000000000000000000000000000000000000000000000000000000000
`);

describe('golden CMD_* (what vhci_hcd sends)', () => {
  test('CMD_SUBMIT control IN decodes field by field and re-encodes byte for byte', () => {
    assert.equal(CMD_SUBMIT_GET_DESCRIPTOR.length, USBIP_HEADER_SIZE);
    const m = decodeOne(CMD_SUBMIT_GET_DESCRIPTOR);
    assert.deepEqual(m, CMD_SUBMIT_GET_DESCRIPTOR_DECODED);
    assert.deepEqual(encodeCmdSubmit(CMD_SUBMIT_GET_DESCRIPTOR_DECODED), CMD_SUBMIT_GET_DESCRIPTOR);
  });

  test('the setup packet is little-endian inside the big-endian header', () => {
    const m = decodeOne(CMD_SUBMIT_GET_DESCRIPTOR);
    assert.ok(m.kind === 'submit');
    const setup = { bmRequestType: 0x80, bRequest: 6, wValue: 0x0100, wIndex: 0, wLength: 18 };
    assert.deepEqual(parseSetup(m.setup), setup);
    assert.deepEqual(encodeSetup(setup), m.setup);
    assert.throws(() => parseSetup(Buffer.alloc(7)), RangeError);
  });

  test('CMD_UNLINK', () => {
    assert.equal(CMD_UNLINK.length, USBIP_HEADER_SIZE);
    const expected: UsbipCommand = {
      kind: 'unlink',
      seqnum: 9,
      devid: 0x00010002,
      direction: USBIP_DIR_OUT,
      ep: 0,
      unlink_seqnum: 8,
    };
    assert.deepEqual(decodeOne(CMD_UNLINK), expected);
    assert.deepEqual(encodeCmdUnlink({ seqnum: 9, devid: 0x00010002, unlink_seqnum: 8 }), CMD_UNLINK);
  });

  test('documented captures: interrupt IN (no data) and OUT (64 bytes of data follow)', () => {
    assert.deepEqual(decodeOne(DOC_CMD_INTR_IN), {
      kind: 'submit',
      seqnum: 0xd05,
      devid: 0x1000f,
      direction: USBIP_DIR_IN,
      ep: 1,
      transfer_flags: USBIP_URB_DIR_IN,
      transfer_buffer_length: 64,
      start_frame: -1,
      number_of_packets: 0,
      interval: 4,
      setup: ZERO_SETUP,
      data: EMPTY,
    });
    const out = decodeOne(DOC_CMD_INTR_OUT);
    assert.ok(out.kind === 'submit');
    assert.equal(out.direction, USBIP_DIR_OUT);
    assert.equal(out.transfer_buffer_length, 64);
    assert.deepEqual(out.data, DOC_CMD_INTR_OUT.subarray(USBIP_HEADER_SIZE));
    assert.deepEqual(encodeCmdSubmit(out), DOC_CMD_INTR_OUT);
  });

  test('an isochronous URB decodes completely but as its own kind', () => {
    const m = decodeOne(CMD_SUBMIT_ISO_OUT);
    assert.deepEqual(m, {
      kind: 'isoSubmit',
      seqnum: 10,
      devid: 0x00010002,
      direction: USBIP_DIR_OUT,
      ep: 3,
      transfer_flags: USBIP_URB_ISO_ASAP,
      transfer_buffer_length: 6,
      start_frame: 16,
      number_of_packets: 2,
      interval: 1,
      setup: ZERO_SETUP,
      data: hex('a1a2a3b1b2b3'),
      iso_packet_descriptor: [
        { offset: 0, length: 3, actual_length: 0, status: 0 },
        { offset: 3, length: 3, actual_length: 0, status: 0 },
      ],
    });
    assert.deepEqual(encodeCmdSubmit(m), CMD_SUBMIT_ISO_OUT);
  });

  test('number_of_packets 0xffffffff (the documented non-ISO value) is not ISO and has no descriptors', () => {
    const buf = encodeCmdSubmit({
      seqnum: 1, devid: 2, direction: USBIP_DIR_IN, ep: 2, transfer_flags: 0, transfer_buffer_length: 512,
      number_of_packets: 0xffffffff,
    });
    assert.equal(buf.readUInt32BE(0x20), 0xffffffff);
    const m = decodeOne(buf);
    assert.equal(m.kind, 'submit');
    assert.ok(m.kind === 'submit');
    assert.equal(m.number_of_packets, -1);
  });

  test('number_of_packets is never read as ISO on ep 0', () => {
    const buf = encodeCmdSubmit({
      seqnum: 1, devid: 2, direction: USBIP_DIR_IN, ep: 0, transfer_flags: 0, transfer_buffer_length: 8, number_of_packets: 3,
    });
    assert.equal(decodeOne(buf).kind, 'submit');
  });

  test('isIsochronous overrides the number_of_packets guess, as vhci_tx.c keys on the pipe type', () => {
    // A bulk URB with a stray number_of_packets: no descriptors follow it.
    const bulk = encodeCmdSubmit({
      seqnum: 1, devid: 2, direction: USBIP_DIR_OUT, ep: 2, transfer_flags: 0, transfer_buffer_length: 2,
      number_of_packets: 5, data: hex('beef'),
    });
    const next = encodeCmdUnlink({ seqnum: 2, devid: 2, unlink_seqnum: 1 });
    const d = new UsbipDecoder({ isIsochronous: (ep) => ep === 3 });
    d.push(Buffer.concat([bulk, next, CMD_SUBMIT_ISO_OUT]));
    assert.deepEqual([d.next()?.kind, d.next()?.kind, d.next()?.kind, d.next()], ['submit', 'unlink', 'isoSubmit', undefined]);
  });
});

describe('golden RET_* (what we send vhci_hcd)', () => {
  test('RET_SUBMIT IN with data', () => {
    assert.equal(RET_SUBMIT_GET_DESCRIPTOR.length, USBIP_HEADER_SIZE + 18);
    const encoded = encodeRetSubmit({
      seqnum: 1, devid: 0, direction: USBIP_DIR_OUT, ep: 0, status: 0, actual_length: 18, data: DEVICE_DESCRIPTOR,
    });
    assert.deepEqual(encoded, RET_SUBMIT_GET_DESCRIPTOR);
    assert.deepEqual(decodeRetSubmit(RET_SUBMIT_GET_DESCRIPTOR, USBIP_DIR_IN), {
      kind: 'retSubmit',
      seqnum: 1,
      devid: 0,
      direction: USBIP_DIR_OUT,
      ep: 0,
      status: 0,
      actual_length: 18,
      start_frame: 0,
      number_of_packets: 0,
      error_count: 0,
      data: DEVICE_DESCRIPTOR,
      iso_packet_descriptor: [],
    });
  });

  test('RET_SUBMIT with an error status carries no data', () => {
    const encoded = encodeRetSubmit({
      seqnum: 7, devid: 0, direction: USBIP_DIR_OUT, ep: 0, status: UrbStatus.EPIPE, actual_length: 0,
    });
    assert.deepEqual(encoded, RET_SUBMIT_STALL);
    const m = decodeRetSubmit(RET_SUBMIT_STALL, USBIP_DIR_OUT);
    assert.equal(m.status, -32);
    assert.equal(m.data.length, 0);
  });

  test('RET_UNLINK -ECONNRESET', () => {
    const encoded = encodeRetUnlink({ seqnum: 9, devid: 0, direction: USBIP_DIR_OUT, ep: 0, status: UrbStatus.ECONNRESET });
    assert.deepEqual(encoded, RET_UNLINK_CONNRESET);
    assert.deepEqual(decodeRetUnlink(RET_UNLINK_CONNRESET), {
      kind: 'retUnlink', seqnum: 9, devid: 0, direction: USBIP_DIR_OUT, ep: 0, status: -104,
    });
  });

  test('documented captures re-encode byte for byte (RET of an IN URB with direction 0 still carries data)', () => {
    assert.deepEqual(
      encodeRetSubmit({ seqnum: 0xd06, devid: 0, direction: USBIP_DIR_OUT, ep: 0, status: 0, actual_length: 64, start_frame: -1 }),
      DOC_RET_INTR_OUT,
    );
    const data = DOC_RET_INTR_IN.subarray(USBIP_HEADER_SIZE);
    assert.deepEqual(
      encodeRetSubmit({ seqnum: 0xd05, devid: 0, direction: USBIP_DIR_OUT, ep: 0, status: 0, actual_length: 64, start_frame: 0xffffffff, data }),
      DOC_RET_INTR_IN,
    );
    const m = decodeRetSubmit(DOC_RET_INTR_IN, USBIP_DIR_IN);
    assert.equal(m.start_frame, -1);
    assert.deepEqual(m.data, data);
  });

  test('refusing an ISO URB: an error status, no data, number_of_packets 0, so vhci reads no descriptors', () => {
    const encoded = encodeRetSubmit({ seqnum: 10, devid: 0, direction: USBIP_DIR_OUT, ep: 0, status: UrbStatus.EINVAL, actual_length: 0 });
    assert.equal(encoded.length, USBIP_HEADER_SIZE);
    assert.equal(encoded.readInt32BE(0x14), -22);
    assert.equal(encoded.readUInt32BE(0x20), 0);
  });

  test('encoders refuse inconsistent input', () => {
    const base = { seqnum: 1, devid: 0, direction: USBIP_DIR_IN as UsbipDirection, ep: 0, status: 0 };
    assert.throws(() => encodeRetSubmit({ ...base, actual_length: 3, data: hex('0102') }), {
      name: 'RangeError',
      message: 'RET_SUBMIT data is 2 bytes but actual_length is 3',
    });
    assert.throws(() => encodeRetSubmit({ ...base, actual_length: 0, status: 2 ** 32 }), {
      message: 'status 4294967296 does not fit in 32 bits',
    });
    assert.throws(
      () => encodeCmdSubmit({ seqnum: 1, devid: 0, direction: USBIP_DIR_OUT, ep: 1, transfer_flags: 0, transfer_buffer_length: 4 }),
      { message: 'CMD_SUBMIT OUT with 0 data bytes and transfer_buffer_length 4' },
    );
    assert.throws(
      () => encodeCmdSubmit({
        seqnum: 1, devid: 0, direction: USBIP_DIR_IN, ep: 1, transfer_flags: 0, transfer_buffer_length: 0,
        number_of_packets: 3, iso_packet_descriptor: [{ offset: 0, length: 0, actual_length: 0, status: 0 }],
      }),
      { message: 'number_of_packets 3 does not match 1 iso packet descriptors' },
    );
  });

  test('the reply decoder reads a stream of replies, taking each URB direction from the caller', () => {
    const directions = new Map<number, UsbipDirection>([[1, USBIP_DIR_IN], [7, USBIP_DIR_OUT], [0xd05, USBIP_DIR_IN]]);
    const d = new UsbipReplyDecoder({ directionOf: (seqnum) => directions.get(seqnum) });
    const stream = Buffer.concat([RET_SUBMIT_GET_DESCRIPTOR, RET_SUBMIT_STALL, RET_UNLINK_CONNRESET, DOC_RET_INTR_IN]);
    const got: UsbipReply[] = [];
    for (let i = 0; i < stream.length; i += 5) {
      d.push(stream.subarray(i, i + 5));
      for (let m = d.next(); m; m = d.next()) got.push(m);
    }
    d.end();
    assert.deepEqual(got.map((m) => [m.kind, m.seqnum]), [['retSubmit', 1], ['retSubmit', 7], ['retUnlink', 9], ['retSubmit', 0xd05]]);
  });
});

// ---------------------------------------------------------------------------------------------------
// Round trips, truncation, random splits
// ---------------------------------------------------------------------------------------------------

/** A mixed, deterministic stream of commands as vhci_hcd could send them. */
function commandStream(seed: number, count: number, maxData: number): { wire: Buffer; messages: UsbipCommand[] } {
  const rand = prng(seed);
  const int = (n: number) => Math.floor(rand() * n);
  const parts: Buffer[] = [];
  let seqnum = 1;
  for (let i = 0; i < count; i++) {
    const r = rand();
    const common = { seqnum: seqnum++, devid: 0x00030004 };
    if (r < 0.15) {
      parts.push(encodeCmdUnlink({ ...common, unlink_seqnum: Math.max(1, seqnum - 1 - int(4)) }));
    } else if (r < 0.25) {
      const n = 1 + int(4);
      const lengths = Array.from({ length: n }, () => int(9));
      const total = lengths.reduce((a, b) => a + b, 0);
      const out = rand() < 0.5;
      let offset = 0;
      parts.push(
        encodeCmdSubmit({
          ...common, direction: out ? USBIP_DIR_OUT : USBIP_DIR_IN, ep: 1 + int(15), transfer_flags: USBIP_URB_ISO_ASAP,
          transfer_buffer_length: total, start_frame: int(1000), interval: 1,
          data: out ? bytes(total, seed + i) : undefined,
          iso_packet_descriptor: lengths.map((length) => {
            const d = { offset, length, actual_length: out ? 0 : length, status: 0 };
            offset += length;
            return d;
          }),
        }),
      );
    } else if (r < 0.4) {
      const wLength = int(256);
      const setup = encodeSetup({ bmRequestType: 0x80, bRequest: 6, wValue: 0x0300 | int(4), wIndex: 0x0409, wLength });
      parts.push(encodeCmdSubmit({
        ...common, direction: USBIP_DIR_IN, ep: 0, transfer_flags: USBIP_URB_DIR_IN, transfer_buffer_length: wLength, setup,
      }));
    } else {
      const out = rand() < 0.6;
      const length = rand() < 0.1 ? 0 : int(maxData + 1);
      parts.push(encodeCmdSubmit({
        ...common, direction: out ? USBIP_DIR_OUT : USBIP_DIR_IN, ep: 1 + int(15),
        transfer_flags: out ? 0 : USBIP_URB_DIR_IN, transfer_buffer_length: length, interval: int(16),
        number_of_packets: rand() < 0.5 ? 0 : 0xffffffff, data: out ? bytes(length, seed * 7919 + i) : undefined,
      }));
    }
  }
  const wire = Buffer.concat(parts);
  return { wire, messages: decodeAll(parts) };
}

/** Splits buf into chunks of 1..maxChunk bytes. */
function split(buf: Buffer, seed: number, maxChunk: number): Buffer[] {
  const rand = prng(seed);
  const chunks: Buffer[] = [];
  for (let i = 0; i < buf.length; ) {
    const n = 1 + Math.floor(rand() * maxChunk);
    chunks.push(buf.subarray(i, i + n));
    i += n;
  }
  return chunks;
}

describe('streams', () => {
  test('every command round-trips through encode and decode', () => {
    const { messages } = commandStream(1, 300, 300);
    assert.ok(messages.some((m) => m.kind === 'isoSubmit') && messages.some((m) => m.kind === 'unlink'));
    for (const m of messages) {
      const wire = m.kind === 'unlink' ? encodeCmdUnlink(m) : encodeCmdSubmit(m);
      assert.deepEqual(decodeOne(wire), m);
    }
  });

  test('every reply round-trips through encode and decode', () => {
    const rand = prng(2);
    for (let i = 0; i < 200; i++) {
      const direction: UsbipDirection = rand() < 0.5 ? USBIP_DIR_IN : USBIP_DIR_OUT;
      const actual_length = Math.floor(rand() * 100);
      const fields = {
        seqnum: i, devid: 0, direction, ep: 0,
        status: [0, UrbStatus.EPIPE, UrbStatus.EOVERFLOW, UrbStatus.ENODEV][i % 4],
        actual_length, start_frame: 0, number_of_packets: 0, error_count: 0,
        data: direction === USBIP_DIR_IN ? bytes(actual_length, i) : EMPTY,
      };
      assert.deepEqual(decodeRetSubmit(encodeRetSubmit(fields), direction), { kind: 'retSubmit', ...fields, iso_packet_descriptor: [] });
      const unlink = { seqnum: i, devid: 0, direction: USBIP_DIR_OUT as UsbipDirection, ep: 0, status: i % 2 ? 0 : UrbStatus.ECONNRESET };
      assert.deepEqual(decodeRetUnlink(encodeRetUnlink(unlink)), { kind: 'retUnlink', ...unlink });
    }
  });

  test('every truncated prefix of every golden message is "not yet", never an error', () => {
    for (const message of [CMD_SUBMIT_GET_DESCRIPTOR, CMD_UNLINK, CMD_SUBMIT_ISO_OUT, DOC_CMD_INTR_IN, DOC_CMD_INTR_OUT]) {
      const whole = decodeOne(message);
      for (let n = 0; n < message.length; n++) {
        const d = new UsbipDecoder();
        d.push(message.subarray(0, n));
        assert.equal(d.next(), undefined, `prefix of ${n} bytes`);
        assert.equal(d.bufferedBytes, n);
        d.push(message.subarray(n));
        assert.deepEqual(d.next(), whole);
        assert.equal(d.next(), undefined);
      }
    }
    for (const [message, direction] of [[RET_SUBMIT_GET_DESCRIPTOR, USBIP_DIR_IN], [RET_UNLINK_CONNRESET, USBIP_DIR_OUT]] as const) {
      for (let n = 0; n < message.length; n++) {
        const d = new UsbipReplyDecoder({ directionOf: () => direction });
        d.push(message.subarray(0, n));
        assert.equal(d.next(), undefined, `prefix of ${n} bytes`);
      }
    }
  });

  test('every prefix of a stream yields exactly the messages it holds whole', () => {
    const { wire, messages } = commandStream(3, 12, 40);
    const ends: number[] = [];
    {
      const d = new UsbipDecoder();
      for (let i = 0; i < wire.length; i++) {
        d.push(wire.subarray(i, i + 1));
        if (d.next()) ends.push(i + 1);
      }
    }
    assert.equal(ends.length, messages.length);
    for (let n = 0; n <= wire.length; n++) {
      const d = new UsbipDecoder();
      d.push(wire.subarray(0, n));
      const got: UsbipCommand[] = [];
      for (let m = d.next(); m; m = d.next()) got.push(m);
      const whole = ends.filter((e) => e <= n).length;
      assert.deepEqual(got, messages.slice(0, whole), `prefix of ${n} bytes`);
      if (n === wire.length) d.end();
      else if (n > (ends[whole - 1] ?? 0)) assert.throws(() => d.end(), { name: 'UsbipProtocolError', message: /^stream ended inside a \d+-byte (message|header): \d+ bytes arrived$/ });
    }
  });

  test('random chunk splits of a long mixed stream decode identically (seeded)', () => {
    const { wire, messages } = commandStream(42, 400, 2000);
    const big = encodeCmdSubmit({
      seqnum: 100000, devid: 1, direction: USBIP_DIR_OUT, ep: 2, transfer_flags: 0,
      transfer_buffer_length: 1 << 20, data: bytes(1 << 20, 5),
    });
    const stream = Buffer.concat([wire, big, wire]);
    const expected = [...messages, decodeOne(big), ...messages];
    for (const [seed, maxChunk] of [[1, 1], [2, 7], [3, 47], [4, 49], [5, 1000], [6, 65536], [7, 3_000_000]]) {
      const got = decodeAll(split(stream, seed, maxChunk));
      assert.equal(got.length, expected.length, `seed ${seed}`);
      assert.deepEqual(got, expected, `seed ${seed}, chunks of 1..${maxChunk} bytes`);
    }
  });

  test('a clean end of stream is quiet, a cut message is an error that names its size', () => {
    const d = new UsbipDecoder();
    d.end();
    d.push(CMD_SUBMIT_GET_DESCRIPTOR);
    d.push(DOC_CMD_INTR_OUT.subarray(0, 60));
    assert.ok(d.next());
    assert.equal(d.next(), undefined);
    assert.throws(() => d.end(), { name: 'UsbipProtocolError', message: 'stream ended inside a 112-byte message: 60 bytes arrived' });
    const e = new UsbipDecoder();
    e.push(CMD_UNLINK.subarray(0, 20));
    assert.throws(() => e.end(), { message: 'stream ended inside a 48-byte header: 20 bytes arrived' });
  });
});

// ---------------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------------

/** A valid CMD_SUBMIT OUT header with one 32-bit field replaced. */
function patched(base: Buffer, offset: number, value: number): Buffer {
  const b = Buffer.from(base.subarray(0, USBIP_HEADER_SIZE));
  b.writeUInt32BE(value >>> 0, offset);
  return b;
}

function assertRejected(header: Buffer, message: string, decoder = new UsbipDecoder()): void {
  // Not an error until the whole header is in, then an error at once (no waiting for the payload).
  decoder.push(header.subarray(0, USBIP_HEADER_SIZE - 1));
  assert.equal(decoder.next(), undefined);
  decoder.push(header.subarray(USBIP_HEADER_SIZE - 1, USBIP_HEADER_SIZE));
  assert.throws(() => decoder.next(), (e: unknown) => {
    assert.ok(e instanceof UsbipProtocolError);
    assert.equal(e.name, 'UsbipProtocolError');
    assert.equal(e.message, message);
    return true;
  });
  // Sticky: the stream cannot be resynchronised, even if valid bytes follow.
  decoder.push(CMD_UNLINK);
  assert.throws(() => decoder.next(), { message });
  assert.throws(() => decoder.end(), { message });
}

describe('bad input is rejected with a message naming the value', () => {
  const OUT = DOC_CMD_INTR_OUT;

  test('unknown command', () => {
    assertRejected(patched(OUT, 0x00, 7), 'unknown USB/IP command 0x00000007');
    assertRejected(patched(OUT, 0x00, 0x80000001), 'unknown USB/IP command 0x80000001');
  });

  test('a reply where a command belongs (and the other way round)', () => {
    assertRejected(patched(OUT, 0x00, 3), 'unexpected USB/IP command 0x00000003 (USBIP_RET_SUBMIT)');
    assertRejected(patched(OUT, 0x00, 4), 'unexpected USB/IP command 0x00000004 (USBIP_RET_UNLINK)');
    const d = new UsbipReplyDecoder();
    d.push(CMD_UNLINK);
    assert.throws(() => d.next(), { name: 'UsbipProtocolError', message: 'unexpected USB/IP command 0x00000002 (USBIP_CMD_UNLINK)' });
  });

  test('direction other than 0 or 1', () => {
    assertRejected(patched(OUT, 0x0c, 2), 'direction 2 is neither USBIP_DIR_OUT (0) nor USBIP_DIR_IN (1)');
    assertRejected(patched(CMD_UNLINK, 0x0c, 0xffffffff), 'direction 4294967295 is neither USBIP_DIR_OUT (0) nor USBIP_DIR_IN (1)');
  });

  test('endpoint number above 15', () => {
    assertRejected(patched(OUT, 0x10, 16), 'ep 16 is out of range 0..15');
  });

  test('transfer_buffer_length over the limit, checked before anything is buffered', () => {
    assert.equal(MAX_TRANSFER_BUFFER_LENGTH, 4194304);
    assertRejected(patched(OUT, 0x18, 0xffffffff), 'transfer_buffer_length 4294967295 exceeds limit 4194304');
    assertRejected(patched(OUT, 0x18, MAX_TRANSFER_BUFFER_LENGTH + 1), 'transfer_buffer_length 4194305 exceeds limit 4194304');
    // IN URBs carry no data, but the bridge would have to ask the device for that much.
    assertRejected(patched(DOC_CMD_INTR_IN, 0x18, 0x7fffffff), 'transfer_buffer_length 2147483647 exceeds limit 4194304');
    // The limit itself is fine: the decoder just waits for the data.
    const d = new UsbipDecoder();
    d.push(patched(OUT, 0x18, MAX_TRANSFER_BUFFER_LENGTH));
    assert.equal(d.next(), undefined);
  });

  test('the limit is an option', () => {
    assertRejected(patched(OUT, 0x18, 65), 'transfer_buffer_length 65 exceeds limit 64', new UsbipDecoder({ maxTransferBufferLength: 64 }));
    assert.equal(decodeAll([OUT]).length, 1);
    assert.throws(() => new UsbipDecoder({ maxTransferBufferLength: -1 }), RangeError);
  });

  test('number_of_packets of an ISO URB over USBIP_MAX_ISO_PACKETS, or negative', () => {
    assert.equal(USBIP_MAX_ISO_PACKETS, 1024);
    assertRejected(patched(CMD_SUBMIT_ISO_OUT, 0x20, 1025), 'number_of_packets 1025 exceeds limit 1024');
    assertRejected(patched(CMD_SUBMIT_ISO_OUT, 0x20, -2), 'number_of_packets -2 is negative');
    const d = new UsbipDecoder();
    d.push(patched(CMD_SUBMIT_ISO_OUT, 0x20, 1024));
    assert.equal(d.next(), undefined); // waiting for 6 + 1024 * 16 bytes
  });

  test('replies: unknown seqnum, actual_length over the limit', () => {
    const d = new UsbipReplyDecoder({ directionOf: () => undefined });
    d.push(RET_SUBMIT_STALL);
    assert.throws(() => d.next(), { name: 'UsbipProtocolError', message: 'USBIP_RET_SUBMIT for unknown seqnum 7' });
    const e = new UsbipReplyDecoder();
    e.push(patched(RET_SUBMIT_STALL, 0x18, 0xffffffff));
    assert.throws(() => e.next(), { message: 'actual_length 4294967295 exceeds limit 4194304' });
    assert.throws(() => decodeRetUnlink(RET_SUBMIT_STALL), { message: 'expected USBIP_RET_UNLINK, got USBIP_RET_SUBMIT' });
    assert.throws(() => decodeRetSubmit(RET_SUBMIT_GET_DESCRIPTOR.subarray(0, 50), USBIP_DIR_IN), {
      message: 'USBIP_RET_SUBMIT truncated: 50 bytes',
    });
  });
});

describe('status values', () => {
  test('errno numbers match this Linux machine (asm-generic numbering)', { skip: platform() !== 'linux' }, () => {
    // libuv's list (os.constants.errno) lacks a few (ESHUTDOWN); compare the ones it has.
    const errno = osConstants.errno as Record<string, number | undefined>;
    let compared = 0;
    for (const [name, value] of Object.entries(UrbStatus)) {
      const expected = errno[name];
      if (name === 'OK') assert.equal(value, 0);
      else if (expected !== undefined) {
        assert.equal(value, -expected, name);
        compared++;
      }
    }
    assert.ok(compared >= 9, `compared only ${compared}`);
  });
});
