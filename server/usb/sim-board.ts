/**
 * Base class of a simulated board: answers the standard control requests from real descriptors and
 * leaves class/vendor requests and data endpoints to subclasses. Pending IN transfers wait for data
 * the way a real device NAKs, and end with -ECONNRESET when cancelled or -ENODEV when unplugged.
 */
import { isIn, NO_DATA, parseSetup, SetupPacket, UrbRequest, UrbResult, UrbStatus } from '../protocol/urb.js';
import { ByteQueue } from '../shared/byte-queue.js';
import type { BackendDevice } from './backend.js';
import { DescriptorType, deviceDescriptor, DeviceDescriptorFields, deviceQualifier, Request, stringDescriptor } from './descriptors.js';

export interface SimBoardIdentity {
  id: string;
  busnum: number;
  devnum: number;
  speed: BackendDevice['speed'];
  manufacturer: string;
  product: string;
  serial: string;
}

export abstract class SimBoard {
  protected configuration = 0;
  private readonly alternates = new Map<number, number>();
  private readonly halted = new Set<number>();
  private readonly waiters = new Set<() => void>();
  private waking = false;
  private wakeAgain = false;
  unplugged = false;

  protected abstract readonly deviceFields: DeviceDescriptorFields;
  /** The one configuration descriptor (value 1) with its interfaces and endpoints. */
  protected abstract readonly configDescriptor: Buffer;
  protected abstract readonly interfaceSummary: BackendDevice['interfaces'];

  constructor(readonly identity: SimBoardIdentity) {}

  info(): BackendDevice {
    const f = this.deviceFields;
    return {
      id: this.identity.id,
      busnum: this.identity.busnum,
      devnum: this.identity.devnum,
      vendorId: f.vendorId,
      productId: f.productId,
      bcdDevice: f.bcdDevice,
      manufacturer: this.identity.manufacturer,
      product: this.identity.product,
      serial: this.identity.serial,
      speed: this.identity.speed,
      class: f.deviceClass,
      subclass: f.deviceSubClass,
      protocol: f.deviceProtocol,
      configuration: this.configuration,
      interfaces: this.interfaceSummary,
      simulated: true,
    };
  }

  // ---- host operations ----
  setConfiguration(value: number): void {
    if (value !== 0 && value !== 1) throw new Error(`configuration ${value} does not exist`);
    this.configuration = value;
    this.halted.clear();
    this.onConfigured(value);
  }
  setInterface(iface: number, alternate: number): void {
    if (alternate !== 0) throw new Error(`interface ${iface} has no alternate setting ${alternate}`);
    this.alternates.set(iface, alternate);
  }
  clearHalt(ep: number): void {
    this.halted.delete(ep);
  }
  /** Called after SET_CONFIGURATION; boards reset their state here. */
  protected onConfigured(_value: number): void {}

  async transfer(r: UrbRequest, signal: AbortSignal): Promise<UrbResult> {
    if (this.unplugged) return { status: UrbStatus.ENODEV, actual: 0, data: NO_DATA };
    if (signal.aborted) return { status: UrbStatus.ECONNRESET, actual: 0, data: NO_DATA };
    if (r.type === 'control') return this.control(r);
    if (this.halted.has(r.ep)) return { status: UrbStatus.EPIPE, actual: 0, data: NO_DATA };
    return this.endpoint(r, signal);
  }

  /** Bulk/interrupt traffic; subclasses implement their endpoints. */
  protected abstract endpoint(r: UrbRequest, signal: AbortSignal): Promise<UrbResult>;

  /** Class or vendor control requests; undefined means "not mine" (stall). */
  protected classRequest(_s: SetupPacket, _data: Uint8Array | undefined): Uint8Array | 'ok' | undefined {
    return undefined;
  }

  protected stringTable(): string[] {
    return ['', this.identity.manufacturer, this.identity.product, this.identity.serial];
  }

  private control(r: UrbRequest): UrbResult {
    const s = parseSetup(r.setup!);
    const type = (s.bmRequestType >> 5) & 3;
    let reply: Uint8Array | 'ok' | undefined;
    if (type === 0) reply = this.standardRequest(s);
    else reply = this.classRequest(s, r.data);
    if (reply === undefined) return { status: UrbStatus.EPIPE, actual: 0, data: NO_DATA };
    if (reply === 'ok') return { status: UrbStatus.OK, actual: isIn(r) ? 0 : r.data?.length ?? 0, data: NO_DATA };
    const n = isIn(r) ? Math.min(reply.length, r.length ?? 0, s.wLength) : 0;
    return { status: UrbStatus.OK, data: Buffer.from(reply.buffer, reply.byteOffset, n), actual: n };
  }

  private standardRequest(s: SetupPacket): Uint8Array | 'ok' | undefined {
    switch (s.bRequest) {
      case Request.GET_DESCRIPTOR: {
        const kind = s.wValue >> 8;
        const index = s.wValue & 0xff;
        if (kind === DescriptorType.device) return deviceDescriptor(this.deviceFields);
        if (kind === DescriptorType.configuration) return index === 0 ? this.configDescriptor : undefined;
        if (kind === DescriptorType.string) {
          const table = this.stringTable();
          return index < table.length ? stringDescriptor(index, table[index]) : undefined;
        }
        if (kind === DescriptorType.deviceQualifier && this.identity.speed === 'high') return deviceQualifier(this.deviceFields);
        return undefined;
      }
      case Request.GET_STATUS: return Buffer.from([0, 0]);
      case Request.GET_CONFIGURATION: return Buffer.from([this.configuration]);
      case Request.GET_INTERFACE: return Buffer.from([this.alternates.get(s.wIndex) ?? 0]);
      case Request.SET_FEATURE: case Request.CLEAR_FEATURE: return 'ok';
      // SET_ADDRESS / SET_CONFIGURATION / SET_INTERFACE arrive as host operations (standard-requests.ts);
      // answering them here too keeps the board usable by callers that send them raw.
      case Request.SET_ADDRESS: return 'ok';
      case Request.SET_CONFIGURATION: this.setConfiguration(s.wValue & 0xff); return 'ok';
      case Request.SET_INTERFACE: this.setInterface(s.wIndex, s.wValue); return 'ok';
      default: return undefined;
    }
  }

  // ---- waiting for data ----
  /** Wakes every pending transfer so it re-checks its condition. */
  protected wake(): void {
    // Not re-entrant: a ready() that wakes the others (an IN that made room, an OUT that printed) would
    // otherwise run a waiter's ready() again while its first call is still on the stack, and the bytes
    // the inner call takes would be lost. A wake during a wake runs one more round instead.
    if (this.waking) { this.wakeAgain = true; return; }
    this.waking = true;
    try {
      do {
        this.wakeAgain = false;
        for (const w of [...this.waiters]) w();
      } while (this.wakeAgain);
    } finally {
      this.waking = false;
    }
  }

  /**
   * Waits until `ready()` returns a result, the transfer is cancelled, or the board is unplugged.
   * `ready` is re-evaluated each time the board calls wake().
   */
  protected waitFor(r: UrbRequest, signal: AbortSignal, ready: () => UrbResult | undefined): Promise<UrbResult> {
    const now = ready();
    if (now) return Promise.resolve(now);
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      let done = false;
      const finish = (res: UrbResult): void => {
        done = true;
        this.waiters.delete(check);
        signal.removeEventListener('abort', onAbort);
        if (timer) clearTimeout(timer);
        resolve(res);
      };
      const check = (): void => {
        // finished meanwhile: ready() must not run again, it would take bytes nobody receives
        if (done) return;
        if (this.unplugged) return finish({ status: UrbStatus.ENODEV, actual: 0, data: NO_DATA });
        const res = ready();
        if (res) finish(res);
      };
      const onAbort = (): void => { if (!done) finish({ status: UrbStatus.ECONNRESET, actual: 0, data: NO_DATA }); };
      this.waiters.add(check);
      signal.addEventListener('abort', onAbort, { once: true });
      if ((r.timeout ?? 0) > 0) timer = setTimeout(() => finish({ status: UrbStatus.ETIMEDOUT, actual: 0, data: NO_DATA }), r.timeout);
    });
  }

  unplug(): void {
    this.unplugged = true;
    this.wake();
  }
}

/** A byte FIFO with a capacity, for loopback and serial echo. */
export class ByteFifo {
  private readonly queue = new ByteQueue();

  constructor(readonly capacity: number) {}

  get size(): number {
    return this.queue.length;
  }

  get free(): number {
    return this.capacity - this.queue.length;
  }

  /** Keeps a copy of `data` (the caller's buffer may be reused). */
  push(data: Uint8Array): void {
    this.queue.push(Buffer.from(data));
  }

  take(max: number): Buffer {
    return this.queue.take(Math.min(max, this.queue.length));
  }

  clear(): void {
    this.queue.clear();
  }
}
