/**
 * A vendor-class high-speed board for data-path tests and benchmarks (like the kernel's gadget zero):
 *  - EP 0x01 OUT → EP 0x81 IN: loopback through a 1 MiB FIFO (OUT waits when the FIFO is full);
 *  - EP 0x02 OUT: sink (counts bytes); EP 0x82 IN: source (answers every read in full);
 *  - EP 0x83 IN: interrupt, an 8-byte report every millisecond (u32 counter, u32 sink count low bits);
 *  - vendor requests: 0x40/0x01 selects the source pattern (wValue 0 counter, 1 random, 2 firmware-like),
 *    0xC0/0x02 reads the sink byte count (u64 LE), 0xC0/0x03 reads the loopback FIFO level (u32 LE).
 */
import { NO_DATA, SetupPacket, UrbRequest, UrbResult, UrbStatus } from '../protocol/urb.js';
import type { BackendDevice } from './backend.js';
import { configurationDescriptor, DeviceDescriptorFields } from './descriptors.js';
import { firmwareLikeImage, seededBytes } from './patterns.js';
import { ByteFifo, SimBoard, SimBoardIdentity } from './sim-board.js';

export const LOOP_EP_OUT = 0x01;
export const LOOP_EP_IN = 0x81;
export const SINK_EP_OUT = 0x02;
export const SOURCE_EP_IN = 0x82;
export const REPORT_EP_IN = 0x83;
export const VENDOR_SET_PATTERN = 0x01;
export const VENDOR_GET_SINK_COUNT = 0x02;
export const VENDOR_GET_FIFO_LEVEL = 0x03;

const PATTERN_BYTES = 4 * 1024 * 1024;
let patterns: Buffer[] | undefined;
function sourcePatterns(): Buffer[] {
  if (!patterns) {
    const counter = Buffer.allocUnsafe(PATTERN_BYTES);
    for (let i = 0; i < PATTERN_BYTES; i++) counter[i] = i & 0xff;
    patterns = [counter, seededBytes(PATTERN_BYTES, 99), firmwareLikeImage(PATTERN_BYTES)];
  }
  return patterns;
}

export class SimLoopbackBoard extends SimBoard {
  protected readonly deviceFields: DeviceDescriptorFields = {
    bcdUSB: 0x0200, deviceClass: 0, deviceSubClass: 0, deviceProtocol: 0, maxPacketSize0: 64,
    vendorId: 0x1209, productId: 0x0002, bcdDevice: 0x0100,
    iManufacturer: 1, iProduct: 2, iSerialNumber: 3, numConfigurations: 1,
  };
  protected readonly configDescriptor = configurationDescriptor(1, [
    {
      number: 0, class: 0xff, subclass: 0, protocol: 0,
      endpoints: [
        { address: LOOP_EP_OUT, type: 'bulk', maxPacketSize: 512, interval: 0 },
        { address: LOOP_EP_IN, type: 'bulk', maxPacketSize: 512, interval: 0 },
        { address: SINK_EP_OUT, type: 'bulk', maxPacketSize: 512, interval: 0 },
        { address: SOURCE_EP_IN, type: 'bulk', maxPacketSize: 512, interval: 0 },
        { address: REPORT_EP_IN, type: 'interrupt', maxPacketSize: 8, interval: 4 },
      ],
    },
  ]);
  protected readonly interfaceSummary: BackendDevice['interfaces'] = [{ number: 0, class: 0xff, subclass: 0, protocol: 0 }];

  private readonly fifo = new ByteFifo(1024 * 1024);
  sinkCount = 0;
  private pattern = 0;
  private sourceOffset = 0;
  private reports = 0;
  private lastReportAt = 0;

  constructor(identity: SimBoardIdentity) {
    super(identity);
  }

  protected override classRequest(s: SetupPacket): Uint8Array | 'ok' | undefined {
    if (s.bmRequestType === 0x40 && s.bRequest === VENDOR_SET_PATTERN && s.wValue <= 2) {
      this.pattern = s.wValue;
      this.sourceOffset = 0;
      return 'ok';
    }
    if (s.bmRequestType === 0xc0 && s.bRequest === VENDOR_GET_SINK_COUNT) {
      const b = Buffer.alloc(8);
      b.writeBigUInt64LE(BigInt(this.sinkCount));
      return b;
    }
    if (s.bmRequestType === 0xc0 && s.bRequest === VENDOR_GET_FIFO_LEVEL) {
      const b = Buffer.alloc(4);
      b.writeUInt32LE(this.fifo.size);
      return b;
    }
    return undefined;
  }

  protected endpoint(r: UrbRequest, signal: AbortSignal): Promise<UrbResult> {
    switch (r.ep) {
      case LOOP_EP_OUT: {
        const data = r.data ?? new Uint8Array(0);
        return this.waitFor(r, signal, () => {
          if (this.fifo.free < data.length && this.fifo.size > 0) return undefined;
          this.fifo.push(data);
          this.wake();
          return { status: UrbStatus.OK, actual: data.length, data: NO_DATA };
        });
      }
      case LOOP_EP_IN:
        return this.waitFor(r, signal, () => {
          if (this.fifo.size === 0) return undefined;
          const out = this.fifo.take(r.length ?? 0);
          this.wake();
          return { status: UrbStatus.OK, data: out, actual: out.length };
        });
      case SINK_EP_OUT:
        this.sinkCount += r.data?.length ?? 0;
        return Promise.resolve({ status: UrbStatus.OK, actual: r.data?.length ?? 0, data: NO_DATA });
      case SOURCE_EP_IN:
        return Promise.resolve(this.source(r.length ?? 0));
      case REPORT_EP_IN:
        return this.report(r, signal);
      default:
        return Promise.resolve({ status: UrbStatus.EPIPE, actual: 0, data: NO_DATA });
    }
  }

  private source(length: number): UrbResult {
    const src = sourcePatterns()[this.pattern];
    const out = Buffer.allocUnsafe(length);
    let filled = 0;
    while (filled < length) {
      if (this.sourceOffset >= src.length) this.sourceOffset = 0;
      const n = src.copy(out, filled, this.sourceOffset, Math.min(src.length, this.sourceOffset + length - filled));
      filled += n;
      this.sourceOffset += n;
    }
    return { status: UrbStatus.OK, data: out, actual: length };
  }

  /** One report per millisecond, like an interrupt endpoint polled at bInterval 4 (8 microframes). */
  private async report(r: UrbRequest, signal: AbortSignal): Promise<UrbResult> {
    const wait = this.lastReportAt + 1 - performance.now();
    if (wait > 0) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, wait);
        signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
      });
    }
    if (signal.aborted) return { status: UrbStatus.ECONNRESET, actual: 0, data: NO_DATA };
    if (this.unplugged) return { status: UrbStatus.ENODEV, actual: 0, data: NO_DATA };
    this.lastReportAt = performance.now();
    const b = Buffer.alloc(8);
    b.writeUInt32LE(++this.reports >>> 0, 0);
    b.writeUInt32LE(this.sinkCount >>> 0, 4);
    const out = b.subarray(0, Math.min(8, r.length ?? 0));
    return { status: UrbStatus.OK, data: out, actual: out.length };
  }
}
