/**
 * The kernel side of USB/IP for one attached device: vhci_hcd writes CMD_SUBMIT / CMD_UNLINK into a
 * connected unix stream socket, and this bridge runs each URB on the bench (ClaimedDevice.start) and
 * writes RET_SUBMIT / RET_UNLINK back. It plays the part the kernel's usbip-host (stub_rx.c / stub_tx.c)
 * plays on an exporting machine, with the bench's USB stack in place of the local host controller.
 *
 * The socket is any Duplex (a net.Socket in production, an in-memory pair in tests); the device is
 * anything with ClaimedDevice's URB interface. Nothing here touches vhci's sysfs files (attach.ts does).
 * What a command asks of the bench and what an answer becomes is pure translation (urb-translate.ts);
 * this class keeps the URBs' bookkeeping, the unlink rules, the grace period and the writing.
 *
 * - Many URBs in flight: each CMD_SUBMIT becomes one bench URB at once; the bench (like a host
 *   controller) completes URBs of one endpoint in order, and replies go out in completion order.
 * - Endpoint 0 is control (setup from the header). Other endpoints are bulk or interrupt by their
 *   endpoint descriptor (EndpointTable, read before attach and kept current by the SET_CONFIGURATION /
 *   SET_INTERFACE requests that succeed through here). Isochronous URBs are refused (see below).
 * - Everything the kernel sends is checked: the codec checks lengths and fields; here devid, duplicate
 *   seqnums and OUT data length. A bad stream cannot be resynchronised, so it closes the bridge with an
 *   error naming the problem; the kernel then sees the connection close and detaches the port itself.
 * - Replies written in one tick are coalesced into one writev (cork/uncork). When socket.write()
 *   returns false we stop writing until 'drain' and stop reading commands, so a kernel that does not
 *   read its replies cannot make us buffer without bound; the same happens at `maxInFlight` URBs.
 * - actual_length never exceeds transfer_buffer_length (vhci drops the device if it does).
 */
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import type { PendingUrb as BenchUrb } from '../bench-client.js';
import { NO_DATA, parseSetup, UrbRequest, UrbResult, UrbStatus } from '../../../server/protocol/urb.js';
import type { DeviceInfo } from '../../../server/protocol/messages.js';
import { Logger, silentLogger } from '../../../server/shared/log.js';
import { MAX_URBS_IN_FLIGHT } from '../../../server/protocol/constants.js';
import {
  encodeRetSubmit,
  encodeRetUnlink,
  UsbipCmdSubmit,
  UsbipCmdSubmitIso,
  UsbipCmdUnlink,
  UsbipCommand,
  UsbipDecoder,
  UsbipProtocolError,
} from './codec.js';
import { USBIP_DIR_IN, USBIP_DIR_OUT } from './constants.js';
import { endpointAddress, isRefusal, replyOf, requestOf } from './urb-translate.js';
import { endpointName, EndpointTable } from './endpoints.js';

/** What the bridge uses of a claimed device: ClaimedDevice has this shape; tests pass a fake. */
export interface BridgeDevice {
  readonly info: DeviceInfo;
  readonly lost: boolean;
  readonly lostReason?: string;
  start(urb: UrbRequest): BenchUrb;
  cancel(id: number): void;
  on(event: 'lost', listener: (reason: string) => void): unknown;
  on(event: 'suspended' | 'resumed', listener: () => void): unknown;
  off(event: 'lost', listener: (reason: string) => void): unknown;
  off(event: 'suspended' | 'resumed', listener: () => void): unknown;
}


export type BridgeState = 'new' | 'running' | 'offline' | 'closing' | 'closed';

export type BridgeCloseReason =
  /** The kernel closed the connection (port detached, or vhci gave up on the device). */
  | 'socket-closed'
  /** The socket failed (ECONNRESET, EPIPE …). */
  | 'socket-error'
  /** The kernel sent something we cannot accept; `message` names it. */
  | 'protocol-error'
  /** The device was unplugged from the bench, or could not be claimed again after a reconnect. */
  | 'device-lost'
  /** The bench connection stayed down longer than the grace period. */
  | 'bench-offline'
  /** close() was called (detach). */
  | 'local';

export interface BridgeClosed {
  reason: BridgeCloseReason;
  message: string;
  error?: Error;
}

export interface UsbipBridgeOptions {
  /** (busnum << 16) | devnum as given to vhci's attach; every command must carry it. */
  devid: number;
  /** The device's endpoints (readEndpointTable). */
  endpoints: EndpointTable;
  log?: Logger;
  /**
   * How long the port stays attached while the bench connection is down, ms (default 30 s). URBs
   * submitted meanwhile wait (like a device that NAKs) and run after the reconnect; after this long
   * the bridge closes and the kernel sees the device unplugged.
   */
  offlineGraceMs?: number;
  /** Stop reading commands while this many URBs are pending (default MAX_URBS_IN_FLIGHT, the bench's cap). */
  maxInFlight?: number;
  /** On close, how long to wait for the bench to answer the cancels of URBs still running (default 2 s). */
  closeDrainMs?: number;
}

export interface BridgeStats {
  submitted: number;
  completed: number;
  /** URBs answered with RET_UNLINK(-ECONNRESET) instead of a RET_SUBMIT. */
  unlinked: number;
  /** Refused without running (isochronous, bad direction, unknown endpoint). */
  refused: number;
  /** Bytes of OUT data taken from the kernel / IN data given to it. */
  bytesOut: number;
  bytesIn: number;
}

export interface UsbipBridgeEvents {
  closed: [BridgeClosed];
  /** The bench connection dropped; URBs are being held (grace period running). */
  offline: [];
  /** The bench connection is back; held URBs were submitted. */
  online: [];
}

/** A URB the kernel submitted and has not had an answer for: its command, what the bench runs for it, and the bookkeeping. */
interface KernelUrb {
  cmd: UsbipCmdSubmit;
  /** bEndpointAddress (direction bit included) for messages. */
  address: number;
  request: UrbRequest;
  /** 'held': waiting for the bench to come back; 'sent': running on the bench as `id`. */
  state: 'held' | 'sent';
  id: number;
  /** seqnums of the CMD_UNLINKs that target this URB, answered when it completes. */
  unlinks: number[];
  /** IN bulk/interrupt: safe to run again after the connection dropped (see the grace period notes). */
  replayable: boolean;
  /** dev.cancel() was called for it (once is enough, see "UNLINK strategy"). */
  cancelled: boolean;
}

/** kernel: include/uapi/linux/usb/ch9.h */
const USB_REQ_SET_CONFIGURATION = 0x09;
const USB_REQ_SET_INTERFACE = 0x0b;

const DEFAULT_OFFLINE_GRACE_MS = 30_000;
const DEFAULT_CLOSE_DRAIN_MS = 2_000;

function hex(n: number): string {
  return `0x${(n >>> 0).toString(16).padStart(8, '0')}`;
}

export class UsbipBridge extends EventEmitter<UsbipBridgeEvents> {
  private readonly decoder: UsbipDecoder;
  private readonly log: Logger;
  private readonly devid: number;
  private readonly endpoints: EndpointTable;
  private readonly maxInFlight: number;
  private readonly offlineGraceMs: number;
  private readonly closeDrainMs: number;

  /*
   * UNLINK strategy (modelled on usbipd-win's comment next to its PendingSubmits, and on what
   * vhci_rx.c accepts). `pending` holds every URB from its CMD_SUBMIT until the kernel has been
   * answered for it; a CMD_UNLINK looks its target up here:
   *
   * - Target not here (never seen, or its RET_SUBMIT is already written or queued ahead in `out`):
   *   RET_UNLINK status 0 at once. vhci has given the URB back (or will, from the RET_SUBMIT that is
   *   ahead of this reply on the stream) and ignores the status.
   * - Target held (bench offline, never sent): dropped, RET_UNLINK(-ECONNRESET) at once.
   * - Target running on the bench: dev.cancel(id), remember the unlink's seqnum, answer nothing yet.
   *   The bench answers every URB exactly once, cancelled or not, and that completion decides:
   *     * cancel won (-ECONNRESET / -ENOENT, or -ESHUTDOWN: the bench connection dropped under it)
   *       before any byte moved: RET_UNLINK(-ECONNRESET) and NO RET_SUBMIT, ever. vhci
   *       gives the URB back with that status; a RET_SUBMIT for the seqnum afterwards would name a URB
   *       it no longer has and make it drop the whole device.
   *     * cancel lost (the transfer finished first): RET_SUBMIT with the real result (IN data is not
   *       thrown away), then RET_UNLINK(0). vhci_rx.c gives the URB back on the RET_SUBMIT (it is
   *       still in its list while the unlink is pending) and then logs "already given back".
   *     * cancel won after some bytes moved (the bench cancels for real and returns what the transfer
   *       did move): handled like a lost cancel, RET_SUBMIT with -ECONNRESET and those bytes, then
   *       RET_UNLINK(0) — the URB comes back as a local host controller gives back an unlinked URB.
   *   Waiting for the completion (instead of answering RET_UNLINK at once and dropping the late
   *   RET_SUBMIT) keeps the bench's FIFO semantics honest: data the device produced is never lost
   *   because of an unlink that came too late, and the kernel never reuses an endpoint while the bench
   *   still runs the old transfer. The kernel's own stub_tx.c answers the same way (RET_UNLINK with the
   *   URB's status), but loses IN data when the unlink comes late.
   * - A second CMD_UNLINK for the same URB (vhci never sends one) gets RET_UNLINK(0) with the first.
   * - One cancel is enough: BenchClient sends it on the stream that carried its URB's submit, so it
   *   never overtakes the submit, and across a dropped connection it is sent again with the URB if the
   *   bench did not get it (urb-lanes.ts). The bench cancels the transfer for real.
   */
  private readonly pending = new Map<number, KernelUrb>();
  /** URBs waiting for the bench to come back, in submission order. */
  private held: KernelUrb[] = [];

  private out: Buffer[] = [];
  private flushScheduled = false;
  private writeBlocked = false;
  private inputPaused = false;
  /**
   * new → running ⇄ offline (the bench connection is down; the grace timer runs) → closing (finish():
   * the socket is ending, URBs still on the bench are cancelled) → closed ('closed' emitted).
   */
  private lifecycle: BridgeState = 'new';
  private graceTimer?: NodeJS.Timeout;
  private closeInfo?: BridgeClosed;
  private drainWaiters: (() => void)[] = [];
  private readonly warnedEndpoints = new Set<number>();
  private readonly closedPromise: Promise<BridgeClosed>;
  private resolveClosed!: (c: BridgeClosed) => void;
  readonly stats: BridgeStats = { submitted: 0, completed: 0, unlinked: 0, refused: 0, bytesOut: 0, bytesIn: 0 };

  constructor(
    private readonly dev: BridgeDevice,
    private readonly socket: Duplex,
    options: UsbipBridgeOptions,
  ) {
    super();
    this.devid = options.devid >>> 0;
    this.endpoints = options.endpoints;
    this.log = options.log ?? silentLogger;
    this.maxInFlight = options.maxInFlight ?? MAX_URBS_IN_FLIGHT;
    this.offlineGraceMs = options.offlineGraceMs ?? DEFAULT_OFFLINE_GRACE_MS;
    this.closeDrainMs = options.closeDrainMs ?? DEFAULT_CLOSE_DRAIN_MS;
    this.decoder = new UsbipDecoder({
      isIsochronous: (ep, direction) => ep !== 0 && this.endpoints.typeOf(ep | (direction === USBIP_DIR_IN ? 0x80 : 0)) === 'isochronous',
    });
    this.closedPromise = new Promise((resolve) => (this.resolveClosed = resolve));
  }

  /** Resolves once the bridge has closed and nothing it started is still running on the bench. */
  get closed(): Promise<BridgeClosed> {
    return this.closedPromise;
  }

  /** URBs the kernel is waiting for (running on the bench or held). */
  get inFlight(): number {
    return this.pending.size;
  }

  get isOffline(): boolean {
    return this.lifecycle === 'offline';
  }

  get state(): BridgeState {
    return this.lifecycle;
  }

  /** Closing or closed: nothing new is started. */
  private get ending(): boolean {
    return this.lifecycle === 'closing' || this.lifecycle === 'closed';
  }

  private get name(): string {
    const i = this.dev.info;
    return `${i.product ?? i.id} (${i.id})`;
  }

  /** Starts reading commands. Listeners for 'closed' should be in place first. */
  start(): this {
    if (this.lifecycle !== 'new') return this;
    this.lifecycle = 'running';
    this.dev.on('lost', this.onLost);
    this.dev.on('suspended', this.onSuspended);
    this.dev.on('resumed', this.onResumed);
    this.socket.on('data', this.onData);
    this.socket.on('end', this.onEnd);
    this.socket.on('error', this.onSocketError);
    this.socket.on('close', this.onSocketClose);
    this.socket.on('drain', this.onDrain);
    if (this.dev.lost) {
      this.finish('device-lost', `${this.name} is no longer available: ${this.dev.lostReason ?? 'lost'}`);
    } else if (this.socket.destroyed || this.socket.readableEnded) {
      // The other end went away before we listened ('end' already emitted).
      this.finish('socket-closed', 'the USB/IP connection closed before the bridge started');
    } else {
      // A paused socket (pauseOnConnect) stays paused until resumed explicitly.
      this.socket.resume();
    }
    return this;
  }

  /** Ends the bridge (detach): cancels what runs on the bench, closes the socket. */
  close(message = 'detached'): Promise<BridgeClosed> {
    this.finish('local', message);
    return this.closedPromise;
  }

  // ---------------------------------------------------------------------------------------------------
  // Commands from the kernel
  // ---------------------------------------------------------------------------------------------------

  private readonly onData = (chunk: Buffer): void => {
    this.decoder.push(chunk);
    this.readCommands();
  };

  private readCommands(): void {
    try {
      while (!this.ending && !this.mustPause()) {
        const cmd = this.decoder.next();
        if (!cmd) break;
        this.handle(cmd);
      }
    } catch (e) {
      this.protocolError(e as Error);
      return;
    }
    this.updateFlow();
  }

  private handle(cmd: UsbipCommand): void {
    if (cmd.devid >>> 0 !== this.devid) {
      throw new UsbipProtocolError(`${cmd.kind === 'unlink' ? 'USBIP_CMD_UNLINK' : 'USBIP_CMD_SUBMIT'} seqnum ${cmd.seqnum} has devid ${hex(cmd.devid)}, but this port's device is ${hex(this.devid)}`);
    }
    if (cmd.kind === 'unlink') this.onUnlink(cmd);
    else this.onSubmit(cmd);
  }

  private onSubmit(cmd: UsbipCmdSubmit | UsbipCmdSubmitIso): void {
    if (this.pending.has(cmd.seqnum)) {
      throw new UsbipProtocolError(`duplicate seqnum ${cmd.seqnum}: a USBIP_CMD_SUBMIT with it is still pending`);
    }
    if (cmd.direction === USBIP_DIR_OUT && cmd.data.length !== cmd.transfer_buffer_length) {
      throw new UsbipProtocolError(`USBIP_CMD_SUBMIT seqnum ${cmd.seqnum} carries ${cmd.data.length} bytes of OUT data, transfer_buffer_length is ${cmd.transfer_buffer_length}`);
    }
    this.stats.submitted++;
    const address = endpointAddress(cmd);
    if (cmd.kind === 'isoSubmit') {
      this.refuse(cmd, address, UrbStatus.EINVAL, `isochronous URB on ${endpointName(address)} refused: Remote USB does not carry isochronous transfers (audio/video streaming)`);
      return;
    }
    if (cmd.ep !== 0 && this.endpoints.typeOf(address) === undefined && cmd.number_of_packets !== 0 && cmd.number_of_packets !== -1) {
      // Isochronous-looking URB on an endpoint we have no descriptor for: its packet descriptors were
      // not read, so the stream is out of step from here on.
      throw new UsbipProtocolError(`USBIP_CMD_SUBMIT seqnum ${cmd.seqnum} on ${endpointName(address)}, which is not in the device's descriptors, has number_of_packets ${cmd.number_of_packets}`);
    }
    const request = requestOf(cmd, this.endpoints);
    if (isRefusal(request)) {
      if (request.unknownEndpoint && !this.warnedEndpoints.has(address)) {
        this.warnedEndpoints.add(address);
        this.log.warn(`${this.name}: the kernel used ${endpointName(address)}, which is not in the device's descriptors`);
      }
      this.refuse(cmd, address, request.status, `URB seqnum ${cmd.seqnum} on ${endpointName(address)} refused: ${request.why}`);
      return;
    }
    if (cmd.direction === USBIP_DIR_OUT) this.stats.bytesOut += cmd.data.length;
    const urb: KernelUrb = {
      cmd,
      address,
      request,
      state: 'held',
      id: 0,
      unlinks: [],
      cancelled: false,
      replayable: request.type !== 'control' && cmd.direction === USBIP_DIR_IN,
    };
    this.pending.set(cmd.seqnum, urb);
    if (this.lifecycle === 'offline') this.held.push(urb);
    else this.send(urb);
  }

  private refuse(cmd: UsbipCmdSubmit | UsbipCmdSubmitIso, address: number, status: number, why: string): void {
    this.stats.refused++;
    // The first refusal per endpoint is a warning; a driver retrying in a loop must not flood the log.
    if (this.warnedEndpoints.has(address)) {
      this.log.debug(`${this.name}: ${why}`);
    } else {
      this.warnedEndpoints.add(address);
      this.log.warn(`${this.name}: ${why}`);
    }
    // For an ISO URB: status < 0, actual_length 0, number_of_packets 0, no descriptors (codec.ts).
    this.enqueue(encodeRetSubmit({ seqnum: cmd.seqnum, devid: 0, direction: USBIP_DIR_OUT, ep: 0, status, actual_length: 0 }));
  }

  private onUnlink(cmd: UsbipCmdUnlink): void {
    const target = this.pending.get(cmd.unlink_seqnum);
    if (!target) {
      this.log.debug(`${this.name}: unlink ${cmd.seqnum} of seqnum ${cmd.unlink_seqnum}, already answered`);
      this.enqueue(encodeRetUnlink({ seqnum: cmd.seqnum, devid: 0, direction: USBIP_DIR_OUT, ep: 0, status: UrbStatus.OK }));
      return;
    }
    if (target.state === 'held') {
      this.pending.delete(target.cmd.seqnum);
      this.held = this.held.filter((u) => u !== target);
      this.stats.unlinked++;
      this.enqueue(encodeRetUnlink({ seqnum: cmd.seqnum, devid: 0, direction: USBIP_DIR_OUT, ep: 0, status: UrbStatus.ECONNRESET }));
      return;
    }
    target.unlinks.push(cmd.seqnum);
    this.cancel(target);
  }

  /** Asks the bench to cancel a URB it runs; its completion answers the unlink (see "UNLINK strategy"). */
  private cancel(urb: KernelUrb): void {
    if (this.pending.get(urb.cmd.seqnum) !== urb || urb.state !== 'sent' || urb.cancelled) return;
    urb.cancelled = true;
    this.dev.cancel(urb.id);
  }

  // ---------------------------------------------------------------------------------------------------
  // URBs on the bench
  // ---------------------------------------------------------------------------------------------------

  private send(urb: KernelUrb): void {
    urb.state = 'sent';
    let started: BenchUrb;
    try {
      started = this.dev.start(urb.request);
    } catch (e) {
      started = { id: 0, done: Promise.resolve<UrbResult>({ status: UrbStatus.EPROTO, actual: 0, data: NO_DATA, error: (e as Error).message }) };
    }
    urb.id = started.id;
    started.done.then(
      (r) => this.completed(urb, r),
      (e: Error) => this.completed(urb, { status: UrbStatus.EPROTO, actual: 0, data: NO_DATA, error: e.message }),
    ).catch((e: Error) => this.protocolError(e));
  }

  private completed(urb: KernelUrb, r: UrbResult): void {
    if (this.pending.get(urb.cmd.seqnum) !== urb) return; // defensive: every URB completes once
    if (this.ending) {
      this.pending.delete(urb.cmd.seqnum);
      this.checkDrained();
      return;
    }
    // The connection to the bench is going or gone under this URB: ClaimedDevice completes it with
    // -ESHUTDOWN when the connection drops, and the bench itself uses -ESHUTDOWN only for URBs cut
    // short because the session is ending (daemon stopping); no USB backend reports it. See "grace
    // period" at onSuspended.
    if (r.status === UrbStatus.ESHUTDOWN && !this.dev.lost) {
      this.goOffline();
      if (urb.unlinks.length === 0 && urb.replayable) {
        urb.state = 'held';
        this.held.push(urb);
        return;
      }
      if (urb.unlinks.length === 0) r = { ...r, status: UrbStatus.EPROTO };
    }
    this.pending.delete(urb.cmd.seqnum);
    this.stats.completed++;
    if (urb.unlinks.length > 0) {
      const cancelWon = r.status === UrbStatus.ECONNRESET || r.status === UrbStatus.ENOENT || r.status === UrbStatus.ESHUTDOWN;
      const moved = urb.cmd.direction === USBIP_DIR_IN ? r.data.length : r.actual;
      if (cancelWon && moved === 0) {
        this.stats.unlinked++;
        urb.unlinks.forEach((seqnum, i) => this.enqueue(encodeRetUnlink({ seqnum, devid: 0, direction: USBIP_DIR_OUT, ep: 0, status: i === 0 ? UrbStatus.ECONNRESET : UrbStatus.OK })));
      } else {
        // The transfer finished first, or was cancelled part way: the bytes it moved go to the driver with
        // its status (as a local host controller gives an unlinked URB back with its actual_length).
        if (cancelWon) this.stats.unlinked++;
        this.enqueue(this.retSubmit(urb, r));
        for (const seqnum of urb.unlinks) this.enqueue(encodeRetUnlink({ seqnum, devid: 0, direction: USBIP_DIR_OUT, ep: 0, status: UrbStatus.OK }));
      }
    } else {
      this.enqueue(this.retSubmit(urb, r));
    }
    if (r.status === 0) this.followStandardRequest(urb);
    if (r.status === UrbStatus.ENODEV && this.dev.lost) {
      this.finish('device-lost', `${this.name} is no longer available: ${this.dev.lostReason ?? 'lost'}`);
      return;
    }
    this.resumeInput();
  }

  private retSubmit(urb: KernelUrb, r: UrbResult): Buffer {
    const reply = replyOf(urb.cmd, r);
    if (reply.clamped) this.log.debug(`${this.name}: ${endpointName(urb.address)} returned ${r.data.length} bytes for a ${urb.cmd.transfer_buffer_length}-byte URB; clamped`);
    if (urb.cmd.direction === USBIP_DIR_IN) this.stats.bytesIn += reply.actual;
    return encodeRetSubmit({ seqnum: urb.cmd.seqnum, devid: 0, direction: USBIP_DIR_OUT, ep: 0, status: reply.status, actual_length: reply.actual, data: reply.data });
  }

  /** The bench turned SET_CONFIGURATION / SET_INTERFACE into host operations; follow them. */
  private followStandardRequest(urb: KernelUrb): void {
    if (urb.request.type !== 'control' || !urb.request.setup) return;
    const s = parseSetup(urb.request.setup);
    if (s.bmRequestType === 0x00 && s.bRequest === USB_REQ_SET_CONFIGURATION) this.endpoints.setConfiguration(s.wValue & 0xff);
    else if (s.bmRequestType === 0x01 && s.bRequest === USB_REQ_SET_INTERFACE) this.endpoints.setInterface(s.wIndex & 0xff, s.wValue & 0xff);
  }

  // ---------------------------------------------------------------------------------------------------
  // Bench connection: grace period
  // ---------------------------------------------------------------------------------------------------

  /*
   * Grace period when the bench connection drops ('suspended'). The kernel keeps the port attached
   * for up to `offlineGraceMs`; if the connection comes back in time ('resumed') the kernel never
   * notices more than a slow device. Usually the bench resumes the session (bench-client.ts): URBs
   * running when the connection dropped simply complete after it, nothing is lost. When it cannot (the
   * daemon restarted, or the drop outlasted its grace):
   * - URBs running when the connection dropped come back as -ESHUTDOWN (from ClaimedDevice, or from a
   *   bench that is stopping, just before the connection closes; either starts the grace period). Whether
   *   they reached the device is unknown. IN bulk/interrupt URBs are held and run again after the
   *   reconnect: that is what the driver would do itself, and reading twice loses nothing that the
   *   drop had not already lost. OUT and control URBs are not repeated (a write could land twice):
   *   they complete with -EPROTO, a transfer error drivers retry (cdc-acm, usbhid, usb-storage), and
   *   not -ESHUTDOWN, which they read as "device gone" and stop using it.
   * - URBs submitted while offline are held in order (the device "NAKs"); an unlink of a held URB is
   *   answered at once with -ECONNRESET, so drivers' own timeouts still work.
   * - After the grace period, the bridge closes (reason 'bench-offline'): the kernel sees the device
   *   unplugged, the port is freed, and held URBs are simply dropped with the connection.
   * 'lost' (unplugged from the bench, or not re-claimable) ends the bridge at once.
   */
  private readonly onSuspended = (): void => this.goOffline();

  private goOffline(): void {
    if (this.lifecycle !== 'running') return;
    this.lifecycle = 'offline';
    this.log.warn(`${this.name}: bench connection lost; keeping the port attached for ${Math.round(this.offlineGraceMs / 1000)} s`);
    this.graceTimer = setTimeout(() => {
      this.finish('bench-offline', `the bench was unreachable for ${Math.round(this.offlineGraceMs / 1000)} s`);
    }, this.offlineGraceMs);
    this.emit('offline');
  }

  private readonly onResumed = (): void => {
    if (this.lifecycle !== 'offline') return;
    this.lifecycle = 'running';
    clearTimeout(this.graceTimer);
    const held = this.held;
    this.held = [];
    this.log.info(`${this.name}: bench connection back; resubmitting ${held.length} URB(s)`);
    for (const urb of held) this.send(urb);
    this.emit('online');
  };

  private readonly onLost = (reason: string): void => {
    this.finish('device-lost', `${this.name} is no longer available: ${reason}`);
  };

  // ---------------------------------------------------------------------------------------------------
  // Writing and flow control
  // ---------------------------------------------------------------------------------------------------

  private enqueue(buf: Buffer): void {
    this.out.push(buf);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      process.nextTick(this.flush);
    }
  }

  private readonly flush = (): void => {
    this.flushScheduled = false;
    if (this.writeBlocked || this.out.length === 0 || this.socket.destroyed || !this.socket.writable) return;
    const bufs = this.out;
    this.out = [];
    let ok: boolean;
    if (bufs.length === 1) {
      ok = this.socket.write(bufs[0]);
    } else {
      this.socket.cork();
      ok = true;
      for (const b of bufs) ok = this.socket.write(b);
      this.socket.uncork();
    }
    if (!ok) {
      this.writeBlocked = true;
      this.updateFlow();
    }
  };

  private readonly onDrain = (): void => {
    if (!this.writeBlocked) return;
    this.writeBlocked = false;
    this.flush();
    this.resumeInput();
  };

  private mustPause(): boolean {
    return this.writeBlocked || this.pending.size >= this.maxInFlight;
  }

  /** Pauses or resumes reading from the socket to match mustPause(). */
  private updateFlow(): void {
    if (this.ending) return;
    const pause = this.mustPause();
    if (pause && !this.inputPaused) {
      this.inputPaused = true;
      this.socket.pause();
    } else if (!pause && this.inputPaused) {
      this.inputPaused = false;
      this.socket.resume();
    }
  }

  private resumeInput(): void {
    if (this.ending) return;
    if (this.inputPaused && !this.mustPause()) this.readCommands();
    else this.updateFlow();
  }

  // ---------------------------------------------------------------------------------------------------
  // The end
  // ---------------------------------------------------------------------------------------------------

  private readonly onEnd = (): void => {
    if (this.ending) return;
    // Whole commands may still be buffered if we had paused; the kernel that sent them is gone.
    if (!this.inputPaused) {
      try {
        this.decoder.end();
      } catch (e) {
        this.protocolError(e as Error);
        return;
      }
    }
    this.finish('socket-closed', 'the kernel closed the connection (port detached)');
  };

  private readonly onSocketError = (e: Error): void => {
    this.finish('socket-error', `USB/IP socket failed: ${e.message}`, e);
  };

  private readonly onSocketClose = (): void => {
    this.finish('socket-closed', 'the USB/IP connection closed');
  };

  private protocolError(e: Error): void {
    const message = e instanceof UsbipProtocolError ? `bad USB/IP data from the kernel: ${e.message}` : `bridge failure: ${e.stack ?? e.message}`;
    this.finish('protocol-error', message, e);
  }

  private finish(reason: BridgeCloseReason, message: string, error?: Error): void {
    if (this.ending) return;
    this.lifecycle = 'closing';
    this.closeInfo = { reason, message, error };
    const line = `${this.name}: USB/IP bridge closed (${reason}): ${message}`;
    if (reason === 'protocol-error') this.log.error(line);
    else if (reason === 'local' || reason === 'socket-closed') this.log.info(line);
    else this.log.warn(line);
    clearTimeout(this.graceTimer);
    this.dev.off('lost', this.onLost);
    this.dev.off('suspended', this.onSuspended);
    this.dev.off('resumed', this.onResumed);
    this.socket.off('data', this.onData);
    this.socket.off('drain', this.onDrain);
    // Held URBs were never sent; those still on the bench are cancelled so nothing outlives the port.
    for (const urb of this.held) this.pending.delete(urb.cmd.seqnum);
    this.held = [];
    for (const urb of this.pending.values()) if (urb.state === 'sent') this.cancel(urb);
    // Replies already queued go out before the end (a clean local close); the kernel gives back
    // every URB it still has when the connection closes.
    if (reason === 'protocol-error' || reason === 'socket-error') {
      this.socket.destroy();
    } else if (!this.socket.destroyed) {
      this.writeBlocked = false;
      this.flush();
      this.socket.end();
      const t = setTimeout(() => this.socket.destroy(), 1000);
      t.unref?.();
      this.socket.once('close', () => clearTimeout(t));
    }
    this.out = [];
    const timer = setTimeout(() => this.drainWaiters.splice(0).forEach((f) => f()), this.closeDrainMs);
    this.drainWaiters.push(() => {
      clearTimeout(timer);
      this.lifecycle = 'closed';
      const info = this.closeInfo!;
      this.resolveClosed(info);
      this.emit('closed', info);
    });
    this.checkDrained();
  }

  private checkDrained(): void {
    if (this.lifecycle !== 'closing' || this.pending.size > 0) return;
    this.drainWaiters.splice(0).forEach((f) => f());
  }
}
