/** Collects what a serial session receives and its state changes, for tests that wait on text. */
import type { SerialSession } from '../../extension/core/serial.js';
import { until } from './bench-fixture.js';

export class Collected {
  chunks: Buffer[] = [];
  states: string[] = [];

  constructor(readonly session: SerialSession) {
    session.on('data', (d) => this.chunks.push(Buffer.from(d)));
    session.on('state', (s, detail) => this.states.push(detail ? `${s}: ${detail}` : s));
  }

  get bytes(): Buffer {
    return Buffer.concat(this.chunks);
  }

  get text(): string {
    return this.bytes.toString('latin1');
  }

  clear(): void {
    this.chunks = [];
  }

  /** Waits until the received text contains `what` (string) or has `n` bytes (number). */
  async waitFor(what: string | number, timeoutMs = 5000): Promise<void> {
    const ok = (): boolean => (typeof what === 'number' ? this.bytes.length >= what : this.text.includes(what));
    await until(ok, timeoutMs, `${typeof what === 'number' ? `${what} bytes` : JSON.stringify(what)} (got ${JSON.stringify(this.text.slice(-200))})`);
  }

  async waitForState(prefix: string, timeoutMs = 5000): Promise<string> {
    await until(() => this.states.some((s) => s.startsWith(prefix)), timeoutMs, `state '${prefix}' (got ${JSON.stringify(this.states)})`);
    return this.states.find((s) => s.startsWith(prefix))!;
  }
}
