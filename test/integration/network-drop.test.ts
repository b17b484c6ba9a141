/**
 * Real network drops over real Iroh: the daemon (dist/server.js, simulated boards) runs in one network
 * namespace, clients in another, joined by a veth pair that the test takes down and brings back.
 * Clients are separate processes (test/helpers/netdrop-client.ts: this same bundle, started with
 * REMOTE_USB_NETDROP_CLIENT set) that print JSON lines; the test reads them and asserts that nothing
 * hangs or crashes and that traffic comes back verified. Times are printed as diagnostics.
 *
 * Timings are shortened so the file stays near a minute: clients ping every 500 ms and give a silent
 * connection up after 1.5 s (product: 5 s / 15 s) and the bridge keeps a port for 8 s (product: 30 s).
 * Two daemons run in the bench's namespace: one with the product's 20 s client-silence limit, so a
 * client that gave its connection up reconnects while the bench still runs the dead connection (the
 * resume takes that session over), and one that counts a silent client dropped after 4 s
 * (`client_silence_s`) and keeps its session for a resume for 5 s more (`resume_grace_s`): one drop
 * resumes a detached session, a longer one outlasts the grace and the board goes to someone else.
 * Needs root and `ip netns` (iproute2); skipped with the reason otherwise.
 */
import assert from 'node:assert/strict';
import { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { loadOrCreateSecretKey } from '../../server/shared/identity.js';
import { endpointIdOf, generateSecretKey, ticketFor } from '../../server/net/iroh.js';
import { TrustStore } from '../../server/trust.js';
import { SERVER_JS } from '../helpers/daemon-process.js';
import { NETDROP_ENV, NetdropSpec, runNetdropClient } from '../helpers/netdrop-client.js';
import { NetnsPair, netnsUnavailable } from '../helpers/netns.js';

const PORT = 47_321;
const SILENCE_S = 4;
const RESUME_GRACE_S = 5;
const GRACE_MS = 8_000;
const FAST = { pingIntervalMs: 500, deadAfterMs: 1500, connectTimeoutMs: 3000 };

interface Ev { ev: string; t: number; at: number; [k: string]: unknown }

/** A client process in a namespace, its JSON lines collected with the test's own clock (`at`). */
class ClientProc {
  readonly events: Ev[] = [];
  stderr = '';
  readonly exited: Promise<number | null>;
  private waiters: (() => void)[] = [];

  constructor(readonly name: string, readonly child: ChildProcess) {
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        try {
          this.events.push({ ...JSON.parse(line), at: performance.now() });
        } catch {
          this.stderr += `(stdout) ${line}\n`;
        }
        this.waiters.splice(0).forEach((w) => w());
      }
    });
    child.stderr!.on('data', (d: Buffer) => { this.stderr += d.toString(); });
    this.exited = new Promise((r) => child.once('exit', (code) => { this.waiters.splice(0).forEach((w) => w()); r(code); }));
  }

  /** The first event from index `from` on that matches; fails on timeout or if the process exits first. */
  async next(pred: (e: Ev) => boolean, timeoutMs: number, what: string, from = 0): Promise<Ev> {
    const end = performance.now() + timeoutMs;
    for (;;) {
      const e = this.events.slice(from).find(pred);
      if (e) return e;
      if (this.child.exitCode !== null || this.child.signalCode !== null) {
        throw new Error(`${this.name} exited (${this.child.exitCode ?? this.child.signalCode}) before ${what}; last events ${this.tail()}\n${this.stderr.slice(-2000)}`);
      }
      const left = end - performance.now();
      if (left <= 0) throw new Error(`${this.name}: timed out waiting for ${what}; last events ${this.tail()}\n${this.stderr.slice(-2000)}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(left, 200));
        this.waiters.push(() => { clearTimeout(t); r(); });
      });
    }
  }

  bytes(): number {
    const p = this.events.filter((e) => e.ev === 'progress');
    return p.length ? (p[p.length - 1].bytes as number) : 0;
  }

  tail(n = 8): string {
    return JSON.stringify(this.events.slice(-n).map(({ at: _at, ...e }) => e));
  }

  /** SIGTERM (the client releases and closes), SIGKILL after 5 s. */
  async stop(): Promise<number | null> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGTERM');
      const t = setTimeout(() => this.child.kill('SIGKILL'), 5000);
      await this.exited;
      clearTimeout(t);
    }
    return this.child.exitCode;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

if (process.env[NETDROP_ENV]) {
  // this bundle started as a client program (see netdrop-client.ts)
  void runNetdropClient(JSON.parse(process.env[NETDROP_ENV]) as NetdropSpec);
} else {
  const skip = !existsSync(SERVER_JS) ? `${SERVER_JS} not built (node esbuild.mjs)` : netnsUnavailable();

  describe('network drops over real Iroh between two network namespaces (veth)', { skip }, () => {
    let net: NetnsPair;
    const daemons: { proc: ChildProcess; log: string; ticket: string }[] = [];
    let ticket: string; // the default daemon's
    let quickTicket: string; // the one with client_silence_s = SILENCE_S
    const trusted = new Map<string, Uint8Array>();
    const stateDirs: string[] = [];
    const clients: ClientProc[] = [];

    function startClient(name: string, ns: 'bench' | 'client', spec: Omit<NetdropSpec, 'key' | 'name' | 'ticket'> & { ticket?: string }): ClientProc {
      const full: NetdropSpec = { ticket, key: Buffer.from(trusted.get(name)!).toString('hex'), name, ...spec };
      const child = net.spawn(ns === 'bench' ? net.bench : net.client, process.execPath, ['--enable-source-maps', __filename], {
        env: { ...process.env, [NETDROP_ENV]: JSON.stringify(full) },
      });
      const c = new ClientProc(name, child);
      clients.push(c);
      return c;
    }

    /** A daemon in the bench's namespace on its own port and state; resolves with its ticket once it serves. */
    async function startDaemon(port: number, extraToml: string): Promise<string> {
      const stateDir = mkdtempSync(join(tmpdir(), 'remote-usb-netdrop-'));
      stateDirs.push(stateDir);
      const benchKey = loadOrCreateSecretKey(stateDir).key;
      const trust = new TrustStore(join(stateDir, 'clients.toml'), stateDir);
      for (const [name, key] of trusted) trust.allow(endpointIdOf(key), name);
      const config = join(stateDir, 'server.toml');
      writeFileSync(config, `name = "netns-bench"\nlisten = "${net.benchIp}:${port}"\nstate_dir = "${stateDir}"\nlog_level = "debug"\n${extraToml}[relay]\nmode = "disabled"\n`);
      const d = { proc: net.spawn(net.bench, process.execPath, ['--enable-source-maps', SERVER_JS, 'run', '--simulate', '--config', config]), log: '', ticket: '' };
      daemons.push(d);
      d.proc.stdout!.on('data', (b: Buffer) => { d.log += b.toString(); });
      d.proc.stderr!.on('data', (b: Buffer) => { d.log += b.toString(); });
      const end = Date.now() + 15_000;
      while (!d.log.includes('serving as')) {
        if (d.proc.exitCode !== null) throw new Error(`daemon exited ${d.proc.exitCode}:\n${d.log}`);
        if (Date.now() > end) throw new Error(`daemon did not start:\n${d.log}`);
        await sleep(20);
      }
      return ticketFor({ id: endpointIdOf(benchKey), addrs: [`${net.benchIp}:${port}`] });
    }

    /** Takes the link down for `ms`; returns the test-clock time it came back. */
    async function drop(ms: number): Promise<{ down: number; up: number }> {
      const down = performance.now();
      net.down();
      try {
        await sleep(ms);
      } finally {
        net.up();
      }
      return { down, up: performance.now() };
    }

    before(async () => {
      net = new NetnsPair();
      for (const name of ['drop-a', 'drop-a2', 'drop-a3', 'drop-b', 'drop-bridge']) trusted.set(name, generateSecretKey());
      ticket = await startDaemon(PORT, '');
      quickTicket = await startDaemon(PORT + 1, `client_silence_s = ${SILENCE_S}\nresume_grace_s = ${RESUME_GRACE_S}\n`);
    });

    after(async () => {
      try {
        for (const c of clients) await c.stop();
        for (const d of daemons) {
          if (d.proc.exitCode === null) {
            d.proc.kill('SIGTERM');
            await Promise.race([new Promise((r) => d.proc.once('exit', r)), sleep(5000)]);
          }
          if (process.env.TEST_LOG) process.stderr.write(d.log);
          assert.doesNotMatch(d.log, /uncaught|unhandled|TypeError|RangeError/i, 'daemon log shows a crash');
          assert.equal(d.proc.exitCode, 0, `daemon exit status\n${d.log.slice(-3000)}`);
        }
      } finally {
        net?.cleanup();
        for (const dir of stateDirs) rmSync(dir, { recursive: true, force: true });
      }
    });

    /** A lossless resume: no URB failed, nothing drained (no byte lost, none doubled), streaming goes on verified. */
    async function resumesLosslessly(a: ClientProc, from: number, up: number, what: string): Promise<string> {
      const online = await a.next((e) => e.ev === 'state' && e.state === 'online', 15_000, 'online again', from);
      const resumed = await a.next((e) => e.ev === 'resumed' || e.ev === 'claimed' || e.ev === 'lost', 15_000, 'the device back', from);
      assert.equal(resumed.ev, 'resumed', `the session was resumed: ${a.tail()}`);
      const before = a.bytes();
      await a.next((e) => e.ev === 'progress' && (e.bytes as number) >= before + 256 * 1024, 15_000, '256 KiB more verified after the drop', from);
      const since = a.events.slice(from);
      assert.deepEqual(since.filter((e) => e.ev === 'urb-failed' || e.ev === 'drained' || e.ev === 'verify-failed'), [], `${what}: no URB failed, nothing to drain`);
      return `online ${(online.at - up).toFixed(0)} ms and session resumed ${(resumed.at - up).toFixed(0)} ms after the link came back`;
    }

    test('bulk stream: a 3 s drop (the client gives its connection up, the bench has not noticed yet): the client resumes its session, no URB fails, every byte verified', async (t) => {
      const a = startClient('drop-a', 'client', { mode: 'stream', device: 'sim-2', ...FAST, hangMs: 20_000 });
      await a.next((e) => e.ev === 'progress' && (e.bytes as number) >= 256 * 1024, 15_000, '256 KiB verified');
      const from = a.events.length;
      const { up } = await drop(3000);
      t.diagnostic(`drop 3.0 s: ${await resumesLosslessly(a, from, up, '3 s drop')}`);
      assert.equal(await a.stop(), 0);
    });

    test(`bulk stream: a drop past the bench's silence limit (${SILENCE_S} s) but within its resume grace (${RESUME_GRACE_S} s): the detached session is resumed, no URB fails`, async (t) => {
      const a = startClient('drop-a3', 'client', { mode: 'stream', device: 'sim-2', ticket: quickTicket, ...FAST, hangMs: 30_000 });
      await a.next((e) => e.ev === 'progress' && (e.bytes as number) >= 256 * 1024, 15_000, '256 KiB verified');
      const from = a.events.length;
      const { up } = await drop(SILENCE_S * 1000 + 2500);
      t.diagnostic(`drop ${SILENCE_S + 2.5} s: ${await resumesLosslessly(a, from, up, 'drop past the silence limit')}`);
      assert.equal(await a.stop(), 0);
    });

    test(`bulk stream: a drop longer than the bench's silence limit and resume grace (${SILENCE_S} + ${RESUME_GRACE_S} s): the bench lets the board go, another client takes it; the first reports it lost and claims it again once free`, async (t) => {
      const a = startClient('drop-a2', 'client', { mode: 'stream', device: 'sim-2', ticket: quickTicket, ...FAST, hangMs: 20_000 });
      await a.next((e) => e.ev === 'progress' && (e.bytes as number) >= 256 * 1024, 15_000, '256 KiB verified');
      const from = a.events.length;
      const down = performance.now();
      net.down();
      let b: ClientProc;
      let bClaimed: Ev;
      try {
        // past the silence limit (checked every limit/2) and the resume grace the daemon has let drop-a's
        // claim go: a client in its own namespace claims the board while the link is still down
        await sleep((SILENCE_S + RESUME_GRACE_S) * 1000 + 2500);
        b = startClient('drop-b', 'bench', { mode: 'stream', device: 'sim-2', ticket: quickTicket, hangMs: 20_000 });
        bClaimed = await b.next((e) => e.ev === 'claimed', 10_000, 'drop-b to claim sim-2');
        await b.next((e) => e.ev === 'progress', 10_000, 'drop-b to stream');
      } finally {
        net.up();
      }
      const up = performance.now();
      const online = await a.next((e) => e.ev === 'state' && e.state === 'online', 15_000, 'drop-a online again', from);
      const lost = await a.next((e) => e.ev === 'lost', 10_000, 'drop-a to report the device lost', from);
      assert.match(lost.reason as string, /could not claim it again after reconnecting: .*in use by drop-b/);
      await a.next((e) => e.ev === 'claim-refused', 10_000, 'drop-a claiming again (refused while drop-b has it)', from);
      await b.stop();
      const claimed = await a.next((e) => e.ev === 'claimed', 10_000, 'drop-a to claim sim-2 again', from);
      const before = a.bytes();
      await a.next((e) => e.ev === 'progress' && (e.bytes as number) >= before + 256 * 1024, 15_000, 'drop-a streaming again', from);
      t.diagnostic(`drop ${((up - down) / 1000).toFixed(1)} s: drop-b claimed ${(bClaimed.at - down).toFixed(0)} ms after the drop began; drop-a online ${(online.at - up).toFixed(0)} ms after the link came back, device lost reported at +${(lost.at - up).toFixed(0)} ms, claimed again ${(claimed.at - up).toFixed(0)} ms after the link came back (drop-b released it)`);
      assert.equal(await a.stop(), 0);
    });

    test(`USB/IP bridge: a 3 s drop keeps the port attached (grace ${GRACE_MS / 1000} s) and its URBs complete after the session resumes, none failed; a drop past the grace closes the bridge and the kernel sees its socket end`, async (t) => {
      const c = startClient('drop-bridge', 'client', { mode: 'bridge', device: 'sim-2', ...FAST, offlineGraceMs: GRACE_MS, hangMs: 20_000 });
      await c.next((e) => e.ev === 'progress' && (e.bytes as number) >= 64 * 1024 && (e.reports as number) > 5, 15_000, 'bridge traffic');
      let from = c.events.length;
      const short = await drop(3000);
      const offline = await c.next((e) => e.ev === 'bridge-offline', 5000, 'bridge offline', from);
      const online = await c.next((e) => e.ev === 'bridge-online', 15_000, 'bridge online again', from);
      const p = await c.next((e) => e.ev === 'progress', 10_000, 'traffic after the short drop', c.events.indexOf(online));
      const before = p.bytes as number;
      const reportsBefore = p.reports as number;
      const later = await c.next((e) => e.ev === 'progress' && (e.bytes as number) > before + 32 * 1024 && (e.reports as number) > reportsBefore, 10_000, 'loopback and interrupt INs completing after the short drop', c.events.indexOf(p) + 1);
      assert.equal(c.events.slice(from).some((e) => e.ev === 'kernel-ended' || e.ev === 'bridge-closed'), false, 'the port stayed attached');
      // resumed, not replayed: no URB failed and nothing was left to drain
      assert.deepEqual(c.events.slice(from, c.events.indexOf(later)).filter((e) => e.ev === 'urb-failed' || e.ev === 'drained' || e.ev === 'report-failed'), [], 'lossless across the short drop');
      t.diagnostic(`bridge, drop 3.0 s: offline ${(offline.at - short.down).toFixed(0)} ms after the link went down, online ${(online.at - short.up).toFixed(0)} ms after it came back; ${later.bytes} B verified, ${later.reports} interrupt reports so far`);

      from = c.events.length;
      const long = await drop(GRACE_MS + 3000);
      const closed = await c.next((e) => e.ev === 'bridge-closed', 5000, 'the bridge to close', from);
      assert.equal(closed.reason, 'bench-offline');
      const ended = await c.next((e) => e.ev === 'kernel-ended', 5000, 'the fake kernel to see its socket end', from);
      assert.deepEqual(ended.violations, []);
      const offline2 = c.events.slice(from).find((e) => e.ev === 'bridge-offline')!;
      const afterClose = await c.next((e) => e.ev === 'after-close', 5000, 'the bridge loop to end', from);
      const online2 = await c.next((e) => e.ev === 'state' && e.state === 'online', 15_000, 'the client online again', from);
      t.diagnostic(`bridge, drop ${(GRACE_MS + 3000) / 1000} s: offline ${(offline2.at - long.down).toFixed(0)} ms after the link went down, closed (bench-offline) ${(closed.at - offline2.at).toFixed(0)} ms after going offline; client online again ${(online2.at - long.up).toFixed(0)} ms after the link came back (${JSON.stringify(afterClose)})`);
      assert.equal(await c.stop(), 0);
    });
  });
}
