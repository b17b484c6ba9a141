/**
 * The real USB backend, on the `usb` package (3.x, nusb underneath). The only module that imports `usb`.
 * Kernel driver names and bus ids come from sysfs, which `usb` does not expose.
 *
 * One transfer at a time per endpoint: `usb` 3.x fails a second concurrent transfer on the same endpoint
 * ("endpoint not found", seen in the real-kernel suite), so URBs for one endpoint queue here in order —
 * which is also the order USB requires — while different endpoints run concurrently.
 *
 * Cancellation: `usb` 3.x has no per-transfer cancel. A cancelled URB is answered at once with
 * -ECONNRESET; the transfer underneath keeps running, and for IN endpoints its bytes go to the next URB
 * on that endpoint (see inTransfer), so a driver that unlinks and resubmits reads (cdc_acm does on every
 * open/close) loses nothing.
 */
import { EventEmitter } from 'node:events';
import { existsSync, readdirSync, readFileSync, readlinkSync, realpathSync } from 'node:fs';
import { basename } from 'node:path';
import { usb } from 'usb';
import { UrbStatus } from '../protocol/constants.js';
import type { Speed } from '../protocol/messages.js';
import type { BackendDevice, BackendEvents, OpenedDevice, TransferRequest, TransferResult, UsbBackend } from './backend.js';
import { ttyOfUsbDevice } from '../shared/serial/sysfs-tty.js';

const SYSFS_DEVICES = '/sys/bus/usb/devices';
/** Longest single IN transfer on the device; longer waits are re-submitted slices (see boundedIn). */
const IN_SLICE_MS = 1000;
/**
 * Timeout for OUT and control transfers whose URB has none. Long, because a device may NAK a write for
 * a while (a serial board whose far end reads slowly) and a timed-out write loses its data; finite: `usb` refuses to
 * release or close a device while any transfer is pending ("cannot be borrowed mutably"), so a device
 * that never accepts an OUT would otherwise keep its interfaces from the kernel forever.
 */
const DEFAULT_TIMEOUT_MS = 20_000;

/** What `usb` 3.x adds to a WebUSB device (its own typings do not export the type). */
type Device = USBDevice & {
  bus: string;
  address: number;
  ports: number[];
  speed?: string;
  detachKernelDriver(iface: number): Promise<void>;
  attachKernelDriver(iface: number): Promise<void>;
  // usb 3.x takes a timeout (ms) as an extra last argument
  controlTransferIn(setup: USBControlTransferParameters, length: number, timeout: number): Promise<USBInTransferResult>;
  controlTransferOut(setup: USBControlTransferParameters, data: Uint8Array, timeout: number): Promise<USBOutTransferResult>;
  transferIn(endpointNumber: number, length: number, timeout: number): Promise<USBInTransferResult>;
  transferOut(endpointNumber: number, data: Uint8Array, timeout: number): Promise<USBOutTransferResult>;
};

function busIdOf(d: Device): string {
  // `bus` is the sysfs name ("1-1.2") in usb 3.x; build it from busnum + ports when it is not.
  if (typeof d.bus === 'string' && /^\d+-[\d.]+$/.test(d.bus)) return d.bus;
  return `${parseInt(String(d.bus), 10)}-${d.ports.join('.')}`;
}

function sysfsRead(busId: string, attr: string): string | undefined {
  try {
    return readFileSync(`${SYSFS_DEVICES}/${busId}/${attr}`, 'utf8').trim();
  } catch {
    return undefined;
  }
}

function driverOf(busId: string, config: number, iface: number): string | undefined {
  try {
    return basename(readlinkSync(`${SYSFS_DEVICES}/${busId}:${config}.${iface}/driver`));
  } catch {
    return undefined;
  }
}

function mapSpeed(s: string | undefined): Speed {
  switch (s) {
    case 'low': case 'full': case 'high': case 'super': case 'superPlus': return s;
    default: return 'unknown';
  }
}

function describe(d: Device): BackendDevice {
  const id = busIdOf(d);
  const busnum = Number(sysfsRead(id, 'busnum') ?? id.split('-')[0]);
  const devnum = Number(sysfsRead(id, 'devnum') ?? d.address);
  let configuration = 0;
  let interfaces: BackendDevice['interfaces'] = [];
  try {
    const cfg = d.configuration;
    if (cfg) {
      configuration = cfg.configurationValue;
      interfaces = cfg.interfaces.map((i: USBInterface) => ({
        number: i.interfaceNumber,
        class: i.alternate.interfaceClass,
        subclass: i.alternate.interfaceSubclass,
        protocol: i.alternate.interfaceProtocol,
        name: i.alternate.interfaceName ?? undefined,
        driver: driverOf(id, cfg.configurationValue, i.interfaceNumber),
      }));
    }
  } catch {
    // unconfigured device: no interfaces to show
  }
  return {
    id,
    busnum,
    devnum,
    vendorId: d.vendorId,
    productId: d.productId,
    bcdDevice: (d.deviceVersionMajor << 8) | (d.deviceVersionMinor << 4) | d.deviceVersionSubminor,
    manufacturer: d.manufacturerName ?? undefined,
    product: d.productName ?? undefined,
    serial: d.serialNumber ?? undefined,
    speed: mapSpeed(d.speed),
    class: d.deviceClass,
    subclass: d.deviceSubclass,
    protocol: d.deviceProtocol,
    configuration,
    interfaces,
    tty: ttyOfUsbDevice(id),
  };
}

/** "no USB on this machine" is an empty bench, not an error. */
/** Bus ids and device numbers under /sys/bus/usb/devices, as one string that changes on any (re)plug. */
function sysfsSnapshot(): string {
  try {
    return readdirSync(SYSFS_DEVICES)
      .filter((n) => /^\d+-[\d.]+$/.test(n))
      .sort()
      .map((n) => `${n}#${sysfsRead(n, 'devnum') ?? ''}`)
      .join(',');
  } catch {
    return '';
  }
}

/**
 * A device on a vhci_hcd bus is one this machine imported over USB/IP: never share it back (a loop),
 * and never read its strings from the daemon, since those reads could travel through this daemon itself.
 */
function isImported(busId: string): boolean {
  try {
    return realpathSync(`${SYSFS_DEVICES}/${busId}`).includes('/vhci_hcd.');
  } catch {
    return false;
  }
}

function isNoUsbError(e: unknown): boolean {
  return /\/sys\/bus\/usb\/devices\/ not found/.test(String((e as Error)?.message ?? e));
}

export class RealUsbBackend extends EventEmitter<BackendEvents> implements UsbBackend {
  readonly kind = 'usb' as const;
  /** Devices by bus id, with the devnum they had (a re-enumerated board gets a new one). */
  private readonly known = new Map<string, { device: Device; devnum: number }>();
  private syncing?: Promise<void>;
  private resync = false;
  private pollTimer?: NodeJS.Timeout;
  private sysfsSnapshot = '';
  // `usb`'s hot-plug events need udev's netlink messages; machines without udevd (containers, minimal
  // images, our qemu guest) never send them, so a cheap sysfs poll backs them up. Both only trigger a
  // sync(), which diffs against what we know, so an event is reported once whichever notices first.
  private readonly onHotplug = (): void => void this.sync();

  /** False on a machine without a USB subsystem (containers, CI): an empty bench, no hot-plug. */
  private readonly present = existsSync(SYSFS_DEVICES);

  constructor(pollMs = 2000) {
    super();
    // `usb` rethrows hot-plug setup errors asynchronously (uncatchable) when there is no USB subsystem.
    if (this.present) {
      usb.addEventListener('connect', this.onHotplug);
      usb.addEventListener('disconnect', this.onHotplug);
      this.pollTimer = setInterval(() => {
        const snap = sysfsSnapshot();
        if (snap !== this.sysfsSnapshot) void this.sync();
      }, pollMs);
      this.pollTimer.unref();
    }
  }

  async list(): Promise<BackendDevice[]> {
    if (!this.present) return [];
    await this.sync();
    return [...this.known.values()].map((k) => describe(k.device));
  }

  /**
   * Re-reads the devices and reports what appeared and what went since the last look — whoever asked
   * (an event, the poll, list(), open()), so no change is ever swallowed.
   */
  private sync(): Promise<void> {
    if (this.syncing) {
      this.resync = true;
      return this.syncing;
    }
    this.syncing = (async () => {
      do {
        this.resync = false;
        this.sysfsSnapshot = sysfsSnapshot();
        let devices: Device[];
        try {
          devices = (await usb.getDevices()) as Device[];
        } catch (e) {
          if (!isNoUsbError(e)) throw e;
          devices = [];
        }
        const now = new Map(devices.map((d) => [busIdOf(d), d] as const).filter(([id]) => !isImported(id)));
        for (const [id, k] of this.known) {
          const d = now.get(id);
          if (!d || d.address !== k.devnum) {
            this.known.delete(id);
            this.emit('detach', id);
          }
        }
        for (const [id, d] of now) {
          if (this.known.has(id)) continue;
          this.known.set(id, { device: d, devnum: d.address });
          this.emit('attach', describe(d));
        }
      } while (this.resync);
    })().finally(() => { this.syncing = undefined; });
    return this.syncing;
  }

  async open(id: string): Promise<OpenedDevice> {
    if (!this.known.has(id)) await this.list();
    const d = this.known.get(id)?.device;
    if (!d) throw new Error(`no device ${id} on this bench`);
    try {
      await d.open();
    } catch (e) {
      throw new Error(`cannot open ${id}: ${(e as Error).message} (does the daemon's user have access to /dev/bus/usb? see the udev rule in the README)`, { cause: e });
    }
    const opened = new RealOpenedDevice(id, d);
    try {
      await opened.claimAll();
    } catch (e) {
      await opened.close();
      throw new Error(`cannot claim ${id}: ${(e as Error).message}`, { cause: e });
    }
    return opened;
  }

  ttyOf(id: string): string | undefined {
    return this.known.has(id) ? ttyOfUsbDevice(id) : undefined;
  }

  async close(): Promise<void> {
    if (!this.present) return;
    clearInterval(this.pollTimer);
    usb.removeEventListener('connect', this.onHotplug);
    usb.removeEventListener('disconnect', this.onHotplug);
  }
}

class RealOpenedDevice implements OpenedDevice {
  /** Interfaces we detached a kernel driver from, to give back on close. */
  private readonly detached = new Set<number>();
  private readonly claimed = new Set<number>();
  private closed = false;
  /** Tail of each endpoint's queue (key: endpoint address; control transfers share key 0). */
  private readonly queues = new Map<number, Promise<unknown>>();
  /** IN transfers still running on the device after their URB was cancelled, per endpoint. */
  private readonly orphans = new Map<number, Promise<TransferResult>>();
  /** IN bytes the device delivered beyond what the adopting URB could take, per endpoint. */
  private readonly leftovers = new Map<number, Uint8Array>();

  constructor(private readonly id: string, private readonly d: Device) {}

  /** Detaches kernel drivers and claims every interface of the active configuration. */
  async claimAll(): Promise<void> {
    const cfg = this.d.configuration;
    if (!cfg) return;
    for (const i of cfg.interfaces) {
      const n = i.interfaceNumber;
      if (this.claimed.has(n)) continue;
      if (driverOf(this.id, cfg.configurationValue, n) !== undefined) {
        await this.d.detachKernelDriver(n);
        this.detached.add(n);
      }
      await this.d.claimInterface(n);
      this.claimed.add(n);
    }
  }

  async releaseAll(): Promise<void> {
    for (const n of this.claimed) await whenNotBorrowed(() => this.d.releaseInterface(n)).catch(() => {});
    this.claimed.clear();
  }

  async transfer(r: TransferRequest): Promise<TransferResult> {
    const key = r.type === 'control' ? 0 : r.ep;
    const isBulkOrInterruptIn = r.type !== 'control' && (r.ep & 0x80) !== 0;
    const previous = this.queues.get(key) ?? Promise.resolve();
    const cancelled = (): TransferResult => ({ status: UrbStatus.cancelled, actual: 0 });
    // IN: the job ends as soon as the URB has its answer (an abandoned transfer is adopted by the next
    // URB, see inTransfer). OUT and control: the job ends when the device is done, so order holds.
    const job = previous.then(() => (r.signal.aborted ? cancelled() : isBulkOrInterruptIn ? this.inTransfer(r) : this.run(r)));
    const tail = job.catch(() => {});
    this.queues.set(key, tail);
    void tail.then(() => { if (this.queues.get(key) === tail) this.queues.delete(key); });
    if (r.signal.aborted) return cancelled();
    const onAbort = new Promise<TransferResult>((resolve) => r.signal.addEventListener('abort', () => resolve(cancelled()), { once: true }));
    return Promise.race([job, onAbort]);
  }

  /**
   * A bulk/interrupt IN URB. `usb` cannot cancel a transfer in flight, so when the URB is cancelled the
   * transfer is left running as the endpoint's orphan, and whatever it brings back is handed to the next
   * IN URB on that endpoint (split if larger) — the device's bytes are delivered late, never lost, and
   * only one transfer per endpoint is ever in flight.
   */
  private async inTransfer(r: TransferRequest): Promise<TransferResult> {
    const cancelled: TransferResult = { status: UrbStatus.cancelled, actual: 0 };
    const take = (res: TransferResult): TransferResult => {
      const data = res.data ?? new Uint8Array(0);
      if (res.status !== UrbStatus.ok || data.length <= r.length) return res;
      this.leftovers.set(r.ep, data.subarray(r.length));
      const head = data.subarray(0, r.length);
      return { status: UrbStatus.ok, data: head, actual: head.length };
    };
    const left = this.leftovers.get(r.ep);
    if (left) {
      this.leftovers.delete(r.ep);
      return take({ status: UrbStatus.ok, data: left, actual: left.length });
    }
    let pending = this.orphans.get(r.ep);
    this.orphans.delete(r.ep);
    const abort = new Promise<'aborted'>((resolve) => r.signal.addEventListener('abort', () => resolve('aborted'), { once: true }));
    for (;;) {
      pending ??= this.boundedIn(r);
      const first = await Promise.race([pending, abort]);
      if (first === 'aborted') {
        this.orphans.set(r.ep, pending);
        return cancelled;
      }
      // An adopted orphan that ended empty (its own URB was cancelled): read for this URB instead.
      if (first.status === UrbStatus.cancelled && !r.signal.aborted && !this.closed) {
        pending = undefined;
        continue;
      }
      return take(first);
    }
  }

  /**
   * An IN transfer as slices of at most IN_SLICE_MS, re-submitted while nobody cancelled it: a
   * transfer the URB abandoned then ends within one slice, so release and close never wait on a
   * device that has nothing to say. (A slice that times out after the device sent some full packets
   * but no short one loses those packets; nusb reports a timeout without its partial data.)
   */
  private async boundedIn(r: TransferRequest): Promise<TransferResult> {
    const deadline = r.timeout > 0 ? Date.now() + r.timeout : Infinity;
    for (;;) {
      const slice = Math.max(1, Math.min(IN_SLICE_MS, deadline - Date.now()));
      const res = await this.run({ ...r, timeout: slice });
      if (res.status !== UrbStatus.timedOut || Date.now() >= deadline) return res;
      if (this.closed || r.signal.aborted) return { status: UrbStatus.cancelled, actual: 0 };
    }
  }

  private async run(r: TransferRequest): Promise<TransferResult> {
    const timeout = r.timeout > 0 ? r.timeout : DEFAULT_TIMEOUT_MS;
    const isIn = (r.ep & 0x80) !== 0;
    try {
      if (r.type === 'control') {
        const s = r.setup!;
        const setup: USBControlTransferParameters = {
          requestType: (['standard', 'class', 'vendor'] as const)[(s.bmRequestType >> 5) & 3] ?? 'vendor',
          recipient: (['device', 'interface', 'endpoint', 'other'] as const)[s.bmRequestType & 3] ?? 'other',
          request: s.bRequest, value: s.wValue, index: s.wIndex,
        };
        if ((s.bmRequestType & 0x80) !== 0) {
          const res = await this.d.controlTransferIn(setup, r.length, timeout);
          return fromInResult(res);
        }
        const res = await this.d.controlTransferOut(setup, r.data ?? new Uint8Array(0), timeout);
        return fromOutResult(res);
      }
      if (isIn) return fromInResult(await this.d.transferIn(r.ep & 0x0f, r.length, timeout));
      return fromOutResult(await this.d.transferOut(r.ep & 0x0f, r.data ?? new Uint8Array(0), timeout));
    } catch (e) {
      let status = statusOfError(e);
      // nusb implements a timeout by cancelling the transfer: report it as the timeout it is.
      if (status === UrbStatus.cancelled && !r.signal.aborted && r.timeout > 0) status = UrbStatus.timedOut;
      return { status, actual: 0, error: String((e as Error)?.message ?? e) };
    }
  }

  async setConfiguration(value: number): Promise<void> {
    // The bench's kernel already configured the device; re-selecting the active configuration would
    // make the kernel re-probe its drivers, so (like usbip-host for an unchanged value) do nothing.
    if (this.d.configuration?.configurationValue === value) return;
    await this.releaseAll();
    await this.d.selectConfiguration(value);
    await this.claimAll();
  }

  async setInterface(iface: number, alternate: number): Promise<void> {
    await this.d.selectAlternateInterface(iface, alternate);
  }

  async clearHalt(ep: number): Promise<void> {
    await this.d.clearHalt((ep & 0x80) !== 0 ? 'in' : 'out', ep & 0x0f);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Every transfer is bounded (IN slices end once `closed` is set; OUT/control have a finite timeout),
    // and `usb` cannot release interfaces while one is pending: wait for them all.
    await Promise.all([...this.orphans.values(), ...this.queues.values()]);
    this.orphans.clear();
    this.leftovers.clear();
    await this.releaseAll();
    for (const n of this.detached) await whenNotBorrowed(() => this.d.attachKernelDriver(n)).catch(() => {});
    this.detached.clear();
    await whenNotBorrowed(() => this.d.close()).catch(() => {});
  }
}

/**
 * Runs a native call that needs the device to itself. `usb` refuses such calls — synchronously, with
 * "cannot be borrowed mutably while another borrow is active" — while any other native call on the
 * device is in flight (seen in the real-kernel suite on release); retry for up to 5 s instead of
 * leaving the bench's kernel driver detached.
 */
async function whenNotBorrowed<T>(call: () => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await call();
    } catch (e) {
      if (attempt >= 25 || !/borrow/i.test(String((e as Error)?.message ?? e))) throw e;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

function fromInResult(res: USBInTransferResult): TransferResult {
  if (res.status === 'stall') return { status: UrbStatus.stall, actual: 0 };
  if (res.status === 'babble') return { status: UrbStatus.overflow, actual: 0 };
  const v = res.data;
  const data = v ? new Uint8Array(v.buffer, v.byteOffset, v.byteLength) : new Uint8Array(0);
  return { status: UrbStatus.ok, data, actual: data.length };
}

function fromOutResult(res: USBOutTransferResult): TransferResult {
  if (res.status === 'stall') return { status: UrbStatus.stall, actual: 0 };
  return { status: UrbStatus.ok, actual: res.bytesWritten };
}

function statusOfError(e: unknown): number {
  const m = String((e as Error)?.message ?? e).toLowerCase();
  if (m.includes('timed out') || m.includes('timeout')) return UrbStatus.timedOut;
  if (m.includes('disconnected') || m.includes('no device') || m.includes('not found')) return UrbStatus.noDevice;
  if (m.includes('stall') || m.includes('pipe')) return UrbStatus.stall;
  if (m.includes('cancel')) return UrbStatus.cancelled;
  return UrbStatus.protocol;
}
