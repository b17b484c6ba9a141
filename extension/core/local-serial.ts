/**
 * A serial port on this machine (a board attached through vhci_hcd, or plugged in here), behind the same
 * SerialSession interface as a port on the bench. It is the bench's own SerialChannel over `serialport`:
 * when the tty disappears (board reset, detach) it says 'waiting', polls for the path, and reopens it
 * with the same settings.
 */
import { EventEmitter } from 'node:events';
import type { SerialState } from '../../server/protocol/messages.js';
import { SerialChannel } from '../../server/shared/serial/channel.js';
import type { SerialBackend } from '../../server/shared/serial/backend.js';
import { RealSerialBackend } from '../../server/shared/serial/serial-real.js';
import { DEFAULT_SERIAL_PARAMS, SerialParams, SerialSession, SerialSessionEvents, SerialSetOptions } from './serial.js';

export interface LocalSerialOptions {
  /** How often a vanished tty is looked for (default 500 ms). */
  pollMs?: number;
  /** Tests pass a fake. */
  backend?: SerialBackend;
}

class LocalSerialSession extends EventEmitter<SerialSessionEvents> implements SerialSession {
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly channel: SerialChannel, pollMs: number) {
    super();
    channel.on('data', (d) => this.emit('data', d));
    channel.on('state', (s, detail) => {
      if (s === 'closed') clearInterval(this.timer);
      this.emit('state', s, detail);
    });
    this.timer = setInterval(() => channel.check(), pollMs);
    this.timer.unref();
  }

  get state(): SerialState {
    return this.channel.state;
  }

  get path(): string {
    return this.channel.path;
  }

  write(data: Uint8Array): void {
    this.channel.write(data);
  }

  set(opts: SerialSetOptions): Promise<void> {
    return this.channel.set(opts);
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.channel.close();
  }
}

/** Opens a local tty (`/dev/ttyACM0`); rejects when it is not there or cannot be opened. */
export async function openLocalSerial(path: string, params: SerialParams = DEFAULT_SERIAL_PARAMS, options: LocalSerialOptions = {}): Promise<SerialSession> {
  const backend = options.backend ?? new RealSerialBackend();
  const channel = new SerialChannel(
    backend,
    () => (backend.exists(path) ? { path } : { missing: `${path} is not there` }),
    { baud: params.baud, dataBits: params.dataBits, parity: params.parity, stopBits: params.stopBits, dtr: params.dtr ?? true, rts: params.rts ?? true },
  );
  await channel.open();
  return new LocalSerialSession(channel, options.pollMs ?? 500);
}
