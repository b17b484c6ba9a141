/**
 * The bench's serial ports: which `port` names a client may open (device ids with a tty, and the ttys
 * the config shares), who has each open, and the rules between serial sessions and USB claims.
 *
 * Rules, decided here and in Daemon.claim:
 * - one opener per port; a second is refused 'busy' with the holder's name;
 * - a device claimed (attached) by a client has no tty on the bench: serial-open is refused 'busy';
 * - a claim of a device whose port another client has open is refused 'busy' (the same client's own
 *   serial session is closed first, then the claim goes ahead);
 * - a port that is 'waiting' (board reset or unplugged) still belongs to its opener.
 * Session ids are unique per daemon and never reused, so a stale or guessed id never reaches another
 * client's port: sessions only look up ids they opened themselves.
 */
import { MAX_SERIAL_PER_CLIENT } from '../protocol/constants.js';
import type { ErrorCode } from '../protocol/constants.js';
import type { SerialOpen } from '../protocol/messages.js';
import type { SerialBackend } from '../shared/serial/backend.js';
import { ChannelOptions, Resolution, SerialChannel } from '../shared/serial/channel.js';

/** Whoever opened a port (a Session). */
export interface SerialOwner {
  readonly clientName: string;
}

/** What the registry needs to know about a USB device on the bench. */
export interface SerialDeviceView {
  label: string;
  shared: boolean;
  /** The client holding the device over USB (attached), if any. */
  claimedBy?: SerialOwner;
  tty?: string;
}

export type SerialOpenResult =
  | { ok: true; sid: number; channel: SerialChannel }
  | { ok: false; code: ErrorCode; message: string };

interface Entry {
  sid: number;
  port: string;
  owner: SerialOwner;
  channel: SerialChannel;
}

export class SerialRegistry {
  private readonly byPort = new Map<string, Entry>();
  private readonly bySid = new Map<number, Entry>();
  private nextSid = 1;

  constructor(
    private readonly backend: SerialBackend,
    /** Tty paths the config shares. */
    readonly sharedTtys: readonly string[],
    private readonly deviceFor: (id: string) => SerialDeviceView | undefined,
    private readonly benchName: string,
    private readonly channelOptions: ChannelOptions = {},
  ) {}

  /** Who has `port` open (a device id or a shared tty path). */
  holderOf(port: string): SerialOwner | undefined {
    return this.byPort.get(port)?.owner;
  }

  sidOf(port: string): number | undefined {
    return this.byPort.get(port)?.sid;
  }

  /** Where the tty of `port` is now (see SerialChannel's Resolution). */
  private resolve(port: string): Resolution {
    if (this.sharedTtys.includes(port)) return this.backend.exists(port) ? { path: port } : { missing: `${port} is not there` };
    const d = this.deviceFor(port);
    if (!d) return { missing: `device ${port} is not on the bench` };
    if (!d.shared) return { missing: `${d.label} is not shared by this bench's config`, final: true };
    if (d.claimedBy) return { missing: `${d.label} is claimed (attached) by ${d.claimedBy.clientName}`, final: true };
    if (!d.tty) return { missing: `${d.label} has no serial port (tty) on the bench` };
    return { path: d.tty };
  }

  async open(owner: SerialOwner, m: SerialOpen): Promise<SerialOpenResult> {
    const refuse = (code: ErrorCode, message: string): SerialOpenResult => ({ ok: false, code, message });
    const { port } = m;
    if (!this.sharedTtys.includes(port)) {
      const d = this.deviceFor(port);
      if (!d) {
        const shared = this.sharedTtys.length > 0 ? `; shared ttys: ${this.sharedTtys.join(', ')}` : '';
        return refuse('no-such-port', `bench '${this.benchName}' has no device or shared serial port '${port}' (use a device id from 'list'${shared})`);
      }
      if (!d.shared) return refuse('not-shared', `${d.label} is not shared by this bench's config`);
      if (d.claimedBy) {
        const who = d.claimedBy === owner ? 'you' : d.claimedBy.clientName;
        return refuse('busy', `${d.label} is claimed (attached) by ${who}, so it has no tty on the bench; use the local tty on the machine it is attached to`);
      }
      if (!d.tty) return refuse('no-such-port', `${d.label} has no serial port (tty) on the bench`);
    }
    const held = this.byPort.get(port);
    if (held) {
      return refuse('busy', held.owner === owner ? `serial port ${port} is already open by this client (session ${held.sid})` : `serial port ${port} is in use by ${held.owner.clientName}`);
    }
    if ([...this.bySid.values()].filter((e) => e.owner === owner).length >= MAX_SERIAL_PER_CLIENT) {
      return refuse('busy', `this client already has ${MAX_SERIAL_PER_CLIENT} serial ports open`);
    }
    const channel = new SerialChannel(this.backend, () => this.resolve(port), {
      baud: m.baud, dataBits: m.dataBits, parity: m.parity, stopBits: m.stopBits, dtr: m.dtr ?? true, rts: m.rts ?? true,
    }, this.channelOptions);
    const entry: Entry = { sid: this.nextSid++, port, owner, channel };
    this.byPort.set(port, entry); // reserve before the await, so two opens cannot both win
    this.bySid.set(entry.sid, entry);
    try {
      await channel.open();
    } catch (e) {
      this.forget(entry);
      return refuse('serial-error', (e as Error).message);
    }
    channel.on('state', (s) => { if (s === 'closed') this.forget(entry); });
    return { ok: true, sid: entry.sid, channel };
  }

  private forget(e: Entry): void {
    if (this.byPort.get(e.port) === e) this.byPort.delete(e.port);
    this.bySid.delete(e.sid);
  }

  /** Closes a session for good; its channel emits 'closed' with `detail`. */
  async close(sid: number, detail?: string): Promise<void> {
    const e = this.bySid.get(sid);
    if (!e) return;
    this.forget(e);
    await e.channel.close(detail);
  }

  /** Hot-plug or poll: every channel re-checks its tty (gone? back?). */
  check(): void {
    for (const e of this.bySid.values()) e.channel.check();
  }

  async closeAll(): Promise<void> {
    await Promise.all([...this.bySid.keys()].map((sid) => this.close(sid, 'bench daemon is shutting down')));
  }
}
