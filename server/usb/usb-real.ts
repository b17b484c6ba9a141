/**
 * The real USB backend, on the `usb` package's libusb line (2.x; see libusb.ts for which build). The
 * only module that uses `usb`. Kernel driver names, bus ids, strings and speed come from sysfs.
 *
 * It behaves like the kernel's usbip-host: every URB becomes its own asynchronous libusb transfer at once,
 * so the device's endpoints see everything the client's driver queued (cdc_acm keeps 16 reads queued;
 * usb-storage a command, its data and its status), in the order they arrived. A cancel is a real
 * libusb_cancel_transfer; a transfer that is cancelled or times out completes with the bytes it did move.
 * No transfer is sliced or retried, so nothing the device sends is lost or handed to the wrong URB.
 */
import { EventEmitter } from 'node:events';
import { existsSync, readdirSync, readFileSync, readlinkSync, realpathSync } from 'node:fs';
import { basename } from 'node:path';
import type { Device, LibUSBException, Transfer } from 'usb';
import type { ConfigDescriptor } from 'usb/dist/usb/descriptors.js';
import type { Speed } from '../protocol/messages.js';
import { isIn as urbIsIn, NO_DATA, parseSetup, UrbFlag, UrbRequest, UrbResult, UrbStatus } from '../protocol/urb.js';
import type { BackendDevice, BackendEvents, OpenedDevice, UsbBackend } from './backend.js';
import { loadUsb } from './libusb.js';
import { ttyOfUsbDevice } from '../shared/serial/sysfs-tty.js';

const SYSFS_DEVICES = '/sys/bus/usb/devices';
/** How long close() waits for cancelled transfers to come back before giving the device up anyway. */
const CLOSE_DRAIN_MS = 5000;

/** libusb's transfer types and completion statuses (libusb.h: libusb_transfer_type, libusb_transfer_status). */
const TRANSFER_TYPE = { control: 0, bulk: 2, interrupt: 3 } as const;
const TRANSFER_STATUS = { error: 1, timedOut: 2, cancelled: 3, stall: 4, noDevice: 5, overflow: 6 } as const;
/** libusb_error codes a submit or host operation can throw. */
const LIBUSB_ERROR = { io: -1, invalidParam: -2, access: -3, noDevice: -4, notFound: -5, busy: -6, timeout: -7, overflow: -8, pipe: -9 } as const;

function busIdOf(d: Device): string {
  return `${d.busNumber}-${(d.portNumbers ?? []).join('.')}`;
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

/** sysfs `speed` is in Mbit/s. kernel: drivers/usb/core/sysfs.c speed_show */
function speedOf(busId: string): Speed {
  switch (sysfsRead(busId, 'speed')) {
    case '1.5': return 'low';
    case '12': return 'full';
    case '480': return 'high';
    case '5000': return 'super';
    case '10000': case '20000': return 'superPlus';
    default: return 'unknown';
  }
}

function configOf(d: Device): ConfigDescriptor | undefined {
  try {
    return d.configDescriptor;
  } catch {
    return undefined; // unconfigured
  }
}

function describe(d: Device): BackendDevice {
  const id = busIdOf(d);
  const dd = d.deviceDescriptor;
  const cfg = configOf(d);
  const configuration = cfg?.bConfigurationValue ?? 0;
  const interfaces: BackendDevice['interfaces'] = (cfg?.interfaces ?? []).filter((alts) => alts.length > 0).map((alts) => {
    const i = alts[0];
    return {
      number: i.bInterfaceNumber,
      class: i.bInterfaceClass,
      subclass: i.bInterfaceSubClass,
      protocol: i.bInterfaceProtocol,
      name: sysfsRead(`${id}:${configuration}.${i.bInterfaceNumber}`, 'interface'),
      driver: driverOf(id, configuration, i.bInterfaceNumber),
    };
  });
  return {
    id,
    busnum: d.busNumber,
    devnum: d.deviceAddress,
    vendorId: dd.idVendor,
    productId: dd.idProduct,
    bcdDevice: dd.bcdDevice,
    manufacturer: sysfsRead(id, 'manufacturer'),
    product: sysfsRead(id, 'product'),
    serial: sysfsRead(id, 'serial'),
    speed: speedOf(id),
    class: dd.bDeviceClass,
    subclass: dd.bDeviceSubClass,
    protocol: dd.bDeviceProtocol,
    configuration,
    interfaces,
    tty: ttyOfUsbDevice(id),
  };
}

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

/** The libusb error code (LIBUSB_ERROR_*) or transfer status a LibUSBException carries. */
function errnoOf(e: unknown): number | undefined {
  const n = (e as LibUSBException | undefined)?.errno;
  return typeof n === 'number' ? n : undefined;
}

export class RealUsbBackend extends EventEmitter<BackendEvents> implements UsbBackend {
  readonly kind = 'usb' as const;
  /** Devices by bus id, with the devnum they had (a re-enumerated board gets a new one). */
  private readonly known = new Map<string, { device: Device; devnum: number }>();
  private syncing?: Promise<void>;
  private resync = false;
  private pollTimer?: NodeJS.Timeout;
  private sysfsSnapshot = '';
  // libusb's hot-plug events come from netlink (our build) or udevd (the prebuilt); a cheap sysfs poll
  // backs them up either way. All only trigger a sync(), which diffs against what we know, so an event
  // is reported once whichever notices first.
  private readonly onHotplug = (): void => void this.sync().catch(() => {});
  private readonly usb = loadUsb().usb;

  /** False on a machine without a USB subsystem (containers, CI): an empty bench, no hot-plug. */
  private readonly present = existsSync(SYSFS_DEVICES) && !this.usb.INIT_ERROR;

  constructor(pollMs = 2000) {
    super();
    if (this.present) {
      this.usb.on('attach', this.onHotplug);
      this.usb.on('detach', this.onHotplug);
      this.usb.unrefHotplugEvents(); // hot-plug alone must not keep a process alive
      this.pollTimer = setInterval(() => {
        if (sysfsSnapshot() !== this.sysfsSnapshot) this.onHotplug();
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
        // root hubs have no port numbers; they are the bench's, never shared
        const devices = this.usb.getDeviceList().filter((d) => (d.portNumbers ?? []).length > 0);
        const now = new Map(devices.map((d) => [busIdOf(d), d] as const).filter(([id]) => !isImported(id)));
        for (const [id, k] of this.known) {
          const d = now.get(id);
          if (!d || d.deviceAddress !== k.devnum) {
            this.known.delete(id);
            this.emit('detach', id);
          }
        }
        for (const [id, d] of now) {
          if (this.known.has(id)) continue;
          this.known.set(id, { device: d, devnum: d.deviceAddress });
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
      d.__open();
    } catch (e) {
      const hint = errnoOf(e) === LIBUSB_ERROR.access ? ' (does the daemon\'s user have access to /dev/bus/usb? see the udev rule in the README)' : '';
      throw new Error(`cannot open ${id}: ${(e as Error).message}${hint}`, { cause: e });
    }
    const opened = new RealOpenedDevice(d, this.usb);
    try {
      opened.claimAll();
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
    this.usb.off('attach', this.onHotplug);
    this.usb.off('detach', this.onHotplug);
  }
}

type UsbModule = ReturnType<typeof loadUsb>['usb'];

/** One URB on its way through libusb. */
interface Running {
  done: Promise<UrbResult>;
  cancel(): void;
}

class RealOpenedDevice implements OpenedDevice {
  /** Interfaces we detached a kernel driver from, to give back on close. */
  private readonly detached = new Set<number>();
  private readonly claimed = new Set<number>();
  /** The alternate setting each interface is in (0 until a SET_INTERFACE): wMaxPacketSize depends on it. */
  private readonly altSettings = new Map<number, number>();
  private readonly running = new Set<Running>();
  private closed = false;

  constructor(private readonly d: Device, private readonly usb: UsbModule) {}

  /** Detaches kernel drivers and claims every interface of the active configuration. */
  claimAll(): void {
    const cfg = configOf(this.d);
    if (!cfg) return;
    for (const alts of cfg.interfaces) {
      const n = alts[0]?.bInterfaceNumber;
      if (n === undefined || this.claimed.has(n)) continue;
      if (this.d.__isKernelDriverActive(n)) {
        this.d.__detachKernelDriver(n);
        this.detached.add(n);
      }
      this.d.__claimInterface(n);
      this.claimed.add(n);
      this.altSettings.set(n, 0);
    }
  }

  private async releaseAll(): Promise<void> {
    for (const n of this.claimed) await callback((cb) => this.d.__releaseInterface(n, cb)).catch(() => {});
    this.claimed.clear();
  }

  /** wMaxPacketSize of an endpoint in the interfaces' current alternate settings (0 if unknown). */
  private maxPacketOf(ep: number): number {
    for (const alts of configOf(this.d)?.interfaces ?? []) {
      const n = alts[0]?.bInterfaceNumber;
      const alt = alts.find((a) => a.bAlternateSetting === (this.altSettings.get(n) ?? 0)) ?? alts[0];
      const e = alt?.endpoints.find((x) => x.bEndpointAddress === ep);
      if (e) return e.wMaxPacketSize & 0x7ff;
    }
    return 0;
  }

  transfer(r: UrbRequest, signal: AbortSignal): Promise<UrbResult> {
    if (this.closed) return Promise.resolve({ status: UrbStatus.ESHUTDOWN, actual: 0, data: NO_DATA });
    if (signal.aborted) return Promise.resolve({ status: UrbStatus.ECONNRESET, actual: 0, data: NO_DATA });
    const isIn = urbIsIn(r);
    let buffer: Buffer;
    if (r.type === 'control') {
      // libusb's control buffer: the 8 setup bytes as they came, then room for (IN) or the bytes of (OUT)
      // the data stage; an OUT wLength says how many bytes follow, so it is the data's length.
      const out = r.data ?? new Uint8Array(0);
      const wLength = isIn ? parseSetup(r.setup!).wLength : out.length;
      buffer = Buffer.alloc(8 + wLength);
      buffer.set(r.setup!.subarray(0, 8), 0);
      buffer.writeUInt16LE(wLength, 6);
      if (!isIn) buffer.set(out, 8);
    } else {
      buffer = isIn ? Buffer.allocUnsafe(r.length ?? 0) : Buffer.from(r.data?.buffer ?? new ArrayBuffer(0), r.data?.byteOffset ?? 0, r.data?.byteLength ?? 0);
    }
    // URB_ZERO_PACKET on OUT data ending on a packet boundary: a zero-length transfer queued right behind
    // it on the same endpoint (libusb's own flag for this is not exposed by the package).
    const maxPacket = !isIn && r.type !== 'control' && (r.flags ?? 0) & UrbFlag.zeroPacket ? this.maxPacketOf(r.ep) : 0;
    const zlp = maxPacket > 0 && buffer.length > 0 && buffer.length % maxPacket === 0;
    return this.submit(r, signal, buffer, isIn, zlp);
  }

  private submit(r: UrbRequest, signal: AbortSignal, buffer: Buffer, isIn: boolean, zlp: boolean): Promise<UrbResult> {
    let timedOut = false;
    let timer: NodeJS.Timeout | undefined;
    const transfers: Transfer[] = [];
    const results: Promise<{ error?: LibUSBException; actual: number; buf: Buffer }>[] = [];
    const type = TRANSFER_TYPE[r.type];
    const ep = r.type === 'control' ? 0 : r.ep;
    const cancel = (): void => { for (const t of transfers) { try { t.cancel(); } catch { /* completed meanwhile */ } } };
    const onAbort = (): void => cancel();
    // A failed submit throws here (not inside a promise), so it is answered with its status below.
    let submitError: unknown;
    for (const part of zlp ? [buffer, Buffer.alloc(0)] : [buffer]) {
      let settle!: (v: { error?: LibUSBException; actual: number; buf: Buffer }) => void;
      const result = new Promise<{ error?: LibUSBException; actual: number; buf: Buffer }>((resolve) => { settle = resolve; });
      // timeout 0: the bundled libusb of the prebuilt checks timeouts only once a minute, so our own
      // timer cancels instead (see below) — the same on every build
      const t = new this.usb.Transfer(this.d, ep, type, 0, (error, buf, actual) => settle({ error: error ?? undefined, actual, buf }));
      try {
        t.submit(part);
      } catch (e) {
        submitError = e;
        break;
      }
      transfers.push(t);
      results.push(result);
    }
    const submitStatus = submitError === undefined ? undefined : statusOfLibusbError(errnoOf(submitError));
    if (submitError !== undefined) {
      // nothing of this URB ran; or its data did but the zero-length packet could not follow: end the data
      if (transfers.length === 0) return Promise.resolve({ status: submitStatus!, actual: 0, data: NO_DATA, error: (submitError as Error).message });
      cancel();
    }
    if ((r.timeout ?? 0) > 0) timer = setTimeout(() => { timedOut = true; cancel(); }, r.timeout);
    signal.addEventListener('abort', onAbort, { once: true });
    const running: Running = {
      cancel,
      done: Promise.all(results).then(([first, second]) => {
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        this.running.delete(running);
        let status = statusOfTransfer(first.error?.errno);
        if (status === UrbStatus.ECONNRESET && timedOut) status = UrbStatus.ETIMEDOUT;
        if (status === UrbStatus.OK && second?.error) status = statusOfTransfer(second.error.errno);
        if (submitStatus !== undefined && (status === UrbStatus.OK || status === UrbStatus.ECONNRESET)) status = submitStatus;
        const actual = first.actual;
        const data = isIn ? (r.type === 'control' ? first.buf.subarray(8, 8 + actual) : first.buf.subarray(0, actual)) : NO_DATA;
        const error = first.error?.message ?? second?.error?.message ?? (submitError as Error | undefined)?.message;
        return { status, actual, data, error: status === UrbStatus.OK ? undefined : error };
      }),
    };
    this.running.add(running);
    return running.done;
  }

  async setConfiguration(value: number): Promise<void> {
    // The bench's kernel already configured the device; re-selecting the active configuration would
    // make the kernel re-probe its drivers, so (like usbip-host for an unchanged value) do nothing.
    if (configOf(this.d)?.bConfigurationValue === value) return;
    await this.releaseAll();
    await callback((cb) => this.d.__setConfiguration(value, cb));
    this.altSettings.clear();
    this.claimAll();
  }

  async setInterface(iface: number, alternate: number): Promise<void> {
    await callback((cb) => this.d.__setInterface(iface, alternate, cb));
    this.altSettings.set(iface, alternate);
  }

  async clearHalt(ep: number): Promise<void> {
    await callback((cb) => this.d.__clearHalt(ep, cb));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Cancel what still runs and wait for it: libusb must not release an interface under a transfer.
    const running = [...this.running];
    for (const u of running) u.cancel();
    let bound: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(running.map((u) => u.done)), new Promise((r) => { bound = setTimeout(r, CLOSE_DRAIN_MS); })]);
    clearTimeout(bound);
    await this.releaseAll();
    for (const n of this.detached) {
      try {
        this.d.__attachKernelDriver(n);
      } catch {
        // a driver bound to several interfaces (cdc_acm) comes back on the first and says BUSY on the rest
      }
    }
    this.detached.clear();
    try {
      this.d.__close();
    } catch {
      // gone already (unplugged)
    }
  }
}

/** Runs a node-usb call that reports through a callback as a promise. */
function callback(call: (cb: (error?: LibUSBException) => void) => void): Promise<void> {
  return new Promise((resolve, reject) => call((error) => (error ? reject(error) : resolve())));
}

function statusOfTransfer(errno: number | undefined): number {
  switch (errno) {
    case undefined: case 0: return UrbStatus.OK;
    case TRANSFER_STATUS.timedOut: return UrbStatus.ETIMEDOUT;
    case TRANSFER_STATUS.cancelled: return UrbStatus.ECONNRESET;
    case TRANSFER_STATUS.stall: return UrbStatus.EPIPE;
    case TRANSFER_STATUS.noDevice: return UrbStatus.ENODEV;
    case TRANSFER_STATUS.overflow: return UrbStatus.EOVERFLOW;
    default: return UrbStatus.EPROTO;
  }
}

function statusOfLibusbError(errno: number | undefined): number {
  switch (errno) {
    case LIBUSB_ERROR.noDevice: case LIBUSB_ERROR.notFound: return UrbStatus.ENODEV;
    case LIBUSB_ERROR.pipe: return UrbStatus.EPIPE;
    case LIBUSB_ERROR.timeout: return UrbStatus.ETIMEDOUT;
    case LIBUSB_ERROR.overflow: return UrbStatus.EOVERFLOW;
    case LIBUSB_ERROR.invalidParam: return UrbStatus.EINVAL;
    default: return UrbStatus.EPROTO;
  }
}
