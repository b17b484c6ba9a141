/**
 * deployBench against a real OpenSSH server: a throwaway sshd on 127.0.0.1 (its own config, host key,
 * authorized_keys and pid file in a temp dir; the system's sshd config and service are not touched),
 * the real `ssh` client with a temp key, and the real linux-x64 bundle (package-server --stage-only with
 * this machine's node, tarred like package:server does). The install goes into a temp root
 * (`install --root`), so nothing on this system changes — except /run/sshd, sshd's privilege separation
 * directory, made if missing.
 *
 * Needs root (sshd as root to log in as root; install chowns) and openssh-server + openssh-client.
 */
import assert from 'node:assert/strict';
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { deployBench, DeployError, DeployOptions, DeployStep } from '../../extension/core/deploy.js';
import { loadOrCreateSecretKey } from '../../server/shared/identity.js';
import { endpointIdOf, parsePeerAddress } from '../../server/net/iroh.js';
import { TrustStore } from '../../server/trust.js';
import { freshRoot as makeRoot } from '../helpers/install-root.js';

const repo = join(__dirname, '../../..');
const SSHD = '/usr/sbin/sshd';
const isRoot = process.geteuid?.() === 0;
const haveSsh = spawnSync('ssh', ['-V']).status === 0 && spawnSync('ssh-keygen', ['--help']).error === undefined;
const skip = !isRoot ? 'needs root (sshd logs in as root; install chowns into its temp root)'
  : !fs.existsSync(SSHD) || !haveSsh ? 'needs openssh-server and openssh-client (apt-get install openssh-server openssh-client)'
    : spawnSync('useradd', ['--help']).status !== 0 ? 'needs useradd (passwd)' : false;

const version = (JSON.parse(fs.readFileSync(join(repo, 'package.json'), 'utf8')) as { version: string }).version;
let work: string;
let sshd: ChildProcess | undefined;
let sshdLog = '';
let port = 0;
/** why the tests that need the running sshd or the bundle cannot run (set in before) */
let setupSkip: string | false = false;
let bundlesDir: string;

const key = (name: string): string => join(work, name);
/** isolated from this machine's ~/.ssh: no config, no agent, only our key, our known_hosts */
const sshArgs = (clientKey = 'client', knownHosts = 'known_hosts'): string[] => [
  '-F', '/dev/null', '-i', key(clientKey), '-o', 'IdentitiesOnly=yes', '-o', 'IdentityAgent=none',
  '-o', `UserKnownHostsFile=${key(knownHosts)}`, '-o', 'StrictHostKeyChecking=accept-new', '-o', 'LogLevel=ERROR',
];

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => { const p = (s.address() as net.AddressInfo).port; s.close(() => resolve(p)); });
  });
}

const freshRoot = (): string => makeRoot(work);

const remoteTemps = (): string[] => fs.readdirSync(tmpdir()).filter((n) => n.startsWith('remote-usb-deploy.')).sort();

async function startSshd(): Promise<string | false> {
  for (const [name, type] of [['host', 'ed25519'], ['client', 'ed25519'], ['stranger', 'ed25519'], ['otherhost', 'ed25519']]) {
    const k = spawnSync('ssh-keygen', ['-q', '-t', type, '-N', '', '-C', `deploy-test-${name}`, '-f', key(name)], { encoding: 'utf8' });
    if (k.status !== 0) return `ssh-keygen failed: ${k.stderr}`;
  }
  fs.copyFileSync(key('client.pub'), key('authorized_keys'));
  port = await freePort();
  fs.writeFileSync(key('sshd_config'), [
    `Port ${port}`, 'ListenAddress 127.0.0.1', `HostKey ${key('host')}`, `AuthorizedKeysFile ${key('authorized_keys')}`,
    'StrictModes no', 'UsePAM no', `PidFile ${key('sshd.pid')}`, 'PermitRootLogin prohibit-password',
    'PasswordAuthentication no', 'KbdInteractiveAuthentication no', 'PrintMotd no', 'LogLevel VERBOSE', '',
  ].join('\n'));
  // sshd as root insists on its privilege separation directory (normally made by the service unit)
  if (!fs.existsSync('/run/sshd')) fs.mkdirSync('/run/sshd', { mode: 0o755 });
  const t = spawnSync(SSHD, ['-t', '-f', key('sshd_config')], { encoding: 'utf8' });
  if (t.status !== 0) return `sshd -t rejects the test config: ${t.stderr.trim()}`;
  sshd = spawn(SSHD, ['-D', '-e', '-f', key('sshd_config')], { stdio: ['ignore', 'ignore', 'pipe'] });
  sshd.stderr!.on('data', (d: Buffer) => { sshdLog += d.toString(); });
  // if this process ends before after() (a runner killed by a closed pipe, say), do not leave sshd listening
  process.once('exit', () => { if (sshd?.exitCode === null) sshd.kill('SIGKILL'); });
  const ok = await new Promise<boolean>((resolve) => {
    const t0 = Date.now();
    const check = (): void => {
      if (/Server listening on 127\.0\.0\.1/.test(sshdLog)) resolve(true);
      else if (sshd!.exitCode !== null || Date.now() - t0 > 5000) resolve(false);
      else setTimeout(check, 50);
    };
    check();
  });
  return ok ? false : `sshd did not start: ${sshdLog.trim() || `exit ${sshd.exitCode}`}`;
}

/** The real linux-x64 bundle, built like package:server (with this machine's node: offline, fast). */
function buildBundle(): string | false {
  bundlesDir = join(work, 'bundles');
  fs.mkdirSync(bundlesDir);
  const name = `remote-usb-server-${version}-linux-x64`;
  const stageDir = join(work, 'stage');
  const s = spawnSync(process.execPath, [join(repo, 'server/packaging/package-server.mjs'), '--target', 'linux-x64', '--stage-only', join(stageDir, name), '--node', process.execPath],
    { cwd: repo, encoding: 'utf8', timeout: 120_000 });
  if (s.status !== 0) return `cannot build the linux-x64 bundle (node server/packaging/package-server.mjs --target linux-x64 --stage-only): ${(s.stdout + s.stderr).trim().split('\n').slice(-3).join(' ')}`;
  const t = spawnSync('tar', ['-I', 'gzip -1', '-cf', join(bundlesDir, `${name}.tar.gz`), '--owner=0', '--group=0', '--numeric-owner', '-C', stageDir, name], { encoding: 'utf8' });
  if (t.status !== 0) return `tar failed: ${t.stderr}`;
  fs.rmSync(stageDir, { recursive: true, force: true });
  return false;
}

before(async () => {
  if (skip || process.arch !== 'x64') return;
  work = fs.mkdtempSync(join(tmpdir(), 'remote-usb-deploy-test-'));
  fs.chmodSync(work, 0o755);
  setupSkip = (await startSshd()) || buildBundle();
  if (setupSkip) console.log(`deploy tests skipped: ${setupSkip}`);
});

after(async () => {
  if (sshd && sshd.exitCode === null) {
    const gone = new Promise((r) => sshd!.once('exit', r));
    sshd.kill('SIGTERM');
    await gone;
  }
  if (work) fs.rmSync(work, { recursive: true, force: true });
});

const archSkip = process.arch !== 'x64' ? 'the bundle built here is linux-x64 only' : false;

async function expectDeployError(p: Promise<unknown>, code: string, step: DeployStep, message: RegExp): Promise<DeployError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof DeployError, `not a DeployError: ${(e as Error).stack}`);
    assert.equal(e.code, code, `${e.code}: ${e.message}\n${e.output ?? ''}`);
    assert.equal(e.step, step, e.message);
    assert.match(e.message, message);
    return e;
  }
  assert.fail(`deploy succeeded, expected ${code}`);
}

test('deploys the real bundle over real ssh: ticket and pairing code from the real install, temp dir removed', { skip: skip || archSkip, timeout: 60_000 }, async (t) => {
  if (setupSkip) return t.skip(setupSkip);
  const r = freshRoot();
  const before = remoteTemps();
  const steps: string[] = [];
  const times: number[] = [];
  const t0 = Date.now();
  const res = await deployBench('root@127.0.0.1', {
    port, sshArgs: sshArgs(), bundlesDir, installArgs: ['--root', r],
    onStep: (s, d) => { steps.push(`${s}: ${d ?? ''}`); times.push(Date.now() - t0); },
  });
  const ms = Date.now() - t0;
  t.diagnostic(`deployed in ${ms} ms: ${steps.filter((s) => !/^upload: [1-9]0%/.test(s)).map((s) => `+${times[steps.indexOf(s)]} ms ${s}`).join(' | ')}`);

  // the order of steps, each reported
  const order = [...new Set(steps.map((s) => s.split(':')[0]))];
  assert.deepEqual(order, ['connect', 'bundle', 'upload', 'unpack', 'install', 'cleanup']);
  assert.ok(steps.some((s) => /^connect: root@127\.0\.0\.1: Linux x86_64 \(x64\), root$/.test(s)), steps.join('\n'));
  assert.ok(steps.includes('upload: 100% of ' + (fs.statSync(res.bundle).size / 1e6).toFixed(1) + ' MB'), steps.join('\n'));

  assert.equal(res.arch, 'x64');
  assert.equal(res.version, version);
  assert.equal(res.bundle, join(bundlesDir, `remote-usb-server-${version}-linux-x64.tar.gz`));
  assert.deepEqual(res.warnings, []);
  // the ticket is one the client can use, and it is this install's identity
  const addr = parsePeerAddress(res.ticket);
  assert.match(addr.id, /^[0-9a-f]{64}$/);
  assert.ok(addr.addrs.length > 0, 'the ticket carries direct addresses');
  assert.equal(addr.id, endpointIdOf(loadOrCreateSecretKey(join(r, 'var/lib/remote-usb'), false).key));
  // the pairing code has the right shape and is the one the bench will accept (once)
  assert.match(res.pairingCode, /^[0-9A-HJKMNP-TV-Z]{5}-[0-9A-HJKMNP-TV-Z]{5}$/);
  assert.ok(res.pairingExpires && Date.parse(res.pairingExpires) > Date.now());
  const trust = new TrustStore(join(r, 'var/lib/remote-usb/clients.toml'), join(r, 'var/lib/remote-usb'));
  assert.deepEqual(trust.redeemPairingCode(res.pairingCode, 'ab'.repeat(32), 'deploy-test'), { ok: true });
  assert.equal(trust.redeemPairingCode(res.pairingCode, 'cd'.repeat(32), 'again').ok, false);
  // install ran for real into the temp root, and said what it did
  assert.ok(fs.existsSync(join(r, 'etc/remote-usb/installed.json')));
  assert.ok(fs.existsSync(join(r, 'usr/local/lib/remote-usb-server/bin/remote-usb-server')));
  assert.ok(res.lines.some((l) => /^installed remote-usb-server .* \(linux-x64\) in \/usr\/local\/lib\/remote-usb-server$/.test(l)), res.lines.join('\n'));
  assert.ok(!fs.existsSync('/etc/remote-usb/installed.json') || fs.statSync('/etc/remote-usb/installed.json').mtimeMs < t0, 'this machine was not touched');
  // nothing left in the bench's /tmp
  assert.deepEqual(remoteTemps(), before);
  assert.match(sshdLog, /Accepted publickey for root/);
});

test('wrong port: unreachable, named, before anything is copied', { skip: skip || archSkip, timeout: 20_000 }, async (t) => {
  if (setupSkip) return t.skip(setupSkip);
  const closed = await freePort();
  const steps: DeployStep[] = [];
  const e = await expectDeployError(deployBench('root@127.0.0.1', { port: closed, sshArgs: sshArgs(), bundlesDir, onStep: (s) => steps.push(s) }),
    'unreachable', 'connect', /^root@127\.0\.0\.1: cannot reach it: check the host name, the port and that sshd runs there$/);
  assert.match(e.output ?? '', /Connection refused/);
  assert.deepEqual(steps, ['connect']);
});

test('a key the bench does not accept: auth failed at once (BatchMode: no password prompt)', { skip: skip || archSkip, timeout: 20_000 }, async (t) => {
  if (setupSkip) return t.skip(setupSkip);
  const t0 = Date.now();
  const e = await expectDeployError(deployBench('root@127.0.0.1', { port, sshArgs: sshArgs('stranger'), bundlesDir }),
    'auth', 'connect', /^root@127\.0\.0\.1: it refused every key .*ssh-copy-id root@127\.0\.0\.1/);
  assert.match(e.output ?? '', /Permission denied \(publickey\)/);
  assert.ok(Date.now() - t0 < 10_000);
});

test('a changed host key: refused, with what to do', { skip: skip || archSkip, timeout: 20_000 }, async (t) => {
  if (setupSkip) return t.skip(setupSkip);
  fs.writeFileSync(key('known_hosts_wrong'), `[127.0.0.1]:${port} ${fs.readFileSync(key('otherhost.pub'), 'utf8').split(' ').slice(0, 2).join(' ')}\n`);
  await expectDeployError(deployBench('root@127.0.0.1', { port, sshArgs: sshArgs('client', 'known_hosts_wrong'), bundlesDir }),
    'host-key', 'connect', /host key is unknown or has changed; connect once from a terminal \(ssh root@127\.0\.0\.1\)/);
});

test('no bundle for the bench\'s arch (only an -incomplete one): names the npm command, copies nothing', { skip: skip || archSkip, timeout: 20_000 }, async (t) => {
  if (setupSkip) return t.skip(setupSkip);
  const empty = fs.mkdtempSync(join(work, 'nobundles-'));
  fs.writeFileSync(join(empty, `remote-usb-server-${version}-linux-x64-incomplete.tar.gz`), '');
  fs.writeFileSync(join(empty, `remote-usb-server-${version}-linux-arm64.tar.gz`), '');
  const before = remoteTemps();
  const steps: DeployStep[] = [];
  await expectDeployError(deployBench('root@127.0.0.1', { port, sshArgs: sshArgs(), bundlesDir: empty, onStep: (s) => steps.push(s) }),
    'no-bundle', 'bundle',
    new RegExp(`^no complete server bundle for this bench \\(linux-x64\\) in ${empty} \\(only an …-incomplete one, which cannot serve\\): need remote-usb-server-<version>-linux-x64\\.tar\\.gz; build it with: npm run package:server -- --target linux-x64$`));
  assert.deepEqual([...new Set(steps)], ['connect', 'bundle']);
  assert.deepEqual(remoteTemps(), before);
});

test('cancelled during the upload: ssh killed, the temp dir on the bench removed', { skip: skip || archSkip, timeout: 30_000 }, async (t) => {
  if (setupSkip) return t.skip(setupSkip);
  const before = remoteTemps();
  const ac = new AbortController();
  const steps: string[] = [];
  await expectDeployError(deployBench('root@127.0.0.1', {
    port, sshArgs: sshArgs(), bundlesDir, installArgs: ['--root', freshRoot()], signal: ac.signal,
    onStep: (s, d) => { steps.push(`${s}: ${d}`); if (s === 'upload' && d?.startsWith('0%')) ac.abort(); },
  }), 'cancelled', 'upload', /^cancelled$/);
  assert.ok(steps.some((s) => s.startsWith('cleanup: /')), steps.join('\n'));
  assert.deepEqual(remoteTemps(), before);
});

test('a step that takes too long times out (a port that accepts and never speaks ssh)', { skip: skip || archSkip, timeout: 20_000 }, async (t) => {
  if (setupSkip) return t.skip(setupSkip);
  const sockets: net.Socket[] = [];
  const mute = net.createServer((s) => { sockets.push(s); });
  await new Promise<void>((r) => mute.listen(0, '127.0.0.1', r));
  try {
    const opts: DeployOptions = { port: (mute.address() as net.AddressInfo).port, sshArgs: sshArgs(), bundlesDir, timeouts: { connect: 1500 } };
    await expectDeployError(deployBench('root@127.0.0.1', opts), 'timeout', 'connect', /^connecting over ssh took longer than 2 s; gave up$/);
  } finally {
    for (const s of sockets) s.destroy();
    mute.close();
  }
});

test('useSudo where there is no sudo: said before anything is copied', { skip: skip || archSkip, timeout: 20_000 }, async (t) => {
  if (setupSkip) return t.skip(setupSkip);
  if (spawnSync('sudo', ['-V']).error === undefined) return t.skip('sudo is installed here (as root, sudo -n works)');
  await expectDeployError(deployBench('root@127.0.0.1', { port, sshArgs: sshArgs(), bundlesDir, useSudo: true }),
    'no-sudo', 'connect', /^root@127\.0\.0\.1: sudo is not installed there, and installing needs root: deploy as root@… instead, or install sudo there$/);
});
