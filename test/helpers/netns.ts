/**
 * Two network namespaces joined by a veth pair, for tests that need a real network between the bench
 * and the client: `ip link set … down` on the client's end cuts the link both ways (the bench's end
 * loses carrier). Names are unique per run; cleanup() kills what runs inside and deletes both
 * namespaces (which deletes the veth pair with them), and runs on process exit too.
 */
import { ChildProcess, execFileSync, spawn, SpawnOptions } from 'node:child_process';

/** Why netns tests cannot run here, or undefined when they can. */
export function netnsUnavailable(): string | undefined {
  if (process.platform !== 'linux') return 'network namespaces need Linux';
  if (process.getuid?.() !== 0) return 'network namespaces need root (CI runs as root)';
  const probe = `rusbprobe${process.pid}`;
  try {
    execFileSync('ip', ['netns', 'add', probe], { stdio: 'pipe' });
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: Buffer };
    return err.code === 'ENOENT' ? "'ip' is missing (apt-get install iproute2)" : `'ip netns add' failed: ${err.stderr?.toString().trim() || err.message}`;
  }
  try {
    execFileSync('ip', ['netns', 'del', probe], { stdio: 'pipe' });
  } catch {
    // deleted with the rest at exit, at worst
  }
  return undefined;
}

let counter = 0;

export class NetnsPair {
  readonly bench: string;
  readonly client: string;
  readonly benchIp = '10.99.0.1';
  readonly clientIp = '10.99.0.2';
  /** The client's end of the veth pair (the one the tests take down). */
  readonly clientDev: string;
  readonly benchDev: string;
  private readonly children = new Set<ChildProcess>();
  private cleaned = false;
  private readonly onExit = (): void => this.cleanup();

  constructor() {
    const tag = `${process.pid % 100000}x${counter++}`;
    this.bench = `rusb-bench-${tag}`;
    this.client = `rusb-client-${tag}`;
    this.benchDev = `rub${tag}`; // IFNAMSIZ: at most 15 characters
    this.clientDev = `ruc${tag}`;
    process.once('exit', this.onExit);
    try {
      ip('netns', 'add', this.bench);
      ip('netns', 'add', this.client);
      ip('link', 'add', this.benchDev, 'type', 'veth', 'peer', 'name', this.clientDev);
      ip('link', 'set', this.benchDev, 'netns', this.bench);
      ip('link', 'set', this.clientDev, 'netns', this.client);
      ip('-n', this.bench, 'addr', 'add', `${this.benchIp}/24`, 'dev', this.benchDev);
      ip('-n', this.client, 'addr', 'add', `${this.clientIp}/24`, 'dev', this.clientDev);
      for (const [ns, dev] of [[this.bench, this.benchDev], [this.client, this.clientDev]]) {
        ip('-n', ns, 'link', 'set', 'lo', 'up');
        ip('-n', ns, 'link', 'set', dev, 'up');
      }
    } catch (e) {
      this.cleanup();
      throw e;
    }
  }

  /** Cuts the link (the client's end down: no carrier on either side). */
  down(): void {
    ip('-n', this.client, 'link', 'set', this.clientDev, 'down');
  }

  up(): void {
    ip('-n', this.client, 'link', 'set', this.clientDev, 'up');
  }

  /** `ip netns exec NS cmd…` as a child that cleanup() kills. */
  spawn(ns: string, cmd: string, args: string[], options: SpawnOptions = {}): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', ns, cmd, ...args], { stdio: ['pipe', 'pipe', 'pipe'], ...options });
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    return child;
  }

  cleanup(): void {
    if (this.cleaned) return;
    this.cleaned = true;
    process.off('exit', this.onExit);
    for (const c of this.children) c.kill('SIGKILL');
    // `ip netns pids` finds anything left inside (a grandchild that outlived its parent)
    for (const ns of [this.bench, this.client]) {
      try {
        for (const pid of execFileSync('ip', ['netns', 'pids', ns], { stdio: 'pipe' }).toString().split(/\s+/).filter(Boolean)) {
          try { process.kill(Number(pid), 'SIGKILL'); } catch { /* gone */ }
        }
      } catch { /* no such namespace */ }
      try { ip('netns', 'del', ns); } catch { /* never made */ }
    }
  }
}

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: 'pipe' });
}
