/**
 * "Deploy Server to Bench…": put the bench daemon on a Linux machine over the user's own ssh and set it
 * up there, returning what the extension needs to add the bench (ticket + one-time pairing code).
 * No `vscode` import: the extension adapts it (progress, cancellation) and the tests run it against a
 * real sshd.
 *
 *   connect  ssh -o BatchMode=yes <target> uname…   → OS, CPU (x64 / arm64 / armv7), uid, sudo -n
 *   bundle   out/package/remote-usb-server-<version>-linux-<arch>.tar.gz (never …-incomplete)
 *   upload   mktemp -d on the bench, then the tarball through `cat > file` on ssh's stdin
 *   unpack   tar -xzpf there
 *   install  [sudo -n] <dir>/bin/remote-usb-server install --json [installArgs]
 *   cleanup  rm -rf the temp dir (always, also after a failure, a timeout or a cancel)
 *
 * ssh and its config, keys and agent are the user's (`ssh` from PATH, or `sshPath`); BatchMode=yes so a
 * password, passphrase or unknown host key fails at once instead of waiting for a prompt nobody sees.
 * Every child is spawned with an argument array. The bench's login shell (sh, bash, fish, csh…) parses
 * the one command line ssh sends, so everything in it is either ours or checked against a small safe
 * character set (`[A-Za-z0-9_./=:@,+-]`), and single-quoted (no quote, backslash or newline in it, so
 * every one of those shells reads it the same way).
 *
 * Cancelling (AbortSignal) or a step's timeout kills the running ssh (SIGTERM, then SIGKILL) and still
 * cleans up. A cancelled install may go on running on the bench (no tty, so no SIGHUP); it is atomic
 * per file and can simply be run again.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

export type DeployStep = 'connect' | 'bundle' | 'upload' | 'unpack' | 'install' | 'cleanup';

/** Progress text for each step (the extension's notification shows it). */
export const DEPLOY_STEP_TITLES: Record<DeployStep, string> = {
  connect: 'Connecting over ssh',
  bundle: 'Finding the server bundle',
  upload: 'Copying the server to the bench',
  unpack: 'Unpacking',
  install: 'Installing on the bench',
  cleanup: 'Cleaning up',
};

export type DeployErrorCode =
  | 'bad-option' // the target or an option is malformed (nothing was run)
  | 'no-ssh' // no ssh binary here
  | 'unreachable' // DNS, refused, timed out, no route
  | 'host-key' // unknown or changed host key (BatchMode cannot ask)
  | 'auth' // the bench refused every key
  | 'ssh' // any other ssh failure
  | 'not-linux'
  | 'unsupported-arch'
  | 'no-bundle' // no complete bundle for the bench's architecture here
  | 'no-sudo' // sudo missing or wants a password
  | 'upload-failed'
  | 'unpack-failed'
  | 'install-failed'
  | 'timeout'
  | 'cancelled';

export class DeployError extends Error {
  override name = 'DeployError';
  constructor(
    readonly code: DeployErrorCode,
    readonly step: DeployStep,
    message: string,
    /** the last lines the bench printed, when there are any */
    readonly output?: string,
    /** a command the user can run by hand in a terminal instead (no-sudo) */
    readonly manualCommand?: string,
  ) {
    super(message);
  }
}

export type BenchArch = 'x64' | 'arm64' | 'armv7';

export interface DeployOptions {
  /** ssh port (`-p`); default: the user's ssh config, else 22. */
  port?: number;
  /** Extra ssh arguments, before ours: `-i key`, `-F file`, `-o Opt=value`, `-J jump`… (options given
   *  here win over ours except BatchMode, which is always yes). */
  sshArgs?: string[];
  /** The ssh binary (default `ssh` from PATH). */
  sshPath?: string;
  /** Where the bundles are (default: `out/package` next to this extension's `dist/`). */
  bundlesDir?: string;
  /** Bundle version to deploy (default: the highest found). */
  version?: string;
  /** Run install through `sudo -n` (default: unless the ssh user is root). */
  useSudo?: boolean;
  /** Appended to `remote-usb-server install --json` (e.g. `--root DIR` in tests, `--user NAME`). */
  installArgs?: string[];
  /** Absolute directory on the bench for the temp dir (default: $TMPDIR or /tmp there); use it when
   *  /tmp is mounted noexec. */
  remoteTempDir?: string;
  /** Per-step limits in ms (defaults: connect 30 s, upload 10 min, unpack 2 min, install 3 min, cleanup 30 s). */
  timeouts?: Partial<Record<DeployStep, number>>;
  signal?: AbortSignal;
  onStep?: (step: DeployStep, detail?: string) => void;
}

export interface DeployResult {
  /** Bench ticket: `BenchManager.add(ticket, { pairingCode })`. */
  ticket: string;
  /** One-time pairing code (single use, see pairingExpires). */
  pairingCode: string;
  pairingExpires?: string;
  arch: BenchArch;
  version: string;
  /** The local tarball that was deployed. */
  bundle: string;
  /** What install did, line by line (for the log). */
  lines: string[];
  /** e.g. the temp dir could not be removed */
  warnings: string[];
}

const DEFAULT_TIMEOUTS: Record<DeployStep, number> = { connect: 30_000, bundle: 10_000, upload: 600_000, unpack: 120_000, install: 180_000, cleanup: 30_000 };

// ---- pure parts (unit-tested) ----

/** `user@host`, `host`, an ssh config alias, `user@10.0.0.5`, `user@fe80::1%eth0`. */
export function validateTarget(target: string): void {
  if (!target) throw new DeployError('bad-option', 'connect', 'no ssh destination given (user@host or a Host from your ssh config)');
  if (target.startsWith('-')) throw new DeployError('bad-option', 'connect', `'${printable(target)}' is not an ssh destination (it starts with '-')`);
  // also keeps shell metacharacters away from %h / %r in the user's ProxyCommand / LocalCommand
  if (!/^([A-Za-z0-9_][A-Za-z0-9_.-]*@)?[A-Za-z0-9_.:%[\]-]+$/.test(target) || target.length > 255) {
    throw new DeployError('bad-option', 'connect', `'${printable(target)}' is not an ssh destination: use user@host or a Host alias from your ssh config ` +
      '(letters, digits, . _ - : %; no spaces, no control characters; give the port separately)');
  }
}

const SAFE_ARG = /^[A-Za-z0-9_./=:@,+-]+$/;

function validateOptions(o: DeployOptions): void {
  if (o.port !== undefined && (!Number.isInteger(o.port) || o.port < 1 || o.port > 65535)) throw new DeployError('bad-option', 'connect', `port ${o.port} is not 1..65535`);
  for (const a of o.installArgs ?? []) {
    if (!SAFE_ARG.test(a)) throw new DeployError('bad-option', 'install', `install argument '${printable(a)}' may only contain letters, digits and _ . / = : @ , + -`);
    if (a === '--no-pair' || a === '--json') throw new DeployError('bad-option', 'install', `install argument ${a}: deploy always asks for a pairing code as JSON`);
  }
  if (o.remoteTempDir !== undefined && (!o.remoteTempDir.startsWith('/') || !SAFE_ARG.test(o.remoteTempDir) || o.remoteTempDir.split('/').includes('..'))) {
    throw new DeployError('bad-option', 'upload', `remoteTempDir '${printable(o.remoteTempDir)}' must be an absolute path of letters, digits and _ . / - (no ..)`);
  }
  for (const a of o.sshArgs ?? []) if (/[\0\r\n]/.test(a)) throw new DeployError('bad-option', 'connect', 'sshArgs must not contain NUL or line breaks');
}

/** `uname -m` (+ `getconf LONG_BIT`: a 64-bit kernel under a 32-bit userland, as on Raspberry Pi OS
 *  32-bit on a Pi 4, says aarch64 but needs the armv7 bundle). */
export function mapArch(machine: string, longBit?: string): BenchArch | undefined {
  const m = machine.trim();
  if (m === 'x86_64' || m === 'amd64') return longBit === '32' ? undefined : 'x64';
  if (m === 'aarch64' || m === 'arm64' || m === 'armv8b' || m === 'aarch64_be') return longBit === '32' ? 'armv7' : m.endsWith('be') || m === 'armv8b' ? undefined : 'arm64';
  if (m === 'armv7l' || m === 'armv7' || m === 'armv8l') return 'armv7';
  return undefined;
}

export interface ProbeResult { os: string; machine: string; longBit: string; uid: number; sudo: 'ok' | 'password' | 'missing' }

/** The probe's script: one line, no single quotes (run as sh -c '…' by whatever the login shell is). */
export const PROBE_SCRIPT = 'uname -s; uname -m; getconf LONG_BIT 2>/dev/null || echo unknown; id -u; ' +
  'if command -v sudo >/dev/null 2>&1; then if sudo -n true 2>/dev/null; then echo sudo-ok; else echo sudo-password; fi; else echo sudo-missing; fi';

export function parseProbe(stdout: string): ProbeResult | undefined {
  // a login banner or motd from the user's shell rc may come first: the answer is the last five lines
  const l = stdout.split('\n').map((x) => x.trim()).filter(Boolean).slice(-5);
  if (l.length !== 5 || !/^\d+$/.test(l[3]) || !/^sudo-(ok|password|missing)$/.test(l[4])) return undefined;
  return { os: l[0], machine: l[1], longBit: l[2], uid: Number(l[3]), sudo: l[4].slice(5) as ProbeResult['sudo'] };
}

export interface LocalBundle { file: string; name: string; version: string }


/** The newest complete bundle for linux-<arch> in `dir` (or exactly `version`). */
export function findLocalBundle(dir: string, arch: BenchArch, version?: string): LocalBundle {
  let names: string[];
  try { names = fs.readdirSync(dir); } catch { names = []; }
  const re = new RegExp(`^remote-usb-server-(\\d+\\.\\d+\\.\\d+(?:-[A-Za-z0-9.]+)?)-linux-${arch}(-incomplete)?\\.tar\\.gz$`);
  const found = names.map((n) => ({ n, m: re.exec(n) })).filter((x) => x.m && (!version || x.m[1] === version));
  const complete = found.filter((x) => !x.m![2]).map((x) => ({ file: path.join(dir, x.n), name: x.n.slice(0, -'.tar.gz'.length), version: x.m![1] }));
  if (complete.length) return complete.sort((a, b) => compareVersions(b.version, a.version))[0];
  const what = `remote-usb-server-${version ?? '<version>'}-linux-${arch}.tar.gz`;
  const incomplete = found.length > 0;
  // ARM bundles carry our Iroh binding, cross-built first (npm has no Linux ARM @number0/iroh)
  const how = `build it with: ${arch === 'x64' ? '' : `npm run cross-build -- --target linux-${arch} && `}npm run package:server -- --target linux-${arch}`;
  throw new DeployError('no-bundle', 'bundle', `no ${incomplete ? 'complete ' : ''}server bundle for this bench (linux-${arch}) in ${dir}` +
    `${incomplete ? ' (only an …-incomplete one, which cannot serve)' : ''}: need ${what}; ${how}`);
}

function compareVersions(a: string, b: string): number {
  const pa = a.split(/[.-]/), pb = b.split(/[.-]/);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i] ?? '', y = pb[i] ?? '';
    const d = /^\d+$/.test(x) && /^\d+$/.test(y) ? Number(x) - Number(y) : x.localeCompare(y);
    if (d) return d;
  }
  return 0;
}

const PAIRING_CODE = /^[0-9A-HJKMNP-TV-Z]{5}-[0-9A-HJKMNP-TV-Z]{5}$/;

/** stdout of `remote-usb-server install --json` (the text form works too: "Bench ticket: …", "Pairing code: …"). */
export function parseInstallOutput(stdout: string): { ticket: string; pairingCode: string; pairingExpires?: string; version?: string; lines: string[] } | undefined {
  const json = stdout.split('\n').map((l) => l.trim()).filter((l) => l.startsWith('{')).pop();
  let ticket: unknown, code: unknown, expires: unknown, version: unknown, lines: unknown;
  if (json) {
    try {
      ({ ticket, pairingCode: code, pairingExpires: expires, version, lines } = JSON.parse(json) as Record<string, unknown>);
    } catch { /* fall through to the text form */ }
  }
  if (ticket === undefined) {
    ticket = /^Bench ticket: (\S+)\s*$/m.exec(stdout)?.[1];
    code = /^Pairing code: (\S+)/m.exec(stdout)?.[1];
    lines = stdout.split('\n').filter((l) => l.trim() && !/^(Bench ticket|Pairing code):/.test(l));
  }
  if (typeof ticket !== 'string' || !/^(endpoint[a-z0-9]+|[0-9a-f]{64}(@\S+)?)$/.test(ticket)) return undefined;
  if (typeof code !== 'string' || !PAIRING_CODE.test(code)) return undefined;
  return {
    ticket, pairingCode: code,
    pairingExpires: typeof expires === 'string' ? expires : undefined,
    version: typeof version === 'string' ? version : undefined,
    lines: Array.isArray(lines) ? lines.filter((l): l is string => typeof l === 'string') : [],
  };
}

/** What an ssh exit 255 means, from its stderr. */
export function classifySshFailure(stderr: string): { code: DeployErrorCode; message: string } {
  if (/Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED|No (ED25519|ECDSA|RSA)?\s*host key is known/i.test(stderr)) {
    return { code: 'host-key', message: 'its host key is unknown or has changed; connect once from a terminal (ssh <destination>), check the fingerprint and accept it, then retry' };
  }
  if (/Permission denied|Too many authentication failures|no mutual signature|Authentication failed/i.test(stderr)) {
    return { code: 'auth', message: 'it refused every key (password and passphrase prompts are off here): add your public key to the bench (ssh-copy-id <destination>) or load your key into ssh-agent, then retry' };
  }
  if (/Could not resolve hostname|Name or service not known|Connection refused|Connection timed out|timed out during banner|No route to host|Network is unreachable|Connection reset|Connection closed by|kex_exchange_identification|Operation timed out|Host is down/i.test(stderr)) {
    return { code: 'unreachable', message: 'cannot reach it: check the host name, the port and that sshd runs there' };
  }
  return { code: 'ssh', message: 'ssh failed' };
}

function printable(s: string): string {
  return s.replace(/[^\x20-\x7e]/g, '?').slice(0, 80);
}

function lastLines(text: string, n = 12): string {
  return text.split('\n').map((l) => l.trimEnd()).filter((l) => l && !/^Warning: Permanently added/.test(l)).slice(-n).join('\n');
}

/** Quoted for display in a POSIX shell (the manual command). */
function shQuote(s: string): string {
  return /^[A-Za-z0-9_./=:@,+-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** One argument for the bench's login shell: checked safe, then single-quoted. */
function rq(s: string): string {
  if (!SAFE_ARG.test(s)) throw new Error(`internal: unsafe remote argument '${printable(s)}'`);
  return `'${s}'`;
}

/** A checked value inside a `sh -c '…'` script: double quotes (the safe set has no $, ` or \\). */
function dq(s: string): string {
  if (!SAFE_ARG.test(s)) throw new Error(`internal: unsafe remote argument '${printable(s)}'`);
  return `"${s}"`;
}

/** A script for `sh -c '…'`: one line, no single quote or backslash, so every login shell passes it on intact. */
function sh(script: string): string {
  if (/['\\\n\r]/.test(script)) throw new Error('internal: remote script with a quote, backslash or newline');
  return `sh -c '${script}'`;
}

// ---- running ssh ----

interface RunResult { code: number | null; stdout: string; stderr: string }

const MAX_OUTPUT = 1 << 20;

export async function deployBench(target: string, options: DeployOptions = {}): Promise<DeployResult> {
  validateTarget(target);
  validateOptions(options);
  const o = options;
  const timeouts = { ...DEFAULT_TIMEOUTS, ...o.timeouts };
  const ssh = o.sshPath ?? 'ssh';
  const step = (s: DeployStep, detail?: string): void => { o.onStep?.(s, detail); };
  const sshArgv = (remoteCommand: string): string[] => [
    '-T', '-o', 'BatchMode=yes', ...(o.sshArgs ?? []),
    '-o', `ConnectTimeout=${Math.max(1, Math.ceil(Math.min(timeouts.connect, 30_000) / 1000))}`, '-o', 'ServerAliveInterval=15', '-o', 'ServerAliveCountMax=3',
    ...(o.port ? ['-p', String(o.port)] : []), '--', target, remoteCommand,
  ];

  const run = (s: DeployStep, remoteCommand: string, opts: { input?: string; signal?: AbortSignal | null; onBytes?: (n: number) => void } = {}): Promise<RunResult> =>
    new Promise((resolve, reject) => {
      const signal = opts.signal === undefined ? o.signal : opts.signal ?? undefined;
      if (signal?.aborted) { reject(new DeployError('cancelled', s, 'cancelled')); return; }
      const child = spawn(ssh, sshArgv(remoteCommand), { stdio: [opts.input ? 'pipe' : 'ignore', 'pipe', 'pipe'] });
      let stdout = '', stderr = '', failure: DeployError | undefined, killTimer: NodeJS.Timeout | undefined;
      const stop = (e: DeployError): void => {
        if (failure) return;
        failure = e;
        child.kill('SIGTERM');
        killTimer = setTimeout(() => child.kill('SIGKILL'), 2000);
      };
      const timer = setTimeout(() => stop(new DeployError('timeout', s, `${DEPLOY_STEP_TITLES[s].toLowerCase()} took longer than ${Math.round(timeouts[s] / 1000)} s; gave up`)), timeouts[s]);
      const onAbort = (): void => stop(new DeployError('cancelled', s, 'cancelled'));
      signal?.addEventListener('abort', onAbort, { once: true });
      child.stdout!.on('data', (d: Buffer) => { if (stdout.length < MAX_OUTPUT) stdout += d.toString('utf8'); });
      child.stderr!.on('data', (d: Buffer) => { if (stderr.length < MAX_OUTPUT) stderr += d.toString('utf8'); });
      if (opts.input) {
        const file = fs.createReadStream(opts.input);
        let sent = 0;
        file.on('data', (c) => { sent += c.length; opts.onBytes?.(sent); });
        file.on('error', (e) => stop(new DeployError('upload-failed', s, `cannot read ${opts.input}: ${e.message}`)));
        child.stdin!.on('error', () => { /* ssh exited early: its exit status and stderr say why */ });
        file.pipe(child.stdin!);
      }
      const done = (): void => { clearTimeout(timer); clearTimeout(killTimer); signal?.removeEventListener('abort', onAbort); };
      child.on('error', (e: NodeJS.ErrnoException) => {
        done();
        reject(failure ?? (e.code === 'ENOENT'
          ? new DeployError('no-ssh', s, `'${ssh}' was not found: install the OpenSSH client (apt install openssh-client; on Windows: Settings → Optional features → OpenSSH Client)`)
          : new DeployError('ssh', s, `cannot run ${ssh}: ${e.message}`)));
      });
      child.on('close', (code) => {
        done();
        if (failure) reject(failure);
        else if (code === 255) {
          const c = classifySshFailure(stderr);
          reject(new DeployError(c.code, s, `${target}: ${c.message.replace('<destination>', target)}`, lastLines(stderr)));
        } else resolve({ code, stdout, stderr });
      });
    });

  // 1. What is there
  step('connect', target);
  const probeRun = await run('connect', sh(PROBE_SCRIPT));
  const probe = parseProbe(probeRun.stdout);
  if (probeRun.code !== 0 || !probe) {
    throw new DeployError('ssh', 'connect', `${target}: logged in, but could not tell what machine it is (exit ${probeRun.code})`, lastLines(probeRun.stdout + '\n' + probeRun.stderr));
  }
  if (probe.os !== 'Linux') throw new DeployError('not-linux', 'connect', `${target} runs ${printable(probe.os)}: the bench server runs on Linux only`);
  const arch = mapArch(probe.machine, probe.longBit);
  if (!arch) {
    throw new DeployError('unsupported-arch', 'connect', `${target} is ${printable(probe.machine)}${probe.longBit === '32' ? ' (32-bit userland)' : ''}: ` +
      'bundles exist for x86_64 (x64), aarch64 (arm64) and armv7l (armv7; 32-bit Raspberry Pi OS on a Pi 2 or later). ARMv6 (Pi 1, Pi Zero W) has no Node.js ≥ 20.');
  }
  step('connect', `${target}: Linux ${probe.machine} (${arch}), ${probe.uid === 0 ? 'root' : `uid ${probe.uid}`}`);

  // 2. The bundle
  step('bundle', `linux-${arch}`);
  const bundlesDir = o.bundlesDir ?? path.join(__dirname, '..', 'out', 'package');
  const bundle = findLocalBundle(bundlesDir, arch, o.version);
  const size = fs.statSync(bundle.file).size;
  step('bundle', `${path.basename(bundle.file)} (${(size / 1e6).toFixed(1)} MB)`);

  const useSudo = o.useSudo ?? probe.uid !== 0;
  const portArgs = (flag: string): string => (o.port ? `${flag} ${o.port} ` : '');
  const manual = `scp ${portArgs('-P')}${shQuote(bundle.file)} ${target}:/tmp/ && ssh -t ${portArgs('-p')}${target} ` +
    `'cd /tmp && tar -xzf ${bundle.name}.tar.gz && sudo ./${bundle.name}/bin/remote-usb-server install; rm -rf ${bundle.name} ${bundle.name}.tar.gz'`;
  if (useSudo && probe.sudo !== 'ok') {
    throw new DeployError('no-sudo', 'connect', probe.sudo === 'missing'
      ? `${target}: sudo is not installed there, and installing needs root: deploy as root@… instead, or install sudo there`
      : `${target}: sudo there needs a password, which cannot be typed here. Run this in a terminal instead (it asks for the password):\n${manual}\n` +
        'or allow this user sudo without a password, or deploy as root@…', undefined, probe.sudo === 'missing' ? undefined : manual);
  }

  const warnings: string[] = [];
  let remoteDir: string | undefined;
  try {
    // 3. Upload
    step('upload', `${(size / 1e6).toFixed(1)} MB to ${target}`);
    const base = o.remoteTempDir ? dq(`${o.remoteTempDir.replace(/\/+$/, '')}/remote-usb-deploy.XXXXXXXX`) : '"${TMPDIR:-/tmp}/remote-usb-deploy.XXXXXXXX"';
    const mk = await run('upload', sh(`mktemp -d ${base}`));
    const dir = mk.stdout.trim().split('\n').pop() ?? '';
    if (mk.code !== 0 || !/^\/[A-Za-z0-9_./-]*\/remote-usb-deploy\.[A-Za-z0-9]+$/.test(dir) || dir.split('/').includes('..')) {
      throw new DeployError('upload-failed', 'upload', `${target}: could not make a temp directory there (exit ${mk.code})`, lastLines(mk.stdout + '\n' + mk.stderr));
    }
    remoteDir = dir;
    const tarball = `${dir}/${bundle.name}.tar.gz`;
    let lastPct = -1;
    const up = await run('upload', `cat > ${rq(tarball)}`, {
      input: bundle.file,
      onBytes: (n) => {
        const pct = Math.floor((n / size) * 10) * 10;
        if (pct !== lastPct) { lastPct = pct; step('upload', `${pct}% of ${(size / 1e6).toFixed(1)} MB`); }
      },
    });
    if (up.code !== 0) throw new DeployError('upload-failed', 'upload', `${target}: copying to ${dir} failed (exit ${up.code}; is the disk full?)`, lastLines(up.stderr));

    // 4. Unpack
    step('unpack', dir);
    const launcher = `${dir}/${bundle.name}/bin/remote-usb-server`;
    const un = await run('unpack', sh(`tar -xzpf ${dq(tarball)} -C ${dq(dir)} && rm -f ${dq(tarball)} && test -x ${dq(launcher)}`));
    if (un.code !== 0) throw new DeployError('unpack-failed', 'unpack', `${target}: unpacking in ${dir} failed (exit ${un.code}; tar and gzip needed, and ~130 MB free)`, lastLines(un.stderr));

    // 5. Install
    step('install', useSudo ? `sudo ${bundle.name}/bin/remote-usb-server install` : `${bundle.name}/bin/remote-usb-server install`);
    const cmd = [...(useSudo ? ['sudo', '-n'] : []), rq(launcher), 'install', '--json', ...(o.installArgs ?? []).map(rq)].join(' ');
    const inst = await run('install', cmd);
    const out = lastLines(inst.stderr + '\n' + inst.stdout.split('\n').filter((l) => !l.startsWith('{')).join('\n'));
    if (useSudo && inst.code !== 0 && /sudo: (a password is required|a terminal is required|sorry, you must have a tty)|is not in the sudoers file|may not run sudo|is not allowed to execute/.test(inst.stderr)) {
      throw new DeployError('no-sudo', 'install', `${target}: sudo refused to run the installer without a password. Run this in a terminal instead:\n${manual}\nor allow it without a password, or deploy as root@…`, out, manual);
    }
    if (inst.code === 126 || (inst.code !== 0 && /Permission denied/.test(inst.stderr) && !inst.stdout.trim())) {
      throw new DeployError('install-failed', 'install', `${target}: the installer could not be executed from ${dir} (exit ${inst.code}); if /tmp is mounted noexec there, pass another remote temp directory`, out);
    }
    if (inst.code !== 0) throw new DeployError('install-failed', 'install', `${target}: remote-usb-server install failed (exit ${inst.code}):\n${out}`, out);
    const parsed = parseInstallOutput(inst.stdout);
    if (!parsed) throw new DeployError('install-failed', 'install', `${target}: install finished but printed no ticket and pairing code:\n${out}`, lastLines(inst.stdout));
    step('install', 'done');
    return { ...parsed, version: parsed.version ?? bundle.version, arch, bundle: bundle.file, warnings };
  } finally {
    // 6. Cleanup, also after a failure or a cancel (then with its own timeout, not the aborted signal)
    if (remoteDir) {
      step('cleanup', remoteDir);
      try {
        const rm = await run('cleanup', `rm -rf ${rq(remoteDir)}`, { signal: null });
        if (rm.code !== 0) warnings.push(`could not remove ${remoteDir} on ${target}: ${lastLines(rm.stderr, 2)}`);
      } catch (e) {
        warnings.push(`could not remove ${remoteDir} on ${target}: ${(e as Error).message}`);
      }
      for (const w of warnings) step('cleanup', w);
    }
  }
}
