/**
 * `remote-usb-server status` and `doctor`: what is wrong with this bench and how to fix it.
 * status: config, install, service, identity. doctor: those, plus the service user, USB access for that user
 * (the shared devices read/write; no USB device writable by anyone but root and it), tty access, whether the
 * udev rule matches [sharing], and whether a relay answers. Exit 0 healthy, 1 problems, 2 usage.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ConfigError, isShared, loadConfig, ServerConfig } from './config.js';
import { endpointIdOf } from './net/iroh.js';
import { InstallSettings, readManifest, System, UDEV_RULES_PATH, UNIT_NAME, UserInfo, configFile, MARKER, OLD_USB_GROUP, SERVICE_GROUPS, udevRulesText } from './install.js';

export type CheckState = 'ok' | 'problem' | 'warn' | 'skip';
export interface Check { name: string; state: CheckState; detail: string; fix?: string }

/** n0's relays (the ones @number0/iroh 1.1.0 uses in relay mode "default"). */
export const DEFAULT_RELAYS = ['https://use1-1.relay.n0.iroh.link', 'https://euc1-1.relay.n0.iroh.link', 'https://aps1-1.relay.n0.iroh.link', 'https://usw1-1.relay.n0.iroh.link'];

/** May this user read and write a node with this owner and mode? Mode bits and groups only (no ACLs). */
export function canAccess(st: { uid: number; gid: number; mode: number }, user: { uid: number; gids: number[] }): boolean {
  if (user.uid === 0) return true;
  const bits = st.uid === user.uid ? (st.mode >> 6) & 7 : user.gids.includes(st.gid) ? (st.mode >> 3) & 7 : st.mode & 7;
  return (bits & 6) === 6;
}

export function formatReport(checks: Check[]): string {
  const mark: Record<CheckState, string> = { ok: 'ok     ', problem: 'PROBLEM', warn: 'warn   ', skip: 'skipped' };
  const w = Math.max(...checks.map((c) => c.name.length));
  const out = checks.map((c) => `${mark[c.state]}  ${c.name.padEnd(w)}  ${c.detail}${c.fix ? `\n${' '.repeat(11 + w)}fix: ${c.fix}` : ''}`);
  const problems = checks.filter((c) => c.state === 'problem').length;
  out.push('', problems ? `${problems} problem${problems > 1 ? 's' : ''} found` : 'healthy');
  return out.join('\n') + '\n';
}

export interface DoctorOptions {
  settings: InstallSettings;
  /** --config, else <config dir>/server.toml when it exists, else the user's default */
  configPath?: string;
  full: boolean;
  sys: System;
  /** resolves to undefined when reachable, else the reason (tests substitute it) */
  probe?: (url: string, timeoutMs: number) => Promise<string | undefined>;
  timeoutMs?: number;
}

async function httpProbe(url: string, timeoutMs: number): Promise<string | undefined> {
  try {
    await fetch(url, { signal: AbortSignal.timeout(timeoutMs), redirect: 'manual' });
    return undefined; // any HTTP answer: the relay is reachable
  } catch (e) {
    const err = e as Error & { cause?: { code?: string; message?: string } };
    return err.name === 'TimeoutError' ? `no answer in ${timeoutMs / 1000} s` : (err.cause?.code ?? err.cause?.message ?? err.message);
  }
}

export interface UsbNode { id: string; node: string; vendorId: number; productId: number; serial?: string }

/** The USB devices the daemon could list (sysfs bus ids like 1-1.2; not root hubs, not vhci imports) and
 *  their device nodes. */
export function usbNodes(at: (p: string) => string): UsbNode[] {
  const sys = '/sys/bus/usb/devices';
  let names: string[];
  try { names = fs.readdirSync(at(sys)).filter((n) => /^\d+-[\d.]+$/.test(n)).sort(); } catch { return []; }
  const out: UsbNode[] = [];
  for (const id of names) {
    const read = (f: string): string | undefined => { try { return fs.readFileSync(at(path.posix.join(sys, id, f)), 'utf8').trim(); } catch { return undefined; } };
    try { if (fs.realpathSync(at(path.posix.join(sys, id))).includes('/vhci_hcd')) continue; } catch { continue; }
    const bus = read('busnum'), dev = read('devnum'), vid = read('idVendor'), pid = read('idProduct');
    if (!bus || !dev || !vid || !pid) continue;
    out.push({ id, node: `/dev/bus/usb/${bus.padStart(3, '0')}/${dev.padStart(3, '0')}`, vendorId: parseInt(vid, 16), productId: parseInt(pid, 16), serial: read('serial') });
  }
  return out;
}

/** 'usb access': the shared devices read/write for the service user. 'usb others': no USB device node
 *  writable by anyone but root and the service user (mode bits and groups; ACLs are not read). */
function usbChecks(sys: System, at: (p: string) => string, add: (c: Check) => void, config: ServerConfig | undefined, user: UserInfo | undefined, userName: string): void {
  const devices = usbNodes(at);
  const stat = (f: string): fs.Stats | undefined => { try { return fs.statSync(at(f)); } catch { return undefined; } };
  const how = (f: string, st: fs.Stats): string => `${f} is ${sys.userName(st.uid) ?? st.uid}:${sys.groupName(st.gid) ?? st.gid} ${(st.mode & 0o777).toString(8)}`;
  const fix = `sudo remote-usb-server udev-rules (writes ${UDEV_RULES_PATH} from [sharing] and applies it)`;
  if (!user) add({ name: 'usb access', state: 'skip', detail: `no user ${userName} to check for` });
  else if (!config) add({ name: 'usb access', state: 'skip', detail: 'no valid config: which devices are shared is unknown' });
  else if (devices.length === 0) add({ name: 'usb access', state: 'warn', detail: 'no USB devices in /sys/bus/usb/devices here (no USB host controller, or nothing plugged in)' });
  else {
    const shared = devices.filter((d) => isShared(config.sharing, d) && stat(d.node));
    const denied = shared.filter((d) => !canAccess(stat(d.node)!, user));
    add(shared.length === 0
      ? { name: 'usb access', state: 'warn', detail: `none of the ${devices.length} USB devices here is shared ([sharing] in the config)` }
      : denied.length
        ? { name: 'usb access', state: 'problem', detail: `${userName} cannot open ${denied.length} of ${shared.length} shared devices read/write (${how(denied[0].node, stat(denied[0].node)!)}${denied.length > 1 ? ', …' : ''})`, fix }
        : { name: 'usb access', state: 'ok', detail: `${userName} can open all ${shared.length} shared devices (${shared.slice(0, 3).map((d) => d.node).join(', ')}${shared.length > 3 ? ', …' : ''})` });
  }
  const all = (() => { try { return fs.readdirSync(at('/dev/bus/usb')).filter((b) => /^\d+$/.test(b)); } catch { return []; } })()
    .flatMap((b) => { try { return fs.readdirSync(at(`/dev/bus/usb/${b}`)).filter((d) => /^\d+$/.test(d)).map((d) => `/dev/bus/usb/${b}/${d}`); } catch { return []; } });
  const mine = user?.uid;
  const open = all.filter((f) => {
    const st = stat(f);
    if (!st) return false;
    return (st.mode & 0o002) !== 0 || ((st.mode & 0o020) !== 0 && st.gid !== 0) || ((st.mode & 0o200) !== 0 && st.uid !== 0 && st.uid !== mine);
  });
  if (all.length) {
    add(open.length
      ? { name: 'usb others', state: 'warn', detail: `${open.length} of ${all.length} USB device nodes are writable by users other than root and ${userName} (${how(open[0], stat(open[0])!)}${open.length > 1 ? ', …' : ''}): they can take those devices over`,
        fix: `find the rule that does it (grep -l 'GROUP=\\|MODE=' /etc/udev/rules.d/*.rules); an older remote-usb-server install's rule: ${fix}` }
      : { name: 'usb others', state: 'ok', detail: `no USB device node is writable by anyone but root and ${userName}` });
  }
}

export async function diagnose(o: DoctorOptions): Promise<Check[]> {
  const checks: Check[] = [];
  const add = (c: Check): void => { checks.push(c); };
  const s = o.settings;
  const at = (p: string): string => (o.sys.root ? path.join(o.sys.root, p) : p);

  // config
  const installed = configFile(s);
  const confPath = o.configPath ?? (fs.existsSync(at(installed)) ? installed : undefined);
  let config: ServerConfig | undefined;
  try {
    config = loadConfig(confPath === undefined ? undefined : at(confPath));
    add({ name: 'config', state: 'ok', detail: `${confPath ?? 'built-in defaults'} (name '${config.name}', listen ${config.listen}, relay ${config.relay.mode})` });
  } catch (e) {
    add({ name: 'config', state: 'problem', detail: (e as Error).message, fix: e instanceof ConfigError ? `edit ${confPath}, then: sudo systemctl restart remote-usb-server` : undefined });
  }

  // install
  let manifest;
  try {
    manifest = readManifest(s);
    add(manifest
      ? { name: 'install', state: 'ok', detail: `remote-usb-server ${manifest.version} in ${manifest.programDir}, user ${manifest.user.name}` }
      : { name: 'install', state: 'warn', detail: `not installed by remote-usb-server install (no ${path.posix.join(s.configDir, 'installed.json')})`, fix: 'sudo ./bin/remote-usb-server install (from the unpacked bundle)' });
  } catch (e) {
    add({ name: 'install', state: 'problem', detail: (e as Error).message });
  }
  const userName = manifest?.user.name ?? s.user;

  // service
  if (o.sys.systemdRunning()) {
    const active = o.sys.run('systemctl', ['is-active', UNIT_NAME]).out.split('\n')[0];
    const enabled = o.sys.run('systemctl', ['is-enabled', UNIT_NAME]).out.split('\n')[0];
    add(active === 'active'
      ? { name: 'service', state: enabled === 'enabled' ? 'ok' : 'warn', detail: `${UNIT_NAME} active, ${enabled}`, fix: enabled === 'enabled' ? undefined : `sudo systemctl enable ${UNIT_NAME}` }
      : { name: 'service', state: 'problem', detail: `${UNIT_NAME} ${active || 'unknown'} (${enabled || 'not installed'})`,
        fix: `journalctl -u remote-usb-server -n 50 (why); sudo systemctl restart remote-usb-server` });
  } else {
    add({ name: 'service', state: 'skip', detail: 'systemd is not running here (container, chroot): service state not checked' });
  }

  // user
  const user: UserInfo | undefined = o.sys.lookupUser(userName);
  if (o.full) {
    if (!user) add({ name: 'user', state: manifest ? 'problem' : 'warn', detail: `no user ${userName}`, fix: 'sudo remote-usb-server install' });
    else {
      const lacking = SERVICE_GROUPS.filter((g) => !user!.groups.includes(g));
      add(lacking.length
        ? { name: 'user', state: 'problem', detail: `${userName} is not in ${lacking.join(', ')}`, fix: `sudo usermod -aG ${lacking.join(',')} ${userName} && sudo systemctl restart remote-usb-server` }
        : user.groups.includes(OLD_USB_GROUP) && userName !== 'root'
          ? { name: 'user', state: 'warn', detail: `${userName} is in ${OLD_USB_GROUP}: not needed (the udev rule gives it the shared devices), and it may let it write other USB devices`,
            fix: `sudo gpasswd --delete ${userName} ${OLD_USB_GROUP} && sudo systemctl restart remote-usb-server` }
          : { name: 'user', state: 'ok', detail: `${userName} (uid ${user.uid}; groups ${user.groups.join(', ')})` });
    }
  }

  // identity
  const stateDir = config?.stateDir ?? s.stateDir;
  const keyPath = path.posix.join(stateDir, 'secret.key');
  try {
    const st = fs.statSync(at(keyPath));
    const text = fs.readFileSync(at(keyPath), 'utf8').trim();
    const problems: string[] = [];
    if ((st.mode & 0o077) !== 0) problems.push(`mode ${(st.mode & 0o777).toString(8)} (must be 600)`);
    if (user && manifest && st.uid !== user.uid) problems.push(`owned by uid ${st.uid}, not ${userName}`);
    if (!/^[0-9a-f]{64}$/i.test(text)) problems.push('not a 64-hex-digit key');
    add(problems.length
      ? { name: 'identity', state: 'problem', detail: `${keyPath}: ${problems.join('; ')}`, fix: `sudo chown ${userName}: ${keyPath} && sudo chmod 600 ${keyPath} (a damaged key: restore it from a backup)` }
      : { name: 'identity', state: 'ok', detail: `${keyPath} (0600) — endpoint id ${endpointIdOf(new Uint8Array(Buffer.from(text, 'hex')))}` });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    add(code === 'EACCES'
      ? { name: 'identity', state: 'skip', detail: `${keyPath}: not readable as this user`, fix: 'run with sudo to check it' }
      : code === 'ENOENT'
        ? { name: 'identity', state: manifest ? 'problem' : 'warn', detail: `no ${keyPath} yet`, fix: manifest ? 'sudo remote-usb-server install (creates it once)' : 'it is created when the daemon first runs' }
        : { name: 'identity', state: 'problem', detail: `${keyPath}: ${code ?? (e as Error).message}` });
  }
  if (!o.full) return checks;

  // devices
  const nodes = (dir: string, re: RegExp): string[] => {
    try { return fs.readdirSync(at(dir)).filter((f) => re.test(f)).map((f) => path.posix.join(dir, f)); } catch { return []; }
  };
  const access = (name: string, files: string[], none: string, fix: string): void => {
    if (!user) { add({ name, state: 'skip', detail: `no user ${userName} to check for` }); return; }
    if (files.length === 0) { add({ name, state: 'warn', detail: none }); return; }
    const denied = files.filter((f) => { try { return !canAccess(fs.statSync(at(f)), user!); } catch { return false; } });
    const how = (f: string): string => {
      const st = fs.statSync(at(f));
      const group = o.sys.groupName(st.gid) ?? String(st.gid);
      return `${f} is ${o.sys.userName(st.uid) ?? st.uid}:${group} ${(st.mode & 0o777).toString(8)}`;
    };
    add(denied.length
      ? { name, state: 'problem', detail: `${userName} cannot open ${denied.length} of ${files.length} read/write (${how(denied[0])}${denied.length > 1 ? ', …' : ''})`, fix }
      : { name, state: 'ok', detail: `${userName} can open all ${files.length} (${files.slice(0, 3).join(', ')}${files.length > 3 ? ', …' : ''})` });
  };
  usbChecks(o.sys, at, add, config, user, userName);
  const ttys = [...nodes('/dev', /^tty(ACM|USB)\d+$/), ...(config?.serialPorts ?? [])];
  access('tty access', ttys, 'no /dev/ttyACM*, /dev/ttyUSB* or [serial] ports now (nothing to check)',
    `the udev rule ${UDEV_RULES_PATH} makes ttyACM*/ttyUSB* dialout 0660 (sudo remote-usb-server install, then sudo udevadm trigger --subsystem-match=tty); ` +
    `${userName} must be in dialout (sudo usermod -aG dialout ${userName}); a [serial] port's group must be one of ${userName}'s`);
  const rule = (() => { try { return fs.readFileSync(at(UDEV_RULES_PATH), 'utf8'); } catch { return undefined; } })();
  const wanted = config && rule?.includes(MARKER) ? udevRulesText(config.sharing, userName) : undefined;
  add(rule === undefined
    ? { name: 'udev rule', state: manifest ? 'problem' : 'warn', detail: `no ${UDEV_RULES_PATH}`, fix: 'sudo remote-usb-server install' }
    : wanted !== undefined && rule !== wanted
      ? { name: 'udev rule', state: 'problem', detail: `${UDEV_RULES_PATH} does not match [sharing] in ${confPath ?? 'the config'} for ${userName}` +
          `${/GROUP="plugdev"/.test(rule) ? ' (an older install\'s rule, which gives every USB device to group plugdev)' : ''}`,
        fix: 'sudo remote-usb-server udev-rules (rewrites it from [sharing] and applies it)' }
      : { name: 'udev rule', state: 'ok', detail: `${UDEV_RULES_PATH}${rule.includes(MARKER) ? ' (matches [sharing])' : ' (not ours)'}` });

  // relay
  if (!config || config.relay.mode === 'disabled') {
    add({ name: 'relay', state: 'skip', detail: config ? 'relay mode "disabled": direct (LAN) connections only, nothing to reach' : 'no valid config' });
  } else {
    const urls = config.relay.mode === 'custom' ? config.relay.urls : DEFAULT_RELAYS;
    const timeout = o.timeoutMs ?? 5000;
    const results = await Promise.all(urls.map(async (u) => ({ u, why: await (o.probe ?? httpProbe)(u, timeout) })));
    const up = results.filter((r) => r.why === undefined);
    add(up.length
      ? { name: 'relay', state: 'ok', detail: `reachable: ${up.map((r) => r.u).join(', ')}` }
      : { name: 'relay', state: 'problem', detail: `OFFLINE: no relay answered (${results.map((r) => `${r.u}: ${r.why}`).join('; ')})`,
        fix: 'clients outside this network cannot reach the bench; LAN clients with a ticket still can. Check the network/DNS/proxy, or set [relay] mode = "disabled" for LAN-only' });
  }
  add({ name: 'not checked', state: 'skip', detail: 'clock skew (no time source offline; a wrong clock makes TLS to relays fail, which shows as OFFLINE above); ' +
    'reachability from outside (NAT, firewall: try `remote-usb list --bench <ticket>` from a client); ACLs on device nodes (mode bits and groups only)' });
  return checks;
}
