/**
 * Real ttys on the `serialport` package — the only module that imports it (the client core's local serial
 * monitor goes through here too). Never call `SerialPort.list()`: on Linux it spawns udevadm, which
 * minimal benches do not have.
 */
import { EventEmitter } from 'node:events';
import { existsSync } from 'node:fs';
import type { SerialPort } from 'serialport';
import type { SerialLine } from '../../protocol/messages.js';
import type { SerialBackend, SerialPortEvents, SerialPortHandle, SerialSignals } from './backend.js';

/** ioctl errors of a tty without modem control lines (ptys, some adapters): not worth failing over. */
function isNoModemLines(e: unknown): boolean {
  return /Inappropriate ioctl|ENOTTY|EINVAL|Invalid argument/i.test(String((e as Error)?.message ?? e));
}

/** cdc_acm refuses any break request (even "no break") from a device that does not announce the capability. */
function isNoBreak(e: unknown): boolean {
  return /Operation not supported|EOPNOTSUPP/i.test(String((e as Error)?.message ?? e));
}

class RealSerialPort extends EventEmitter<SerialPortEvents> implements SerialPortHandle {
  private closing = false;

  constructor(private readonly port: SerialPort) {
    super();
    port.on('data', (d: Buffer) => this.emit('data', d));
    // 'close' with an error means the OS took the tty away (EIO/ENXIO on read: unplugged or reset).
    port.on('close', (e?: Error) => { if (!this.closing) this.emit('vanished', e?.message ?? 'tty closed'); });
    port.on('error', (e: Error) => { if (!this.closing) this.emit('vanished', e.message); });
  }

  write(data: Uint8Array): Promise<void> {
    return new Promise((resolve, reject) => {
      this.port.write(Buffer.from(data.buffer, data.byteOffset, data.byteLength), (e) => (e ? reject(e) : resolve()));
    });
  }

  setBaud(baud: number): Promise<void> {
    return new Promise((resolve, reject) => this.port.update({ baudRate: baud }, (e) => (e ? reject(e) : resolve())));
  }

  setSignals(s: Required<SerialSignals>): Promise<void> {
    // serialport fills unspecified lines with its defaults, so always pass all three. It sets DTR/RTS
    // first, then the break state: a "not supported" from clearing a break means the lines are set.
    return new Promise((resolve, reject) => this.port.set({ dtr: s.dtr, rts: s.rts, brk: s.brk }, (e) => {
      if (!e || isNoModemLines(e) || (isNoBreak(e) && !s.brk)) resolve();
      else reject(new Error(isNoBreak(e) ? 'this tty cannot send a break' : e.message.replace(/^Error:?\s*/, '')));
    }));
  }

  pause(): void {
    this.port.pause();
  }

  resume(): void {
    this.port.resume();
  }

  close(): Promise<void> {
    if (this.closing) return Promise.resolve();
    this.closing = true;
    if (!this.port.isOpen) return Promise.resolve();
    return new Promise((resolve) => this.port.close(() => resolve()));
  }
}

export class RealSerialBackend implements SerialBackend {
  async open(path: string, line: SerialLine): Promise<SerialPortHandle> {
    // Loaded on first use: its native binding (and libstdc++) cost a daemon that never opens a tty ≈6 MB.
    const { SerialPort } = await import('serialport');
    const port = new SerialPort({
      path, baudRate: line.baud, dataBits: line.dataBits, parity: line.parity, stopBits: line.stopBits,
      lock: true, autoOpen: false,
    });
    await new Promise<void>((resolve, reject) => port.open((e) => (e ? reject(new Error(`cannot open ${path}: ${openError(e)}`)) : resolve())));
    return new RealSerialPort(port);
  }

  exists(path: string): boolean {
    return existsSync(path);
  }
}

function openError(e: Error): string {
  const m = e.message.replace(/^Error:?\s*/, '');
  if (/Cannot lock port/i.test(m)) return 'another program has it open (locked)';
  if (/Permission denied/i.test(m)) return `permission denied (is the daemon's user in the 'dialout' group?)`;
  if (/No such file/i.test(m)) return 'no such tty';
  return m;
}
