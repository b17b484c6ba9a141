/** The pure parts of `remote-usb-server install` / `doctor`: flags, generated unit/udev/config text, manifest, access rules. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { isShared, parseConfig, SharingRules } from '../../server/config.js';
import { canAccess, formatReport } from '../../server/doctor.js';
import {
  configText, DEFAULT_SETTINGS, Manifest, manifestText, MARKER, parseManifest, SERVICE_GROUPS, udevGlob, udevRulesText, unitText, validateSettings,
} from '../../server/install.js';

const root = join(__dirname, '../../..');

test('defaults: /usr/local, /etc/remote-usb, /var/lib/remote-usb, user remote-usb', () => {
  assert.deepEqual(validateSettings({}), { root: '', prefix: '/usr/local', configDir: '/etc/remote-usb', stateDir: '/var/lib/remote-usb', user: 'remote-usb' });
  assert.deepEqual(validateSettings({ prefix: '/opt/rusb/', stateDir: '/srv//rusb', user: 'bench_1' }),
    { root: '', prefix: '/opt/rusb', configDir: '/etc/remote-usb', stateDir: '/srv/rusb', user: 'bench_1' });
});

test('bad flags are usage errors (exit 2) naming the flag', () => {
  const bad: [Parameters<typeof validateSettings>[0], RegExp][] = [
    [{ user: 'root' }, /--user root: the daemon must not run as root/],
    [{ user: 'Bad Name' }, /--user 'Bad Name' is not a valid system user name/],
    [{ user: 'x'.repeat(40) }, /is not a valid system user name/],
    [{ prefix: 'usr/local' }, /--prefix must be an absolute path, got 'usr\/local'/],
    [{ configDir: '/etc/../tmp' }, /--config-dir must not contain '\.' or '\.\.'/],
    [{ stateDir: '/var/lib/my state' }, /--state-dir must not contain spaces/],
    [{ stateDir: '/tmp/rusb' }, /--state-dir \/tmp\/rusb: not under \/tmp/],
    [{ stateDir: '/home/pi/rusb' }, /not under .*\/home/],
    [{ prefix: '/' }, /--prefix must not be \//],
    [{ stateDir: '/etc/remote-usb/state' }, /must not contain each other/],
    [{ stateDir: '/usr/local/lib/remote-usb-server/state' }, /must not be inside the program directory/],
  ];
  for (const [flags, re] of bad) {
    assert.throws(() => validateSettings(flags), (e: Error & { exitCode?: number }) => re.test(e.message) && e.exitCode === 2 && e.name === 'UsageError', JSON.stringify(flags));
  }
});

test('the unit: unprivileged, hardened, Type=notify, writes only to the state dir', () => {
  const u = unitText({ ...DEFAULT_SETTINGS, stateDir: '/srv/rusb', user: 'benchd', prefix: '/opt' });
  for (const line of [
    'Type=notify', 'NotifyAccess=all', 'User=benchd', 'Group=benchd', 'SupplementaryGroups=dialout',
    'ExecStart=/opt/bin/remote-usb-server run --config /etc/remote-usb/server.toml', 'Restart=on-failure',
    'ReadWritePaths=/srv/rusb', 'ProtectSystem=strict', 'ProtectHome=yes', 'PrivateTmp=yes', 'NoNewPrivileges=yes',
    'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK', 'CapabilityBoundingSet=', 'DevicePolicy=closed',
    'DeviceAllow=char-usb_device rw', 'DeviceAllow=char-ttyACM rw', 'DeviceAllow=char-ttyUSB rw', 'WantedBy=multi-user.target',
  ]) assert.ok(u.split('\n').includes(line), `missing: ${line}`);
  assert.doesNotMatch(u, /^User=root|^AmbientCapabilities=\S|^PrivateDevices=yes|^StateDirectory=/m);
  assert.match(u.split('\n')[0], new RegExp(MARKER));
});

test('server/remote-usb-server.service is the unit install writes with the defaults', () => {
  assert.equal(readFileSync(join(root, 'server/remote-usb-server.service'), 'utf8'), unitText(DEFAULT_SETTINGS));
});

// ---- the udev rule (issue #12, item 2) ----
// udev cannot run here (no udevd, no USB), so the generated rules run through a small interpreter of the
// subset they use: match keys (==, !=) on SUBSYSTEM, KERNEL, DEVPATH, ENV{DEVTYPE} and ATTR{…} with fnmatch
// globs and `|` alternatives, OWNER/MODE/GROUP assignments, GOTO/LABEL; a line it cannot parse (a trailing
// comment, a stray quote) fails the test, as udev would drop the line.

interface UdevDevice { subsystem: string; devtype?: string; kernel: string; devpath: string; attrs: Record<string, string> }

function globRe(glob: string): RegExp {
  const alt = glob.split('|').map((g) => g.replace(/\[[^\]]*\]|[*?]|[^[*?]+/g, (t) =>
    t === '*' ? '.*' : t === '?' ? '.' : t.startsWith('[') ? t : t.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
  return new RegExp(`^(?:${alt.join('|')})$`, 's');
}

function runUdev(text: string, d: UdevDevice): Record<string, string> {
  const set: Record<string, string> = {};
  let skipTo: string | undefined;
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const tokens: [string, string, string][] = [];
    const re = /([A-Z_]+(?:\{[a-zA-Z_]+\})?)(==|!=|=)"([^"]*)"(?:, |$)/y;
    for (let m = re.exec(line); m; m = re.exec(line)) { tokens.push([m[1], m[2], m[3]]); if (re.lastIndex === line.length) break; }
    assert.equal(re.lastIndex, line.length, `line ${i + 1} does not parse: ${line}`);
    if (tokens.length === 1 && tokens[0][0] === 'LABEL') { if (skipTo === tokens[0][2]) skipTo = undefined; continue; }
    if (skipTo !== undefined) continue;
    const value = (key: string): string | undefined => {
      if (key === 'SUBSYSTEM') return d.subsystem;
      if (key === 'KERNEL') return d.kernel;
      if (key === 'DEVPATH') return d.devpath;
      if (key === 'ENV{DEVTYPE}') return d.devtype;
      const a = /^ATTR\{(.+)\}$/.exec(key);
      if (a) return d.attrs[a[1]];
      throw new Error(`line ${i + 1}: key ${key} not known to this interpreter`);
    };
    const matches = tokens.filter(([, op]) => op !== '=').every(([k, op, v]) => {
      const x = value(k);
      const hit = x !== undefined && globRe(v).test(x);
      return op === '==' ? hit : !hit;
    });
    if (!matches) continue;
    for (const [k, op, v] of tokens) {
      if (op !== '=') continue;
      if (k === 'GOTO') skipTo = v;
      else if (['OWNER', 'MODE', 'GROUP'].includes(k)) set[k] = v;
      else throw new Error(`line ${i + 1}: assignment ${k} not known to this interpreter`);
    }
  }
  assert.equal(skipTo, undefined, `GOTO ${skipTo} without its LABEL`);
  return set;
}

interface Dev { id: string; vendorId: number; productId: number; serial?: string }
const hex = (n: number): string => n.toString(16).padStart(4, '0');
function usbDevice(d: Dev, bus = 'platform/fe980000.usb/usb1'): UdevDevice {
  return { subsystem: 'usb', devtype: 'usb_device', kernel: d.id, devpath: `/devices/${bus}/${d.id}`,
    attrs: { idVendor: hex(d.vendorId), idProduct: hex(d.productId), ...(d.serial === undefined ? {} : { serial: d.serial }) } };
}

test('the udev rule gives the service user exactly the devices [sharing] shares, and nobody else anything', () => {
  // on today's main this failed: one rule for all devices, MODE 0660 GROUP plugdev, and the user in plugdev
  assert.deepEqual(SERVICE_GROUPS, ['dialout']);
  assert.doesNotMatch(unitText(DEFAULT_SETTINGS), /plugdev/);
  const everything: SharingRules = { allow: [], deny: [] };
  const r = udevRulesText(everything, 'benchd');
  assert.doesNotMatch(r, /plugdev/);
  assert.match(r.split('\n')[0], new RegExp(MARKER));
  for (const l of r.split('\n').filter((x) => /MODE=/.test(x) && !x.startsWith('#') && !/SUBSYSTEM=="tty"/.test(x))) assert.match(l, /MODE="0644"/, l);
  const pico: Dev = { id: '1-1.2', vendorId: 0x2e8a, productId: 0x000a, serial: 'E6614C311B' };
  assert.deepEqual(runUdev(r, usbDevice(pico)), { OWNER: 'benchd', MODE: '0644' });
  // root hubs and devices imported over USB/IP are never the daemon's
  assert.deepEqual(runUdev(r, { ...usbDevice({ id: 'usb1', vendorId: 0x1d6b, productId: 2 }), kernel: 'usb1' }), {});
  assert.deepEqual(runUdev(r, usbDevice({ id: '3-1', vendorId: 0x2e8a, productId: 0xa }, 'platform/vhci_hcd.0/usb3')), {});
  // interfaces, other subsystems: untouched
  assert.deepEqual(runUdev(r, { ...usbDevice(pico), devtype: 'usb_interface', kernel: '1-1.2:1.0' }), {});
  assert.deepEqual(runUdev(r, { subsystem: 'block', kernel: 'sda', devpath: '/devices/x/sda', attrs: {} }), {});
  // ttys as before: dialout 0660 (Debian's default)
  assert.deepEqual(runUdev(r, { subsystem: 'tty', kernel: 'ttyACM0', devpath: '/devices/x/tty/ttyACM0', attrs: {} }), { MODE: '0660', GROUP: 'dialout' });

  // a share list: the boot SSD (not shared) stays root's, whatever allow/deny say about others
  const ssd: Dev = { id: '2-1', vendorId: 0x152d, productId: 0x0578, serial: 'DD56419883891' };
  const some: SharingRules = { allow: ['2e8a:*', 'serial:ABC123', 'port:1-1.4', 'port:sim-1'], deny: ['2e8a:0003'] };
  const text = udevRulesText(some, 'benchd');
  assert.deepEqual(runUdev(text, usbDevice(ssd)), { OWNER: 'root' });
  assert.deepEqual(runUdev(text, usbDevice(pico)), { OWNER: 'benchd', MODE: '0644' });
  assert.deepEqual(runUdev(text, usbDevice({ ...pico, productId: 3 })), { OWNER: 'root' }, 'deny wins');
  assert.deepEqual(runUdev(text, usbDevice({ ...ssd, serial: 'ABC123' })), { OWNER: 'benchd', MODE: '0644' });
  assert.deepEqual(runUdev(text, usbDevice({ ...ssd, id: '1-1.4' })), { OWNER: 'benchd', MODE: '0644' });
  assert.deepEqual(runUdev(text, usbDevice({ ...ssd, serial: undefined })), { OWNER: 'root' });
  assert.doesNotMatch(text, /sim-1/, 'simulated ports name no real device');
});

test('the udev rule agrees with isShared() on every device, for random [sharing] rules', () => {
  const vids = [0x2e8a, 0x0483, 0x1d6b, 0x152d];
  const pids = [0x0003, 0x000a, 0x3748, 0x0578];
  const serials = [undefined, 'E6614C311B', 'ABC123', 'x.y-z_1'];
  const ids = ['1-1', '1-1.2', '1-1.4', '2-1'];
  const pool = [...vids.map((v) => `${hex(v)}:*`), ...pids.map((p) => `*:${hex(p).toUpperCase()}`), '2e8a:000a', '0483:3748', '*:*',
    ...serials.filter(Boolean).map((s) => `serial:${s}`), ...ids.map((i) => `port:${i}`)];
  let seed = 12345;
  const rnd = (n: number): number => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n; };
  const pick = (k: number): string[] => Array.from({ length: k }, () => pool[rnd(pool.length)]);
  for (let round = 0; round < 300; round++) {
    const rules: SharingRules = { allow: pick(rnd(3)), deny: pick(rnd(3)) };
    const text = udevRulesText(rules, 'benchd');
    for (let k = 0; k < 20; k++) {
      const d: Dev = { id: ids[rnd(ids.length)], vendorId: vids[rnd(vids.length)], productId: pids[rnd(pids.length)], serial: serials[rnd(serials.length)] };
      const got = runUdev(text, usbDevice(d));
      const want = isShared(rules, d) ? { OWNER: 'benchd', MODE: '0644' } : { OWNER: 'root' };
      assert.deepEqual(got, want, `${JSON.stringify(rules)} ${JSON.stringify(d)}`);
    }
  }
});

test('udev rule values: a serial with glob, quote or control characters can only widen the match, never break the file', () => {
  assert.equal(udevGlob('E66*14'), 'E66*14');
  assert.equal(udevGlob('a"b'), 'a*b');
  assert.equal(udevGlob('x|y[z]?'), 'x*y*z*');
  assert.equal(udevGlob('line\nSUBSYSTEM=="usb", MODE="0666"'), 'line*SUBSYSTEM==*usb*, MODE=*0666*');
  const weird = 'Ünï"co|de\\\n*';
  const text = udevRulesText({ allow: [`serial:${weird}`], deny: [] }, 'benchd');
  assert.doesNotMatch(text, /0666/);
  assert.deepEqual(runUdev(text, usbDevice({ id: '1-1', vendorId: 1, productId: 2, serial: weird })), { OWNER: 'benchd', MODE: '0644' });
  assert.deepEqual(runUdev(text, usbDevice({ id: '1-1', vendorId: 1, productId: 2, serial: 'other' })), { OWNER: 'root' });
});

test('the config: the example, commented, with state_dir set for the service user', () => {
  const example = readFileSync(join(root, 'server/server.example.toml'), 'utf8');
  const t = configText(example, { stateDir: '/srv/rusb' });
  const c = parseConfig(t, '/etc/remote-usb/server.toml');
  assert.equal(c.stateDir, '/srv/rusb');
  assert.equal(c.allowlistFile, '/srv/rusb/clients.toml');
  assert.deepEqual(c.relay, { mode: 'default' });
  assert.match(t, /^# allowlist = "\/srv\/rusb\/clients.toml"$/m);
  assert.match(t, /^# listen = "0\.0\.0\.0:47100"$/m); // the other defaults stay commented
  assert.equal(t.split('\n').filter((l) => /^[a-z_]+ = /.test(l)).length, 1);
});

const manifest: Manifest = {
  writtenBy: MARKER, version: '0.1.0', user: { name: 'remote-usb', created: true }, programDir: '/usr/local/lib/remote-usb-server',
  files: ['/etc/systemd/system/remote-usb-server.service', '/usr/local/bin/remote-usb-server'], dirs: ['/etc/remote-usb'],
  stateDir: '/var/lib/remote-usb', configFile: '/etc/remote-usb/server.toml', configCreated: true,
};

test('the manifest round-trips', () => {
  assert.deepEqual(parseManifest(manifestText(manifest), 'installed.json'), manifest);
});

test('a manifest uninstall cannot trust is refused, never guessed from', () => {
  const cases: [string, RegExp][] = [
    ['{', /installed.json: not JSON/],
    [JSON.stringify({ ...manifest, writtenBy: 'someone' }), /not a remote-usb-server install manifest/],
    [JSON.stringify({ ...manifest, files: ['/etc/../etc/passwd'] }), /not a remote-usb-server install manifest/],
    [JSON.stringify({ ...manifest, files: ['relative'] }), /not a remote-usb-server install manifest/],
    [JSON.stringify({ ...manifest, programDir: '/usr' }), /programDir '\/usr' is not a remote-usb-server directory/],
    [JSON.stringify({ ...manifest, user: { name: 'x' } }), /not a remote-usb-server install manifest/],
  ];
  for (const [text, re] of cases) assert.throws(() => parseManifest(text, 'installed.json'), re, text);
});

test('canAccess: owner, group and other bits, read and write both needed', () => {
  const user = { uid: 999, gids: [999, 46] }; // plugdev is 46 on Debian
  assert.equal(canAccess({ uid: 0, gid: 46, mode: 0o20660 }, user), true);
  assert.equal(canAccess({ uid: 0, gid: 0, mode: 0o20664 }, user), false); // Debian's default: others read-only
  assert.equal(canAccess({ uid: 999, gid: 0, mode: 0o20600 }, user), true);
  assert.equal(canAccess({ uid: 0, gid: 20, mode: 0o20660 }, user), false); // dialout, not a member
  assert.equal(canAccess({ uid: 0, gid: 0, mode: 0o20666 }, user), true);
  assert.equal(canAccess({ uid: 0, gid: 46, mode: 0o20640 }, user), false);
});

test('the doctor report: one line per check, fixes indented, a verdict', () => {
  const r = formatReport([
    { name: 'config', state: 'ok', detail: '/etc/remote-usb/server.toml' },
    { name: 'relay', state: 'problem', detail: 'OFFLINE', fix: 'check the network' },
  ]);
  assert.equal(r, 'ok       config  /etc/remote-usb/server.toml\nPROBLEM  relay   OFFLINE\n                 fix: check the network\n\n1 problem found\n');
  assert.match(formatReport([{ name: 'x', state: 'skip', detail: 'y' }]), /\nhealthy\n$/);
});
