/** Runs the real `remote-usb-server` (dist/server.js) as a child process, for restart and kill tests. */
import { ChildProcess, spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { endpointIdOf, generateSecretKey, PeerAddress } from '../../server/net/iroh.js';
import { TrustStore } from '../../server/trust.js';
import { repoRoot } from './repo-root.js';

export { repoRoot };

export const SERVER_JS = join(repoRoot(), 'dist', 'server.js');

/** A UDP port that was free a moment ago. */
export async function freeUdpPort(): Promise<number> {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  const port = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

export class DaemonProcess {
  child?: ChildProcess;
  output = '';
  readonly configFile: string;
  /** Options for node itself, before the script (the bench passes --cpu-prof). */
  nodeArgs: string[] = [];
  /** What runs the daemon instead of this node + dist/server.js (an ARM bundle under qemu-user). */
  command?: string[];
  /** How long start() waits for it to serve (emulated daemons start slowly). */
  startTimeoutMs = 15_000;

  /** `extraToml` goes before the `[relay]` table, so it may set top-level keys (`client_silence_s = 2`). */
  constructor(readonly stateDir: string, readonly port: number, extraToml = '') {
    this.configFile = join(stateDir, 'server.toml');
    writeFileSync(this.configFile, `name = "proc-bench"\nlisten = "127.0.0.1:${port}"\nstate_dir = "${stateDir}"\nlog_level = "debug"\n${extraToml}[relay]\nmode = "disabled"\n`);
  }

  /** Starts it and resolves once it serves. */
  async start(): Promise<void> {
    this.output = '';
    const [cmd, ...args] = this.command ?? [process.execPath, ...this.nodeArgs, SERVER_JS];
    const child = spawn(cmd, [...args, 'run', '--simulate', '--config', this.configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    child.stdout!.on('data', (d: Buffer) => { this.output += d.toString(); });
    child.stderr!.on('data', (d: Buffer) => { this.output += d.toString(); });
    const deadline = Date.now() + this.startTimeoutMs;
    while (!this.output.includes('serving as')) {
      if (child.exitCode !== null) throw new Error(`daemon exited with ${child.exitCode}:\n${this.output}`);
      if (Date.now() > deadline) throw new Error(`daemon did not start:\n${this.output}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** SIGTERM (clean stop) or SIGKILL (crash); resolves when it is gone. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return child?.exitCode ?? null;
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    child.kill(signal);
    return exited;
  }

  signal(signal: NodeJS.Signals): void {
    this.child?.kill(signal);
  }
}

/** A daemon process in a fresh temp state dir with one client allowed: its key and the bench's address. */
export async function startWithClient(prefix: string, clientName: string): Promise<{ dir: string; daemon: DaemonProcess; key: Uint8Array; address: PeerAddress }> {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const port = await freeUdpPort();
  const daemon = new DaemonProcess(dir, port);
  const key = generateSecretKey();
  new TrustStore(join(dir, 'clients.toml'), dir).allow(endpointIdOf(key), clientName);
  await daemon.start();
  return { dir, daemon, key, address: { id: /serving as ([0-9a-f]{64})/.exec(daemon.output)![1], addrs: [`127.0.0.1:${port}`] } };
}
