/**
 * The USB/IP bridge against a fake kernel (FakeVhci: CMD_SUBMIT / CMD_UNLINK out, every reply checked
 * as vhci_rx.c would) over an in-memory duplex, and a fake claimed device whose URBs complete when the
 * test says so. Then the endpoint table, the socket pair and the attach flow with a fake helper (and
 * a fake pkexec) written to a temp dir; the real pkexec/kernel path runs in the qemu tests.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter, once } from 'node:events';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import type { PendingUrb } from '../../extension/core/bench-client.js';
import { AttachError, attachDevice, createSocketPair, devidOf, loadVhci, detachPort } from '../../extension/core/usbip/attach.js';
import { BridgeClosed, UsbipBridge, UsbipBridgeOptions } from '../../extension/core/usbip/bridge.js';
import { encodeCmdSubmit } from '../../extension/core/usbip/codec.js';
import { USBIP_DIR_IN, USBIP_URB_DIR_IN, USBIP_URB_SHORT_NOT_OK, USBIP_URB_ZERO_PACKET } from '../../extension/core/usbip/constants.js';
import { encodeSetup, parseSetup, UrbRequest, UrbResult, UrbStatus } from '../../server/protocol/urb.js';
import { DescriptorError, EndpointTable, parseConfigurationDescriptor, readEndpointTable } from '../../extension/core/usbip/endpoints.js';
import type { DeviceInfo } from '../../server/protocol/messages.js';
import { configurationDescriptor, deviceDescriptor, DeviceDescriptorFields } from '../../server/usb/descriptors.js';
import { Logger } from '../../server/shared/log.js';
import { FakeVhci, GET_DESCRIPTOR, memoryDuplexPair } from '../helpers/fake-vhci.js';

// ---------------------------------------------------------------------------------------------------
// A fake claimed device
// ---------------------------------------------------------------------------------------------------

const DEVICE_FIELDS: DeviceDescriptorFields = {
  bcdUSB: 0x0200, deviceClass: 0, deviceSubClass: 0, deviceProtocol: 0, maxPacketSize0: 64,
  vendorId: 0x1209, productId: 0x0042, bcdDevice: 0x0100, iManufacturer: 0, iProduct: 0, iSerialNumber: 0, numConfigurations: 1,
};
const DEVICE_DESCRIPTOR = deviceDescriptor(DEVICE_FIELDS);

/** Interface 0: bulk 0x01 OUT / 0x81 IN, interrupt 0x82 IN. */
const PLAIN_CONFIG = configurationDescriptor(1, [
  {
    number: 0, class: 0xff, subclass: 0, protocol: 0,
    extra: [Buffer.from([5, 0x24, 0, 0x10, 0x01])], // a class-specific descriptor the walk must skip
    endpoints: [
      { address: 0x01, type: 'bulk', maxPacketSize: 512, interval: 0 },
      { address: 0x81, type: 'bulk', maxPacketSize: 512, interval: 0 },
      { address: 0x82, type: 'interrupt', maxPacketSize: 8, interval: 4 },
    ],
  },
]);

/**
 * PLAIN_CONFIG's interface 0, plus interface 1 (audio-like): alt 0 without endpoints, alt 1 with an
 * isochronous 0x83 IN, alt 2 where 0x83 is an interrupt endpoint (so the active setting matters).
 */
function isoConfig(): Buffer {
  const c = configurationDescriptor(1, [
    {
      number: 0, class: 0xff, subclass: 0, protocol: 0,
      endpoints: [
        { address: 0x01, type: 'bulk', maxPacketSize: 512, interval: 0 },
        { address: 0x81, type: 'bulk', maxPacketSize: 512, interval: 0 },
      ],
    },
    { number: 1, alternate: 0, class: 1, subclass: 2, protocol: 0, endpoints: [] },
    {
      number: 1, alternate: 1, class: 1, subclass: 2, protocol: 0,
      endpoints: [{ address: 0x83, type: 'interrupt', maxPacketSize: 192, interval: 1 }, { address: 0x03, type: 'interrupt', maxPacketSize: 192, interval: 1 }],
    },
    { number: 1, alternate: 2, class: 1, subclass: 2, protocol: 0, endpoints: [{ address: 0x83, type: 'interrupt', maxPacketSize: 8, interval: 4 }] },
  ]);
  // configurationDescriptor builds bulk/interrupt only: make alt 1's endpoints isochronous (bmAttributes 1).
  const alt1 = c.indexOf(Buffer.from([9, 4, 1, 1]));
  assert.ok(alt1 > 0);
  c[alt1 + 9 + 3] = 0x01;
  c[alt1 + 9 + 7 + 3] = 0x01;
  return c;
}

interface Started {
  id: number;
  urb: UrbRequest;
  resolve: (r: UrbResult) => void;
}

const EMPTY = Buffer.alloc(0);

class FakeDevice extends EventEmitter<{ lost: [string]; suspended: []; resumed: [] }> {
  info: DeviceInfo = {
    id: 'fake-1', busnum: 9, devnum: 0x63, vendorId: 0x1209, productId: 0x0042, bcdDevice: 0x0100,
    product: 'Fake Board', speed: 'high', class: 0, subclass: 0, protocol: 0, configuration: 1,
    interfaces: [{ number: 0, class: 0xff, subclass: 0, protocol: 0 }], shared: true,
  };
  lost = false;
  lostReason?: string;
  private nextId = 1;
  readonly pending = new Map<number, Started>();
  /** Every URB started, in order. */
  readonly started: Started[] = [];
  readonly cancels: number[] = [];
  /** Cancel wins at once (the URB completes with -ECONNRESET), unless false. */
  autoCancel = true;

  constructor(
    readonly config: Buffer = PLAIN_CONFIG,
    /** Answers a URB at once, or undefined to leave it pending for the test. */
    readonly auto: (urb: UrbRequest) => UrbResult | undefined = () => undefined,
  ) {
    super();
  }

  start(urb: UrbRequest): PendingUrb {
    const id = this.nextId++;
    if (this.lost) return { id, done: Promise.resolve({ status: UrbStatus.ENODEV, actual: 0, data: EMPTY, error: this.lostReason }) };
    let resolve!: (r: UrbResult) => void;
    const done = new Promise<UrbResult>((r) => (resolve = r));
    const s = { id, urb, resolve };
    this.started.push(s);
    const answer = this.standard(urb) ?? this.auto(urb);
    if (answer) resolve(answer);
    else this.pending.set(id, s);
    return { id, done };
  }

  submit(urb: UrbRequest): Promise<UrbResult> {
    return this.start(urb).done;
  }

  cancel(id: number): void {
    this.cancels.push(id);
    if (this.autoCancel && this.pending.has(id)) this.complete(id, { status: UrbStatus.ECONNRESET, actual: 0, data: EMPTY });
  }

  complete(id: number, r: Partial<UrbResult> & { data?: Buffer }): void {
    const s = this.pending.get(id);
    assert.ok(s, `URB ${id} is not pending`);
    this.pending.delete(id);
    const data = r.data ?? EMPTY;
    s.resolve({ status: r.status ?? 0, data, actual: r.actual ?? data.length, error: r.error });
  }

  /** The pending URB started for `ep` (the n-th, oldest first). */
  pendingOn(ep: number, n = 0): Started {
    const list = [...this.pending.values()].filter((s) => s.urb.ep === ep);
    assert.ok(list[n], `no pending URB #${n} on ep 0x${ep.toString(16)}`);
    return list[n];
  }

  /** What ClaimedDevice does when the bench connection drops. */
  suspend(): void {
    for (const id of [...this.pending.keys()]) this.complete(id, { status: UrbStatus.ESHUTDOWN, error: 'connection to the bench lost' });
    this.emit('suspended');
  }

  resume(): void {
    this.emit('resumed');
  }

  markLost(reason: string): void {
    this.lost = true;
    this.lostReason = reason;
    for (const id of [...this.pending.keys()]) this.complete(id, { status: UrbStatus.ENODEV, error: reason });
    this.emit('lost', reason);
  }

  /** GET_DESCRIPTOR device / configuration, and SET_CONFIGURATION / SET_INTERFACE, answered at once. */
  private standard(urb: UrbRequest): UrbResult | undefined {
    const s = urb.setup && parseSetup(urb.setup);
    if (urb.type !== 'control' || !s) return undefined;
    if (s.bmRequestType === 0x80 && s.bRequest === 6) {
      const type = s.wValue >> 8;
      const body = type === 1 ? DEVICE_DESCRIPTOR : type === 2 ? this.config : undefined;
      if (!body) return { status: UrbStatus.EPIPE, actual: 0, data: EMPTY };
      const data = body.subarray(0, Math.min(s.wLength, urb.length ?? 0));
      return { status: 0, actual: data.length, data };
    }
    if ((s.bmRequestType === 0x00 && s.bRequest === 9) || (s.bmRequestType === 0x01 && s.bRequest === 11)) return { status: 0, actual: 0, data: EMPTY };
    return undefined;
  }
}

/** A logger that keeps lines, for asserting what the user would read. */
function recordingLog(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const put = (level: string) => (m: string) => void lines.push(`${level} ${m}`);
  return { lines, error: put('error'), warn: put('warn'), info: put('info'), debug: put('debug') };
}

interface Rig {
  dev: FakeDevice;
  kernel: FakeVhci;
  bridge: UsbipBridge;
  log: Logger & { lines: string[] };
  kernelEnd: Duplex;
  closed: Promise<BridgeClosed>;
}

async function rig(options: { dev?: FakeDevice; bridge?: Partial<UsbipBridgeOptions>; highWaterMark?: number } = {}): Promise<Rig> {
  const dev = options.dev ?? new FakeDevice();
  const endpoints = await readEndpointTable(dev);
  dev.started.length = 0; // the descriptor reads are not the kernel's URBs
  const [bridgeEnd, kernelEnd] = memoryDuplexPair(options.highWaterMark);
  const log = recordingLog();
  const devid = devidOf(dev.info);
  const bridge = new UsbipBridge(dev, bridgeEnd, { devid, endpoints, log, ...options.bridge });
  const closed = new Promise<BridgeClosed>((resolve) => bridge.once('closed', resolve));
  bridge.start();
  return { dev, kernel: new FakeVhci(kernelEnd, devid), bridge, log, kernelEnd, closed };
}

/** Lets queued I/O and timers run until `cond` holds. */
async function until(cond: () => boolean, what: string, timeoutMs = 2000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

function assertClean(r: Rig): void {
  assert.deepEqual(r.kernel.violations, []);
  for (const [seqnum, n] of r.kernel.answers) assert.equal(n, 1, `seqnum ${seqnum} answered ${n} times`);
}

async function shutdown(r: Rig): Promise<void> {
  await r.bridge.close('test over');
  assertClean(r);
}

// ---------------------------------------------------------------------------------------------------
// Endpoint table
// ---------------------------------------------------------------------------------------------------

describe('endpoint table', () => {
  test('walks a configuration, skipping class-specific descriptors', () => {
    const c = parseConfigurationDescriptor(PLAIN_CONFIG);
    assert.equal(c.value, 1);
    assert.deepEqual(c.settings.map((s) => [s.interface, s.alternate, s.endpoints.map((e) => [e.address, e.type])]), [
      [0, 0, [[0x01, 'bulk'], [0x81, 'bulk'], [0x82, 'interrupt']]],
    ]);
    const t = new EndpointTable([c], 1);
    assert.equal(t.typeOf(0x00), 'control');
    assert.equal(t.typeOf(0x80), 'control');
    assert.equal(t.typeOf(0x81), 'bulk');
    assert.equal(t.typeOf(0x82), 'interrupt');
    assert.equal(t.typeOf(0x02), undefined);
    assert.deepEqual(t.isochronousEndpoints(), []);
  });

  test('follows SET_INTERFACE: the same address can be isochronous in one alternate setting and not in another', () => {
    const t = new EndpointTable([parseConfigurationDescriptor(isoConfig())], 1);
    assert.deepEqual(t.isochronousEndpoints(), [
      { configuration: 1, interface: 1, alternate: 1, address: 0x83 },
      { configuration: 1, interface: 1, alternate: 1, address: 0x03 },
    ]);
    assert.equal(t.typeOf(0x83), 'isochronous'); // alt 0 has no 0x83: any setting that has it
    t.setInterface(1, 2);
    assert.equal(t.typeOf(0x83), 'interrupt');
    t.setInterface(1, 1);
    assert.equal(t.typeOf(0x83), 'isochronous');
    t.setConfiguration(1); // resets alternates to 0
    assert.equal(t.typeOf(0x83), 'isochronous');
  });

  test('bad descriptors are reported with the offset', () => {
    const bad = Buffer.from(PLAIN_CONFIG);
    bad[9] = 0; // the interface descriptor's bLength
    assert.throws(() => parseConfigurationDescriptor(bad), (e: Error) => e instanceof DescriptorError && e.message === 'descriptor at offset 9 has bLength 0');
    assert.throws(() => parseConfigurationDescriptor(Buffer.from([9, 4, 0, 0, 0, 0, 0, 0, 0])), /descriptor type 4 at offset 0 is not a configuration/);
    const endpointFirst = Buffer.from([9, 2, 16, 0, 1, 1, 0, 0x80, 50, 7, 5, 0x81, 2, 0, 2, 0]);
    assert.throws(() => parseConfigurationDescriptor(endpointFirst), /endpoint descriptor at offset 9 comes before any interface/);
  });

  test('readEndpointTable reads the device and each configuration through the device', async () => {
    const dev = new FakeDevice();
    const t = await readEndpointTable(dev);
    assert.equal(t.activeConfiguration, 1);
    assert.deepEqual(dev.started.map((s) => [parseSetup(s.urb.setup!).wValue, s.urb.length]), [[0x0100, 18], [0x0200, 9], [0x0200, PLAIN_CONFIG.length]]);
    await assert.rejects(readEndpointTable(new FakeDevice(Buffer.alloc(0))), /GET_DESCRIPTOR configuration 0 returned 0 bytes, expected at least 9/);
  });
});

// ---------------------------------------------------------------------------------------------------
// The bridge
// ---------------------------------------------------------------------------------------------------

describe('USB/IP bridge', () => {
  test('control IN and OUT run on the device; the USB/IP header gives the direction', async () => {
    const r = await rig({ dev: new FakeDevice(PLAIN_CONFIG, (u) => (u.setup?.[0] === 0x40 ? { status: 0, actual: u.data!.length, data: EMPTY } : undefined)) });
    const desc = await r.kernel.runControl(GET_DESCRIPTOR(1, 0, 18));
    assert.equal(desc.status, 0);
    assert.equal(desc.actual_length, 18);
    assert.deepEqual(desc.data, DEVICE_DESCRIPTOR);
    assert.deepEqual(r.dev.started[0].urb, { type: 'control', ep: 0x80, setup: encodeSetup(GET_DESCRIPTOR(1, 0, 18)), data: undefined, length: 18 });

    const payload = Buffer.from('hello');
    const vendorOut = await r.kernel.runControl({ bmRequestType: 0x40, bRequest: 0x21, wValue: 1, wIndex: 0, wLength: 5 }, payload);
    assert.equal(vendorOut.status, 0);
    assert.equal(vendorOut.actual_length, 5);
    assert.equal(vendorOut.data.length, 0);
    assert.deepEqual(r.dev.started[1].urb.data, payload);
    assert.equal(r.dev.started[1].urb.ep, 0x00);
    await shutdown(r);
  });

  test('SET_CONFIGURATION / SET_INTERFACE pass through (the bench makes them host operations) and the endpoint table follows', async () => {
    const r = await rig({ dev: new FakeDevice(isoConfig()) });
    const setConfig = await r.kernel.runControl({ bmRequestType: 0x00, bRequest: 9, wValue: 1, wIndex: 0, wLength: 0 });
    assert.equal(setConfig.status, 0);
    assert.equal(r.dev.started[0].urb.type, 'control');
    await r.kernel.runControl({ bmRequestType: 0x01, bRequest: 11, wValue: 2, wIndex: 1, wLength: 0 });
    // alt 2: 0x83 is an interrupt endpoint now
    const intr = r.kernel.submit({ ep: 3, dir: 'in', length: 8 });
    await until(() => r.dev.pending.size === 1, 'the interrupt URB');
    assert.equal(r.dev.pendingOn(0x83).urb.type, 'interrupt');
    r.dev.complete(r.dev.pendingOn(0x83).id, { data: Buffer.alloc(8, 7) });
    assert.equal((await intr.done).kind, 'submitted');
    await shutdown(r);
  });

  test('bulk OUT, bulk IN and interrupt IN get their transfer type from the descriptors', async () => {
    const r = await rig();
    const out = r.kernel.submit({ ep: 1, dir: 'out', data: Buffer.from('abc') });
    const bulkIn = r.kernel.submit({ ep: 1, dir: 'in', length: 512 });
    const intr = r.kernel.submit({ ep: 2, dir: 'in', length: 8 });
    await until(() => r.dev.pending.size === 3, '3 URBs on the device');
    const [o, i, n] = [r.dev.pendingOn(0x01), r.dev.pendingOn(0x81), r.dev.pendingOn(0x82)];
    assert.deepEqual([o.urb.type, o.urb.data, i.urb.type, i.urb.length, n.urb.type, n.urb.length], ['bulk', Buffer.from('abc'), 'bulk', 512, 'interrupt', 8]);
    r.dev.complete(o.id, { actual: 3 });
    r.dev.complete(i.id, { data: Buffer.from('xyz') });
    r.dev.complete(n.id, { data: Buffer.from([1, 2, 3, 4, 5, 6, 7, 8]) });
    const [ro, ri, rn] = await Promise.all([out.done, bulkIn.done, intr.done]);
    assert.ok(ro.kind === 'submitted' && ri.kind === 'submitted' && rn.kind === 'submitted');
    assert.deepEqual([ro.ret.actual_length, ro.ret.data.length], [3, 0]);
    assert.deepEqual([ri.ret.actual_length, ri.ret.data.toString()], [3, 'xyz']);
    assert.deepEqual(rn.ret.data, Buffer.from([1, 2, 3, 4, 5, 6, 7, 8]));
    assert.deepEqual([r.bridge.stats.bytesOut, r.bridge.stats.bytesIn], [3, 11]);
    await shutdown(r);
  });

  test('32 URBs in flight complete out of order, each answered with its own seqnum and data', async () => {
    const r = await rig();
    const urbs = Array.from({ length: 32 }, (_, i) => r.kernel.submit({ ep: 1, dir: 'in', length: 64 + i }));
    await until(() => r.dev.pending.size === 32, '32 URBs on the device');
    const started = [...r.dev.pending.values()];
    for (const s of started.reverse()) r.dev.complete(s.id, { data: Buffer.alloc(s.urb.length!, s.urb.length! & 0xff) });
    const answers = await Promise.all(urbs.map((u) => u.done));
    answers.forEach((a, i) => {
      assert.ok(a.kind === 'submitted');
      assert.equal(a.ret.seqnum, urbs[i].seqnum);
      assert.deepEqual(a.ret.data, Buffer.alloc(64 + i, 64 + i));
    });
    // written in one go: the 32 replies were coalesced
    assert.equal(r.bridge.stats.completed, 32);
    await shutdown(r);
  });

  test('unlink of a pending URB: the device cancels it, RET_UNLINK(-ECONNRESET), never a RET_SUBMIT', async () => {
    const r = await rig();
    const urb = r.kernel.submit({ ep: 1, dir: 'in', length: 512 });
    await until(() => r.dev.pending.size === 1, 'the URB on the device');
    const id = r.dev.pendingOn(0x81).id;
    const unlink = r.kernel.unlink(urb.seqnum);
    const ret = await unlink.done;
    assert.deepEqual(r.dev.cancels, [id]);
    assert.equal(ret.seqnum, unlink.seqnum);
    assert.equal(ret.status, -104);
    assert.deepEqual(await urb.done, { kind: 'unlinked', status: -104 });
    await new Promise((res) => setTimeout(res, 20));
    assert.equal(r.kernel.replies.filter((m) => m.kind === 'retSubmit').length, 0);
    assert.equal(r.bridge.stats.unlinked, 1);
    await shutdown(r);
  });

  test('unlink that loses the race: RET_SUBMIT with the data first, then RET_UNLINK(0)', async () => {
    const r = await rig();
    r.dev.autoCancel = false;
    const urb = r.kernel.submit({ ep: 1, dir: 'in', length: 512 });
    await until(() => r.dev.pending.size === 1, 'the URB on the device');
    const unlink = r.kernel.unlink(urb.seqnum);
    await until(() => r.dev.cancels.length >= 1, 'the cancel');
    r.dev.complete(r.dev.pendingOn(0x81).id, { data: Buffer.from('late data') });
    const answer = await urb.done;
    assert.ok(answer.kind === 'submitted');
    assert.equal(answer.ret.data.toString(), 'late data');
    assert.equal((await unlink.done).status, 0);
    assert.deepEqual(r.kernel.replies.map((m) => m.kind), ['retSubmit', 'retUnlink']);
    await shutdown(r);
  });

  test('unlink that wins after some bytes moved: RET_SUBMIT(-ECONNRESET) with those bytes, then RET_UNLINK(0)', async () => {
    const r = await rig();
    r.dev.autoCancel = false;
    const urb = r.kernel.submit({ ep: 1, dir: 'in', length: 4096 });
    await until(() => r.dev.pending.size === 1, 'the URB on the device');
    const unlink = r.kernel.unlink(urb.seqnum);
    await until(() => r.dev.cancels.length >= 1, 'the cancel');
    // the bench cancelled for real: the transfer ends as cancelled, with the packet it had received
    r.dev.complete(r.dev.pendingOn(0x81).id, { status: UrbStatus.ECONNRESET, data: Buffer.alloc(512, 7) });
    const answer = await urb.done;
    assert.ok(answer.kind === 'submitted');
    assert.deepEqual([answer.ret.status, answer.ret.actual_length, answer.ret.data], [-104, 512, Buffer.alloc(512, 7)]);
    assert.equal((await unlink.done).status, 0);
    assert.deepEqual(r.kernel.replies.map((m) => m.kind), ['retSubmit', 'retUnlink']);
    await shutdown(r);
  });

  test('URB_ZERO_PACKET travels to the bench with the URB; flags the bridge applies itself do not', async () => {
    const r = await rig();
    const out = r.kernel.submit({ ep: 1, dir: 'out', data: Buffer.alloc(512), flags: USBIP_URB_ZERO_PACKET | USBIP_URB_SHORT_NOT_OK });
    const bulkIn = r.kernel.submit({ ep: 1, dir: 'in', length: 512, flags: USBIP_URB_SHORT_NOT_OK });
    await until(() => r.dev.pending.size === 2, 'both URBs');
    assert.deepEqual([r.dev.pendingOn(0x01).urb.flags, r.dev.pendingOn(0x81).urb.flags], [USBIP_URB_ZERO_PACKET, undefined]);
    r.dev.complete(r.dev.pendingOn(0x01).id, { actual: 512 });
    r.dev.complete(r.dev.pendingOn(0x81).id, { data: Buffer.alloc(512) });
    await Promise.all([out.done, bulkIn.done]);
    await shutdown(r);
  });

  test('its state: running, offline while the bench is away, running again, closing, closed', async () => {
    const r = await rig();
    assert.equal(r.bridge.state, 'running');
    r.dev.suspend();
    assert.equal(r.bridge.state, 'offline');
    r.dev.resume();
    assert.equal(r.bridge.state, 'running');
    r.kernel.submit({ ep: 1, dir: 'in', length: 512 });
    await until(() => r.dev.pending.size === 1, 'a URB on the device');
    const closing = r.bridge.close('test over'); // closing until the bench answers that URB's cancel
    assert.equal(r.bridge.state, 'closing');
    await closing;
    assert.equal(r.bridge.state, 'closed');
    assertClean(r);
  });

  test('an unlink sends one cancel; the URB\'s completion answers it whenever it comes', async () => {
    const r = await rig();
    r.dev.autoCancel = false;
    const urb = r.kernel.submit({ ep: 1, dir: 'in', length: 512 });
    await until(() => r.dev.pending.size === 1, 'the URB on the device');
    const id = r.dev.pendingOn(0x81).id;
    const unlink = r.kernel.unlink(urb.seqnum);
    await until(() => r.dev.cancels.length >= 1, 'the cancel');
    await new Promise((res) => setTimeout(res, 300));
    assert.deepEqual(r.dev.cancels, [id], 'one cancel, not repeated');
    r.dev.complete(id, { status: UrbStatus.ECONNRESET });
    assert.equal((await unlink.done).status, -104);
    await shutdown(r);
  });

  test('unlink after completion, and of a seqnum never seen: RET_UNLINK(0), nothing cancelled', async () => {
    const r = await rig();
    const urb = r.kernel.submit({ ep: 1, dir: 'out', data: Buffer.from('x') });
    await until(() => r.dev.pending.size === 1, 'the URB');
    r.dev.complete(r.dev.pendingOn(0x01).id, { actual: 1 });
    assert.equal((await urb.done).kind, 'submitted');
    assert.equal((await r.kernel.unlink(urb.seqnum).done).status, 0);
    assert.equal((await r.kernel.unlink(0xdeadbeef).done).status, 0);
    assert.deepEqual(r.dev.cancels, []);
    await shutdown(r);
  });

  test('actual_length is clamped to transfer_buffer_length; URB_SHORT_NOT_OK turns a short read into -EREMOTEIO', async () => {
    const r = await rig();
    const big = r.kernel.submit({ ep: 1, dir: 'in', length: 64 });
    await until(() => r.dev.pending.size === 1, 'the URB');
    r.dev.complete(r.dev.pendingOn(0x81).id, { data: Buffer.alloc(100, 0xab) });
    const a = await big.done;
    assert.ok(a.kind === 'submitted');
    assert.deepEqual([a.ret.status, a.ret.actual_length, a.ret.data.length], [0, 64, 64]);

    const short = r.kernel.submit({ ep: 1, dir: 'in', length: 64, flags: USBIP_URB_SHORT_NOT_OK });
    await until(() => r.dev.pending.size === 1, 'the URB');
    r.dev.complete(r.dev.pendingOn(0x81).id, { data: Buffer.alloc(10, 1) });
    const b = await short.done;
    assert.ok(b.kind === 'submitted');
    assert.deepEqual([b.ret.status, b.ret.actual_length], [UrbStatus.EREMOTEIO, 10]);

    const outOver = r.kernel.submit({ ep: 1, dir: 'out', data: Buffer.alloc(4) });
    await until(() => r.dev.pending.size === 1, 'the URB');
    r.dev.complete(r.dev.pendingOn(0x01).id, { actual: 4096 });
    const c = await outOver.done;
    assert.ok(c.kind === 'submitted');
    assert.equal(c.ret.actual_length, 4);
    await shutdown(r);
  });

  test('refused URBs get a RET_SUBMIT error and never reach the device: unknown endpoint, control direction mismatch', async () => {
    const r = await rig();
    const unknown = await r.kernel.run({ ep: 5, dir: 'in', length: 8 });
    assert.equal(unknown.status, UrbStatus.EPIPE);
    // GET_DESCRIPTOR (IN, wLength 18) sent as an OUT URB with 18 bytes
    const mismatch = await r.kernel.run({ ep: 0, dir: 'out', data: Buffer.alloc(18), setup: GET_DESCRIPTOR(1, 0, 18) });
    assert.equal(mismatch.status, UrbStatus.EINVAL);
    assert.equal(r.dev.started.length, 0);
    assert.ok(r.log.lines.some((l) => l.startsWith('warn') && l.includes('EP 0x85 IN, which is not in the device')));
    assert.ok(r.log.lines.some((l) => l.includes('control request (bmRequestType 0x80 bRequest 6 wLength 18) is IN but the URB is OUT')));
    await shutdown(r);
  });

  test('an isochronous URB is refused with -EINVAL (number_of_packets 0) and the stream stays in step', async () => {
    const r = await rig({ dev: new FakeDevice(isoConfig()) });
    await r.kernel.runControl({ bmRequestType: 0x01, bRequest: 11, wValue: 1, wIndex: 1, wLength: 0 });
    const iso = await r.kernel.run({ ep: 3, dir: 'in', length: 192 * 4, isoPackets: 4 });
    assert.deepEqual([iso.status, iso.actual_length, iso.number_of_packets, iso.iso_packet_descriptor.length], [UrbStatus.EINVAL, 0, 0, 0]);
    // an ISO OUT URB carries data and descriptors: the decoder must skip both
    const isoOut = await r.kernel.run({ ep: 3, dir: 'out', data: Buffer.alloc(96, 1), isoPackets: 2 });
    assert.equal(isoOut.status, UrbStatus.EINVAL);
    const after = r.kernel.submit({ ep: 1, dir: 'in', length: 4 });
    await until(() => r.dev.pending.size === 1, 'the bulk URB after the ISO ones');
    r.dev.complete(r.dev.pendingOn(0x81).id, { data: Buffer.from('ok!!') });
    assert.equal((await after.done).kind, 'submitted');
    assert.equal(r.dev.started.filter((s) => s.urb.ep === 0x83 || s.urb.ep === 0x03).length, 0);
    assert.equal(r.log.lines.filter((l) => l.startsWith('warn') && l.includes('isochronous URB on EP 0x83 IN refused: Remote USB does not carry isochronous transfers')).length, 1);
    assert.equal(r.bridge.stats.refused, 2);
    // an ISO-looking URB on an endpoint without a descriptor cannot be framed: the bridge says so and stops
    r.kernel.submit({ ep: 6, dir: 'in', length: 64, isoPackets: 2 });
    const c = await r.closed;
    assert.equal(c.message, "bad USB/IP data from the kernel: USBIP_CMD_SUBMIT seqnum 5 on EP 0x86 IN, which is not in the device's descriptors, has number_of_packets 2");
    await shutdown(r);
  });

  describe('malformed input from the kernel closes the bridge with an error naming the problem', () => {
    async function expectProtocolError(send: (r: Rig) => void, message: string): Promise<void> {
      const r = await rig();
      send(r);
      const c = await r.closed;
      assert.equal(c.reason, 'protocol-error');
      assert.equal(c.message, `bad USB/IP data from the kernel: ${message}`);
      await r.kernel.ended; // the kernel sees the connection end (and would free the port)
      assert.ok(r.log.lines.some((l) => l.startsWith('error') && l.includes(message)));
    }

    test('unknown command', () => {
      const bad = encodeCmdSubmit({ seqnum: 1, devid: 0x90063, direction: USBIP_DIR_IN, ep: 1, transfer_flags: USBIP_URB_DIR_IN, transfer_buffer_length: 8 });
      bad.writeUInt32BE(7, 0);
      return expectProtocolError((r) => r.kernel.write(bad), 'unknown USB/IP command 0x00000007');
    });
    test('a reply command', () => {
      const bad = encodeCmdSubmit({ seqnum: 1, devid: 0x90063, direction: USBIP_DIR_IN, ep: 1, transfer_flags: 0, transfer_buffer_length: 8 });
      bad.writeUInt32BE(3, 0);
      return expectProtocolError((r) => r.kernel.write(bad), 'unexpected USB/IP command 0x00000003 (USBIP_RET_SUBMIT)');
    });
    test('wrong devid', () =>
      expectProtocolError((r) => void r.kernel.submit({ ep: 1, dir: 'in', length: 8 }, { devid: 0x10002 }), "USBIP_CMD_SUBMIT seqnum 1 has devid 0x00010002, but this port's device is 0x00090063"));
    test('duplicate seqnum', () =>
      expectProtocolError((r) => {
        r.kernel.submit({ ep: 1, dir: 'in', length: 8 }, { seqnum: 5 });
        r.kernel.submit({ ep: 1, dir: 'in', length: 8 }, { seqnum: 5 });
      }, 'duplicate seqnum 5: a USBIP_CMD_SUBMIT with it is still pending'));
    test('a length over the limit', () => {
      const bad = encodeCmdSubmit({ seqnum: 1, devid: 0x90063, direction: USBIP_DIR_IN, ep: 1, transfer_flags: 0, transfer_buffer_length: 8 });
      bad.writeUInt32BE(0x7fffffff, 0x18);
      return expectProtocolError((r) => r.kernel.write(bad), 'transfer_buffer_length 2147483647 exceeds limit 4194304');
    });
    test('a stream cut inside a header', () =>
      expectProtocolError((r) => {
        r.kernel.write(Buffer.alloc(20));
        r.kernel.close();
      }, 'stream ended inside a 48-byte header: 20 bytes arrived'));
  });

  test('the kernel closing the socket mid-transfer cancels everything on the device and leaves nothing pending', async () => {
    const r = await rig();
    for (let i = 0; i < 4; i++) r.kernel.submit({ ep: 1, dir: 'in', length: 512 });
    r.kernel.submit({ ep: 1, dir: 'out', data: Buffer.alloc(100) });
    await until(() => r.dev.pending.size === 5, '5 URBs on the device');
    const ids = [...r.dev.pending.keys()];
    r.kernelEnd.destroy();
    const c = await r.closed;
    assert.equal(c.reason, 'socket-closed');
    assert.deepEqual(r.dev.cancels.sort(), ids.sort());
    assert.equal(r.dev.pending.size, 0);
    assert.equal(r.bridge.inFlight, 0);
  });

  test('a local close() cancels pending URBs and ends the connection', async () => {
    const r = await rig();
    r.kernel.submit({ ep: 2, dir: 'in', length: 8 });
    await until(() => r.dev.pending.size === 1, 'the URB');
    const info = await r.bridge.close('detached by the user');
    assert.deepEqual(info, { reason: 'local', message: 'detached by the user', error: undefined });
    await r.kernel.ended;
    assert.equal(r.dev.pending.size, 0);
    assert.equal(await r.closed, info);
  });

  test('the device unplugged from the bench: URBs end with -ENODEV, the bridge closes (device-lost)', async () => {
    const r = await rig();
    const urb = r.kernel.submit({ ep: 1, dir: 'in', length: 8 });
    await until(() => r.dev.pending.size === 1, 'the URB');
    r.dev.markLost('unplugged from the bench');
    const c = await r.closed;
    assert.equal(c.reason, 'device-lost');
    assert.equal(c.message, 'Fake Board (fake-1) is no longer available: unplugged from the bench');
    await r.kernel.ended;
    // the kernel gives the URB back itself when the connection closes; no RET_SUBMIT was owed
    assert.equal(r.kernel.pending, 1);
    void urb;
  });

  test('flow control: at maxInFlight the bridge stops reading commands until a URB completes', async () => {
    const r = await rig({ bridge: { maxInFlight: 4 } });
    const urbs = Array.from({ length: 10 }, () => r.kernel.submit({ ep: 1, dir: 'in', length: 16 }));
    await until(() => r.dev.pending.size === 4, '4 URBs on the device');
    await new Promise((res) => setTimeout(res, 20));
    assert.equal(r.dev.started.length, 4);
    while (r.dev.started.length < 10 || r.dev.pending.size > 0) {
      await until(() => r.dev.pending.size > 0, 'a pending URB');
      const s = [...r.dev.pending.values()][0];
      r.dev.complete(s.id, { data: Buffer.from([s.id]) });
      await new Promise((res) => setImmediate(res));
      assert.ok(r.dev.pending.size <= 4);
    }
    assert.equal((await Promise.all(urbs.map((u) => u.done))).length, 10);
    await shutdown(r);
  });

  test('write back-pressure: while the kernel does not read, the bridge stops taking commands', async () => {
    const big = Buffer.alloc(64 * 1024, 0x5a);
    const r = await rig({ dev: new FakeDevice(PLAIN_CONFIG, (u) => (u.ep === 0x81 ? { status: 0, actual: big.length, data: big } : undefined)), highWaterMark: 16 * 1024 });
    r.kernelEnd.pause(); // the kernel stops reading replies
    const urbs: ReturnType<FakeVhci['submit']>[] = [];
    for (let i = 0; i < 20; i++) {
      urbs.push(r.kernel.submit({ ep: 1, dir: 'in', length: big.length }));
      await new Promise((res) => setImmediate(res));
    }
    await new Promise((res) => setTimeout(res, 30));
    const startedWhileBlocked = r.dev.started.length;
    assert.ok(startedWhileBlocked < 5, `${startedWhileBlocked} URBs started while the kernel was not reading`);
    r.kernelEnd.resume();
    const answers = await Promise.all(urbs.map((u) => u.done));
    assert.ok(answers.every((a) => a.kind === 'submitted' && a.ret.data.equals(big)));
    assert.equal(r.dev.started.length, 20);
    await shutdown(r);
  });

  describe('bench connection lost (grace period)', () => {
    test('IN bulk URBs are held and rerun after the reconnect, OUT/control fail with -EPROTO, new URBs wait, unlink of a held URB is answered at once', async () => {
      const r = await rig();
      const offline = once(r.bridge, 'offline');
      const inUrb = r.kernel.submit({ ep: 1, dir: 'in', length: 64 });
      const outUrb = r.kernel.submit({ ep: 1, dir: 'out', data: Buffer.from('maybe written') });
      const ctrl = r.kernel.control({ bmRequestType: 0xc0, bRequest: 2, wValue: 0, wIndex: 0, wLength: 8 });
      await until(() => r.dev.pending.size === 3, '3 URBs on the device');
      r.dev.suspend();
      await offline;
      const [o, c] = await Promise.all([outUrb.done, ctrl.done]);
      assert.ok(o.kind === 'submitted' && c.kind === 'submitted');
      assert.deepEqual([o.ret.status, c.ret.status], [UrbStatus.EPROTO, UrbStatus.EPROTO]);
      assert.ok(r.bridge.isOffline);
      // new URBs while offline: held, not started
      const startedBefore = r.dev.started.length;
      const whileOffline = r.kernel.submit({ ep: 2, dir: 'in', length: 8 });
      const toUnlink = r.kernel.submit({ ep: 1, dir: 'in', length: 8 });
      const unlinked = await r.kernel.unlink(toUnlink.seqnum).done;
      assert.equal(unlinked.status, -104);
      assert.deepEqual(await toUnlink.done, { kind: 'unlinked', status: -104 });
      assert.equal(r.dev.started.length, startedBefore);
      assert.equal(r.bridge.inFlight, 2);
      // reconnect: the held IN bulk and the new interrupt URB run now, in order
      const online = once(r.bridge, 'online');
      r.dev.resume();
      await online;
      await until(() => r.dev.pending.size === 2, 'the held URBs on the device');
      assert.deepEqual([...r.dev.pending.values()].map((s) => s.urb.ep), [0x81, 0x82]);
      for (const s of [...r.dev.pending.values()]) r.dev.complete(s.id, { data: Buffer.from('after') });
      const [a, b] = await Promise.all([inUrb.done, whileOffline.done]);
      assert.ok(a.kind === 'submitted' && b.kind === 'submitted');
      assert.equal(a.ret.data.toString(), 'after');
      await shutdown(r);
    });

    test('after the grace period the bridge closes (bench-offline)', async () => {
      const r = await rig({ bridge: { offlineGraceMs: 50 } });
      r.kernel.submit({ ep: 1, dir: 'in', length: 64 });
      await until(() => r.dev.pending.size === 1, 'the URB');
      r.dev.suspend();
      const c = await r.closed;
      assert.equal(c.reason, 'bench-offline');
      assert.match(c.message, /unreachable/);
      await r.kernel.ended;
      assert.equal(r.bridge.inFlight, 0);
    });
  });
});

// ---------------------------------------------------------------------------------------------------
// Socket pair and attach flow (fake helper, fake pkexec, fake sysfs)
// ---------------------------------------------------------------------------------------------------

const tmpdirs: string[] = [];
after(() => {
  for (const d of tmpdirs) rmSync(d, { recursive: true, force: true });
});
function tmp(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), `rusb-${prefix}-`));
  tmpdirs.push(d);
  return d;
}

describe('socket pair', () => {
  test('is a connected unix stream pair; listener, path and private directory are gone', async () => {
    const parent = tmp('pair');
    const { ours, theirs } = await createSocketPair(parent);
    assert.deepEqual(readdirSync(parent), []);
    ours.resume();
    theirs.resume();
    const a = once(ours, 'data');
    theirs.write('to ours');
    assert.equal(String((await a)[0]), 'to ours');
    const b = once(theirs, 'data');
    ours.write('to theirs');
    assert.equal(String((await b)[0]), 'to theirs');
    ours.destroy();
    await once(theirs, 'close');
  });

  test('fails cleanly when the directory cannot be made', async () => {
    await assert.rejects(createSocketPair('/nonexistent-dir-for-test'), /ENOENT/);
  });
});

/** The status file vhci_hcd prints (8 hs + 8 ss ports); `used` maps port → devid. */
function statusText(used: Record<number, number>): string {
  let s = 'hub port sta spd dev      sockfd local_busid\n';
  for (let port = 0; port < 16; port++) {
    const hub = port < 8 ? 'hs' : 'ss';
    const p4 = String(port).padStart(4, '0');
    const d = used[port];
    s += d === undefined ? `${hub}  ${p4} 004 000 00000000 000000 0-0\n` : `${hub}  ${p4} 006 003 ${d.toString(16).padStart(8, '0')} 000003 3-1\n`;
  }
  return s;
}

// The fake helper: records its call and whether fd 0 is a connected AF_UNIX SOCK_STREAM socket (read
// from /proc as the real helper does), acts on the fake status file like the kernel would, and exits
// with the code the test chose for this verb and call. With `kernel`, a grandchild keeps the socket
// (as vhci_hcd keeps it) and plays the kernel's side: 'descriptor' sends a GET_DESCRIPTOR and records
// the reply, 'hold' waits; both mark the port free when the connection closes, as vhci does.
const FAKE_HELPER = `
const fs = require('fs'), path = require('path'), { spawn } = require('child_process');
const dir = __dirname;
const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
const [verb, ...args] = process.argv.slice(2);
let link = null;
try { link = fs.readlinkSync('/proc/self/fd/0'); } catch {}
let sock = null;
const m = /^socket:\\[(\\d+)\\]$/.exec(link || '');
if (m) for (const l of fs.readFileSync('/proc/net/unix', 'latin1').split('\\n')) {
  const f = l.trim().split(/\\s+/);
  if (f[6] === m[1]) sock = { flags: parseInt(f[3], 16), type: parseInt(f[4], 16), state: parseInt(f[5], 16) };
}
const connectedStream = !!sock && sock.type === 1 && sock.state === 3 && (sock.flags & 0x10000) === 0;
const callsFile = path.join(dir, 'calls.jsonl');
const previous = fs.existsSync(callsFile) ? fs.readFileSync(callsFile, 'utf8').split('\\n').filter(Boolean).map((l) => JSON.parse(l)) : [];
fs.appendFileSync(callsFile, JSON.stringify({ verb, args, stdin: link, connectedStream, pkexec: process.env.FAKE_PKEXEC === '1' }) + '\\n');
const codes = cfg[verb] || [0];
const code = codes[Math.min(previous.filter((c) => c.verb === verb).length, codes.length - 1)];
if (code === 'sleep') setTimeout(() => {}, 60000);
else {
  if (code === 0 && verb === 'attach') {
    const used = JSON.parse(fs.readFileSync(cfg.usedFile, 'utf8'));
    used[args[0]] = Number(args[1]);
    fs.writeFileSync(cfg.usedFile, JSON.stringify(used));
    fs.writeFileSync(cfg.statusFile, cfg.render(used));
    if (cfg.kernel) spawn(process.execPath, [path.join(dir, 'fake-kernel.js'), cfg.kernel, args[0], args[1]], { stdio: [0, 'ignore', 'ignore'], detached: true }).unref();
    process.stdout.write('attached port ' + args[0] + ' (fake)\\n');
  }
  if (code === 0 && verb === 'detach') {
    const used = JSON.parse(fs.readFileSync(cfg.usedFile, 'utf8'));
    delete used[args[0]];
    fs.writeFileSync(cfg.usedFile, JSON.stringify(used));
    fs.writeFileSync(cfg.statusFile, cfg.render(used));
  }
  if (code !== 0) process.stderr.write('remote-usb-helper: fake failure ' + code + ' (fake hint)\\n');
  process.exit(code);
}
`;

const FAKE_KERNEL = `
const fs = require('fs'), path = require('path'), net = require('net');
const dir = __dirname;
const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
const [mode, port, devid] = process.argv.slice(2);
const s = new net.Socket({ fd: 0, readable: true, writable: true });
const free = () => {
  const used = JSON.parse(fs.readFileSync(cfg.usedFile, 'utf8'));
  delete used[port];
  fs.writeFileSync(cfg.usedFile, JSON.stringify(used));
  fs.writeFileSync(cfg.statusFile, cfg.render(used));
  process.exit(0);
};
s.on('close', free);
s.on('error', () => {});
let buf = Buffer.alloc(0);
s.on('data', (d) => {
  buf = Buffer.concat([buf, d]);
  if (buf.length >= 48 + 18) {
    fs.writeFileSync(path.join(dir, 'kernel-result.json'), JSON.stringify({
      command: buf.readUInt32BE(0), seqnum: buf.readUInt32BE(4), status: buf.readInt32BE(20),
      actual: buf.readUInt32BE(24), data: buf.subarray(48, 66).toString('hex') }));
    s.end();
  }
});
if (mode === 'descriptor') {
  const h = Buffer.alloc(48);
  h.writeUInt32BE(1, 0); h.writeUInt32BE(7, 4); h.writeUInt32BE(Number(devid), 8); h.writeUInt32BE(1, 12);
  h.writeUInt32BE(0, 16); h.writeUInt32BE(0x200, 20); h.writeUInt32BE(18, 24);
  Buffer.from([0x80, 6, 0, 1, 0, 0, 18, 0]).copy(h, 0x28);
  s.write(h);
}
`;

// pkexec stand-in: exits with the code the test chose, or runs the program with our fds (like pkexec).
const FAKE_PKEXEC = `
const fs = require('fs'), path = require('path'), { spawnSync } = require('child_process');
const cfg = JSON.parse(fs.readFileSync(path.join(__dirname, 'config.json'), 'utf8'));
if (cfg.pkexec !== undefined) process.exit(cfg.pkexec);
const r = spawnSync(process.argv[2], process.argv.slice(3), { stdio: 'inherit', env: { ...process.env, FAKE_PKEXEC: '1' } });
process.exit(r.status === null ? 1 : r.status);
`;

interface HelperRig {
  dir: string;
  /** Parent of the private socket directories: must be empty again after every attach. */
  sockets: string;
  sysfs: string;
  helperPath: string;
  pkexecPath: string;
  calls(): { verb: string; args: string[]; stdin: string | null; connectedStream: boolean; pkexec: boolean }[];
  configure(c: Record<string, unknown>): void;
}

function helperRig(used: Record<number, number> = { 0: 0x10002 }): HelperRig {
  const dir = tmp('helper');
  const sysfs = join(dir, 'sys');
  mkdirSync(join(sysfs, 'vhci_hcd.0'), { recursive: true });
  mkdirSync(join(dir, 'sockets'));
  const statusFile = join(sysfs, 'vhci_hcd.0', 'status');
  const usedFile = join(dir, 'used.json');
  writeFileSync(usedFile, JSON.stringify(used));
  writeFileSync(statusFile, statusText(used));
  const script = (name: string, body: string): string => {
    const p = join(dir, name);
    writeFileSync(p, `#!${process.execPath}\n'use strict';\n${body}`);
    chmodSync(p, 0o755);
    return p;
  };
  // cfg.render must exist inside the scripts: ship statusText's source with the config
  const renderSrc = `(${statusText.toString()})`;
  const base = { statusFile, usedFile };
  const configure = (c: Record<string, unknown>): void => writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...base, ...c }));
  const prelude = `const __render = ${renderSrc};\n`;
  const withRender = (body: string) => prelude + body.replace(/cfg\.render\(/g, '__render(');
  const helperPath = script('remote-usb-helper', withRender(FAKE_HELPER));
  script('fake-kernel.js', withRender(FAKE_KERNEL));
  const pkexecPath = script('pkexec', FAKE_PKEXEC);
  configure({});
  return {
    dir, sysfs, helperPath, pkexecPath, configure, sockets: join(dir, 'sockets'),
    calls: () => (existsSync(join(dir, 'calls.jsonl')) ? readFileSync(join(dir, 'calls.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)) : []),
  };
}

describe('attach flow (fake helper)', () => {
  const direct = (h: HelperRig, extra: Record<string, unknown> = {}) => ({ helperPath: h.helperPath, runAsRoot: 'direct' as const, sysfsRoot: h.sysfs, socketDir: h.sockets, detachWaitMs: 1500, ...extra });

  test('attach: the helper gets a connected unix stream socket as stdin, the bridge answers the kernel on the other end', async () => {
    const h = helperRig();
    h.configure({ attach: [0], kernel: 'descriptor' });
    const dev = new FakeDevice();
    const a = await attachDevice(dev, direct(h));
    assert.equal(a.port, 1); // port 0 is in use
    assert.equal(a.devid, 0x90063);
    assert.equal(a.speed, 3);
    const [call] = h.calls();
    assert.deepEqual(call.args, ['1', String(0x90063), '3']);
    assert.equal(call.connectedStream, true, `stdin was ${call.stdin}`);
    const closed = await a.closed; // the fake kernel ends the connection after one URB
    assert.equal(closed.reason, 'socket-closed');
    const result = JSON.parse(readFileSync(join(h.dir, 'kernel-result.json'), 'utf8'));
    assert.deepEqual(result, { command: 3, seqnum: 7, status: 0, actual: 18, data: DEVICE_DESCRIPTOR.toString('hex') });
    assert.deepEqual(h.calls().map((c) => c.verb), ['attach']); // the kernel freed the port; no detach needed
    assert.deepEqual(readdirSync(h.sockets), []); // the private socket directory is gone
  });

  test('detach closes our end; the kernel frees the port, no privileged detach needed', async () => {
    const h = helperRig();
    h.configure({ attach: [0], kernel: 'hold' });
    const a = await attachDevice(new FakeDevice(), direct(h));
    await a.detach();
    assert.equal((await a.closed).reason, 'local');
    assert.deepEqual(h.calls().map((c) => c.verb), ['attach']);
    assert.doesNotMatch(readFileSync(join(h.sysfs, 'vhci_hcd.0', 'status'), 'utf8'), /0001 006/);
  });

  test('if the port stays attached after the connection closed, `helper detach <port>` frees it', async () => {
    const h = helperRig();
    h.configure({ attach: [0], detach: [0] }); // no fake kernel: nobody frees the port
    const a = await attachDevice(new FakeDevice(), direct(h));
    const closed = await a.closed;
    assert.equal(closed.reason, 'socket-closed');
    assert.deepEqual(h.calls().map((c) => [c.verb, c.args[0]]), [['attach', '1'], ['detach', '1']]);
  });

  test('port busy: retried once on another port', async () => {
    const h = helperRig();
    h.configure({ attach: [5, 0], kernel: 'hold' });
    const a = await attachDevice(new FakeDevice(), direct(h));
    assert.equal(a.port, 2);
    assert.deepEqual(h.calls().map((c) => c.args[0]), ['1', '2']);
    await a.detach();
  });

  async function attachFails(h: HelperRig, options: Record<string, unknown>, check: Partial<AttachError>, dev = new FakeDevice()): Promise<AttachError> {
    let err: AttachError | undefined;
    await assert.rejects(attachDevice(dev, options), (e: Error) => {
      err = e as AttachError;
      return e instanceof AttachError;
    });
    for (const [k, v] of Object.entries(check)) assert.deepEqual(err![k as keyof AttachError], v, `${k}: ${err!.message}`);
    assert.deepEqual(readdirSync(h.sockets), [], 'socket dir left behind');
    return err!;
  }

  test('exit codes map to typed errors with a hint and an action', async () => {
    const cases: [number[], Partial<AttachError>][] = [
      [[5, 5], { code: 'port-busy', action: 'retry', exitCode: 5 }],
      [[4], { code: 'vhci-not-loaded', action: 'load-vhci' }],
      [[6], { code: 'not-root', action: 'install-helper' }],
      [[2], { code: 'helper-failed', action: 'install-helper', detail: 'remote-usb-helper: fake failure 2 (fake hint)' }],
      [[3], { code: 'helper-failed', action: 'show-logs' }],
      [[1], { code: 'helper-failed', action: 'show-logs' }],
      [[42], { code: 'helper-failed', message: 'remote-usb-helper attach failed with exit code 42: remote-usb-helper: fake failure 42 (fake hint).' }],
    ];
    for (const [codes, check] of cases) {
      const h = helperRig();
      h.configure({ attach: codes });
      const e = await attachFails(h, direct(h), check);
      assert.ok(e.hint.length > 10);
      assert.equal(h.calls().length, codes.length, `${check.code}: helper calls`);
    }
  });

  test('through pkexec: the socket survives pkexec; 126 is "cancelled", 127 "not authorised"', async () => {
    const h = helperRig();
    const viaPkexec = { ...direct(h), runAsRoot: 'pkexec' as const, pkexecPath: h.pkexecPath };
    h.configure({ attach: [0], kernel: 'hold' });
    const a = await attachDevice(new FakeDevice(), viaPkexec);
    const [call] = h.calls();
    assert.deepEqual([call.pkexec, call.connectedStream], [true, true]);
    await a.detach();
    h.configure({ pkexec: 126 });
    await attachFails(h, viaPkexec, { code: 'auth-cancelled', action: 'retry', exitCode: 126 });
    h.configure({ pkexec: 127 });
    const e = await attachFails(h, viaPkexec, { code: 'not-authorized', exitCode: 127 });
    assert.match(e.message, /not authorised to attach/);
    // in direct mode 126/127 are just unknown helper codes
    h.configure({ attach: [127] });
    await attachFails(h, direct(h), { code: 'helper-failed' });
  });

  test('refused before anything privileged runs: no helper, no pkexec, no vhci, no free port, isochronous, unknown speed', async () => {
    const h = helperRig();
    await attachFails(h, { ...direct(h), helperPath: join(h.dir, 'missing') }, { code: 'helper-missing', action: 'install-helper' });
    await attachFails(h, { ...direct(h), runAsRoot: 'pkexec', pkexecPath: join(h.dir, 'no-pkexec') }, { code: 'pkexec-missing' });
    await attachFails(h, { ...direct(h), sysfsRoot: join(h.dir, 'nothing') }, { code: 'vhci-not-loaded', action: 'load-vhci' });
    const full = helperRig(Object.fromEntries(Array.from({ length: 8 }, (_, i) => [i, 0x10002 + i])));
    await attachFails(full, direct(full), { code: 'no-free-port' });
    const iso = await attachFails(h, direct(h), { code: 'isochronous' }, new FakeDevice(isoConfig()));
    assert.equal(iso.message, 'Fake Board (fake-1) has isochronous endpoints (EP 0x83 IN in interface 1 alt 1, EP 0x03 OUT in interface 1 alt 1), which Remote USB cannot carry: audio and video streaming devices cannot be attached.');
    const unknownSpeed = new FakeDevice();
    unknownSpeed.info = { ...unknownSpeed.info, speed: 'unknown' };
    await attachFails(h, direct(h), { code: 'unsupported-speed' }, unknownSpeed);
    assert.equal(h.calls().length + full.calls().length, 0);
  });

  test('a helper that hangs is stopped after helperTimeoutMs', async () => {
    const h = helperRig();
    h.configure({ attach: ['sleep'] });
    await attachFails(h, direct(h, { helperTimeoutMs: 300 }), { code: 'helper-timeout' });
  });

  test('load and detach verbs', async () => {
    const h = helperRig({ 3: 0x90063 });
    h.configure({ load: [0], detach: [8] });
    await loadVhci(direct(h));
    await detachPort(3, direct(h)); // 8: nothing attached counts as detached
    h.configure({ load: [4], detach: [5] });
    await assert.rejects(loadVhci(direct(h)), (e: AttachError) => e.code === 'vhci-not-loaded');
    await assert.rejects(detachPort(3, direct(h)), (e: AttachError) => e.code === 'helper-failed' && /refused to detach vhci port 3/.test(e.message));
    assert.deepEqual(h.calls().map((c) => [c.verb, ...c.args]), [['load'], ['detach', '3'], ['load'], ['detach', '3']]);
    // 9: another user attached it (the helper lets a user detach only their own ports)
    h.configure({ detach: [9] });
    await assert.rejects(detachPort(3, direct(h)), (e: AttachError) => e.code === 'not-authorized' && e.exitCode === 9
      && /^vhci port 3 was attached by another user \(remote-usb-helper: fake failure 9/.test(e.message) && /Only the user who attached/.test(e.hint));
  });
});
