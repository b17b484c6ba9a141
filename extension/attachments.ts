/**
 * Devices attached to this machine's kernel: the byte-path worker claims each on the bench and attaches
 * it (vhci_hcd through the polkit helper); this tracks each attachment until it closes for any reason,
 * and finds the local names the kernel gave the device (its bus id, and its tty when a serial driver binds).
 */
import * as vscode from 'vscode';
import type { Logger } from '../server/shared/log.js';
import { ttyOfUsbDevice } from '../server/shared/serial/sysfs-tty.js';
import type { BridgeCloseReason } from './core/usbip/bridge.js';
import type { RemoteAttachment } from './core/worker/core-host.js';
import { Bench } from './benches.js';
import { helperPath } from './settings.js';

export interface AttachedDevice {
  bench: Bench;
  deviceId: string;
  attachment: RemoteAttachment;
  /** vhci port number. */
  port: number;
  /** The device's bus id on this machine ("3-1"), once the kernel has enumerated it. */
  localBusid?: string;
  /** /dev/ttyACM0 etc., once a serial driver has bound. */
  localTty?: string;
  /** Why it was attached: the user, or an auto-attach rule. */
  reason: 'user' | 'rule' | 're-enumerated';
  /** Measured over the last sampling period (bytes per second through the bench), once there is traffic. */
  rate?: { inBps: number; outBps: number };
}

const SAMPLE_MS = 2000;


export const keyOf = (benchId: string, deviceId: string): string => `${benchId}/${deviceId}`;

export class AttachManager implements vscode.Disposable {
  private readonly attached = new Map<string, AttachedDevice>();
  private readonly attaching = new Map<string, Promise<AttachedDevice>>();
  /** `detached.reason` 'local': we closed it (Detach, Detach All, shutdown); anything else: it went by itself. */
  private readonly changed = new vscode.EventEmitter<{ bench: Bench; deviceId: string; detached?: { reason: BridgeCloseReason; message?: string } }>();
  readonly onDidChange = this.changed.event;

  private sampler?: NodeJS.Timeout;
  private readonly lastTraffic = new Map<AttachedDevice, { bytesIn: number; bytesOut: number; at: number }>();

  constructor(private readonly log: Logger) {}

  /** Every 2 s while anything is attached: the rate each device moved data at; redraws only those that changed. */
  private sample(): void {
    const now = performance.now();
    for (const a of this.attached.values()) {
      const t = a.attachment.traffic;
      const last = this.lastTraffic.get(a);
      this.lastTraffic.set(a, { bytesIn: t.bytesIn, bytesOut: t.bytesOut, at: now });
      if (!last) continue;
      const s = (now - last.at) / 1000;
      const rate = { inBps: (t.bytesIn - last.bytesIn) / s, outBps: (t.bytesOut - last.bytesOut) / s };
      const idle = rate.inBps === 0 && rate.outBps === 0;
      if (idle && !a.rate) continue;
      a.rate = idle ? undefined : rate;
      this.changed.fire({ bench: a.bench, deviceId: a.deviceId });
    }
    if (this.attached.size === 0) {
      clearInterval(this.sampler);
      this.sampler = undefined;
      this.lastTraffic.clear();
    }
  }

  get(benchId: string, deviceId: string): AttachedDevice | undefined {
    return this.attached.get(keyOf(benchId, deviceId));
  }

  isAttaching(benchId: string, deviceId: string): boolean {
    return this.attaching.has(keyOf(benchId, deviceId));
  }

  list(): AttachedDevice[] {
    return [...this.attached.values()];
  }

  /** Claims and attaches; rejects with BenchError or AttachError (with a hint and an action). */
  attach(bench: Bench, deviceId: string, reason: AttachedDevice['reason'] = 'user'): Promise<AttachedDevice> {
    const key = keyOf(bench.id, deviceId);
    const existing = this.attached.get(key);
    if (existing) return Promise.resolve(existing);
    let pending = this.attaching.get(key);
    if (!pending) {
      pending = this.doAttach(bench, deviceId, reason).finally(() => {
        this.attaching.delete(key);
        this.changed.fire({ bench, deviceId });
      });
      this.attaching.set(key, pending);
      this.changed.fire({ bench, deviceId });
    }
    return pending;
  }

  private async doAttach(bench: Bench, deviceId: string, reason: AttachedDevice['reason']): Promise<AttachedDevice> {
    const client = bench.client;
    if (!client || client.state !== 'online') throw new Error(`Bench ${bench.name} is ${bench.state}; attach again when it is online.`);
    const attachment = await client.attach(deviceId, { helperPath: helperPath() });
    const entry: AttachedDevice = { bench, deviceId, attachment, port: attachment.port, reason };
    const key = keyOf(bench.id, deviceId);
    this.attached.set(key, entry);
    this.sampler ??= setInterval(() => this.sample(), SAMPLE_MS);
    this.log.info(`attached ${deviceId} from ${bench.name} on vhci port ${attachment.port}`);
    void attachment.closed.then((info) => {
      this.attached.delete(key);
      this.log.info(`${deviceId} from ${bench.name} left this machine: ${info.reason}${info.message ? ` (${info.message})` : ''}`);
      this.changed.fire({ bench, deviceId, detached: { reason: info.reason, message: info.message } });
    });
    void this.findLocalNames(entry);
    return entry;
  }

  async detach(benchId: string, deviceId: string): Promise<void> {
    await this.attached.get(keyOf(benchId, deviceId))?.attachment.detach();
  }

  /**
   * Detaches everything, including attaches that finish within 5 s (one waiting for a password does
   * not hold shutdown): a port the helper attached whose client then went away unclosed was seen to
   * stay stuck in vhci_hcd (state 005, in the real-kernel suite).
   */
  async detachAll(): Promise<number> {
    const inProgress = Promise.all([...this.attaching.values()].map((p) => p.catch(() => {})));
    await Promise.race([inProgress, new Promise((r) => setTimeout(r, 5000).unref())]);
    const all = this.list();
    await Promise.all(all.map((a) => this.detach(a.bench.id, a.deviceId)));
    return all.length;
  }

  /** Waits (up to 15 s) for the kernel to enumerate the device and a serial driver to bind. */
  private async findLocalNames(entry: AttachedDevice): Promise<void> {
    const { readVhciStatus } = await import('./core/usbip/vhci-status.js');
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline && this.attached.get(keyOf(entry.bench.id, entry.deviceId)) === entry) {
      try {
        const port = readVhciStatus().find((p) => p.port === entry.port);
        if (port && port.localBusid !== '0-0') {
          entry.localBusid = port.localBusid;
          entry.localTty = ttyOfUsbDevice(port.localBusid);
          if (entry.localTty) break;
        }
      } catch {
        // vhci status unreadable for a moment: try again
      }
      await new Promise((r) => setTimeout(r, 250));
    }
    this.changed.fire({ bench: entry.bench, deviceId: entry.deviceId });
  }

  dispose(): void {
    clearInterval(this.sampler);
    void this.detachAll();
    this.changed.dispose();
  }
}
