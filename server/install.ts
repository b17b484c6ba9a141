/**
 * `remote-usb-server install` / `uninstall`: turn this machine into a bench in one step, as root, from an
 * unpacked bundle (`npm run package:server`).
 *
 * What install writes (paths with the defaults; every one is listed in `<config dir>/installed.json` so
 * that uninstall removes exactly those):
 *   /usr/local/lib/remote-usb-server/          the bundle, root:root, nothing group/other-writable
 *   /usr/local/bin/remote-usb-server            symlink to its launcher
 *   /etc/remote-usb/server.toml                 commented defaults (0644; never overwritten)
 *   /var/lib/remote-usb/                        state (0700, owned by the service user); secret.key 0600, made once
 *   /etc/udev/rules.d/70-remote-usb.rules       the USB devices [sharing] shares to the service user (0644), serial ttys to dialout
 *   /etc/systemd/system/remote-usb-server.service  hardened unit, Type=notify
 * and the `remote-usb` system user (group dialout) when it does not exist yet.
 * `udev-rules` rewrites the rule from the current [sharing] and applies it (udevadm trigger).
 *
 * Safety, learnt from helper/install.ts: every directory we write into is resolved one component at a
 * time (walkTrusted) and must be root-owned and not group/other-writable — the unit runs what lies there;
 * nothing is written until every check passed; files not written by us are never overwritten (a marker
 * line says which are ours); files are written to a temp file and renamed.
 *
 * `root` (the --root flag) puts the whole install under another directory (a test tree or a chroot):
 * then no systemctl/udevadm is run and the user is made with `useradd --root`.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { walkTrusted, FsProbe } from '../helper/install.js';
import { HelperError } from '../helper/errors.js';
import { writeFileAtomic } from '../helper/atomic-write.js';
import { loadConfig, ServerConfig, SharingRules } from './config.js';
import { loadOrCreateSecretKey } from './shared/identity.js';
import { TrustStore } from './trust.js';

export const MARKER = 'Written by remote-usb-server install';
export const UNIT_NAME = 'remote-usb-server.service';
export const UNIT_PATH = '/etc/systemd/system/remote-usb-server.service';
export const UDEV_RULES_PATH = '/etc/udev/rules.d/70-remote-usb.rules';
export const MANIFEST_NAME = 'installed.json';
/** The service user's supplementary groups. Not plugdev: the udev rule gives it exactly the USB devices it
 *  shares (an earlier install put it in plugdev; install takes it out again when it created the user). */
export const SERVICE_GROUPS = ['dialout'];
/** The group earlier installs added the service user to. */
export const OLD_USB_GROUP = 'plugdev';

export interface InstallSettings {
  /** '' for this system; else the directory everything is written under (tests, chroots). */
  root: string;
  /** the program goes to <prefix>/lib/remote-usb-server, its command to <prefix>/bin */
  prefix: string;
  configDir: string;
  stateDir: string;
  user: string;
}

export const DEFAULT_SETTINGS: InstallSettings = { root: '', prefix: '/usr/local', configDir: '/etc/remote-usb', stateDir: '/var/lib/remote-usb', user: 'remote-usb' };

export class InstallError extends Error {
  override name = 'InstallError';
  constructor(message: string, readonly exitCode = 1) { super(message); }
}
export class InstallUsageError extends InstallError {
  override name = 'UsageError';
  constructor(message: string) { super(message, 2); }
}

// ---- argument validation (pure) ----

const FORBIDDEN_STATE_PARENTS = ['/tmp', '/var/tmp', '/home', '/root', '/dev', '/proc', '/sys', '/run/user'];

function absPath(flag: string, p: string): string {
  if (!p.startsWith('/')) throw new InstallUsageError(`${flag} must be an absolute path, got '${p}'`);
  if (p.split('/').some((c) => c === '..' || c === '.')) throw new InstallUsageError(`${flag} must not contain '.' or '..' ('${p}')`);
  if (/[\s"'\\$`%;]/.test(p)) throw new InstallUsageError(`${flag} must not contain spaces, quotes, '$', '%', ';' or backslashes ('${p}'): it goes into a systemd unit`);
  const n = path.posix.normalize(p).replace(/\/+$/, '') || '/';
  return n;
}

/** Checks and normalises the flags; throws InstallUsageError (exit 2) naming the bad one. */
export function validateSettings(v: Partial<Record<'root' | 'prefix' | 'configDir' | 'stateDir' | 'user', string>>): InstallSettings {
  const s: InstallSettings = { ...DEFAULT_SETTINGS };
  if (v.user !== undefined) {
    if (!/^[a-z_][a-z0-9_-]{0,30}$/.test(v.user)) throw new InstallUsageError(`--user '${v.user}' is not a valid system user name (lower-case letters, digits, '-', '_'; at most 31)`);
    if (v.user === 'root') throw new InstallUsageError('--user root: the daemon must not run as root');
    s.user = v.user;
  }
  if (v.root !== undefined && v.root !== '') s.root = absPath('--root', v.root) === '/' ? '' : absPath('--root', v.root);
  if (v.prefix !== undefined) s.prefix = absPath('--prefix', v.prefix);
  if (v.configDir !== undefined) s.configDir = absPath('--config-dir', v.configDir);
  if (v.stateDir !== undefined) s.stateDir = absPath('--state-dir', v.stateDir);
  for (const [flag, p] of [['--prefix', s.prefix], ['--config-dir', s.configDir], ['--state-dir', s.stateDir]] as const) {
    if (p === '/') throw new InstallUsageError(`${flag} must not be /`);
  }
  if (FORBIDDEN_STATE_PARENTS.some((d) => s.stateDir === d || s.stateDir.startsWith(d + '/'))) {
    throw new InstallUsageError(`--state-dir ${s.stateDir}: not under ${FORBIDDEN_STATE_PARENTS.join(', ')} (the unit hides or empties those; use e.g. /var/lib/remote-usb)`);
  }
  const inside = (a: string, b: string): boolean => a === b || a.startsWith(b + '/') || b.startsWith(a + '/');
  if (inside(s.stateDir, s.configDir)) throw new InstallUsageError(`--state-dir ${s.stateDir} and --config-dir ${s.configDir} must not contain each other`);
  if (inside(s.stateDir, programDir(s)) || inside(s.configDir, programDir(s))) throw new InstallUsageError('--state-dir/--config-dir must not be inside the program directory');
  return s;
}

export const programDir = (s: Pick<InstallSettings, 'prefix'>): string => path.posix.join(s.prefix, 'lib', 'remote-usb-server');
export const commandPath = (s: Pick<InstallSettings, 'prefix'>): string => path.posix.join(s.prefix, 'bin', 'remote-usb-server');
export const configFile = (s: InstallSettings): string => path.posix.join(s.configDir, 'server.toml');
export const manifestFile = (s: InstallSettings): string => path.posix.join(s.configDir, MANIFEST_NAME);

// ---- generated text (pure) ----

export function unitText(s: Pick<InstallSettings, 'prefix' | 'configDir' | 'stateDir' | 'user'>): string {
  return `# ${MARKER} (remote-usb-server uninstall removes it).
# The Remote USB bench daemon as an unprivileged user; the udev rule (70-remote-usb.rules) gives that user
# the USB devices it shares (as their owner) and serial ttys to group dialout.
[Unit]
Description=Remote USB bench daemon (share this machine's USB devices over Iroh)
Documentation=https://github.com/remote-usb/remote-usb#set-up-your-bench
Wants=network-online.target
After=network-online.target

[Service]
# The daemon reports READY=1 once its Iroh endpoint is bound and accepting. Node cannot send on a unix
# datagram socket, so it runs \`systemd-notify --ready\` (which waits until systemd has processed the
# message); that child is not the main process, hence NotifyAccess=all (only our own cgroup can notify).
Type=notify
NotifyAccess=all
TimeoutStartSec=90
User=${s.user}
Group=${s.user}
SupplementaryGroups=${SERVICE_GROUPS.join(' ')}
ExecStart=${commandPath(s)} run --config ${path.posix.join(s.configDir, 'server.toml')}
Restart=on-failure
RestartSec=2
ReadWritePaths=${s.stateDir}
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
ProtectKernelModules=yes
ProtectKernelTunables=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
CapabilityBoundingSet=
AmbientCapabilities=
UMask=0077
# Only USB device nodes (/dev/bus/usb/*) and serial ttys, plus the standard pseudo devices.
DevicePolicy=closed
DeviceAllow=char-usb_device rw
DeviceAllow=char-ttyACM rw
DeviceAllow=char-ttyUSB rw
DeviceAllow=char-ttyS rw
DeviceAllow=char-ttyAMA rw

[Install]
WantedBy=multi-user.target
`;
}

/** A udev match value for `text`: udev matches with fnmatch() globs (`*`, `?`, `[`) and `|` alternatives, and
 *  the value sits in double quotes. Every run of characters outside a plain set becomes `*`, so the match can
 *  only be wider than the text, never miss it; the extra devices it may catch go to the service user only
 *  (the daemon still shares by the exact rule). */
export function udevGlob(text: string): string {
  return text.replace(/[^A-Za-z0-9 ._:+=@,/-]+/g, '*');
}

/** The udev match keys of one [sharing] pattern (config.ts checkDevicePattern), or undefined for a pattern
 *  no real device can match (port:sim-N). */
export function udevMatch(pattern: string): string | undefined {
  if (pattern.startsWith('serial:')) return `ATTR{serial}=="${udevGlob(pattern.slice(7))}"`;
  if (pattern.startsWith('port:')) return /^port:[0-9]+-[0-9.]+$/.test(pattern) ? `KERNEL=="${pattern.slice(5)}"` : undefined;
  const [v, p] = pattern.toLowerCase().split(':');
  const keys = [v === '*' ? '' : `ATTR{idVendor}=="${v}"`, p === '*' ? '' : `ATTR{idProduct}=="${p}"`].filter(Boolean);
  return keys.length ? keys.join(', ') : 'ENV{DEVTYPE}=="usb_device"';
}

/**
 * 70-remote-usb.rules, generated from [sharing]: the USB devices the bench shares belong to the service user
 * (owner read/write, 0644: no write for group or others); every other USB device is root's (udev's default
 * 0664 root:root, the owner set back explicitly so that narrowing [sharing] takes effect on the next
 * `udevadm trigger`). Root hubs and devices imported over USB/IP (vhci_hcd) are never the daemon's: it never
 * lists them. Nobody but root and the service user gains write access to a USB device node.
 */
export function udevRulesText(sharing: SharingRules, user: string): string {
  const lines = [
    `# ${MARKER} (remote-usb-server uninstall removes it).`,
    `# Generated from [sharing] in the daemon's config: the USB devices the bench shares belong to the service`,
    `# user ${user} (0644: read/write for it, no write for group or others); every other USB device stays root's`,
    `# (0664 root:root, udev's default). After changing [sharing]: sudo remote-usb-server udev-rules`,
    `SUBSYSTEM!="usb", GOTO="remote_usb_end"`,
    `ENV{DEVTYPE}!="usb_device", GOTO="remote_usb_end"`,
    `# root hubs, and devices this machine imported over USB/IP, are never shared`,
    `KERNEL=="usb[0-9]*", GOTO="remote_usb_end"`,
    `DEVPATH=="*/vhci_hcd.*", GOTO="remote_usb_end"`,
  ];
  const deny = sharing.deny.map((p) => [p, udevMatch(p)] as const).filter(([, m]) => m !== undefined);
  if (deny.length) lines.push('# deny (wins over allow)');
  // (udev has no trailing comments: each pattern's comment is a line of its own, made of plain characters)
  for (const [p, m] of deny) lines.push(`# ${udevGlob(p)}`, `${m}, GOTO="remote_usb_not_shared"`);
  const owner = `OWNER="${user}", MODE="0644", GOTO="remote_usb_end"`;
  if (sharing.allow.length === 0) {
    lines.push('# allow = []: every other device is shared', `ENV{DEVTYPE}=="usb_device", ${owner}`);
  } else {
    lines.push('# allow');
    for (const p of sharing.allow) {
      const m = udevMatch(p);
      if (m !== undefined) lines.push(`# ${udevGlob(p)}`, `${m}, ${owner}`);
    }
  }
  lines.push(
    `LABEL="remote_usb_not_shared"`,
    `ENV{DEVTYPE}=="usb_device", OWNER="root"`,
    `LABEL="remote_usb_end"`,
    '',
    `# Serial ttys (USB CDC-ACM and USB-serial adapters) to group dialout, 0660 (Debian's default); the`,
    `# service user is in dialout to open the ttys of the boards it shares.`,
    `SUBSYSTEM=="tty", KERNEL=="ttyACM[0-9]*|ttyUSB[0-9]*", MODE="0660", GROUP="dialout"`,
  );
  return lines.join('\n') + '\n';
}

/** The example config with state_dir (and allowlist) set: the service user is not root, so the
 *  built-in default (~/.local/state) would be wrong for it. */
export function configText(example: string, s: Pick<InstallSettings, 'stateDir'>): string {
  const header = `# ${MARKER}; yours to edit: install never overwrites it, uninstall keeps it (unless --purge).\n`;
  return header + example
    .replace(/^# state_dir = .*$/m, `state_dir = "${s.stateDir}"`)
    .replace(/^# allowlist = .*$/m, `# allowlist = "${path.posix.join(s.stateDir, 'clients.toml')}"`);
}

export interface Manifest {
  writtenBy: string;
  version: string;
  user: { name: string; created: boolean };
  programDir: string;
  /** files and symlinks install wrote (config only when it made it) */
  files: string[];
  /** directories install created (removed when empty) */
  dirs: string[];
  stateDir: string;
  configFile: string;
  configCreated: boolean;
}

export function manifestText(m: Manifest): string {
  return JSON.stringify(m, null, 2) + '\n';
}

/** Parses a manifest; anything malformed is an error (uninstall must not guess what to delete). */
export function parseManifest(text: string, file: string): Manifest {
  let m: Partial<Manifest>;
  try { m = JSON.parse(text) as Partial<Manifest>; } catch (e) { throw new InstallError(`${file}: not JSON (${(e as Error).message}); remove the files by hand`); }
  const abs = (x: unknown): x is string => typeof x === 'string' && x.startsWith('/') && !x.split('/').includes('..');
  const ok = m.writtenBy === MARKER && typeof m.version === 'string' && typeof m.user?.name === 'string' && typeof m.user.created === 'boolean'
    && abs(m.programDir) && Array.isArray(m.files) && m.files.every(abs) && Array.isArray(m.dirs) && m.dirs.every(abs)
    && abs(m.stateDir) && abs(m.configFile) && typeof m.configCreated === 'boolean';
  if (!ok) throw new InstallError(`${file}: not a remote-usb-server install manifest; remove the files by hand`);
  if (m.programDir!.split('/').length < 3 || !m.programDir!.endsWith('/remote-usb-server')) throw new InstallError(`${file}: programDir '${m.programDir}' is not a remote-usb-server directory`);
  return m as Manifest;
}

// ---- the system (a seam for --root and tests) ----

export interface UserInfo { uid: number; gid: number; groups: string[]; gids: number[] }

export interface System {
  readonly root: string;
  lookupUser(name: string): UserInfo | undefined;
  groupExists(name: string): boolean;
  userName(uid: number): string | undefined;
  groupName(gid: number): string | undefined;
  createUser(name: string, home: string, groups: string[]): void;
  deleteUser(name: string): void;
  /** systemd is PID 1 (and we are not installing into another root) */
  systemdRunning(): boolean;
  udevRunning(): boolean;
  /** runs a command; returns status and output */
  run(cmd: string, args: string[]): { status: number | null; out: string };
  isRoot(): boolean;
}

function readPasswd(root: string): { users: Map<string, { uid: number; gid: number }>; groups: Map<string, { gid: number; members: string[] }> } {
  const users = new Map<string, { uid: number; gid: number }>();
  const groups = new Map<string, { gid: number; members: string[] }>();
  const read = (f: string): string => { try { return fs.readFileSync(path.join(root || '/', f), 'utf8'); } catch { return ''; } };
  for (const l of read('etc/passwd').split('\n')) { const p = l.split(':'); if (p.length >= 4) users.set(p[0], { uid: Number(p[2]), gid: Number(p[3]) }); }
  for (const l of read('etc/group').split('\n')) { const p = l.split(':'); if (p.length >= 4) groups.set(p[0], { gid: Number(p[2]), members: p[3].split(',').filter(Boolean) }); }
  return { users, groups };
}

/** The real system (root '') or a tree under `root`: users from <root>/etc/passwd, useradd --root. */
export function realSystem(root: string): System {
  const run = (cmd: string, args: string[]): { status: number | null; out: string } => {
    const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 120_000 });
    return { status: r.error ? null : r.status, out: ((r.stdout ?? '') + (r.stderr ?? '') + (r.error ? r.error.message : '')).trim() };
  };
  const rootArgs = root ? ['--root', root] : [];
  return {
    root,
    lookupUser(name) {
      const { users, groups } = readPasswd(root);
      const u = users.get(name);
      if (!u) return undefined;
      const mine = [...groups].filter(([, g]) => g.gid === u.gid || g.members.includes(name));
      return { ...u, groups: mine.map(([n]) => n), gids: [...new Set([u.gid, ...mine.map(([, g]) => g.gid)])] };
    },
    groupExists: (name) => readPasswd(root).groups.has(name),
    userName: (uid) => [...readPasswd(root).users].find(([, u]) => u.uid === uid)?.[0],
    groupName: (gid) => [...readPasswd(root).groups].find(([, g]) => g.gid === gid)?.[0],
    createUser(name, home, groups) {
      const r = run('useradd', [...rootArgs, '--system', '--user-group', '--home-dir', home, '--no-create-home', '--shell', '/usr/sbin/nologin',
        '--comment', 'Remote USB bench daemon', ...(groups.length ? ['--groups', groups.join(',')] : []), name]);
      if (r.status !== 0) throw new InstallError(`useradd ${name} failed: ${r.out}`);
    },
    deleteUser(name) {
      const r = run('userdel', [...rootArgs, name]);
      if (r.status !== 0) throw new InstallError(`userdel ${name} failed: ${r.out}`);
    },
    systemdRunning: () => !root && fs.existsSync('/run/systemd/system'),
    udevRunning: () => !root && fs.existsSync('/run/udev/control'),
    run,
    isRoot: () => process.geteuid?.() === 0,
  };
}

// ---- file helpers ----

const rooted = (sys: System, p: string): string => (sys.root ? path.join(sys.root, p) : p);

/** walkTrusted (helper/install.ts) seen from inside `root`: symlinks resolve within it, like a chroot. */
function rootedProbe(root: string): FsProbe {
  return { lstat: (p) => fs.lstatSync(root ? path.join(root, p) : p), readlink: (p) => fs.readlinkSync(root ? path.join(root, p) : p) };
}

function checkTrusted(sys: System, dir: string, role: string): { real: string; missing: string[] } {
  try {
    return walkTrusted(dir, rootedProbe(sys.root), { role, hint: 'choose a directory whose parents are owned by root and not writable by group or others', allowMissing: true });
  } catch (e) {
    if (e instanceof HelperError) throw new InstallError(e.message);
    throw e;
  }
}

function readIfExists(file: string): string | undefined {
  try { return fs.readFileSync(file, 'utf8'); } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new InstallError(`cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

/** helper/atomic-write.ts (temp file O_EXCL|O_NOFOLLOW, every byte written, owner and mode on the fd, fsync,
 *  rename), as an InstallError. */
function writeFile(file: string, data: string, mode: number, uid = 0, gid = 0): void {
  try {
    writeFileAtomic(file, data, { mode, owner: { uid, gid } });
  } catch (e) {
    throw new InstallError((e as Error).message);
  }
}

/** mkdir -p, each new directory root:root 0755; returns the (unrooted) directories created. */
function makeDirs(sys: System, dir: string): string[] {
  const created: string[] = [];
  let cur = '';
  for (const c of dir.split('/').filter(Boolean)) {
    cur += '/' + c;
    const p = rooted(sys, cur);
    if (fs.existsSync(p)) continue;
    fs.mkdirSync(p, { mode: 0o755 });
    fs.chownSync(p, 0, 0);
    fs.chmodSync(p, 0o755);
    created.push(cur);
  }
  return created;
}

/** Copies the bundle: root:root, group/other write bits dropped, no symlinks followed or copied. */
function copyTree(from: string, to: string): void {
  fs.mkdirSync(to, { mode: 0o755 });
  for (const e of fs.readdirSync(from, { withFileTypes: true })) {
    const a = path.join(from, e.name), b = path.join(to, e.name);
    if (e.isDirectory()) copyTree(a, b);
    else if (e.isFile()) {
      fs.copyFileSync(a, b, fs.constants.COPYFILE_EXCL);
      fs.chmodSync(b, fs.statSync(a).mode & 0o755);
    } else throw new InstallError(`${a}: the bundle holds something that is not a file or directory; unpack a fresh bundle`);
    fs.chownSync(b, 0, 0);
  }
  fs.chownSync(to, 0, 0);
  fs.chmodSync(to, 0o755);
}

// ---- install ----

export interface BundleInfo { dir: string; version: string; target: string; incomplete: string[] }

/** The bundle this program runs from: <dir>/lib/server.js with <dir>/bundle.json next to lib/. */
export function findBundle(serverJs: string): BundleInfo {
  const dir = path.dirname(path.dirname(serverJs));
  const text = readIfExists(path.join(dir, 'bundle.json'));
  if (text === undefined || !fs.existsSync(path.join(dir, 'lib', 'node')) || !fs.existsSync(path.join(dir, 'bin', 'remote-usb-server'))) {
    throw new InstallError(`install runs from a daemon bundle (npm run package:server → remote-usb-server-<version>-<arch>.tar.gz; unpack it and run ` +
      `sudo ./remote-usb-server-*/bin/remote-usb-server install), not from ${serverJs}`);
  }
  const b = JSON.parse(text) as { version: string; target: string; incomplete?: string[] };
  return { dir, version: b.version, target: b.target, incomplete: b.incomplete ?? [] };
}

export interface InstallResult {
  lines: string[];
  manifest: Manifest;
  config: ServerConfig;
  key: Uint8Array;
  pairing?: { code: string; expires: Date };
}

export function install(s: InstallSettings, bundle: BundleInfo, sys: System, opts: { pairingMinutes?: number; pair?: boolean } = {}): InstallResult {
  const lines: string[] = [];
  const say = (l: string): void => { lines.push(l); };
  if (!sys.isRoot()) throw new InstallError('install must run as root (it creates a system user, /etc and /var/lib files, a udev rule and a systemd unit): sudo remote-usb-server install', 1);
  if (bundle.incomplete.length) throw new InstallError(`this bundle is incomplete and cannot serve: ${bundle.incomplete.join('; ')}`);
  const platformArch = process.arch === 'arm' ? 'armv7' : process.arch;
  if (bundle.target !== `linux-${platformArch}`) throw new InstallError(`this bundle is for ${bundle.target}, this machine is linux-${platformArch}`);

  // 1. Checks. Nothing is written until all pass.
  const prog = programDir(s), cmd = commandPath(s), conf = configFile(s), manifestPath = manifestFile(s);
  for (const [dir, role] of [[prog, 'the program directory'], [path.posix.dirname(cmd), 'the command directory'], [s.configDir, 'the config directory'],
    [path.posix.dirname(s.stateDir), 'the state directory'], [path.posix.dirname(UNIT_PATH), 'the systemd unit directory'], [path.posix.dirname(UDEV_RULES_PATH), 'the udev rules directory']] as const) {
    checkTrusted(sys, dir, `${role} ${dir}`);
  }
  const previousText = readIfExists(rooted(sys, manifestPath));
  const previous = previousText === undefined ? undefined : parseManifest(previousText, manifestPath);
  const foreign = (f: string): InstallError => new InstallError(`${f} exists and was not written by remote-usb-server install; move it away first (install never overwrites foreign files)`);
  for (const f of [UNIT_PATH, UDEV_RULES_PATH]) {
    const t = readIfExists(rooted(sys, f));
    if (t !== undefined && !t.includes(MARKER)) throw foreign(f);
  }
  const progBundle = readIfExists(rooted(sys, path.posix.join(prog, 'bundle.json')));
  if (fs.existsSync(rooted(sys, prog)) && (progBundle === undefined || !/"name": "remote-usb-server"/.test(progBundle))) throw foreign(prog);
  const link = fs.lstatSync(rooted(sys, cmd), { throwIfNoEntry: false });
  const launcher = path.posix.join(prog, 'bin', 'remote-usb-server');
  if (link && !(link.isSymbolicLink() && fs.readlinkSync(rooted(sys, cmd)) === launcher)) throw foreign(cmd);
  if (path.resolve(bundle.dir) === path.resolve(rooted(sys, prog))) throw new InstallError(`already running from ${prog}: run install from the unpacked bundle`);
  const missingGroups = SERVICE_GROUPS.filter((g) => !sys.groupExists(g));
  if (missingGroups.length) throw new InstallError(`group(s) ${missingGroups.join(', ')} do not exist here; create them (groupadd --system ${missingGroups[0]}) and rerun`);

  const files = new Set(previous?.files ?? []);
  const dirs = new Set(previous?.dirs ?? []);

  // 2. The service user.
  let user = sys.lookupUser(s.user);
  let userCreated = previous?.user.name === s.user ? previous.user.created : false;
  if (!user) {
    sys.createUser(s.user, s.stateDir, SERVICE_GROUPS);
    user = sys.lookupUser(s.user);
    if (!user) throw new InstallError(`useradd reported success but ${s.user} does not exist`);
    userCreated = true;
    say(`created system user ${s.user} (groups ${SERVICE_GROUPS.join(', ')})`);
  } else {
    const lacking = SERVICE_GROUPS.filter((g) => !user!.groups.includes(g));
    if (lacking.length) {
      const r = sys.run('usermod', [...(sys.root ? ['--root', sys.root] : []), '--append', '--groups', lacking.join(','), s.user]);
      if (r.status !== 0) throw new InstallError(`usermod --append --groups ${lacking.join(',')} ${s.user} failed: ${r.out}`);
      say(`added ${s.user} to ${lacking.join(', ')}`);
    } else say(`user ${s.user} exists (groups ${user.groups.join(', ')})`);
    // Earlier installs put the service user in plugdev, which opens every USB device plugdev may write;
    // the udev rule now gives it exactly the shared ones. A user we created is ours to take out again;
    // someone else's account (--user pi) keeps its groups.
    if (user.groups.includes(OLD_USB_GROUP)) {
      if (userCreated) {
        const r = sys.run('gpasswd', [...(sys.root ? ['--root', sys.root] : []), '--delete', s.user, OLD_USB_GROUP]);
        if (r.status !== 0) throw new InstallError(`gpasswd --delete ${s.user} ${OLD_USB_GROUP} failed: ${r.out}`);
        user = sys.lookupUser(s.user) ?? user;
        say(`removed ${s.user} from ${OLD_USB_GROUP} (the udev rule gives it the devices it shares, and no others)`);
      } else {
        say(`note: ${s.user} is in ${OLD_USB_GROUP}, which may write other USB devices too; the daemon does not need it (gpasswd --delete ${s.user} ${OLD_USB_GROUP})`);
      }
    }
  }

  // 3. The program: copied next to its place, then swapped in (an upgrade replaces it whole).
  for (const d of makeDirs(sys, path.posix.dirname(prog))) dirs.add(d);
  for (const d of makeDirs(sys, path.posix.dirname(cmd))) dirs.add(d);
  const staging = rooted(sys, `${prog}.new`);
  fs.rmSync(staging, { recursive: true, force: true });
  copyTree(bundle.dir, staging);
  fs.rmSync(rooted(sys, prog), { recursive: true, force: true });
  fs.renameSync(staging, rooted(sys, prog));
  say(`installed remote-usb-server ${bundle.version} (${bundle.target}) in ${prog}`);
  if (!link) { fs.symlinkSync(launcher, rooted(sys, cmd)); say(`linked ${cmd}`); }
  files.add(cmd);

  // 4. Config: written once, never overwritten.
  for (const d of makeDirs(sys, s.configDir)) dirs.add(d);
  let configCreated = previous?.configCreated ?? false;
  if (readIfExists(rooted(sys, conf)) === undefined) {
    const example = fs.readFileSync(path.join(bundle.dir, 'share', 'server.example.toml'), 'utf8');
    writeFile(rooted(sys, conf), configText(example, s), 0o644);
    configCreated = true;
    say(`wrote ${conf} (commented defaults; edit it, then: systemctl restart remote-usb-server)`);
  } else say(`kept ${conf}`);
  let config: ServerConfig;
  try {
    config = loadConfig(rooted(sys, conf));
  } catch (e) {
    throw new InstallError(`${(e as Error).message}\nfix ${conf} and rerun install`);
  }
  if (config.stateDir !== s.stateDir) say(`note: ${conf} sets state_dir = "${config.stateDir}"; the unit allows writes to ${s.stateDir} only`);

  // 5. State: 0700, the user's; the identity key made once (0600) and never replaced.
  for (const d of makeDirs(sys, path.posix.dirname(s.stateDir))) dirs.add(d);
  const state = rooted(sys, s.stateDir);
  const st = fs.lstatSync(state, { throwIfNoEntry: false });
  if (st && !st.isDirectory()) throw new InstallError(`${s.stateDir} exists and is not a directory`);
  if (!st) fs.mkdirSync(state, { mode: 0o700 });
  fs.chownSync(state, user.uid, user.gid);
  fs.chmodSync(state, 0o700);
  const { key, created } = loadOrCreateSecretKey(state);
  say(created ? `created the bench identity ${path.posix.join(s.stateDir, 'secret.key')}` : `kept the bench identity ${path.posix.join(s.stateDir, 'secret.key')}`);
  let pairing: { code: string; expires: Date } | undefined;
  if (opts.pair !== false) {
    pairing = new TrustStore(rooted(sys, config.allowlistFile), state).createPairingCode(opts.pairingMinutes ?? config.pairingMinutes);
  }
  // root made those files: hand every entry of the state directory to the user (lchown: never follows a link)
  for (const f of fs.readdirSync(state)) fs.lchownSync(path.join(state, f), user.uid, user.gid);

  // 6. udev rule (from [sharing]) and systemd unit.
  const rules = udevRulesText(config.sharing, s.user);
  const rulesChanged = readIfExists(rooted(sys, UDEV_RULES_PATH)) !== rules;
  for (const d of makeDirs(sys, path.posix.dirname(UDEV_RULES_PATH))) dirs.add(d);
  if (rulesChanged) { writeFile(rooted(sys, UDEV_RULES_PATH), rules, 0o644); say(`wrote ${UDEV_RULES_PATH} (the USB devices [sharing] shares go to ${s.user})`); }
  files.add(UDEV_RULES_PATH);
  for (const d of makeDirs(sys, path.posix.dirname(UNIT_PATH))) dirs.add(d);
  const unit = unitText(s);
  if (readIfExists(rooted(sys, UNIT_PATH)) !== unit) { writeFile(rooted(sys, UNIT_PATH), unit, 0o644); say(`wrote ${UNIT_PATH}`); }
  files.add(UNIT_PATH);

  // 7. The manifest, before anything is started: an interrupted install can still be uninstalled.
  const manifest: Manifest = {
    writtenBy: MARKER, version: bundle.version, user: { name: s.user, created: userCreated }, programDir: prog,
    files: [...files].sort(), dirs: [...dirs].sort(), stateDir: s.stateDir, configFile: conf, configCreated,
  };
  writeFile(rooted(sys, manifestPath), manifestText(manifest), 0o644);

  // 8. udev and systemd, when they run here.
  applyUdev(sys, say);
  if (sys.systemdRunning()) {
    for (const a of [['daemon-reload'], ['enable', UNIT_NAME], ['restart', UNIT_NAME]]) {
      const r = sys.run('systemctl', a);
      if (r.status !== 0) throw new InstallError(`systemctl ${a.join(' ')} failed: ${r.out}\nsee: journalctl -u remote-usb-server -n 50; then remote-usb-server doctor`);
    }
    say(`service ${UNIT_NAME} enabled and started (it reported ready)`);
  } else {
    say(`systemd is not running here${sys.root ? ' (--root)' : ''}: the service was not started. Start it as the unit would:`);
    say(`  setpriv --reuid=${s.user} --regid=${s.user} --init-groups ${cmd} run --config ${conf}`);
  }
  return { lines, manifest, config, key, pairing };
}

/** Reloads udev's rules and replays the USB and tty devices present through them (when udev runs here). */
function applyUdev(sys: System, say: (l: string) => void): void {
  if (sys.udevRunning()) {
    sys.run('udevadm', ['control', '--reload-rules']);
    sys.run('udevadm', ['trigger', '--action=change', '--subsystem-match=usb', '--subsystem-match=tty']);
    sys.run('udevadm', ['settle', '--timeout=10']);
    say('udev rules reloaded and applied to the devices present');
  } else say('udev is not running here: the rule applies from the next boot (or udevadm trigger)');
}

/**
 * `remote-usb-server udev-rules`: after [sharing] changed, rewrite 70-remote-usb.rules from the installed config
 * and apply it to the devices present (a device no longer shared goes back to root). The daemon cannot do
 * it itself: it runs unprivileged, and /etc is read-only for it.
 */
export function updateUdevRules(s: InstallSettings, sys: System): string[] {
  const lines: string[] = [];
  const say = (l: string): void => { lines.push(l); };
  if (!sys.isRoot()) throw new InstallError('udev-rules must run as root: sudo remote-usb-server udev-rules', 1);
  const manifestPath = manifestFile(s);
  const text = readIfExists(rooted(sys, manifestPath));
  if (text === undefined) throw new InstallError(`no ${manifestPath}: udev-rules updates the rule of a bench set up by remote-usb-server install (pass the --config-dir install used)`);
  const m = parseManifest(text, manifestPath);
  checkTrusted(sys, path.posix.dirname(UDEV_RULES_PATH), `the udev rules directory ${path.posix.dirname(UDEV_RULES_PATH)}`);
  const old = readIfExists(rooted(sys, UDEV_RULES_PATH));
  if (old !== undefined && !old.includes(MARKER)) throw new InstallError(`${UDEV_RULES_PATH} exists and was not written by remote-usb-server install; move it away first`);
  let config: ServerConfig;
  try {
    config = loadConfig(rooted(sys, m.configFile));
  } catch (e) {
    throw new InstallError(`${(e as Error).message}\nfix ${m.configFile} and rerun`);
  }
  const rules = udevRulesText(config.sharing, m.user.name);
  if (old === rules) say(`${UDEV_RULES_PATH} already matches [sharing] in ${m.configFile}`);
  else {
    writeFile(rooted(sys, UDEV_RULES_PATH), rules, 0o644);
    say(`wrote ${UDEV_RULES_PATH} from [sharing] in ${m.configFile}`);
  }
  applyUdev(sys, say);
  return lines;
}

/** After the rule is gone: USB device nodes the service user owns go back to root (udev's default), since
 *  no rule will change them before the next plug-in or boot. */
function releaseUsbNodes(sys: System, user: string, say: (l: string) => void): void {
  const u = sys.lookupUser(user);
  if (!u || u.uid === 0) return;
  const base = rooted(sys, '/dev/bus/usb');
  let n = 0;
  for (const bus of (() => { try { return fs.readdirSync(base); } catch { return []; } })()) {
    if (!/^\d+$/.test(bus)) continue;
    for (const dev of (() => { try { return fs.readdirSync(path.join(base, bus)); } catch { return []; } })()) {
      const f = path.join(base, bus, dev);
      const st = fs.lstatSync(f, { throwIfNoEntry: false });
      if (!st || !st.isCharacterDevice() || st.uid !== u.uid) continue;
      fs.chownSync(f, 0, 0);
      fs.chmodSync(f, 0o664);
      n++;
    }
  }
  if (n) say(`gave ${n} USB device node${n > 1 ? 's' : ''} back to root (0664)`);
}

// ---- uninstall ----

export function uninstall(s: InstallSettings, sys: System, opts: { purge?: boolean } = {}): string[] {
  const lines: string[] = [];
  const say = (l: string): void => { lines.push(l); };
  if (!sys.isRoot()) throw new InstallError('uninstall must run as root: sudo remote-usb-server uninstall', 1);
  const manifestPath = manifestFile(s);
  const text = readIfExists(rooted(sys, manifestPath));
  if (text === undefined) { say(`nothing to uninstall: no ${manifestPath} (pass the --config-dir install used)`); return lines; }
  const m = parseManifest(text, manifestPath);

  if (sys.systemdRunning()) {
    sys.run('systemctl', ['disable', '--now', UNIT_NAME]);
    say(`service ${UNIT_NAME} stopped and disabled`);
  }
  const remove = (f: string, ours: (p: string) => boolean): void => {
    const p = rooted(sys, f);
    const st = fs.lstatSync(p, { throwIfNoEntry: false });
    if (!st) return;
    if (!ours(p)) { say(`left ${f}: not written by remote-usb-server install`); return; }
    fs.unlinkSync(p);
    say(`removed ${f}`);
  };
  for (const f of m.files) {
    if (f === m.configFile) continue;
    remove(f, (p) => {
      const st = fs.lstatSync(p);
      if (st.isSymbolicLink()) return fs.readlinkSync(p).startsWith(m.programDir + '/');
      return st.isFile() && (readIfExists(p) ?? '').includes(MARKER);
    });
  }
  const prog = rooted(sys, m.programDir);
  if (fs.existsSync(prog)) {
    if (/"name": "remote-usb-server"/.test(readIfExists(path.join(prog, 'bundle.json')) ?? '')) {
      fs.rmSync(prog, { recursive: true, force: true });
      say(`removed ${m.programDir}/`);
    } else say(`left ${m.programDir}/: not a remote-usb-server bundle`);
  }
  fs.rmSync(`${prog}.new`, { recursive: true, force: true });
  if (sys.systemdRunning()) sys.run('systemctl', ['daemon-reload']);
  if (sys.udevRunning()) sys.run('udevadm', ['control', '--reload-rules']);
  releaseUsbNodes(sys, m.user.name, say);

  const kept: string[] = [];
  if (opts.purge) {
    if (m.configCreated) remove(m.configFile, () => true);
    else if (fs.existsSync(rooted(sys, m.configFile))) say(`left ${m.configFile}: it was there before install`);
    if (fs.existsSync(rooted(sys, m.stateDir))) {
      fs.rmSync(rooted(sys, m.stateDir), { recursive: true, force: true });
      say(`removed ${m.stateDir}/ (identity, allowlist: paired clients must pair again with a new install)`);
    }
    if (m.user.created && sys.lookupUser(m.user.name)) { sys.deleteUser(m.user.name); say(`removed user ${m.user.name}`); }
    fs.rmSync(rooted(sys, manifestPath), { force: true });
  } else {
    if (fs.existsSync(rooted(sys, m.configFile))) kept.push(m.configFile);
    if (fs.existsSync(rooted(sys, m.stateDir))) kept.push(`${m.stateDir}/ (identity ${path.posix.join(m.stateDir, 'secret.key')}, allowlist)`);
    if (m.user.created) kept.push(`user ${m.user.name}`);
    // what is left stays listed, so a later `uninstall --purge` still finds it
    const rest: Manifest = { ...m, files: m.configCreated ? [m.configFile] : [], dirs: m.dirs.filter((d) => m.configFile.startsWith(d + '/') || m.stateDir.startsWith(d + '/')) };
    writeFile(rooted(sys, manifestPath), manifestText(rest), 0o644);
  }
  // directories install created, deepest first, when empty
  for (const d of [...m.dirs].sort((a, b) => b.length - a.length)) {
    try { fs.rmdirSync(rooted(sys, d)); say(`removed ${d}/`); } catch { /* not empty (kept config/state, others' files) or gone */ }
  }
  if (kept.length) say(`kept ${kept.join(', ')}; \`remote-usb-server uninstall --purge\` removes them too`);
  return lines;
}

/** `remote-usb-server` admin commands run as root on an installed bench act as the state's owner, so
 *  the files they write (pairing codes, allowlist) stay readable by the service. */
export function dropToStateOwner(stateDir: string): void {
  if (process.geteuid?.() !== 0) return;
  const st = fs.statSync(stateDir, { throwIfNoEntry: false });
  if (!st || st.uid === 0) return;
  const name = [...readPasswd('').users].find(([, u]) => u.uid === st.uid)?.[0];
  // initgroups exists on POSIX but is missing from @types/node 20
  if (name) (process as unknown as { initgroups(user: string, gid: number): void }).initgroups(name, st.gid);
  process.setgid!(st.gid);
  process.setuid!(st.uid);
}

/** Reads an install manifest if there is one (doctor). */
export function readManifest(s: InstallSettings): Manifest | undefined {
  const t = readIfExists(rooted({ root: s.root } as System, manifestFile(s)));
  return t === undefined ? undefined : parseManifest(t, manifestFile(s));
}
