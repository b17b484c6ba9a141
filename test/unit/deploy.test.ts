/** The pure parts of deployBench: destinations, architectures, the probe, install's output, ssh's errors, bundles. */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { classifySshFailure, deployBench, DeployError, DeployOptions, findLocalBundle, mapArch, parseInstallOutput, parseProbe, PROBE_SCRIPT, validateTarget } from '../../extension/core/deploy.js';

test('ssh destinations: user@host, aliases, IPs; nothing that ssh or a shell could read as more', () => {
  for (const ok of ['pi@bench.local', 'bench', 'root@10.0.0.5', 'me@fe80::1%eth0', 'user_1@host-2.example.com', 'a@[::1]']) validateTarget(ok);
  for (const [bad, why] of [
    ['', /no ssh destination/], ['-oProxyCommand=sh', /starts with '-'/], ['pi@host name', /not an ssh destination/], ['pi@host\n', /not an ssh destination/],
    ['pi@host;rm', /not an ssh destination/], ['pi@$(id)', /not an ssh destination/], ["pi@'x'", /not an ssh destination/], ['x\u0000', /not an ssh destination/],
    ['a'.repeat(256), /not an ssh destination/], ['pi@host -p 22', /give the port separately/],
  ] as const) {
    assert.throws(() => validateTarget(bad), (e: DeployError) => e instanceof DeployError && e.code === 'bad-option' && why.test(e.message), JSON.stringify(bad));
  }
});

test('bad options are refused before anything runs', async () => {
  const sshPath = '/nonexistent/ssh-must-not-run';
  const cases: [DeployOptions, RegExp][] = [
    [{ port: 0 }, /port 0 is not 1\.\.65535/], [{ port: 70000 }, /port 70000/],
    [{ installArgs: ['--root', '/tmp/x y'] }, /install argument '\/tmp\/x y' may only contain/], [{ installArgs: ['$(id)'] }, /may only contain/],
    [{ installArgs: ['--no-pair'] }, /deploy always asks for a pairing code/],
    [{ remoteTempDir: 'tmp' }, /must be an absolute path/], [{ remoteTempDir: '/a/../b' }, /no \.\./], [{ sshArgs: ['-o', 'A=b\nc'] }, /line breaks/],
  ];
  for (const [o, re] of cases) {
    await assert.rejects(deployBench('pi@bench', { ...o, sshPath }), (e: DeployError) => e.code === 'bad-option' && re.test(e.message), JSON.stringify(o));
  }
  await assert.rejects(deployBench('pi@bench', { sshPath }), (e: DeployError) => e.code === 'no-ssh' && e.step === 'connect' && /install the OpenSSH client/.test(e.message));
});

test('uname -m (and the userland width) to a bundle architecture', () => {
  const cases: [string, string | undefined, string | undefined][] = [
    ['x86_64', '64', 'x64'], ['amd64', '64', 'x64'], ['x86_64', '32', undefined],
    ['aarch64', '64', 'arm64'], ['arm64', '64', 'arm64'], ['aarch64', '32', 'armv7'], // 32-bit Raspberry Pi OS on a 64-bit kernel
    ['armv7l', '32', 'armv7'], ['armv8l', '32', 'armv7'], ['armv6l', '32', undefined], ['i686', '32', undefined],
    ['riscv64', '64', undefined], ['mips', '32', undefined], ['aarch64_be', '64', undefined],
  ];
  for (const [m, bits, want] of cases) assert.equal(mapArch(m, bits), want, `${m} ${bits}`);
});

test('the probe: one line for any login shell, its answer read from the last five lines (a motd may come first)', () => {
  assert.doesNotMatch(PROBE_SCRIPT, /['\\\n]/);
  assert.deepEqual(parseProbe('Linux\naarch64\n64\n1000\nsudo-password\n'), { os: 'Linux', machine: 'aarch64', longBit: '64', uid: 1000, sudo: 'password' });
  assert.deepEqual(parseProbe('Welcome to the bench!\n\nLinux\narmv7l\n32\n0\nsudo-missing\n'), { os: 'Linux', machine: 'armv7l', longBit: '32', uid: 0, sudo: 'missing' });
  for (const bad of ['', 'Linux\nx86_64\n', 'Linux\nx86_64\n64\nroot\nsudo-ok', 'Linux\nx86_64\n64\n0\nsudo-maybe']) assert.equal(parseProbe(bad), undefined, bad);
});

const TICKET = 'endpointadkstq2rwu4lhzvrqsqc27ph3rydfx6zq3aawnoknuhmyp2vtn4bsajdnb2hi4dthixs6l3joqxgcztmn5xs4y3pnfzwgzlomqxhi33qmvzgq2dcnzxxk4tffzxhm3ljjo';

test('install --json output (and the text form) to ticket + pairing code', () => {
  const json = JSON.stringify({ ticket: TICKET, pairingCode: '7KM2Q-XR4VD', pairingExpires: '2030-01-01T00:00:00.000Z', version: '0.1.0', target: 'linux-x64', lines: ['created system user remote-usb'] });
  assert.deepEqual(parseInstallOutput(json + '\n'), { ticket: TICKET, pairingCode: '7KM2Q-XR4VD', pairingExpires: '2030-01-01T00:00:00.000Z', version: '0.1.0', lines: ['created system user remote-usb'] });
  assert.deepEqual(parseInstallOutput(`some banner\n${json}\n`)?.pairingCode, '7KM2Q-XR4VD');
  const text = `created system user remote-usb (groups dialout)\n\nBench ticket: ${TICKET}\nPairing code: 7KM2Q-XR4VD   (single use, valid until 10:00:00)\n\nIn VS Code run …\n`;
  assert.deepEqual(parseInstallOutput(text), { ticket: TICKET, pairingCode: '7KM2Q-XR4VD', pairingExpires: undefined, version: undefined,
    lines: ['created system user remote-usb (groups dialout)', 'In VS Code run …'] });
  const id = 'ab'.repeat(32);
  assert.equal(parseInstallOutput(JSON.stringify({ ticket: `${id}@10.0.0.5:47100`, pairingCode: '00000-ZZZZZ' }))?.ticket, `${id}@10.0.0.5:47100`);
  for (const bad of ['', '{', JSON.stringify({ ticket: TICKET, pairingCode: null }), JSON.stringify({ ticket: TICKET, pairingCode: '7KM2Q-XR4VI' }) /* I is not Crockford */,
    JSON.stringify({ ticket: 'nope', pairingCode: '7KM2Q-XR4VD' }), `Bench ticket: ${TICKET}\n`]) {
    assert.equal(parseInstallOutput(bad), undefined, bad);
  }
});

test("ssh's exit-255 messages to what the user should do", () => {
  const cases: [string, string][] = [
    ['ssh: connect to host 127.0.0.1 port 2: Connection refused', 'unreachable'],
    ['ssh: Could not resolve hostname nope.invalid: Name or service not known', 'unreachable'],
    ['ssh: connect to host 10.255.255.1 port 22: Connection timed out', 'unreachable'],
    ['Connection timed out during banner exchange', 'unreachable'],
    ['ssh: connect to host 10.0.0.9 port 22: No route to host', 'unreachable'],
    ['kex_exchange_identification: read: Connection reset by peer', 'unreachable'],
    ['pi@bench: Permission denied (publickey,password).', 'auth'],
    ['Received disconnect from 1.2.3.4 port 22:2: Too many authentication failures', 'auth'],
    ['No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict checking.\nHost key verification failed.', 'host-key'],
    ['@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@', 'host-key'],
    ['command-line line 0: unsupported option "foo".', 'ssh'],
  ];
  for (const [stderr, code] of cases) assert.equal(classifySshFailure(stderr).code, code, stderr);
});

test('bundles: the newest complete one for the arch; -incomplete refused; the message names the way out', () => {
  const d = fs.mkdtempSync(join(tmpdir(), 'remote-usb-bundles-'));
  try {
    for (const n of ['remote-usb-server-0.1.0-linux-x64.tar.gz', 'remote-usb-server-0.10.0-linux-x64.tar.gz', 'remote-usb-server-0.9.0-linux-x64.tar.gz',
      'remote-usb-server-0.2.0-linux-arm64-incomplete.tar.gz', 'remote-usb-server-0.1.0-linux-x64.tar.gz.part', 'remote-usb-0.1.0-linux-x64.vsix']) fs.writeFileSync(join(d, n), '');
    assert.deepEqual(findLocalBundle(d, 'x64'), { file: join(d, 'remote-usb-server-0.10.0-linux-x64.tar.gz'), name: 'remote-usb-server-0.10.0-linux-x64', version: '0.10.0' });
    assert.equal(findLocalBundle(d, 'x64', '0.1.0').version, '0.1.0');
    assert.throws(() => findLocalBundle(d, 'x64', '0.3.0'), /no server bundle for this bench \(linux-x64\) .*need remote-usb-server-0\.3\.0-linux-x64\.tar\.gz; build it with: npm run package:server -- --target linux-x64$/);
    assert.throws(() => findLocalBundle(d, 'arm64'), (e: DeployError) => e.code === 'no-bundle' && e.step === 'bundle' &&
      /no complete server bundle .*only an …-incomplete one.*build it with: npm run cross-build -- --target linux-arm64 && npm run package:server -- --target linux-arm64$/.test(e.message));
    assert.throws(() => findLocalBundle(d, 'armv7'), /no server bundle for this bench \(linux-armv7\).*npm run cross-build -- --target linux-armv7 && npm run package:server -- --target linux-armv7$/);
    assert.throws(() => findLocalBundle(join(d, 'missing'), 'x64'), /no server bundle/);
  } finally {
    fs.rmSync(d, { recursive: true, force: true });
  }
});

test('a bench whose sudo wants a password: refused before the upload, with the command to run by hand', async () => {
  const d = fs.mkdtempSync(join(tmpdir(), 'remote-usb-fake-ssh-'));
  try {
    // a stand-in ssh that answers the probe like a Raspberry Pi with a 64-bit userland and a normal user
    const fake = join(d, 'ssh');
    fs.writeFileSync(fake, '#!/bin/sh\nprintf "Linux\\naarch64\\n64\\n1000\\nsudo-password\\n"\n', { mode: 0o755 });
    fs.mkdirSync(join(d, 'b'));
    fs.writeFileSync(join(d, 'b', 'remote-usb-server-0.1.0-linux-arm64.tar.gz'), '');
    const steps: string[] = [];
    await assert.rejects(deployBench('pi@bench.local', { sshPath: fake, bundlesDir: join(d, 'b'), port: 2222, onStep: (s, x) => steps.push(`${s}: ${x}`) }), (e: DeployError) => {
      assert.equal(e.code, 'no-sudo');
      assert.equal(e.manualCommand, `scp -P 2222 ${join(d, 'b', 'remote-usb-server-0.1.0-linux-arm64.tar.gz')} pi@bench.local:/tmp/ && ssh -t -p 2222 pi@bench.local ` +
        `'cd /tmp && tar -xzf remote-usb-server-0.1.0-linux-arm64.tar.gz && sudo ./remote-usb-server-0.1.0-linux-arm64/bin/remote-usb-server install; ` +
        `rm -rf remote-usb-server-0.1.0-linux-arm64 remote-usb-server-0.1.0-linux-arm64.tar.gz'`);
      assert.match(e.message, /^pi@bench\.local: sudo there needs a password, which cannot be typed here\. Run this in a terminal instead/);
      return true;
    });
    assert.deepEqual(steps, ['connect: pi@bench.local', 'connect: pi@bench.local: Linux aarch64 (arm64), uid 1000', 'bundle: linux-arm64',
      'bundle: remote-usb-server-0.1.0-linux-arm64.tar.gz (0.0 MB)']);
    // the same Pi without an arm64 bundle: the way to build one is named
    await assert.rejects(deployBench('pi@bench.local', { sshPath: fake, bundlesDir: d }), /linux-arm64.*npm run cross-build -- --target linux-arm64 && npm run package:server/);
  } finally {
    fs.rmSync(d, { recursive: true, force: true });
  }
});
