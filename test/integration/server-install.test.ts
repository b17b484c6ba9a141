/**
 * `remote-usb-server install / doctor / uninstall` for real, from a real bundle (package-server --stage-only,
 * with this machine's node), into a temporary root (--root): a real `useradd --root`, real files, modes and
 * owners — and nothing on this system changes. Needs root (chown, useradd); skipped otherwise.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { after, before, test } from 'node:test';
import { DEFAULT_SETTINGS, MARKER, udevRulesText, unitText } from '../../server/install.js';
import { freshRoot as makeRoot } from '../helpers/install-root.js';

const root = join(__dirname, '../../..');
const isRoot = process.geteuid?.() === 0;
const haveUseradd = spawnSync('useradd', ['--help']).status === 0;
const skip = !isRoot ? 'needs root (chown, useradd --root)' : !haveUseradd ? 'needs useradd (passwd)' : false;

let work: string;
let bin: string;
let r: string;
const run = (...args: string[]): { code: number | null; out: string } => {
  const p = spawnSync(bin, args, { encoding: 'utf8', timeout: 60_000 });
  return { code: p.status, out: p.stdout + p.stderr };
};
const at = (p: string): string => join(r, p);
const mode = (p: string): string => (fs.lstatSync(at(p)).mode & 0o7777).toString(8);
const owner = (p: string): number => fs.lstatSync(at(p)).uid;
/** every path under the root, except the program's own files and passwd's backup/lock files */
function tree(): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      const rel = '/' + relative(r, p);
      if (/^\/etc\/(passwd|group|shadow|gshadow)-?$|^\/etc\/\.pwd\.lock$|^\/etc\/login\.defs$/.test(rel)) continue;
      out.push(rel + (e.isDirectory() ? '/' : ''));
      if (e.isDirectory() && rel !== '/usr/local/lib/remote-usb-server') walk(p);
    }
  };
  walk(r);
  return out.sort();
}
function userOf(name: string): { uid: number; gid: number; shell: string } | undefined {
  const l = fs.readFileSync(at('/etc/passwd'), 'utf8').split('\n').find((x) => x.startsWith(name + ':'));
  if (!l) return undefined;
  const p = l.split(':');
  return { uid: Number(p[2]), gid: Number(p[3]), shell: p[6] };
}
const freshRoot = (): string => makeRoot(work);

before(() => {
  if (skip) return;
  work = fs.mkdtempSync(join(tmpdir(), 'remote-usb-install-'));
  fs.chmodSync(work, 0o755); // the not-root case runs the bundle as nobody
  const bundle = join(work, 'bundle', 'remote-usb-server');
  const s = spawnSync(process.execPath, [join(root, 'server/packaging/package-server.mjs'), '--target', 'linux-x64', '--stage-only', bundle, '--node', process.execPath],
    { cwd: root, encoding: 'utf8', timeout: 120_000 });
  assert.equal(s.status, 0, s.stdout + s.stderr);
  bin = join(bundle, 'bin', 'remote-usb-server');
  r = freshRoot();
});
after(() => { if (work) fs.rmSync(work, { recursive: true, force: true }); });

const expected = [
  '/etc/', '/etc/remote-usb/', '/etc/remote-usb/installed.json', '/etc/remote-usb/server.toml',
  '/etc/systemd/', '/etc/systemd/system/', '/etc/systemd/system/remote-usb-server.service',
  '/etc/udev/', '/etc/udev/rules.d/', '/etc/udev/rules.d/70-remote-usb.rules',
  '/usr/', '/usr/local/', '/usr/local/bin/', '/usr/local/bin/remote-usb-server', '/usr/local/lib/', '/usr/local/lib/remote-usb-server/',
  '/var/', '/var/lib/', '/var/lib/remote-usb/', '/var/lib/remote-usb/pairing.toml', '/var/lib/remote-usb/secret.key',
];

test('install writes exactly its files, with their modes and owners, and prints a ticket and a pairing code', { skip }, () => {
  const i = run('install', '--root', r);
  assert.equal(i.code, 0, i.out);
  assert.match(i.out, /^created system user remote-usb \(groups dialout\)$/m);
  assert.match(i.out, /^Bench ticket: endpoint[a-z0-9]+$/m);
  assert.match(i.out, /^Pairing code: [0-9A-Z]{5}-[0-9A-Z]{5} {3}\(single use/m);
  assert.match(i.out, /systemd is not running here \(--root\): the service was not started/);
  assert.deepEqual(tree(), expected);

  const u = userOf('remote-usb')!;
  assert.ok(u && u.uid < 1000, 'a system user');
  assert.equal(u.shell, '/usr/sbin/nologin');
  const groups = fs.readFileSync(at('/etc/group'), 'utf8');
  assert.match(groups, /^dialout:[^:]*:\d+:(.*,)?remote-usb(,|$)/m);
  assert.doesNotMatch(groups, /^plugdev:[^:]*:\d+:(.*,)?remote-usb(,|$)/m, 'not in plugdev: the udev rule gives it the shared devices only');

  for (const [p, m, uid] of [
    ['/usr/local/lib/remote-usb-server', '755', 0], ['/usr/local/lib/remote-usb-server/bin/remote-usb-server', '755', 0],
    ['/usr/local/lib/remote-usb-server/lib/node', '755', 0], ['/usr/local/lib/remote-usb-server/lib/server.js', '644', 0],
    ['/etc/remote-usb', '755', 0], ['/etc/remote-usb/server.toml', '644', 0], ['/etc/remote-usb/installed.json', '644', 0],
    ['/etc/udev/rules.d/70-remote-usb.rules', '644', 0], ['/etc/systemd/system/remote-usb-server.service', '644', 0],
    ['/var/lib/remote-usb', '700', u.uid], ['/var/lib/remote-usb/secret.key', '600', u.uid], ['/var/lib/remote-usb/pairing.toml', '600', u.uid],
  ] as const) {
    assert.equal(mode(p), m, `mode of ${p}`);
    assert.equal(owner(p), uid, `owner of ${p}`);
  }
  // nothing in the program directory is writable by anyone but root
  const walk = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const st = fs.lstatSync(join(d, e.name));
      assert.ok(st.uid === 0 && (st.mode & 0o022) === 0 && !st.isSymbolicLink(), `${join(d, e.name)} uid ${st.uid} mode ${st.mode.toString(8)}`);
      if (e.isDirectory()) walk(join(d, e.name));
    }
  };
  walk(at('/usr/local/lib/remote-usb-server'));
  assert.equal(fs.readlinkSync(at('/usr/local/bin/remote-usb-server')), '/usr/local/lib/remote-usb-server/bin/remote-usb-server');
  assert.equal(fs.readFileSync(at('/etc/systemd/system/remote-usb-server.service'), 'utf8'), unitText(DEFAULT_SETTINGS));
  assert.equal(fs.readFileSync(at('/etc/udev/rules.d/70-remote-usb.rules'), 'utf8'), udevRulesText({ allow: [], deny: [] }, 'remote-usb'));
  assert.match(fs.readFileSync(at('/etc/remote-usb/server.toml'), 'utf8'), /^state_dir = "\/var\/lib\/remote-usb"$/m);
  const m = JSON.parse(fs.readFileSync(at('/etc/remote-usb/installed.json'), 'utf8'));
  assert.deepEqual(m.files, ['/etc/systemd/system/remote-usb-server.service', '/etc/udev/rules.d/70-remote-usb.rules', '/usr/local/bin/remote-usb-server']);
  assert.deepEqual(m.user, { name: 'remote-usb', created: true });
  assert.equal(m.configCreated, true);
});

test('install again: same files, the identity and an edited config are kept', { skip }, () => {
  const key = fs.readFileSync(at('/var/lib/remote-usb/secret.key'), 'utf8');
  const conf = fs.readFileSync(at('/etc/remote-usb/server.toml'), 'utf8').replace('[relay]\n', '[relay]\nmode = "disabled"\n');
  fs.writeFileSync(at('/etc/remote-usb/server.toml'), conf);
  const i = run('install', '--root', r, '--no-pair');
  assert.equal(i.code, 0, i.out);
  assert.match(i.out, /^user remote-usb exists/m);
  assert.match(i.out, /^kept \/etc\/remote-usb\/server.toml$/m);
  assert.match(i.out, /^kept the bench identity \/var\/lib\/remote-usb\/secret.key$/m);
  assert.doesNotMatch(i.out, /wrote \/etc\/(udev|systemd)/); // unchanged, not rewritten
  assert.equal(fs.readFileSync(at('/var/lib/remote-usb/secret.key'), 'utf8'), key);
  assert.equal(fs.readFileSync(at('/etc/remote-usb/server.toml'), 'utf8'), conf);
  assert.deepEqual(tree(), expected);
  assert.equal(fs.readFileSync(at('/etc/passwd'), 'utf8').split('\n').filter((l) => l.startsWith('remote-usb:')).length, 1);
});

test('doctor: healthy, then a loose key and a broken config are named with their fixes', { skip }, () => {
  let d = run('doctor', '--root', r);
  assert.equal(d.code, 0, d.out);
  assert.match(d.out, /^ok +identity +\/var\/lib\/remote-usb\/secret.key \(0600\) — endpoint id [0-9a-f]{64}$/m);
  assert.match(d.out, /^skipped +relay +relay mode "disabled"/m);
  assert.match(d.out, /^skipped +not checked +clock skew/m);
  assert.match(d.out, /\nhealthy\n$/);
  fs.chmodSync(at('/var/lib/remote-usb/secret.key'), 0o644);
  d = run('doctor', '--root', r);
  assert.equal(d.code, 1, d.out);
  assert.match(d.out, /^PROBLEM +identity +\/var\/lib\/remote-usb\/secret.key: mode 644 \(must be 600\)\n +fix: sudo chown remote-usb: /m);
  fs.chmodSync(at('/var/lib/remote-usb/secret.key'), 0o600);
  const good = fs.readFileSync(at('/etc/remote-usb/server.toml'), 'utf8');
  fs.writeFileSync(at('/etc/remote-usb/server.toml'), good.replace('mode = "disabled"', 'mode = "sometimes"'));
  d = run('status', '--root', r);
  assert.equal(d.code, 1, d.out);
  assert.match(d.out, /^PROBLEM +config +\S+\/etc\/remote-usb\/server.toml:\d+: relay.mode: 'sometimes' must be "default", "custom" or "disabled"$/m);
  fs.writeFileSync(at('/etc/remote-usb/server.toml'), good);
  assert.equal(run('doctor', '--what').code, 2);
});

test('USB access: only the shared devices go to the service user; an older install\'s plugdev rule and membership are undone', { skip }, () => {
  const t = freshRoot();
  const inT = (p: string): string => join(t, p);
  const runT = (...args: string[]): { code: number | null; out: string } => run(...args, '--root', t);
  assert.equal(runT('install', '--no-pair').code, 0);
  const conf = fs.readFileSync(inT('/etc/remote-usb/server.toml'), 'utf8').replace('[relay]\n', '[relay]\nmode = "disabled"\n');
  fs.writeFileSync(inT('/etc/remote-usb/server.toml'), conf);
  // a bench as an older install left it: the service user in plugdev, every USB device plugdev 0660
  assert.equal(spawnSync('gpasswd', ['--root', t, '--add', 'remote-usb', 'plugdev'], { encoding: 'utf8' }).status, 0);
  fs.writeFileSync(inT('/etc/udev/rules.d/70-remote-usb.rules'), `# ${MARKER} (remote-usb-server uninstall removes it).\n` +
    'SUBSYSTEM=="usb", ENV{DEVTYPE}=="usb_device", MODE="0660", GROUP="plugdev"\n');
  // two devices in the tree's sysfs and /dev: a Pico (2e8a:000a) and the boot SSD (152d:0578)
  const plugdev = Number(/^plugdev:[^:]*:(\d+):/m.exec(fs.readFileSync(inT('/etc/group'), 'utf8'))![1]);
  const device = (id: string, bus: number, dev: number, vid: string, pid: string): string => {
    const d = inT(`/sys/bus/usb/devices/${id}`);
    fs.mkdirSync(d, { recursive: true });
    for (const [f, v] of [['busnum', bus], ['devnum', dev], ['idVendor', vid], ['idProduct', pid]]) fs.writeFileSync(join(d, String(f)), `${v}\n`);
    const node = inT(`/dev/bus/usb/${String(bus).padStart(3, '0')}/${String(dev).padStart(3, '0')}`);
    fs.mkdirSync(join(node, '..'), { recursive: true });
    assert.equal(spawnSync('mknod', [node, 'c', '189', String(dev)]).status, 0);
    fs.chownSync(node, 0, plugdev);
    fs.chmodSync(node, 0o660);
    return node;
  };
  const pico = device('1-1.2', 1, 5, '2e8a', '000a');
  const ssd = device('2-1', 2, 2, '152d', '0578');
  let d = runT('doctor');
  assert.equal(d.code, 1, d.out);
  assert.match(d.out, /^warn +user +remote-usb is in plugdev: not needed/m);
  assert.match(d.out, /^PROBLEM +udev rule +\/etc\/udev\/rules.d\/70-remote-usb.rules does not match \[sharing\] .* \(an older install's rule, which gives every USB device to group plugdev\)\n +fix: sudo remote-usb-server udev-rules/m);
  assert.match(d.out, /^warn +usb others +2 of 2 USB device nodes are writable by users other than root and remote-usb \(\/dev\/bus\/usb\/001\/005 is root:plugdev 660/m);

  // install again (an upgrade): out of plugdev, the rule from [sharing]
  const i = runT('install', '--no-pair');
  assert.equal(i.code, 0, i.out);
  assert.match(i.out, /^removed remote-usb from plugdev \(the udev rule gives it the devices it shares, and no others\)$/m);
  assert.match(i.out, /^wrote \/etc\/udev\/rules.d\/70-remote-usb.rules \(the USB devices \[sharing\] shares go to remote-usb\)$/m);
  assert.doesNotMatch(fs.readFileSync(inT('/etc/group'), 'utf8'), /^plugdev:[^:]*:\d+:(.*,)?remote-usb(,|$)/m);
  assert.equal(fs.readFileSync(inT('/etc/udev/rules.d/70-remote-usb.rules'), 'utf8'), udevRulesText({ allow: [], deny: [] }, 'remote-usb'));

  // share only the Pico; what udev would do with the rule: the Pico to remote-usb 0644, the SSD back to udev's default
  fs.writeFileSync(inT('/etc/remote-usb/server.toml'), conf.replace(/^\[sharing\]$/m, '[sharing]\nallow = ["2e8a:*"]'));
  d = runT('doctor');
  assert.match(d.out, /^PROBLEM +udev rule +.* does not match \[sharing\]/m);
  const u = runT('udev-rules');
  assert.equal(u.code, 0, u.out);
  assert.match(u.out, /^wrote \/etc\/udev\/rules.d\/70-remote-usb.rules from \[sharing\] in \/etc\/remote-usb\/server.toml$/m);
  assert.match(u.out, /udev is not running here/);
  assert.equal(fs.readFileSync(inT('/etc/udev/rules.d/70-remote-usb.rules'), 'utf8'), udevRulesText({ allow: ['2e8a:*'], deny: [] }, 'remote-usb'));
  assert.match(runT('udev-rules').out, /already matches \[sharing\]/);
  d = runT('doctor');
  assert.match(d.out, /^PROBLEM +usb access +remote-usb cannot open 1 of 1 shared devices read\/write \(\/dev\/bus\/usb\/001\/005 is root:plugdev 660\)/m);
  const uid = Number(/^remote-usb:[^:]*:(\d+):/m.exec(fs.readFileSync(inT('/etc/passwd'), 'utf8'))![1]);
  fs.chownSync(pico, uid, 0); fs.chmodSync(pico, 0o644);
  fs.chownSync(ssd, 0, 0); fs.chmodSync(ssd, 0o664);
  d = runT('doctor');
  assert.equal(d.code, 0, d.out);
  assert.match(d.out, /^ok +usb access +remote-usb can open all 1 shared devices \(\/dev\/bus\/usb\/001\/005\)$/m);
  assert.match(d.out, /^ok +usb others +no USB device node is writable by anyone but root and remote-usb$/m);
  assert.match(d.out, /^ok +udev rule +\/etc\/udev\/rules.d\/70-remote-usb.rules \(matches \[sharing\]\)$/m);

  // uninstall: no rule will take the Pico back from remote-usb before the next plug-in, so uninstall does
  const un = runT('uninstall', '--purge');
  assert.equal(un.code, 0, un.out);
  assert.match(un.out, /^gave 1 USB device node back to root \(0664\)$/m);
  assert.deepEqual([fs.statSync(pico).uid, fs.statSync(pico).mode & 0o777], [0, 0o664]);
  assert.equal(runT('udev-rules').code, 1, 'nothing installed: nothing to update');
});

test('install refuses: not root, a foreign unit in the way, bad flags', { skip }, () => {
  const nobody = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', bin, 'install', '--root', freshRoot()], { encoding: 'utf8' });
  assert.equal(nobody.status, 1, nobody.stdout + nobody.stderr);
  assert.match(nobody.stderr, /install must run as root/);

  const r2 = freshRoot();
  fs.mkdirSync(join(r2, 'etc/systemd/system'), { recursive: true });
  fs.writeFileSync(join(r2, 'etc/systemd/system/remote-usb-server.service'), '[Service]\nExecStart=/bin/true\n');
  const f = run('install', '--root', r2);
  assert.equal(f.code, 1, f.out);
  assert.match(f.out, /\/etc\/systemd\/system\/remote-usb-server.service exists and was not written by remote-usb-server install/);
  assert.equal(fs.existsSync(join(r2, 'etc/remote-usb')), false, 'nothing written');
  assert.equal(fs.readFileSync(join(r2, 'etc/passwd'), 'utf8').includes('remote-usb:'), false, 'no user made');

  const w = freshRoot();
  fs.mkdirSync(join(w, 'usr/local'), { recursive: true });
  fs.chmodSync(join(w, 'usr/local'), 0o777);
  const ww = run('install', '--root', w);
  assert.equal(ww.code, 1, ww.out);
  assert.match(ww.out, /unsafe install: \/usr\/local \(on the path to the program directory .*\) is writable by group or others/);

  const u = run('install', '--root', r, '--user', 'root');
  assert.equal(u.code, 2);
  assert.match(u.out, /--user root: the daemon must not run as root/);
});

test('uninstall removes what install wrote and keeps config, identity and user; --purge removes them', { skip }, () => {
  const un = run('uninstall', '--root', r);
  assert.equal(un.code, 0, un.out);
  assert.match(un.out, /^kept \/etc\/remote-usb\/server.toml, \/var\/lib\/remote-usb\/ .*user remote-usb/m);
  assert.deepEqual(tree(), ['/etc/', '/etc/remote-usb/', '/etc/remote-usb/installed.json', '/etc/remote-usb/server.toml',
    '/var/', '/var/lib/', '/var/lib/remote-usb/', '/var/lib/remote-usb/pairing.toml', '/var/lib/remote-usb/secret.key']);
  assert.ok(userOf('remote-usb'));
  const purge = run('uninstall', '--root', r, '--purge');
  assert.equal(purge.code, 0, purge.out);
  assert.deepEqual(tree(), ['/etc/']);
  assert.equal(userOf('remote-usb'), undefined);
  assert.match(run('uninstall', '--root', r).out, /nothing to uninstall/);
});

test('install --json: one JSON object on stdout (for deploy over ssh); --json is install\'s only', { skip }, () => {
  const j = freshRoot();
  const p = spawnSync(bin, ['install', '--json', '--root', j, '--minutes', '5'], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(p.status, 0, p.stdout + p.stderr);
  assert.equal(p.stdout.trim().split('\n').length, 1, p.stdout);
  const o = JSON.parse(p.stdout) as Record<string, unknown>;
  assert.deepEqual(Object.keys(o), ['ticket', 'pairingCode', 'pairingExpires', 'version', 'target', 'lines']);
  assert.match(o.ticket as string, /^endpoint[a-z0-9]+$/);
  assert.match(o.pairingCode as string, /^[0-9A-Z]{5}-[0-9A-Z]{5}$/);
  const left = Date.parse(o.pairingExpires as string) - Date.now();
  assert.ok(left > 4 * 60_000 && left <= 5 * 60_000, `expires in ${left} ms`);
  assert.equal(o.target, 'linux-x64');
  assert.ok((o.lines as string[]).includes('created system user remote-usb (groups dialout)'), String(o.lines));
  const np = spawnSync(bin, ['install', '--json', '--no-pair', '--root', j], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(np.status, 0, np.stderr);
  assert.equal((JSON.parse(np.stdout) as { pairingCode: unknown }).pairingCode, null);
  const bad = run('uninstall', '--json', '--root', j);
  assert.equal(bad.code, 2);
  assert.match(bad.out, /--json is not an option of 'uninstall'/);
});

test('the launcher refuses a system older than the glibc its binaries need, and says which it needs', { skip }, () => {
  const need = (JSON.parse(fs.readFileSync(join(bin, '..', '..', 'bundle.json'), 'utf8')) as { glibc: string }).glibc;
  assert.match(need, /^2\.\d+$/, 'bundle.json names the newest glibc its binaries ask for');
  // a stand-in getconf on PATH plays the system's glibc
  const fake = fs.mkdtempSync(join(work, 'getconf-'));
  const withGlibc = (answer: string | null): { code: number | null; out: string } => {
    fs.writeFileSync(join(fake, 'getconf'), answer === null ? '#!/bin/sh\nexit 1\n' : `#!/bin/sh\necho '${answer}'\n`, { mode: 0o755 });
    const p = spawnSync(bin, ['--version'], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, PATH: `${fake}:/usr/bin:/bin` } });
    return { code: p.status, out: p.stdout + p.stderr };
  };
  const [major, minor] = need.split('.').map(Number);
  const old = withGlibc(`glibc ${major}.${minor - 1}`);
  assert.equal(old.code, 1);
  assert.match(old.out, new RegExp(`this linux-x64 bundle needs glibc ${need} or newer; this system has ${major}\\.${minor - 1}\\.`));
  const none = withGlibc(null); // musl, or no getconf
  assert.equal(none.code, 1);
  assert.match(none.out, /needs glibc .* this system has no glibc\./);
  for (const ok of [`glibc ${need}`, `glibc ${major}.${minor + 10}`, `glibc ${major + 1}.0`]) {
    const r = withGlibc(ok);
    assert.equal(r.code, 0, `${ok}: ${r.out}`);
    assert.match(r.out, /^\d+\.\d+\.\d+/);
  }
});
