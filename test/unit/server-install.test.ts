/** The pure parts of `remote-usb-server install` / `doctor`: flags, generated unit/udev/config text, manifest, access rules. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { parseConfig } from '../../server/config.js';
import { canAccess, formatReport } from '../../server/doctor.js';
import {
  configText, DEFAULT_SETTINGS, Manifest, manifestText, MARKER, parseManifest, udevRulesText, unitText, validateSettings,
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
    'Type=notify', 'NotifyAccess=all', 'User=benchd', 'Group=benchd', 'SupplementaryGroups=plugdev dialout',
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

test('the udev rule: USB devices to plugdev, serial ttys to dialout, group rw only', () => {
  const r = udevRulesText();
  assert.match(r, /^SUBSYSTEM=="usb", ENV\{DEVTYPE\}=="usb_device", MODE="0660", GROUP="plugdev"$/m);
  assert.match(r, /^SUBSYSTEM=="tty", KERNEL=="ttyACM\[0-9\]\*\|ttyUSB\[0-9\]\*", MODE="0660", GROUP="dialout"$/m);
  assert.doesNotMatch(r, /MODE="0666"|MODE="06[67]6"/);
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
