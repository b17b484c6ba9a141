/** Starts a real daemon (simulated boards) on 127.0.0.1 and real clients, with temp state; cleans up. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig, ServerConfig } from '../../server/config.js';
import { Daemon } from '../../server/daemon.js';
import { createLogger, Logger } from '../../server/shared/log.js';
import { BindingName, endpointIdOf, generateSecretKey } from '../../server/net/iroh.js';
import { SimulatedBackend } from '../../server/usb/simulated.js';
import { BenchClient, BenchClientOptions } from '../../extension/core/bench-client.js';

/** A logger that records lines; tests can assert nothing unexpected was logged at error level. */
export function recordingLogger(): Logger & { lines: string[]; errors: string[] } {
  const lines: string[] = [];
  const errors: string[] = [];
  const base = createLogger(process.env.TEST_LOG === 'debug' ? 'debug' : 'info', (l) => {
    lines.push(l);
    if (process.env.TEST_LOG) process.stderr.write(l + '\n');
  });
  return { ...base, error: (m) => { errors.push(m); base.error(m); }, lines, errors };
}

export class BenchFixture {
  readonly stateDir = mkdtempSync(join(tmpdir(), 'remote-usb-test-'));
  readonly secretKey = generateSecretKey();
  readonly log = recordingLogger();
  backend = new SimulatedBackend();
  daemon!: Daemon;
  config!: ServerConfig;
  private readonly clients: BenchClient[] = [];

  async start(opts: { port?: number; extraToml?: string; clientSilenceLimitMs?: number; resumeGraceS?: number; irohBinding?: BindingName } = {}): Promise<this> {
    const grace = opts.resumeGraceS === undefined ? '' : `resume_grace_s = ${opts.resumeGraceS}\n`;
    this.config = parseConfig(
      `name = "test-bench"\nlisten = "127.0.0.1:${opts.port ?? 0}"\nstate_dir = "${this.stateDir}"\n${grace}[relay]\nmode = "disabled"\n${opts.extraToml ?? ''}`,
      'test.toml',
    );
    this.daemon = new Daemon({ config: this.config, backend: this.backend, secretKey: this.secretKey, log: this.log, clientSilenceLimitMs: opts.clientSilenceLimitMs, irohBinding: opts.irohBinding });
    await this.daemon.start();
    return this;
  }

  /** A client key already on the allowlist. */
  allowedKey(name = 'test-client'): Uint8Array {
    const key = generateSecretKey();
    this.daemon.trust.allow(endpointIdOf(key), name);
    return key;
  }

  async connect(options: Partial<BenchClientOptions> = {}): Promise<BenchClient> {
    const c = await BenchClient.connect(this.clientOptions(options));
    this.clients.push(c);
    return c;
  }

  clientOptions(options: Partial<BenchClientOptions> = {}): BenchClientOptions {
    return {
      secretKey: options.secretKey ?? this.allowedKey(options.clientName),
      bench: this.daemon.address(),
      clientName: 'test-client',
      relay: { mode: 'disabled' },
      reconnect: { initialDelayMs: 50, maxDelayMs: 500 },
      ...options,
    };
  }

  track(c: BenchClient): BenchClient {
    this.clients.push(c);
    return c;
  }

  async stop(): Promise<void> {
    for (const c of this.clients) await c.close();
    await this.daemon?.stop();
    await this.backend.close();
    rmSync(this.stateDir, { recursive: true, force: true });
  }
}

export function waitFor<T>(emitter: { once(ev: string, fn: (...a: never[]) => void): unknown }, event: string, timeoutMs = 5000): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timed out waiting for '${event}'`)), timeoutMs);
    emitter.once(event, ((v: T) => { clearTimeout(t); resolve(v); }) as never);
  });
}

export async function until(cond: () => boolean, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
