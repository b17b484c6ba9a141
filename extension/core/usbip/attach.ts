/**
 * Attaching a claimed remote device to the local kernel, as an unprivileged user:
 *
 *   1. read the device's configuration descriptors through the bench (endpoint types; a device with
 *      isochronous endpoints is refused here, before anything privileged happens);
 *   2. pick a free vhci_hcd port on the root hub the device's speed needs (vhci's status files are
 *      world-readable);
 *   3. make a connected pair of AF_UNIX stream sockets without any TCP listener: a net.Server on a path
 *      inside a fresh mkdtemp directory (mode 0700, so only this user can connect), one connection
 *      from our own net.connect, proven ours by a random token, then the listener, path and directory
 *      are removed at once;
 *   4. run `pkexec remote-usb-helper attach <port> <devid> <speed>` (or the helper directly when
 *      already root) with one end of the pair as its stdin; the helper hands that fd to vhci_hcd and
 *      exits; its exit code becomes a typed AttachError with a message and a hint for the user;
 *   5. run a UsbipBridge on our end.
 *
 * Detach is unprivileged too: closing our end makes vhci_hcd's receive thread see the connection end,
 * and the kernel detaches the device and frees the port itself (vhci_shutdown_connection). We wait
 * for the port to show free and only fall back to `pkexec remote-usb-helper detach <port>` if it does
 * not. The same check runs whenever the bridge closes on its own (device lost, bench unreachable,
 * protocol error), so the port is freed on every exit path.
 */
import { ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { access, constants as fsConstants, mkdtemp, rm, stat } from 'node:fs/promises';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { UrbRequest, UrbResult } from '../../../server/protocol/urb.js';
import { Logger, silentLogger } from '../../../server/shared/log.js';
import type { DeviceInfo } from '../../../server/protocol/messages.js';
import { Exit, HelperError } from '../../../helper/errors.js';
import { DEFAULT_INSTALL_DIR, PKEXEC } from '../../../helper/paths.js';
import { LAUNCHER_NAME } from '../../../helper/templates.js';
import { BridgeClosed, BridgeDevice, UsbipBridge } from './bridge.js';
import { endpointName, EndpointTable, readEndpointTable } from './endpoints.js';
import { isPortFree, pickFreePort, readVhciStatus, vhciSpeedFor, VhciPort } from './vhci-status.js';

/** The installed launcher (`remote-usb-helper install` writes it; the polkit action names it). */
export const DEFAULT_HELPER_PATH = join(DEFAULT_INSTALL_DIR, LAUNCHER_NAME);
export const DEFAULT_SYSFS_ROOT = '/sys/devices/platform';

/** pkexec(1): "126 if the authorization could not be obtained because the user dismissed the dialog". */
const PKEXEC_DISMISSED = 126;
/** pkexec(1): "127 if the user is not authorized or could not obtain authorization, or an error occurred". */
const PKEXEC_NOT_AUTHORIZED = 127;

export type RunAsRoot = 'pkexec' | 'direct';

export interface HelperOptions {
  log?: Logger;
  /** The helper launcher (default DEFAULT_HELPER_PATH). */
  helperPath?: string;
  /** pkexec (default /usr/bin/pkexec). */
  pkexecPath?: string;
  /** 'pkexec' (default for a normal user) or 'direct' (default when already root). */
  runAsRoot?: RunAsRoot;
  /** How long the helper may take, password dialog included (default 120 s). */
  helperTimeoutMs?: number;
  /** Where vhci_hcd.0 lives (default /sys/devices/platform). */
  sysfsRoot?: string;
}

export interface AttachOptions extends HelperOptions {
  /** Parent of the private socket directory (default os.tmpdir()). */
  socketDir?: string;
  /**
   * Attach a device that has isochronous endpoints anyway (default false: refused). Its isochronous
   * URBs are then refused one by one, which is only useful when the driver can live without them.
   */
  allowIsochronous?: boolean;
  /** Endpoint table read beforehand (skips reading the descriptors again). */
  endpoints?: EndpointTable;
  /** UsbipBridgeOptions.offlineGraceMs */
  offlineGraceMs?: number;
  /** UsbipBridgeOptions.maxInFlight */
  maxInFlight?: number;
  /** After our socket closes, how long to wait for the kernel to free the port before running `detach` (default 3 s). */
  detachWaitMs?: number;
}

/** What attachDevice uses of a claimed device (ClaimedDevice has this shape). */
export interface AttachableDevice extends BridgeDevice {
  submit(urb: UrbRequest): Promise<UrbResult>;
}


export type AttachErrorCode =
  | 'helper-missing' // the helper is not installed at helperPath
  | 'pkexec-missing' // pkexec is not installed
  | 'auth-cancelled' // the password dialog was dismissed (pkexec 126)
  | 'not-authorized' // polkit said no, or no authentication agent (pkexec 127)
  | 'vhci-not-loaded' // vhci_hcd is not loaded (helper 4, or no status file)
  | 'port-busy' // the port was taken between our read and the helper's write, twice (helper 5)
  | 'no-free-port' // every vhci port of the right hub is in use
  | 'not-root' // the helper did not run as root (helper 6)
  | 'isochronous' // the device has isochronous endpoints
  | 'unsupported-speed' // the bench does not know the device's speed
  | 'descriptors' // the device's descriptors could not be read through the bench
  | 'socket' // the socket pair could not be made
  | 'helper-timeout' // the helper did not finish in time
  | 'helper-failed'; // anything else (helper 1/2/3, signals, unknown codes)

/** What the UI can offer next to the message. */
export type AttachAction = 'install-helper' | 'load-vhci' | 'retry' | 'show-logs';

export class AttachError extends Error {
  override name = 'AttachError';
  constructor(
    readonly code: AttachErrorCode,
    message: string,
    /** One sentence telling the user what to do. */
    readonly hint: string,
    readonly action?: AttachAction,
    /** The helper's own error line, or the underlying error, for the log. */
    readonly detail?: string,
    readonly exitCode?: number | null,
  ) {
    super(message);
  }
}

/** (busnum << 16) | devnum, as vhci's attach and every USB/IP header carry it. */
export function devidOf(info: Pick<DeviceInfo, 'busnum' | 'devnum'>): number {
  return (((info.busnum & 0xffff) << 16) | (info.devnum & 0xffff)) >>> 0;
}

function speedOf(info: DeviceInfo): number {
  if (info.speed === 'unknown') {
    throw new AttachError('unsupported-speed', `The bench does not know the speed of ${info.product ?? info.id}, so it cannot be attached.`, 'Replug the device on the bench and try again.');
  }
  return vhciSpeedFor(info.speed);
}

// ---------------------------------------------------------------------------------------------------
// Socket pair
// ---------------------------------------------------------------------------------------------------

export interface SocketPair {
  /** Our end: the bridge reads and writes it. Paused. */
  ours: net.Socket;
  /** The end for the helper's stdin (then vhci_hcd). Paused; never read from it. */
  theirs: net.Socket;
}

const TOKEN_BYTES = 16;

/**
 * A connected pair of AF_UNIX stream sockets, made without a socketpair(2) binding: a net.Server on a
 * path in a fresh 0700 directory, exactly one connection from our own net.connect (a random token
 * written on it must arrive on the accepted socket), then listener, path and directory are gone.
 */
export async function createSocketPair(parent = tmpdir()): Promise<SocketPair> {
  const dir = await mkdtemp(join(parent, 'remote-usb-'));
  const path = join(dir, 'usbip.sock');
  const server = net.createServer({ pauseOnConnect: true });
  server.maxConnections = 1;
  let theirs: net.Socket | undefined;
  let ours: net.Socket | undefined;
  try {
    const mode = (await stat(dir)).mode & 0o777;
    if (mode !== 0o700) throw new Error(`${dir} has mode ${mode.toString(8)}, expected 700`);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
    theirs = net.connect(path);
    await new Promise<void>((resolve, reject) => {
      theirs!.once('error', reject);
      theirs!.once('connect', () => {
        theirs!.off('error', reject);
        resolve();
      });
    });
    theirs.pause();
    // Until the bridge takes over, a socket error must not be an unhandled 'error' event; the bridge
    // sees a dead socket as closed when it starts.
    theirs.on('error', () => {});
    ours = await accepted;
    ours.on('error', () => {});
    const token = randomBytes(TOKEN_BYTES);
    theirs.write(token);
    const got = await readExactly(ours, TOKEN_BYTES, 2000);
    if (!got.equals(token)) throw new Error('the accepted connection is not ours');
    return { ours, theirs };
  } catch (e) {
    theirs?.destroy();
    ours?.destroy();
    throw e;
  } finally {
    server.close();
    await rm(dir, { recursive: true, force: true });
  }
}

/** Reads n bytes from a paused socket and pauses it again. */
function readExactly(socket: net.Socket, n: number, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let have = 0;
    const done = (err?: Error): void => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('error', done);
      socket.off('end', onEnd);
      socket.pause();
      if (err) reject(err);
      else resolve(Buffer.concat(chunks));
    };
    const onData = (c: Buffer): void => {
      chunks.push(c);
      have += c.length;
      if (have > n) done(new Error(`${have} bytes arrived on a new socket, expected ${n}`));
      else if (have === n) done();
    };
    const onEnd = (): void => done(new Error('the socket closed before the token arrived'));
    const timer = setTimeout(() => done(new Error('the token did not arrive')), timeoutMs);
    socket.on('data', onData);
    socket.once('error', done);
    socket.once('end', onEnd);
    socket.resume();
  });
}

// ---------------------------------------------------------------------------------------------------
// The helper
// ---------------------------------------------------------------------------------------------------

interface HelperContext {
  log: Logger;
  helperPath: string;
  pkexecPath: string;
  runAsRoot: RunAsRoot;
  timeoutMs: number;
  sysfsRoot: string;
}

function context(o: HelperOptions): HelperContext {
  return {
    log: o.log ?? silentLogger,
    helperPath: o.helperPath ?? DEFAULT_HELPER_PATH,
    pkexecPath: o.pkexecPath ?? PKEXEC,
    runAsRoot: o.runAsRoot ?? (process.geteuid?.() === 0 ? 'direct' : 'pkexec'),
    timeoutMs: o.helperTimeoutMs ?? 120_000,
    sysfsRoot: o.sysfsRoot ?? DEFAULT_SYSFS_ROOT,
  };
}

interface HelperResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

const HELPER_MISSING_HINT = 'Install it once with `sudo node dist/helper.js install` (see helper/README.md), or set the helper path.';

async function checkHelper(ctx: HelperContext): Promise<void> {
  try {
    await access(ctx.helperPath, fsConstants.X_OK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new AttachError(
      'helper-missing',
      code === 'ENOENT' ? `The Remote USB helper is not installed (${ctx.helperPath} does not exist).` : `The Remote USB helper at ${ctx.helperPath} cannot be run (${code}).`,
      HELPER_MISSING_HINT,
      'install-helper',
      (e as Error).message,
    );
  }
}

/** The last line the helper wrote to stderr (its one-line error), for messages. */
function lastLine(text: string): string {
  const lines = text.split('\n').map((l) => l.trim()).filter((l) => l !== '');
  return lines[lines.length - 1] ?? '';
}

/** Runs `[pkexec] helper <args>` with `stdin` (a socket end, or nothing). */
function runHelper(ctx: HelperContext, args: string[], stdin: net.Socket | 'ignore'): Promise<HelperResult> {
  const [command, argv] = ctx.runAsRoot === 'pkexec' ? [ctx.pkexecPath, [ctx.helperPath, ...args]] : [ctx.helperPath, args];
  ctx.log.debug(`running ${command} ${argv.join(' ')}`);
  return new Promise((resolve, reject) => {
    let child: ChildProcess;
    try {
      child = spawn(command, argv, { stdio: [stdin, 'pipe', 'pipe'], env: process.env });
    } catch (e) {
      reject(new AttachError('helper-failed', `Could not start ${command}: ${(e as Error).message}`, 'See the log for details.', 'show-logs', (e as Error).message));
      return;
    } finally {
      // The child has its own copy of the fd now (spawn returns after exec): ours must go, or we would
      // keep the kernel's end open (and could read bytes meant for it).
      if (stdin !== 'ignore') stdin.destroy();
    }
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (s: string) => { if (stdout.length < 65536) stdout += s; });
    child.stderr!.setEncoding('utf8').on('data', (s: string) => { if (stderr.length < 65536) stderr += s; });
    let settled = false;
    const timer = setTimeout(() => {
      child.kill('SIGTERM');
      settle(new AttachError('helper-timeout', `${ctx.runAsRoot === 'pkexec' ? 'pkexec' : 'The helper'} did not finish within ${Math.round(ctx.timeoutMs / 1000)} s.`, 'Try again; answer the password prompt if one appears.', 'retry'));
    }, ctx.timeoutMs);
    const settle = (r: HelperResult | Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (r instanceof Error) reject(r);
      else resolve(r);
    };
    child.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT' && command === ctx.pkexecPath && ctx.runAsRoot === 'pkexec') {
        settle(new AttachError('pkexec-missing', `pkexec is not installed (${ctx.pkexecPath} does not exist).`, 'Install it (Debian/Ubuntu: `sudo apt install pkexec`), or run the helper with sudo.', undefined, e.message));
      } else if (e.code === 'ENOENT' || e.code === 'EACCES') {
        settle(new AttachError('helper-missing', `The Remote USB helper at ${ctx.helperPath} cannot be run (${e.code}).`, HELPER_MISSING_HINT, 'install-helper', e.message));
      } else {
        settle(new AttachError('helper-failed', `Could not start ${command}: ${e.message}`, 'See the log for details.', 'show-logs', e.message));
      }
    });
    child.on('close', (code, signal) => settle({ code, signal, stdout, stderr }));
  });
}

/** Maps a failed helper run to the error the user sees. */
function helperFailure(verb: 'attach' | 'detach' | 'load', r: HelperResult, ctx: HelperContext, port?: number): AttachError {
  const detail = lastLine(r.stderr) || lastLine(r.stdout) || undefined;
  const fail = (code: AttachErrorCode, message: string, hint: string, action?: AttachAction): AttachError =>
    new AttachError(code, message, hint, action, detail, r.code);
  if (r.code === null) {
    return fail('helper-failed', `remote-usb-helper ${verb} was killed (${r.signal ?? 'signal'}).`, 'Try again; see the log if it keeps happening.', 'show-logs');
  }
  if (ctx.runAsRoot === 'pkexec') {
    if (r.code === PKEXEC_DISMISSED) {
      return fail('auth-cancelled', 'Authentication was cancelled, so nothing was attached.', 'Try again and enter your password when asked.', 'retry');
    }
    if (r.code === PKEXEC_NOT_AUTHORIZED) {
      return fail(
        'not-authorized',
        `You are not authorised to ${verb} USB/IP devices on this machine${detail ? ` (${detail})` : ''}.`,
        'An administrator can allow a group without a password at the machine\'s seat: `sudo remote-usb-helper install --group <group>`; SSH sessions need a polkit rule of their own (see the helper\'s README); without a desktop, a polkit authentication agent must be running.',
      );
    }
  }
  if (r.code === Exit.NOT_OWNER) {
    return fail('not-authorized', `vhci port ${port} was attached by another user${detail ? ` (${detail})` : ''}.`, 'Only the user who attached a device (or root) can detach it.');
  }
  switch (r.code) {
    case Exit.NO_VHCI:
      return fail('vhci-not-loaded', 'The kernel module for USB/IP devices (vhci-hcd) is not loaded.', 'Load it now (runs `remote-usb-helper load` as root), or run `sudo modprobe vhci-hcd`.', 'load-vhci');
    case Exit.REFUSED:
      return verb === 'attach'
        ? fail('port-busy', `vhci port ${port} is busy or the kernel refused the attach${detail ? ` (${detail})` : ''}.`, 'Try again; detach another device if every port is in use.', 'retry')
        : fail('helper-failed', `The kernel refused to ${verb} vhci port ${port}${detail ? ` (${detail})` : ''}.`, 'See the log for details.', 'show-logs');
    case Exit.NOT_ROOT:
      return fail('not-root', 'remote-usb-helper did not run as root.', 'Run it through pkexec (the default), or install it with `sudo node dist/helper.js install`.', 'install-helper');
    case Exit.USAGE:
      return fail('helper-failed', `remote-usb-helper refused the request${detail ? `: ${detail}` : ''}.`, 'The installed helper may be from another version of Remote USB: reinstall it.', 'install-helper');
    case Exit.NOT_SOCKET:
      return fail('helper-failed', `remote-usb-helper did not receive the USB/IP socket${detail ? `: ${detail}` : ''}.`, 'This is a bug in Remote USB; please report it with the log.', 'show-logs');
    default:
      return fail('helper-failed', `remote-usb-helper ${verb} failed with exit code ${r.code}${detail ? `: ${detail}` : ''}.`, 'See the log for details.', 'show-logs');
  }
}

/** Runs `remote-usb-helper load` (modprobe vhci-hcd) as root; for the 'load-vhci' action. */
export async function loadVhci(options: HelperOptions = {}): Promise<void> {
  const ctx = context(options);
  await checkHelper(ctx);
  const r = await runHelper(ctx, ['load'], 'ignore');
  if (r.code !== 0) throw helperFailure('load', r, ctx);
  ctx.log.info(lastLine(r.stdout) || 'vhci-hcd loaded');
}

/** Runs `remote-usb-helper detach <port>` as root. A port with nothing attached counts as detached. */
export async function detachPort(port: number, options: HelperOptions = {}): Promise<void> {
  const ctx = context(options);
  await checkHelper(ctx);
  const r = await runHelper(ctx, ['detach', String(port)], 'ignore');
  if (r.code !== 0 && r.code !== Exit.NOT_ATTACHED) throw helperFailure('detach', r, ctx, port);
}

// ---------------------------------------------------------------------------------------------------
// vhci ports
// ---------------------------------------------------------------------------------------------------

function readPorts(sysfsRoot: string): VhciPort[] {
  try {
    return readVhciStatus(sysfsRoot);
  } catch (e) {
    if (e instanceof HelperError && e.exitCode === Exit.NO_VHCI) {
      throw new AttachError('vhci-not-loaded', 'The kernel module for USB/IP devices (vhci-hcd) is not loaded.', 'Load it now (runs `remote-usb-helper load` as root), or run `sudo modprobe vhci-hcd`.', 'load-vhci', (e as Error).message);
    }
    throw new AttachError('helper-failed', `Cannot read vhci_hcd's port table: ${(e as Error).message}`, 'See the log for details.', 'show-logs', (e as Error).message);
  }
}

/** True once `port` no longer holds `devid` (or vhci is gone). */
async function portFreed(sysfsRoot: string, port: number, devid: number): Promise<boolean> {
  let ports: VhciPort[];
  try {
    ports = readVhciStatus(sysfsRoot);
  } catch {
    return true;
  }
  const p = ports.find((x) => x.port === port);
  return !p || isPortFree(p) || p.devid !== devid;
}

async function waitPortFreed(sysfsRoot: string, port: number, devid: number, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await portFreed(sysfsRoot, port, devid)) return true;
    if (Date.now() >= end) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
}

// ---------------------------------------------------------------------------------------------------
// Attach
// ---------------------------------------------------------------------------------------------------

export interface AttachmentEvents {
  /** The device left the kernel (detach, unplug, bench gone, error) and the port is free again. */
  closed: [BridgeClosed];
  offline: [];
  online: [];
}

/** A device attached to a vhci port. */
export class Attachment extends EventEmitter<AttachmentEvents> {
  private detaching?: Promise<void>;
  private readonly done: Promise<BridgeClosed>;

  constructor(
    readonly device: AttachableDevice,
    /** The vhci port (what `usbip port` calls "Port"). */
    readonly port: number,
    readonly devid: number,
    /** enum usb_device_speed given to vhci. */
    readonly speed: number,
    readonly bridge: UsbipBridge,
    private readonly ctx: HelperContext,
    private readonly detachWaitMs: number,
  ) {
    super();
    bridge.on('offline', () => this.emit('offline'));
    bridge.on('online', () => this.emit('online'));
    this.done = bridge.closed.then(async (info) => {
      await this.freePort();
      this.emit('closed', info);
      return info;
    });
  }

  /** Resolves when the device has left the kernel and the port is free (or freeing it failed, logged). */
  get closed(): Promise<BridgeClosed> {
    return this.done;
  }

  /** Takes the device out of the kernel: closes the bridge; the kernel frees the port. */
  async detach(): Promise<void> {
    this.detaching ??= (async () => {
      await this.bridge.close('detached');
      await this.done;
    })();
    return this.detaching;
  }

  private async freePort(): Promise<void> {
    if (await waitPortFreed(this.ctx.sysfsRoot, this.port, this.devid, this.detachWaitMs)) return;
    this.ctx.log.warn(`vhci port ${this.port} still holds the device after its connection closed; running remote-usb-helper detach`);
    try {
      const r = await runHelper(this.ctx, ['detach', String(this.port)], 'ignore');
      if (r.code !== 0 && r.code !== Exit.NOT_ATTACHED) throw helperFailure('detach', r, this.ctx, this.port);
    } catch (e) {
      const err = e as AttachError;
      this.ctx.log.error(`could not detach vhci port ${this.port}: ${err.message}${err.detail ? ` (${err.detail})` : ''}`);
    }
  }
}

/**
 * Attaches a claimed device to the local kernel through vhci_hcd. Rejects with AttachError (message,
 * hint, action) when it cannot; nothing is left attached or open then.
 */
export async function attachDevice(dev: AttachableDevice, options: AttachOptions = {}): Promise<Attachment> {
  const ctx = context(options);
  const log = ctx.log;
  const name = `${dev.info.product ?? dev.info.id} (${dev.info.id})`;
  const speed = speedOf(dev.info);
  const devid = devidOf(dev.info);

  let endpoints = options.endpoints;
  if (!endpoints) {
    try {
      endpoints = await readEndpointTable(dev);
    } catch (e) {
      throw new AttachError('descriptors', `Cannot read the descriptors of ${name} through the bench: ${(e as Error).message}`, 'Check the device on the bench and try again.', 'retry', (e as Error).message);
    }
  }
  const iso = endpoints.isochronousEndpoints();
  if (iso.length > 0 && !options.allowIsochronous) {
    const where = iso.slice(0, 3).map((e) => `${endpointName(e.address)} in interface ${e.interface} alt ${e.alternate}`).join(', ');
    throw new AttachError(
      'isochronous',
      `${name} has isochronous endpoints (${where}${iso.length > 3 ? ', …' : ''}), which Remote USB cannot carry: audio and video streaming devices cannot be attached.`,
      'Use the device on the bench itself, or a device without isochronous (streaming) interfaces.',
    );
  }

  await checkHelper(ctx);
  const tried = new Set<number>();
  for (let attempt = 0; ; attempt++) {
    const ports = readPorts(ctx.sysfsRoot);
    const port = pickFreePort(ports.filter((p) => !tried.has(p.port)), speed);
    if (!port) {
      const hub = speed >= 5 ? 'super-speed' : 'high-speed';
      throw new AttachError('no-free-port', `Every ${hub} vhci port is in use${tried.size ? ' (one was taken while attaching)' : ''}.`, 'Detach another device (`usbip port` lists them) and try again.', 'retry');
    }
    tried.add(port.port);
    let pair: SocketPair;
    try {
      pair = await createSocketPair(options.socketDir);
    } catch (e) {
      throw new AttachError('socket', `Cannot create the USB/IP socket: ${(e as Error).message}`, 'See the log for details.', 'show-logs', (e as Error).message);
    }
    log.info(`attaching ${name} to vhci port ${port.port} (devid ${devid}, speed ${speed}) via ${ctx.runAsRoot === 'pkexec' ? 'pkexec' : 'the helper'}`);
    let r: HelperResult;
    try {
      r = await runHelper(ctx, ['attach', String(port.port), String(devid), String(speed)], pair.theirs);
    } catch (e) {
      pair.ours.destroy();
      throw e;
    }
    if (r.code === 0) {
      if (lastLine(r.stdout)) log.info(`remote-usb-helper: ${lastLine(r.stdout)}`);
      const bridge = new UsbipBridge(dev, pair.ours, { devid, endpoints, log, offlineGraceMs: options.offlineGraceMs, maxInFlight: options.maxInFlight });
      const attachment = new Attachment(dev, port.port, devid, speed, bridge, ctx, options.detachWaitMs ?? 3000);
      bridge.start();
      return attachment;
    }
    pair.ours.destroy();
    const err = helperFailure('attach', r, ctx, port.port);
    if (err.code === 'port-busy' && attempt === 0) {
      log.warn(`vhci port ${port.port} was refused (${err.detail ?? 'busy'}); trying another port`);
      continue;
    }
    log.warn(`attach failed: ${err.message}${err.detail ? ` [${err.detail}]` : ''}`);
    throw err;
  }
}
