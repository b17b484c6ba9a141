/**
 * The byte path, in a child process the extension starts (core-host.ts): the Iroh endpoint, a BenchClient
 * per bench, the USB/IP bridge of every attached device and the bench serial sessions all live here, so a
 * streaming board never busies the extension host's thread (shared by every extension), and a busy
 * extension host never delays a URB. It obeys the commands of messages.ts and reports state, never URBs.
 * A process rather than a worker thread: a native binding that panics or is torn down mid-call takes
 * only this process with it (seen with @number0/iroh when a worker thread was terminated).
 */
import type { Logger } from '../../../server/shared/log.js';
import { endpointIdOf, IrohEndpoint, parsePeerAddress } from '../../../server/net/iroh.js';
import { BenchClient, ClaimedDevice } from '../bench-client.js';
import type { SerialSession } from '../serial.js';
import type { Attachment } from '../usbip/attach.js';
import { BenchSnapshot, Command, FromWorker, Identity, Request, Results, toWireError, Traffic } from './messages.js';
import { assertNever } from '../../../server/shared/assert-never.js';

/** How often attached devices' byte counts go to the main thread (the UI shows rates from them). */
const TRAFFIC_MS = 2000;

interface Attached {
  bench: string;
  device: string;
  claimed: ClaimedDevice;
  attachment: Attachment;
}

export class CoreWorker {
  private identity?: Identity;
  private endpoint?: Promise<IrohEndpoint>;
  private readonly clients = new Map<string, BenchClient>();
  private readonly attached = new Map<string, Attached>();
  private readonly serials = new Map<number, SerialSession>();
  private trafficTimer?: NodeJS.Timeout;
  readonly log: Logger;

  constructor(private readonly send: (m: FromWorker) => void) {
    const at = (level: 'error' | 'warn' | 'info' | 'debug') => (message: string): void => send({ event: 'log', level, message });
    this.log = { error: at('error'), warn: at('warn'), info: at('info'), debug: at('debug') };
  }

  async onRequest({ id, command }: Request): Promise<void> {
    try {
      const value = await this.run(command);
      this.send({ id, ok: true, value });
    } catch (e) {
      this.send({ id, ok: false, error: toWireError(e) });
    }
  }

  private async run(c: Command): Promise<Results[Command['op']]> {
    switch (c.op) {
      case 'configure': this.identity = c.identity; return;
      case 'parse-address': return parsePeerAddress(c.address);
      case 'endpoint-id': return endpointIdOf(c.secretKey);
      case 'add-bench': return this.addBench(c.bench, c);
      case 'remove-bench': return this.removeBench(c.bench);
      case 'reconnect': this.clients.get(c.bench)?.reconnectNow(); return;
      case 'attach': return this.attach(c);
      case 'detach': return this.detach(c.bench, c.device);
      case 'serial-open': return this.serialOpen(c);
      case 'serial-set': return this.serial(c.sid).set(c.opts);
      case 'serial-close': {
        const s = this.serials.get(c.sid);
        this.serials.delete(c.sid);
        return s?.close();
      }
      case 'serial-write': this.serials.get(c.sid)?.write(c.data); return;
      case 'shutdown': return this.shutdown();
      default: return assertNever(c);
    }
  }

  private client(bench: string): BenchClient {
    const c = this.clients.get(bench);
    if (!c) throw new Error(`no bench ${bench.slice(0, 10)} in the byte-path worker`);
    return c;
  }

  private serial(sid: number): SerialSession {
    const s = this.serials.get(sid);
    if (!s) throw new Error(`serial session ${sid} is not open`);
    return s;
  }

  private sharedEndpoint(identity: Identity): Promise<IrohEndpoint> {
    this.endpoint ??= IrohEndpoint.bind({ secretKey: identity.secretKey, relay: identity.relay });
    return this.endpoint;
  }

  private async addBench(bench: string, c: Extract<Command, { op: 'add-bench' }>): Promise<void> {
    const identity = this.identity;
    if (!identity) throw new Error('the byte-path worker was not configured');
    await this.removeBench(bench);
    const client = new BenchClient({
      secretKey: identity.secretKey, bench: c.address, clientName: identity.clientName, relay: identity.relay,
      endpoint: await this.sharedEndpoint(identity), pairingCode: c.pairingCode, log: this.log,
    });
    this.clients.set(bench, client);
    const report = (deviceId?: string): void => this.send({ event: 'bench', bench, snapshot: snapshotOf(client), deviceId });
    client.on('state', () => report());
    client.on('devices', () => report());
    client.on('changed', (d) => report(d.id));
    client.on('rtt', () => report());
    if (!c.wait) return client.startInBackground();
    try {
      await client.start();
    } catch (e) {
      this.clients.delete(bench);
      await client.close();
      throw e;
    }
  }

  private async removeBench(bench: string): Promise<void> {
    const client = this.clients.get(bench);
    if (!client) return;
    this.clients.delete(bench);
    await Promise.all([...this.attached.values()].filter((a) => a.bench === bench).map((a) => this.detach(a.bench, a.device)));
    await client.close();
  }

  private async attach(c: Extract<Command, { op: 'attach' }>): Promise<Results['attach']> {
    const client = this.client(c.bench);
    if (client.state !== 'online') throw new Error(`the bench is ${client.state}; attach again when it is online`);
    const { attachDevice } = await import('../usbip/attach.js');
    const claimed = await client.claim(c.device);
    let attachment: Attachment;
    try {
      attachment = await attachDevice(claimed, { ...c.settings, log: this.log });
    } catch (e) {
      await claimed.release().catch(() => {});
      throw e;
    }
    const key = `${c.bench}/${c.device}`;
    const entry: Attached = { bench: c.bench, device: c.device, claimed, attachment };
    this.attached.set(key, entry);
    this.trafficTimer ??= setInterval(() => this.reportTraffic(), TRAFFIC_MS);
    void attachment.closed.then(async (info) => {
      if (this.attached.get(key) === entry) this.attached.delete(key);
      await claimed.release().catch(() => {});
      this.reportTraffic();
      this.send({ event: 'attachment-closed', bench: c.bench, device: c.device, reason: info.reason, message: info.message });
    });
    return { port: attachment.port, devid: attachment.devid };
  }

  private async detach(bench: string, device: string): Promise<void> {
    const a = this.attached.get(`${bench}/${device}`);
    if (!a) return;
    await a.attachment.detach();
    await a.claimed.release().catch(() => {});
  }

  private reportTraffic(): void {
    const items = [...this.attached.values()].map((a) => ({ bench: a.bench, device: a.device, traffic: { ...a.claimed.traffic } as Traffic }));
    if (items.length > 0) this.send({ event: 'traffic', items });
    if (this.attached.size === 0) {
      clearInterval(this.trafficTimer);
      this.trafficTimer = undefined;
    }
  }

  private async serialOpen(c: Extract<Command, { op: 'serial-open' }>): Promise<Results['serial-open']> {
    const client = this.client(c.bench);
    if (client.state !== 'online') throw new Error(`the bench is ${client.state}`);
    const s = await client.openSerial(c.port, c.params);
    this.serials.set(c.sid, s);
    s.on('data', (data) => this.send({ event: 'serial-data', sid: c.sid, data }));
    s.on('state', (state, detail) => {
      if (state === 'closed') this.serials.delete(c.sid);
      this.send({ event: 'serial-state', sid: c.sid, state, detail });
    });
    return { path: s.path };
  }

  /** Serial ports and attached devices first (the bench frees them at once), then the connections. */
  private async shutdown(): Promise<void> {
    const serials = [...this.serials.values()];
    this.serials.clear();
    await Promise.all(serials.map((s) => s.close().catch(() => {})));
    await Promise.all([...this.attached.values()].map((a) => this.detach(a.bench, a.device).catch(() => {})));
    await Promise.all([...this.clients.keys()].map((b) => this.removeBench(b)));
    clearInterval(this.trafficTimer);
    await (await this.endpoint?.catch(() => undefined))?.close();
    this.endpoint = undefined;
  }
}

function snapshotOf(c: BenchClient): BenchSnapshot {
  return { state: c.state, detail: c.detail, benchName: c.benchName, devices: c.devices, ttys: c.ttys, rttMs: c.rttMs, path: c.path };
}

if (process.send && process.env.REMOTE_USB_CORE_WORKER === '1') {
  const send = process.send.bind(process);
  const worker = new CoreWorker((m) => send(m));
  process.on('message', (r: Request) => void worker.onRequest(r));
  // The extension host went away (closed, crashed): the kernel and the bench free what we held.
  process.on('disconnect', () => process.exit(0));
}
