// Unit tests of the privileged helper (helper/). Pure modules run against a temporary fake sysfs and
// install tree; the bundled CLI (dist/helper.js) runs as a child process with real stdin kinds.
// Nothing here writes the real /sys or installs anything on this machine: CLI runs that could reach
// vhci's files are skipped when /sys/devices/platform/vhci_hcd.0 exists, and `load`/`install` are only
// run through the CLI as an unprivileged user (exit 6).

import { after, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { Exit, HelperError, formatError, quote } from '../../helper/errors';
import { FsProbe, StatLike, install, realProbe, uninstall, walkTrusted } from '../../helper/install';
import { Host, HELPER_VERSION, run } from '../../helper/run';
import { formatRecord, parseRecord } from '../../helper/owners';
import { StdinVerdict, checkStdinSocket, parseProcNetUnix } from '../../helper/socket';
import { ACTION_ID, MARKER, launcherScript, policyExecPath, policyXml, rulesJs } from '../../helper/templates';
import { parseArgs } from '../../helper/validate';
import { ModprobeResult, attachLine, formatStatus, loadVhci, parseStatus, readPorts } from '../../helper/vhci';

// This file is bundled to out/test/unit/helper.test.js; the helper itself to dist/helper.js (both by
// `node esbuild.mjs --tests`). The CLI tests run that bundle: it is exactly what `install` copies.
const CLI = path.resolve(__dirname, '../../../dist/helper.js');
if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run \`node esbuild.mjs --tests\` first`);
const REAL_VHCI = '/sys/devices/platform/vhci_hcd.0';
const REAL_VHCI_PRESENT = fs.existsSync(REAL_VHCI);
const IS_ROOT = process.geteuid?.() === 0;
const NOBODY = 65534;
const ERROR_LINE = /^remote-usb-helper: [\x20-\x7e]+ \([\x20-\x7e]+\)\n$/;

const tmpdirs: string[] = [];
after(() => {
  for (const d of tmpdirs) fs.rmSync(d, { recursive: true, force: true });
});

function tmpdir(prefix: string): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), `rusb-${prefix}-`)); // 0700, ours
  tmpdirs.push(d);
  return d;
}

// ---------------------------------------------------------------------------------------------------
// Fake vhci sysfs: status (+ status.N per extra controller), attach, detach, nports

interface UsedPort {
  spd: number;
  devid: number;
  busid: string;
}

function statusText(controller: number, hcPorts: number, used: ReadonlyMap<number, UsedPort>): string {
  let s = 'hub port sta spd dev      sockfd local_busid\n';
  for (const hub of ['hs', 'ss']) {
    for (let i = 0; i < hcPorts; i++) {
      const port = controller * 2 * hcPorts + (hub === 'ss' ? hcPorts : 0) + i;
      const u = used.get(port);
      const p4 = String(port).padStart(4, '0');
      s += u
        ? `${hub}  ${p4} 006 ${String(u.spd).padStart(3, '0')} ${u.devid.toString(16).padStart(8, '0')} 000000 ${u.busid}\n`
        : `${hub}  ${p4} 004 000 00000000 000000 0-0\n`;
    }
  }
  return s;
}

interface FakeVhci {
  dir: string;
  attach: () => string;
  detach: () => string;
}

function fakeVhci(o: { controllers?: number; hcPorts?: number; used?: Map<number, UsedPort> } = {}): FakeVhci {
  const root = tmpdir('vhci');
  const dir = path.join(root, 'vhci_hcd.0');
  fs.mkdirSync(dir);
  const controllers = o.controllers ?? 1;
  const hcPorts = o.hcPorts ?? 4;
  for (let c = 0; c < controllers; c++) {
    fs.writeFileSync(path.join(dir, c === 0 ? 'status' : `status.${c}`), statusText(c, hcPorts, o.used ?? new Map()));
  }
  fs.writeFileSync(path.join(dir, 'nports'), `${controllers * 2 * hcPorts}\n`);
  fs.writeFileSync(path.join(dir, 'attach'), '');
  fs.writeFileSync(path.join(dir, 'detach'), '');
  return {
    dir,
    attach: () => fs.readFileSync(path.join(dir, 'attach'), 'utf8'),
    detach: () => fs.readFileSync(path.join(dir, 'detach'), 'utf8'),
  };
}

const USED_2 = new Map<number, UsedPort>([[2, { spd: 3, devid: 0x10002, busid: '2-3' }]]);

// ---------------------------------------------------------------------------------------------------
// Fake host for run()

interface FakeHost extends Host {
  outLines: string[];
  errLines: string[];
  modprobeCalls: number;
  sourceCalls: number;
}

const CONNECTED: StdinVerdict = { ok: true, inode: 4242 };

function fakeHost(
  sysfsDir: string,
  o: { root?: boolean; stdin?: StdinVerdict; modprobe?: () => ModprobeResult; installRoot?: string; uid?: number; ownersDir?: string } = {},
): FakeHost {
  const h: FakeHost = {
    sysfsDir,
    // next to the fake vhci_hcd.0, so every host of one test sees the same records
    ownersDir: o.ownersDir ?? path.join(path.dirname(sysfsDir), 'run-remote-usb-helper'),
    callerUid: () => o.uid ?? 0,
    outLines: [],
    errLines: [],
    modprobeCalls: 0,
    sourceCalls: 0,
    isRoot: () => o.root ?? true,
    stdinVerdict: () => o.stdin ?? CONNECTED,
    modprobe: () => {
      h.modprobeCalls++;
      return o.modprobe ? o.modprobe() : { status: 1, stderr: 'modprobe: FATAL: Module vhci-hcd not found' };
    },
    requester: () => 'uid 1000 via pkexec',
    out: (l) => h.outLines.push(l),
    err: (l) => h.errLines.push(l),
    install: {
      defaultDir: path.join(o.installRoot ?? '/nonexistent', 'libexec/remote-usb'),
      defaultNode: () => path.join(o.installRoot ?? '/nonexistent', 'bin/node'),
      helperSource: () => {
        h.sourceCalls++;
        return Buffer.from('// fake bundle\n');
      },
      policyPath: path.join(o.installRoot ?? '/nonexistent', 'actions/dev.remoteusb.helper.policy'),
      rulesPath: path.join(o.installRoot ?? '/nonexistent', 'rules.d/49-remote-usb.rules'),
      probe: o.installRoot ? treeProbe(o.installRoot) : realProbe,
      notes: () => [],
    },
  };
  return h;
}

/** Expects exactly one well-formed error line and returns it. */
function oneError(h: FakeHost): string {
  assert.equal(h.errLines.length, 1, `errors: ${JSON.stringify(h.errLines)}`);
  assert.match(`${h.errLines[0]}\n`, ERROR_LINE);
  return h.errLines[0];
}

// ---------------------------------------------------------------------------------------------------
// Argument validation

const BAD_NUMBERS = [
  '',
  ' 1',
  '1 ',
  '\t1',
  '+1',
  '-1',
  '-0',
  '01',
  '00',
  '01x',
  '1x',
  '1;rm',
  '1;rm -rf /',
  '$(x)',
  '`id`',
  '1|id',
  '1&&id',
  '../',
  '../../etc/passwd',
  '/dev/sda',
  '0x10',
  '0X1',
  '0b1',
  '0o7',
  '1e3',
  '1.0',
  '1,0',
  '1_0',
  '1 2',
  'NaN',
  'Infinity',
  '\u0661', // ARABIC-INDIC DIGIT ONE
  '\uff11', // FULLWIDTH DIGIT ONE
  '\u00b9', // SUPERSCRIPT ONE
  '1\u200b', // zero-width space
  '\n1',
  '1\n',
  '1\r',
  '1\u0000',
  '9'.repeat(400),
  '18446744073709551617',
];

function assertUsage(argv: string[]): HelperError {
  try {
    parseArgs(argv);
  } catch (e) {
    assert.ok(e instanceof HelperError, `not a HelperError: ${String(e)}`);
    assert.equal(e.exitCode, Exit.USAGE, `${JSON.stringify(argv)}: ${e.message}`);
    assert.doesNotMatch(formatError(e.what, e.hint), /[^\x20-\x7e]/);
    return e;
  }
  assert.fail(`accepted ${JSON.stringify(argv)}`);
}

test('parseArgs accepts the well-formed command lines', () => {
  assert.deepEqual(parseArgs(['attach', '3', '65538', '3']), { verb: 'attach', port: 3, devid: 65538, speed: 3 });
  assert.deepEqual(parseArgs(['attach', '0', '1', '1']), { verb: 'attach', port: 0, devid: 1, speed: 1 });
  assert.deepEqual(parseArgs(['attach', '255', '4294967295', '6']), { verb: 'attach', port: 255, devid: 0xffffffff, speed: 6 });
  assert.deepEqual(parseArgs(['detach', '0']), { verb: 'detach', port: 0 });
  assert.deepEqual(parseArgs(['load']), { verb: 'load' });
  assert.deepEqual(parseArgs(['status']), { verb: 'status' });
  assert.deepEqual(parseArgs(['help']), { verb: 'help' });
  assert.deepEqual(parseArgs(['version']), { verb: 'version' });
  assert.deepEqual(parseArgs(['install']), { verb: 'install', dir: undefined, node: undefined, group: undefined });
  assert.deepEqual(parseArgs(['install', '--group', 'plugdev', '--node', '/usr/bin/node', '--dir', '/opt/remote-usb']), {
    verb: 'install',
    dir: '/opt/remote-usb',
    node: '/usr/bin/node',
    group: 'plugdev',
  });
  assert.deepEqual(parseArgs(['uninstall', '--dir', '/opt/remote-usb']), { verb: 'uninstall', dir: '/opt/remote-usb' });
});

test('every malformed, oversized or injection-shaped number is refused with exit 2', () => {
  for (const bad of BAD_NUMBERS) {
    assertUsage(['attach', bad, '65538', '3']);
    assertUsage(['attach', '1', bad, '3']);
    assertUsage(['attach', '1', '65538', bad]);
    assertUsage(['detach', bad]);
  }
});

test('numbers outside their ranges are refused with exit 2', () => {
  for (const port of ['256', '999', '1000']) assertUsage(['attach', port, '65538', '3']);
  for (const devid of ['0', '4294967296', '9999999999', '99999999999']) assertUsage(['attach', '1', devid, '3']);
  for (const speed of ['0', '7', '9', '10']) assertUsage(['attach', '1', '65538', speed]);
  assertUsage(['detach', '256']);
  assert.match(assertUsage(['attach', '1', '0', '3']).what, /devid 0 is out of range 1\.\.4294967295/);
});

test('missing, extra and unknown arguments are refused with exit 2', () => {
  const cases: string[][] = [
    [],
    [''],
    ['attach'],
    ['attach', '1'],
    ['attach', '1', '65538'],
    ['attach', '1', '65538', '3', '0'],
    ['attach', '1', '65538', '3', '--force'],
    ['detach'],
    ['detach', '1', '2'],
    ['load', 'vhci-hcd'],
    ['load', '--', 'x'],
    ['status', '--all'],
    ['help', 'attach'],
    ['version', '1'],
    ['ATTACH', '1', '65538', '3'],
    ['attach ', '1', '65538', '3'],
    [' attach', '1', '65538', '3'],
    ['--attach', '1', '65538', '3'],
    ['--help'],
    ['-h'],
    ['rm', '-rf', '/'],
    ['sh', '-c', 'id'],
    ['attach;id'],
    ['a'.repeat(5000)],
    ['attach', '1', '2', '3', '4', '5', '6', '7'],
  ];
  for (const argv of cases) assertUsage(argv);
  assert.match(assertUsage(['attach', '1', '2', '3', '4']).what, /unexpected extra argument "4"/);
  assert.match(assertUsage(['attach', '1', '2']).what, /missing speed/);
});

test('install/uninstall flags: only plain absolute paths and POSIX-like group names', () => {
  const badPaths = [
    'relative/dir',
    '.',
    '/',
    '//',
    '/a//b',
    '/a/',
    '/a/../b',
    '/a/./b',
    '/..',
    '/a b',
    '/a;rm -rf /',
    '/$(id)',
    '/`id`',
    '/a\nb',
    '/a\u0000b',
    '/\u00e9t\u00e9',
    '/a"b',
    "/a'b",
    '/a<b>',
    '/a\\b',
    '~/x',
    `/${'a'.repeat(300)}`,
  ];
  for (const p of badPaths) {
    assertUsage(['install', '--dir', p]);
    assertUsage(['install', '--node', p]);
    assertUsage(['uninstall', '--dir', p]);
  }
  assertUsage(['install', '--node', `/${'n'.repeat(130)}`]); // must fit on a #! line
  for (const g of ['', '1abc', '-g', 'a b', 'a"b', "a'b", 'wheel")||true||("', 'a\nb', 'gr\u00fcn', 'a'.repeat(33), 'a/b']) {
    assertUsage(['install', '--group', g]);
  }
  for (const argv of [
    ['install', '--dir'],
    ['install', '--dir', '/a', '--dir', '/b'],
    ['install', '--dir=/a'],
    ['install', '--prefix', '/a'],
    ['install', '/a'],
    ['install', '--group', 'plugdev', 'extra'],
    ['uninstall', '--group', 'plugdev'],
    ['uninstall', '--node', '/usr/bin/node'],
  ]) {
    assertUsage(argv);
  }
});

test('quote() and formatError() keep messages on one printable line', () => {
  assert.equal(quote('1;rm'), '"1;rm"');
  assert.equal(quote('a\nb"\\'), '"a\\u000ab\\"\\\\"');
  assert.match(quote('9'.repeat(400)), /\.\.\. \(400 chars\)$/);
  assert.equal(formatError('bad\nline', 'hint\u001b[31m'), 'remote-usb-helper: bad?line (hint?[31m)');
});

// ---------------------------------------------------------------------------------------------------
// vhci status parsing

test('parseStatus reads the hub/port/state columns of current kernels', () => {
  const text =
    'hub port sta spd dev      sockfd local_busid\n' +
    'hs  0000 004 000 00000000 000000 0-0\n' +
    'hs  0002 006 003 00010002 000000 2-3\n' +
    'ss  0015 004 000 00000000 000000 0-0\n';
  assert.deepEqual(parseStatus(text), [
    { port: 0, hub: 'hs', sta: 4, spd: 0, devid: 0, localBusid: '0-0' },
    { port: 2, hub: 'hs', sta: 6, spd: 3, devid: 0x10002, localBusid: '2-3' },
    { port: 15, hub: 'ss', sta: 4, spd: 0, devid: 0, localBusid: '0-0' },
  ]);
});

test('parseStatus reads the pre-4.13 format without a hub column', () => {
  const text =
    'port sta spd dev      socket           local_busid\n' +
    '0000 004 000 00000000 0000000000000000 0-0\n' +
    '0001 006 002 00030004 00000000c5a7bb80 1-2.3\n';
  const ports = parseStatus(text);
  assert.equal(ports.length, 2);
  assert.equal(ports[1].hub, undefined);
  assert.equal(ports[1].devid, 0x30004);
  assert.equal(ports[1].localBusid, '1-2.3');
});

test('parseStatus refuses what it does not understand (exit 1)', () => {
  for (const text of [
    '',
    'prt sta spd bus dev socket local_busid\n000 004 000 000 000 0000000000000000 0-0\n',
    'hub port sta spd dev      sockfd local_busid\nhs  0000 004 000\n',
    'hub port sta spd dev      sockfd local_busid\nxx  0000 004 000 00000000 000000 0-0\n',
    'hub port sta spd dev      sockfd local_busid\nhs  0000 004 000 0000000g 000000 0-0\n',
    'hub port sta spd dev      sockfd local_busid\nhs  0000 004 000 00000000 000000 ../x\n',
  ]) {
    assert.throws(() => parseStatus(text), (e: unknown) => e instanceof HelperError && e.exitCode === Exit.INTERNAL);
  }
});

test('readPorts merges status.N of every controller and caps at port 255', () => {
  const v = fakeVhci({ controllers: 3, hcPorts: 4, used: USED_2 });
  const ports = readPorts(v.dir);
  assert.deepEqual(
    ports.map((p) => p.port),
    Array.from({ length: 24 }, (_, i) => i),
  );
  assert.deepEqual(ports.slice(4, 8).map((p) => p.hub), ['ss', 'ss', 'ss', 'ss']);
  assert.deepEqual(ports.slice(8, 12).map((p) => p.hub), ['hs', 'hs', 'hs', 'hs']);
  const big = fakeVhci({ controllers: 9, hcPorts: 15 }); // 270 ports, as with many controllers
  assert.equal(readPorts(big.dir).at(-1)?.port, 255);
  const lines = formatStatus(readPorts(v.dir));
  assert.match(lines[0], /^port hub state +speed +devid +local_busid$/);
  assert.match(lines[3], /^2 +hs +used +high-speed 0x00010002 2-3$/);
});

// ---------------------------------------------------------------------------------------------------
// run() against a fake sysfs: every verb, good and bad

test('attach writes exactly "<port> 0 <devid> <speed>" and reports who asked', () => {
  const v = fakeVhci({ used: USED_2 });
  const h = fakeHost(v.dir);
  assert.equal(run(['attach', '3', '65538', '3'], h), Exit.OK);
  assert.equal(v.attach(), '3 0 65538 3');
  assert.equal(v.detach(), '');
  assert.deepEqual(h.errLines, []);
  assert.match(h.outLines[0], /^attached port 3 \(devid 65538, speed 3 high-speed, socket inode 4242\) for uid 1000 via pkexec$/);
  assert.equal(attachLine(7, 4294967295, 6), '7 0 4294967295 6');
});

test('attach matches the speed to the port hub: 1-4 on hs ports, 5-6 on ss ports', () => {
  const ok: [string, string][] = [
    ['0', '1'],
    ['1', '2'],
    ['2', '3'],
    ['3', '4'],
    ['4', '5'],
    ['7', '6'],
  ];
  for (const [port, speed] of ok) {
    const v = fakeVhci();
    assert.equal(run(['attach', port, '65538', speed], fakeHost(v.dir)), Exit.OK, `port ${port} speed ${speed}`);
    assert.equal(v.attach(), `${port} 0 65538 ${speed}`);
  }
  for (const [port, speed] of [
    ['1', '5'],
    ['3', '6'],
    ['4', '3'],
    ['6', '1'],
  ]) {
    const v = fakeVhci();
    const h = fakeHost(v.dir);
    assert.equal(run(['attach', port, '65538', speed], h), Exit.USAGE);
    assert.match(oneError(h), /needs a (super|high)-speed/);
    assert.equal(v.attach(), '');
  }
  // second controller: ports 8-11 hs, 12-15 ss
  const v = fakeVhci({ controllers: 2 });
  assert.equal(run(['attach', '13', '65538', '5'], fakeHost(v.dir)), Exit.OK);
  assert.equal(v.attach(), '13 0 65538 5');
});

test('attach refuses ports this machine does not have (2), busy ports (5), and writes nothing', () => {
  const v = fakeVhci({ used: USED_2 });
  let h = fakeHost(v.dir);
  assert.equal(run(['attach', '8', '65538', '3'], h), Exit.USAGE);
  assert.match(oneError(h), /port 8 is not a vhci port on this machine \(valid ports here: 0\.\.7/);
  h = fakeHost(v.dir);
  assert.equal(run(['attach', '2', '65538', '3'], h), Exit.REFUSED);
  assert.match(oneError(h), /port 2 is busy \(used\)/);
  assert.equal(v.attach(), '');
});

test('attach: argument errors (2) come before stdin (3), stdin before root (6), root before vhci (4)', () => {
  const v = fakeVhci();
  const notSocket: StdinVerdict = { ok: false, reason: 'fd 0 is a pipe: pipe:[1]' };
  let h = fakeHost(v.dir, { stdin: notSocket, root: false });
  assert.equal(run(['attach', '1;rm', '65538', '3'], h), Exit.USAGE);
  h = fakeHost(v.dir, { stdin: notSocket, root: false });
  assert.equal(run(['attach', '1', '65538', '3'], h), Exit.NOT_SOCKET);
  assert.match(oneError(h), /^remote-usb-helper: fd 0 is a pipe: pipe:\[1\] \(pass one end of a connected AF_UNIX SOCK_STREAM/);
  h = fakeHost(v.dir, { root: false });
  assert.equal(run(['attach', '1', '65538', '3'], h), Exit.NOT_ROOT);
  assert.match(oneError(h), /attach must run as root \(run it through pkexec/);
  h = fakeHost(path.join(v.dir, 'missing'));
  assert.equal(run(['attach', '1', '65538', '3'], h), Exit.NO_VHCI);
  assert.match(oneError(h), /vhci_hcd is not loaded .*run `remote-usb-helper load` or `sudo modprobe vhci-hcd`/);
  assert.equal(v.attach(), '');
});

test('no malformed command line writes anything, runs modprobe or reads the helper source', () => {
  const v = fakeVhci({ used: USED_2 });
  const lines: string[][] = [];
  for (const bad of BAD_NUMBERS) {
    lines.push(['attach', bad, '65538', '3'], ['attach', '3', bad, '3'], ['attach', '3', '65538', bad], ['detach', bad]);
  }
  lines.push(['attach', '3', '65538', '3', '3'], ['detach', '2', '2'], ['load', 'x'], ['install', '--dir', '/tmp/../etc'], ['uninstall', 'x']);
  for (const argv of lines) {
    const h = fakeHost(v.dir);
    assert.equal(run(argv, h), Exit.USAGE, JSON.stringify(argv));
    oneError(h);
    assert.deepEqual(h.outLines, []);
    assert.equal(h.modprobeCalls, 0);
    assert.equal(h.sourceCalls, 0);
  }
  assert.equal(v.attach(), '');
  assert.equal(v.detach(), '');
});

test('attach never creates a missing attach file nor writes through a symlink', () => {
  const v = fakeVhci();
  fs.unlinkSync(path.join(v.dir, 'attach'));
  let h = fakeHost(v.dir);
  assert.equal(run(['attach', '1', '65538', '3'], h), Exit.NO_VHCI);
  assert.equal(fs.existsSync(path.join(v.dir, 'attach')), false);

  const victim = path.join(path.dirname(v.dir), 'victim');
  fs.writeFileSync(victim, 'untouched');
  fs.symlinkSync(victim, path.join(v.dir, 'attach'));
  h = fakeHost(v.dir);
  assert.equal(run(['attach', '1', '65538', '3'], h), Exit.REFUSED);
  assert.match(oneError(h), /ELOOP/);
  assert.equal(fs.readFileSync(victim, 'utf8'), 'untouched');
});

test('a refused kernel write is exit 5 with the errno in the message', () => {
  const v = fakeVhci();
  fs.unlinkSync(path.join(v.dir, 'attach'));
  fs.mkdirSync(path.join(v.dir, 'attach')); // open(O_WRONLY) -> EISDIR
  const h = fakeHost(v.dir);
  assert.equal(run(['attach', '1', '65538', '3'], h), Exit.REFUSED);
  assert.match(oneError(h), /EISDIR/);
});

test('detach writes the port; free port is 8, unknown port 2, not root 6, no vhci 4', () => {
  const v = fakeVhci({ used: USED_2 });
  let h = fakeHost(v.dir);
  assert.equal(run(['detach', '2'], h), Exit.OK);
  assert.equal(v.detach(), '2');
  assert.match(h.outLines[0], /^detached port 2 for uid 1000 via pkexec$/);

  const w = fakeVhci({ used: USED_2 });
  h = fakeHost(w.dir);
  assert.equal(run(['detach', '3'], h), Exit.NOT_ATTACHED);
  assert.match(oneError(h), /port 3 has nothing attached/);
  h = fakeHost(w.dir);
  assert.equal(run(['detach', '200'], h), Exit.USAGE);
  h = fakeHost(w.dir, { root: false });
  assert.equal(run(['detach', '2'], h), Exit.NOT_ROOT);
  h = fakeHost(path.join(w.dir, 'missing'));
  assert.equal(run(['detach', '2'], h), Exit.NO_VHCI);
  assert.equal(w.detach(), '');
  assert.equal(w.attach(), '');
});

// ---------------------------------------------------------------------------------------------------
// Port ownership (issue #12, item 7): a user may detach only what they attached; root anything.

const ALICE = 1000;
const BOB = 1001;

/** What the kernel's status shows after our attach (the fake sysfs does not react to writes). */
function showUsed(v: FakeVhci, used: Map<number, UsedPort>): void {
  fs.writeFileSync(path.join(v.dir, 'status'), statusText(0, 4, used));
  fs.writeFileSync(path.join(v.dir, 'detach'), '');
}
const ownersOf = (v: FakeVhci): string => path.join(path.dirname(v.dir), 'run-remote-usb-helper');

test('ownership: attached as uid A, a detach as uid B is exit 9 and writes nothing; A and root may detach', () => {
  const v = fakeVhci();
  let h = fakeHost(v.dir, { uid: ALICE });
  assert.equal(run(['attach', '1', '65538', '3'], h), Exit.OK, h.errLines.join('\n'));
  const dir = ownersOf(v);
  assert.equal(fs.statSync(dir).mode & 0o777, 0o700);
  assert.equal(fs.statSync(path.join(dir, 'port-1')).mode & 0o777, 0o600);
  assert.deepEqual(JSON.parse(fs.readFileSync(path.join(dir, 'port-1'), 'utf8')), { port: 1, uid: ALICE, devid: 65538, speed: 3 });
  showUsed(v, new Map([[1, { spd: 3, devid: 65538, busid: '3-2' }]]));

  h = fakeHost(v.dir, { uid: BOB });
  assert.equal(run(['detach', '1'], h), Exit.NOT_OWNER);
  assert.equal(oneError(h), `remote-usb-helper: port 1 was attached by uid ${ALICE}, not by uid ${BOB} (only the user who attached it may detach it, or root: sudo remote-usb-helper detach 1)`);
  assert.equal(v.detach(), '', 'nothing written to detach');

  h = fakeHost(v.dir, { uid: ALICE });
  assert.equal(run(['detach', '1'], h), Exit.OK, h.errLines.join('\n'));
  assert.equal(v.detach(), '1');
  assert.equal(fs.existsSync(path.join(dir, 'port-1')), false, 'the record goes with the detach');

  // root (PKEXEC_UID unset or 0) may detach another user's port
  h = fakeHost(v.dir, { uid: ALICE });
  showUsed(v, new Map());
  assert.equal(run(['attach', '2', '65539', '2'], h), Exit.OK);
  showUsed(v, new Map([[2, { spd: 2, devid: 65539, busid: '3-3' }]]));
  h = fakeHost(v.dir, { uid: 0 });
  assert.equal(run(['detach', '2'], h), Exit.OK, h.errLines.join('\n'));
  assert.equal(v.detach(), '2');
});

test('ownership: a port nobody recorded (usbip, an older helper) is root\'s to detach: a user gets 9', () => {
  const v = fakeVhci({ used: USED_2 });
  let h = fakeHost(v.dir, { uid: ALICE });
  assert.equal(run(['detach', '2'], h), Exit.NOT_OWNER);
  assert.match(oneError(h), /port 2 was not attached by uid 1000 through remote-usb-helper/);
  assert.equal(v.detach(), '');
  h = fakeHost(v.dir, { uid: 0 });
  assert.equal(run(['detach', '2'], h), Exit.OK);
  assert.equal(v.detach(), '2');
});

test('ownership: a stale record (port freed, another device there now) never blocks and is pruned', () => {
  const v = fakeVhci();
  const dir = ownersOf(v);
  assert.equal(run(['attach', '1', '65538', '3'], fakeHost(v.dir, { uid: ALICE })), Exit.OK);
  // Alice's device left (connection closed); root attached another device on port 1 outside the helper
  showUsed(v, new Map([[1, { spd: 3, devid: 0x30004, busid: '3-2' }]]));
  let h = fakeHost(v.dir, { uid: ALICE });
  assert.equal(run(['detach', '1'], h), Exit.NOT_OWNER, 'the record no longer matches what vhci shows');
  assert.equal(v.detach(), '');
  // the port is free again: Bob may attach there, and his record replaces Alice's
  showUsed(v, new Map());
  h = fakeHost(v.dir, { uid: BOB });
  assert.equal(run(['attach', '1', '65540', '3'], h), Exit.OK, h.errLines.join('\n'));
  assert.equal(JSON.parse(fs.readFileSync(path.join(dir, 'port-1'), 'utf8')).uid, BOB);
  // an attach elsewhere prunes every record vhci does not bear out (port 1 is free in this status)
  showUsed(v, new Map([[1, { spd: 3, devid: 65540, busid: '3-2' }]]));
  fs.writeFileSync(path.join(dir, 'port-3'), JSON.stringify({ port: 3, uid: ALICE, devid: 1, speed: 3 }) + '\n');
  h = fakeHost(v.dir, { uid: ALICE });
  assert.equal(run(['attach', '2', '65541', '3'], h), Exit.OK);
  assert.deepEqual(fs.readdirSync(dir).sort(), ['port-1', 'port-2'], 'the stale record for port 3 was pruned; Bob\'s holds');
});

test('ownership: the state directory must be root\'s own 0700 directory; a symlink is never followed', () => {
  // a symlink where the directory should be: the attach is taken back (detach written) and fails with 1
  let v = fakeVhci();
  const elsewhere = tmpdir('elsewhere');
  fs.symlinkSync(elsewhere, ownersOf(v));
  let h = fakeHost(v.dir, { uid: ALICE });
  assert.equal(run(['attach', '1', '65538', '3'], h), Exit.INTERNAL);
  assert.match(oneError(h), /attached port 1 but could not record who attached it \(unsafe state directory .*: a symlink\); detached it again/);
  assert.equal(v.detach(), '1');
  assert.deepEqual(fs.readdirSync(elsewhere), []);
  // root's detach still works, and prunes nothing through the link
  fs.writeFileSync(path.join(elsewhere, 'port-1'), 'not ours\n');
  showUsed(v, new Map([[1, { spd: 3, devid: 65538, busid: '3-2' }]]));
  h = fakeHost(v.dir, { uid: 0 });
  assert.equal(run(['detach', '1'], h), Exit.OK, h.errLines.join('\n'));
  assert.deepEqual(fs.readdirSync(elsewhere), ['port-1']);

  // group/other access is refused too
  v = fakeVhci();
  fs.mkdirSync(ownersOf(v), { mode: 0o755 });
  fs.chmodSync(ownersOf(v), 0o755);
  h = fakeHost(v.dir, { uid: ALICE });
  assert.equal(run(['attach', '1', '65538', '3'], h), Exit.INTERNAL);
  assert.match(oneError(h), /mode 755/);

  // a record that is a symlink to a forged record is not read: Bob cannot borrow it
  v = fakeVhci();
  fs.mkdirSync(ownersOf(v), { mode: 0o700 });
  const forged = path.join(tmpdir('forged'), 'rec');
  fs.writeFileSync(forged, JSON.stringify({ port: 1, uid: BOB, devid: 65538, speed: 3 }));
  fs.symlinkSync(forged, path.join(ownersOf(v), 'port-1'));
  showUsed(v, new Map([[1, { spd: 3, devid: 65538, busid: '3-2' }]]));
  h = fakeHost(v.dir, { uid: BOB });
  assert.equal(run(['detach', '1'], h), Exit.NOT_OWNER);
  assert.equal(v.detach(), '');
});

test('ownership: records are parsed strictly', () => {
  assert.deepEqual(parseRecord('{"port":1,"uid":1000,"devid":65538,"speed":3}'), { port: 1, uid: 1000, devid: 65538, speed: 3 });
  for (const bad of ['', 'x', '[]', 'null', '{"port":1,"uid":1000,"devid":65538}', '{"port":1,"uid":-1,"devid":65538,"speed":3}',
    '{"port":1,"uid":"1000","devid":65538,"speed":3}', '{"port":1,"uid":1000,"devid":65538,"speed":3,"x":1}', '{"port":256,"uid":1,"devid":1,"speed":3}',
    '{"port":1,"uid":1.5,"devid":1,"speed":3}']) {
    assert.equal(parseRecord(bad), undefined, bad);
  }
  assert.equal(formatRecord({ port: 7, uid: 0, devid: 1, speed: 5 }), '{"port":7,"uid":0,"devid":1,"speed":5}\n');
});

test('status prints the table read-only, without root; 4 without vhci', () => {
  const v = fakeVhci({ used: USED_2 });
  let h = fakeHost(v.dir, { root: false });
  assert.equal(run(['status'], h), Exit.OK);
  assert.equal(h.outLines.length, 9);
  assert.equal(v.attach(), '');
  h = fakeHost(path.join(v.dir, 'missing'));
  assert.equal(run(['status'], h), Exit.NO_VHCI);
});

test('load runs modprobe only when vhci_hcd.0 is missing and reports its failure as 4', () => {
  const v = fakeVhci();
  let h = fakeHost(v.dir);
  assert.equal(run(['load'], h), Exit.OK);
  assert.equal(h.modprobeCalls, 0);
  assert.deepEqual(h.outLines, ['vhci_hcd is already loaded']);

  const missing = path.join(v.dir, 'later');
  h = fakeHost(missing);
  assert.equal(run(['load'], h), Exit.NO_VHCI);
  assert.equal(h.modprobeCalls, 1);
  assert.match(oneError(h), /modprobe vhci-hcd failed \(exit 1: modprobe: FATAL: Module vhci-hcd not found\) \(is the module installed/);

  h = fakeHost(missing, {
    modprobe: () => {
      fs.mkdirSync(missing);
      return { status: 0, stderr: '' };
    },
  });
  assert.equal(run(['load'], h), Exit.OK);
  assert.deepEqual(h.outLines, ['loaded vhci-hcd']);

  h = fakeHost(path.join(v.dir, 'never'), { root: false });
  assert.equal(run(['load'], h), Exit.NOT_ROOT);
  assert.equal(h.modprobeCalls, 0);

  const enoent = Object.assign(new Error('spawnSync /sbin/modprobe ENOENT'), { code: 'ENOENT', errno: -2 });
  assert.throws(
    () => loadVhci(path.join(v.dir, 'never'), () => ({ status: null, error: enoent, stderr: '' })),
    (e: unknown) => e instanceof HelperError && e.exitCode === Exit.NO_VHCI && /cannot run modprobe: ENOENT/.test(e.what),
  );
  assert.throws(
    () => loadVhci(path.join(v.dir, 'never'), () => ({ status: 0, stderr: '' }), 100),
    (e: unknown) => e instanceof HelperError && e.exitCode === Exit.NO_VHCI && /did not appear/.test(e.what),
  );
});

test('help and version', () => {
  let h = fakeHost('/nonexistent', { root: false });
  assert.equal(run(['version'], h), Exit.OK);
  assert.deepEqual(h.outLines, [`remote-usb-helper ${HELPER_VERSION}`]);
  h = fakeHost('/nonexistent', { root: false });
  assert.equal(run(['help'], h), Exit.OK);
  assert.match(h.outLines[0], /attach <port> <devid> <speed>/);
});

// ---------------------------------------------------------------------------------------------------
// fd 0 check, pure

const UNIX_HEADER = 'Num       RefCount Protocol Flags    Type St Inode Path\n';
function unixLine(inode: number, type: string, st: string, flags = '00000000', p = ''): string {
  return `00000000aa9c82ab: 00000003 00000000 ${flags} ${type} ${st}  ${inode}${p ? ` ${p}` : ''}\n`;
}

test('checkStdinSocket accepts only a connected AF_UNIX SOCK_STREAM socket', () => {
  const table =
    UNIX_HEADER +
    unixLine(100, '0001', '03') +
    unixLine(101, '0001', '03', '00000000', '/tmp/x/s') +
    unixLine(102, '0002', '03') +
    unixLine(103, '0005', '03') +
    unixLine(104, '0001', '01', '00010000', '/tmp/x/s') +
    unixLine(105, '0001', '01') +
    '0000000a: 00000002 00000000 00000000 0001 03 106\n'; // 32-bit kernel pointer width
  assert.deepEqual(checkStdinSocket('socket:[100]', table), { ok: true, inode: 100 });
  assert.deepEqual(checkStdinSocket('socket:[101]', table), { ok: true, inode: 101 });
  assert.deepEqual(checkStdinSocket('socket:[106]', table), { ok: true, inode: 106 });
  const refused: [string | null, RegExp][] = [
    [null, /closed/],
    ['pipe:[77]', /fd 0 is a pipe/],
    ['/dev/null', /not a socket: \/dev\/null/],
    ['/home/u/file', /not a socket/],
    ['anon_inode:[eventfd]', /not a socket/],
    ['socket:[102]', /SOCK_DGRAM/],
    ['socket:[103]', /SOCK_SEQPACKET/],
    ['socket:[104]', /listening/],
    ['socket:[105]', /not connected/],
    ['socket:[999]', /not an AF_UNIX socket/],
    ['socket:[100] ', /not a socket/],
    ['socket:[abc]', /not a socket/],
  ];
  for (const [link, re] of refused) {
    const v = checkStdinSocket(link, table);
    assert.equal(v.ok, false, String(link));
    if (!v.ok) assert.match(v.reason, re);
  }
});

test('checkStdinSocket is not fooled by a forged line inside a bound path', () => {
  // A unix socket bound to a path containing "\n<fake line>" puts a second line with our inode in the
  // table: a datagram socket must not be made to look like a connected stream socket.
  const forged = unixLine(555, '0001', '03').trimEnd();
  const table = UNIX_HEADER + unixLine(555, '0002', '03') + unixLine(556, '0001', '01', '00000000', `/tmp/evil\n${forged}`);
  assert.equal(parseProcNetUnix(table).filter((l) => l.inode === 555).length, 2);
  const v = checkStdinSocket('socket:[555]', table);
  assert.equal(v.ok, false);
  if (!v.ok) assert.match(v.reason, /ambiguous/);
});

// ---------------------------------------------------------------------------------------------------
// The real CLI as a child process, with real kinds of stdin

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

function runCli(args: string[], stdin: 'pipe' | 'ignore' | number | net.Socket, uid?: number): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      stdio: [stdin, 'pipe', 'pipe'],
      cwd: '/',
      env: { PATH: '/usr/bin:/bin', PKEXEC_UID: '1000' },
      ...(uid === undefined ? {} : { uid, gid: uid }),
    });
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Runs the CLI with an anonymous pipe (pipe(2)) as stdin: `: | node dist/helper.js ...`. */
function runCliThroughPipe(args: string[]): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('/bin/sh', ['-c', ': | exec "$@"', 'sh', process.execPath, CLI, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      cwd: '/',
      env: { PATH: '/usr/bin:/bin' },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** A connected pair of unix stream sockets, made as the extension makes it (private 0700 dir). */
async function unixPair(): Promise<{ server: net.Server; accepted: net.Socket; client: net.Socket; dir: string }> {
  const dir = tmpdir('pair');
  const sockPath = path.join(dir, 's');
  return new Promise((resolve, reject) => {
    let client: net.Socket;
    const server = net.createServer({ pauseOnConnect: true }, (accepted) => resolve({ server, accepted, client, dir }));
    server.on('error', reject);
    server.listen(sockPath, () => {
      client = net.connect(sockPath);
      client.pause();
      client.on('error', reject);
    });
  });
}

function closeAll(...things: (net.Server | net.Socket)[]): Promise<void> {
  return new Promise((resolve) => {
    for (const t of things) {
      if (t instanceof net.Socket) t.destroy();
    }
    const servers = things.filter((t): t is net.Server => t instanceof net.Server);
    let n = servers.length;
    if (n === 0) resolve();
    for (const s of servers) s.close(() => --n === 0 && resolve());
  });
}

function assertCliError(r: CliResult, code: number, re: RegExp): void {
  assert.equal(r.code, code, `stderr: ${r.stderr}`);
  assert.match(r.stderr, ERROR_LINE);
  assert.match(r.stderr, re);
  assert.equal(r.stdout, '');
}

test('CLI: a connected unix stream socket as stdin passes the fd 0 check (then 4: no vhci here; 6 unprivileged)', async (t) => {
  const { server, accepted, client } = await unixPair();
  try {
    if (IS_ROOT && !REAL_VHCI_PRESENT) {
      assertCliError(await runCli(['attach', '1', '65538', '3'], accepted), Exit.NO_VHCI, /vhci_hcd is not loaded/);
      assertCliError(await runCli(['attach', '1', '65538', '3'], client), Exit.NO_VHCI, /vhci_hcd is not loaded/);
    } else if (IS_ROOT) {
      t.diagnostic('vhci_hcd is loaded on this machine: not running the root CLI attach, it would really attach');
    }
    if (IS_ROOT) {
      assertCliError(await runCli(['attach', '1', '65538', '3'], accepted, NOBODY), Exit.NOT_ROOT, /attach must run as root/);
    } else {
      assertCliError(await runCli(['attach', '1', '65538', '3'], accepted), Exit.NOT_ROOT, /attach must run as root/);
    }
  } finally {
    await closeAll(accepted, client, server);
  }
});

test('CLI: a pipe, a file, /dev/null, a listening socket or a TCP socket as stdin is exit 3', async () => {
  // Node's stdio 'pipe' is a socketpair (libuv), i.e. a connected unix stream socket, so a real pipe
  // comes from the shell here.
  assertCliError(await runCliThroughPipe(['attach', '1', '65538', '3']), Exit.NOT_SOCKET, /fd 0 is a pipe: pipe:\[/);
  // (unprivileged, so that it stops at exit 6 even where vhci_hcd is loaded)
  const sp = await runCli(['attach', '1', '65538', '3'], 'pipe', IS_ROOT ? NOBODY : undefined);
  assertCliError(sp, Exit.NOT_ROOT, /attach must run as root/);
  assertCliError(await runCli(['attach', '1', '65538', '3'], 'ignore'), Exit.NOT_SOCKET, /not a socket: \/dev\/null/);

  const dir = tmpdir('stdin');
  const file = path.join(dir, 'f');
  fs.writeFileSync(file, '1 0 65538 3\n');
  const fd = fs.openSync(file, 'r');
  try {
    assertCliError(await runCli(['attach', '1', '65538', '3'], fd), Exit.NOT_SOCKET, /not a socket/);
  } finally {
    fs.closeSync(fd);
  }

  const { server, accepted, client } = await unixPair();
  try {
    // net.Server has no public fd; the listening socket's fd is the handle's.
    const listenFd = (server as unknown as { _handle: { fd: number } })._handle.fd;
    assert.ok(listenFd > 2);
    assertCliError(await runCli(['attach', '1', '65538', '3'], listenFd), Exit.NOT_SOCKET, /listening AF_UNIX socket/);
  } finally {
    await closeAll(accepted, client, server);
  }

  const tcpServer = net.createServer({ pauseOnConnect: true });
  await new Promise<void>((r) => tcpServer.listen(0, '127.0.0.1', r));
  const port = (tcpServer.address() as net.AddressInfo).port;
  const tcpAccepted = new Promise<net.Socket>((r) => tcpServer.once('connection', r));
  const tcpClient = net.connect(port, '127.0.0.1');
  await new Promise((r) => tcpClient.once('connect', r));
  const tcpPeer = await tcpAccepted;
  try {
    assertCliError(await runCli(['attach', '1', '65538', '3'], tcpClient), Exit.NOT_SOCKET, /not an AF_UNIX socket/);
  } finally {
    await closeAll(tcpClient, tcpPeer, tcpServer);
  }
});

test('CLI: malformed and injection-shaped arguments are exit 2, one line on stderr', async () => {
  for (const args of [
    ['attach', '1;rm', '65538', '3'],
    ['attach', '$(x)', '65538', '3'],
    ['attach', ' 1', '65538', '3'],
    ['attach', '01x', '65538', '3'],
    ['attach', '1', '99999999999999999999', '3'],
    ['attach', '1', '65538', '\u0663'],
    ['attach', '1', '65538', '3', 'extra'],
    ['detach', '../'],
    ['install', '--dir', '/tmp/../etc'],
    ['install', '--group', 'x");polkit.Result.YES;//'],
    [],
  ]) {
    assertCliError(await runCli(args, 'ignore'), Exit.USAGE, /./);
  }
});

test('CLI: status and detach as root on this machine without vhci_hcd are exit 4', { skip: !IS_ROOT || REAL_VHCI_PRESENT }, async () => {
  assertCliError(await runCli(['status'], 'ignore'), Exit.NO_VHCI, /run `remote-usb-helper load`/);
  assertCliError(await runCli(['detach', '0'], 'ignore'), Exit.NO_VHCI, /vhci_hcd is not loaded/);
});

test('CLI: privileged verbs as an unprivileged user are exit 6 and touch nothing', { skip: !IS_ROOT }, async () => {
  for (const args of [['detach', '0'], ['load'], ['install'], ['install', '--group', 'plugdev'], ['uninstall']]) {
    assertCliError(await runCli(args, 'ignore', NOBODY), Exit.NOT_ROOT, /must run as root/);
  }
  const r = await runCli(['version'], 'ignore', NOBODY);
  assert.equal(r.code, 0);
  assert.equal(r.stdout, `remote-usb-helper ${HELPER_VERSION}\n`);
});

test('launcher: a #! script with the node path runs the helper with the caller\'s arguments', async () => {
  const dir = tmpdir('launcher');
  const launcher = path.join(dir, 'remote-usb-helper');
  fs.writeFileSync(launcher, launcherScript(process.execPath, CLI), { mode: 0o755 });
  const run1 = await new Promise<CliResult>((resolve, reject) => {
    const child = spawn(launcher, ['attach', '1', '65538', '3'], { stdio: ['ignore', 'pipe', 'pipe'], env: {} });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
  assertCliError(run1, Exit.NOT_SOCKET, /fd 0 is not a socket: \/dev\/null/);
});

// ---------------------------------------------------------------------------------------------------
// install / uninstall into a temporary tree

const ROOT_DIR_STAT: StatLike = {
  uid: 0,
  mode: 0o040755,
  isSymbolicLink: () => false,
  isDirectory: () => true,
  isFile: () => false,
};

/** Real lstat inside `root`; the directories above it (/, /tmp) are taken as root-owned 0755. When the
 * tests do not run as root, files of the test user count as root's. */
function treeProbe(root: string): FsProbe {
  const above = new Set<string>();
  for (let p = path.dirname(root); ; p = path.dirname(p)) {
    above.add(p);
    if (p === '/') break;
  }
  const me = process.getuid?.() ?? 0;
  return {
    lstat: (p) => {
      if (above.has(p)) return ROOT_DIR_STAT;
      const st = fs.lstatSync(p);
      if (me === 0) return st;
      return {
        uid: st.uid === me ? 0 : st.uid,
        mode: st.mode,
        isSymbolicLink: () => st.isSymbolicLink(),
        isDirectory: () => st.isDirectory(),
        isFile: () => st.isFile(),
      };
    },
    readlink: (p) => fs.readlinkSync(p),
  };
}

interface Tree {
  root: string;
  node: string;
  dir: string;
  policyPath: string;
  rulesPath: string;
  probe: FsProbe;
}

function makeTree(): Tree {
  const root = tmpdir('install');
  fs.chmodSync(root, 0o755);
  for (const d of ['bin', 'actions', 'rules.d']) fs.mkdirSync(path.join(root, d), { mode: 0o755 });
  const node = path.join(root, 'bin/node');
  fs.writeFileSync(node, '#!/bin/false\n', { mode: 0o755 });
  fs.chmodSync(node, 0o755);
  return {
    root,
    node,
    dir: path.join(root, 'libexec/remote-usb'),
    policyPath: path.join(root, 'actions/dev.remoteusb.helper.policy'),
    rulesPath: path.join(root, 'rules.d/49-remote-usb.rules'),
    probe: treeProbe(root),
  };
}

const SOURCE = Buffer.from('// the bundled helper\n');

function assertInstallRefused(fn: () => unknown, re: RegExp, code: number = Exit.INSTALL, name = ''): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof HelperError, String(e));
    assert.equal(e.exitCode, code, e.message);
    assert.match(e.what, re);
    return true;
  }, name);
}

function listTree(root: string): string[] {
  return (fs.readdirSync(root, { recursive: true }) as string[]).sort();
}

test('install writes the helper, launcher, manifest, policy and rule; uninstall removes exactly those', () => {
  const t = makeTree();
  const before = listTree(t.root);
  const r = install({ dir: t.dir, node: t.node, group: 'plugdev', helperSource: SOURCE, policyPath: t.policyPath, rulesPath: t.rulesPath, probe: t.probe });
  const launcher = path.join(t.dir, 'remote-usb-helper');
  const helperJs = path.join(t.dir, 'helper.js');
  assert.deepEqual(r.written, [
    `${t.root}/libexec/`,
    `${t.dir}/`,
    helperJs,
    launcher,
    path.join(t.dir, 'install.json'),
    t.policyPath,
    t.rulesPath,
  ]);
  const mode = (p: string): number => fs.statSync(p).mode & 0o7777;
  assert.equal(mode(t.dir), 0o755);
  assert.equal(mode(path.dirname(t.dir)), 0o755);
  assert.equal(mode(helperJs), 0o755);
  assert.equal(mode(launcher), 0o755);
  assert.equal(mode(t.policyPath), 0o644);
  assert.equal(mode(t.rulesPath), 0o644);
  if (IS_ROOT) for (const p of [t.dir, helperJs, launcher, t.policyPath, t.rulesPath]) assert.equal(fs.statSync(p).uid, 0);
  assert.deepEqual(fs.readFileSync(helperJs), SOURCE);
  const launcherText = fs.readFileSync(launcher, 'utf8');
  assert.ok(launcherText.startsWith(`#!${t.node}\n`));
  assert.ok(launcherText.includes(`require(${JSON.stringify(helperJs)});`));
  const policy = fs.readFileSync(t.policyPath, 'utf8');
  assert.equal(policyExecPath(policy), launcher);
  for (const needle of [
    `<action id="${ACTION_ID}">`,
    '<allow_any>no</allow_any>',
    '<allow_inactive>no</allow_inactive>',
    '<allow_active>auth_admin_keep</allow_active>',
    '<annotate key="org.freedesktop.policykit.exec.allow_gui">true</annotate>',
  ]) {
    assert.ok(policy.includes(needle), needle);
  }
  const rules = fs.readFileSync(t.rulesPath, 'utf8');
  assert.ok(rules.includes(`action.id == "${ACTION_ID}" && subject.active && subject.local && subject.isInGroup("plugdev")`));
  assert.ok(rules.includes('return polkit.Result.YES;'));
  assert.deepEqual(JSON.parse(fs.readFileSync(path.join(t.dir, 'install.json'), 'utf8')).createdDirs, [path.dirname(t.dir), t.dir]);

  // installing again (e.g. an update) is fine and keeps the record of created directories
  install({ dir: t.dir, node: t.node, group: 'plugdev', helperSource: SOURCE, policyPath: t.policyPath, rulesPath: t.rulesPath, probe: t.probe });

  const u = uninstall({ dir: t.dir, policyPath: t.policyPath, rulesPath: t.rulesPath, probe: t.probe });
  assert.deepEqual(u.notes, []);
  assert.deepEqual(listTree(t.root), before);
});

test('uninstall leaves directories that hold other files, and foreign files', () => {
  const t = makeTree();
  install({ dir: t.dir, node: t.node, helperSource: SOURCE, policyPath: t.policyPath, rulesPath: t.rulesPath, probe: t.probe });
  fs.writeFileSync(path.join(t.dir, 'notes.txt'), 'mine');
  fs.writeFileSync(t.rulesPath, '// hand-written\n');
  const u = uninstall({ dir: t.dir, policyPath: t.policyPath, rulesPath: t.rulesPath, probe: t.probe });
  assert.deepEqual(fs.readdirSync(t.dir), ['notes.txt']);
  assert.equal(fs.readFileSync(t.rulesPath, 'utf8'), '// hand-written\n');
  assert.equal(fs.existsSync(t.policyPath), false);
  assert.ok(u.notes.some((n) => n.includes('not empty')));
  assert.ok(u.notes.some((n) => n.includes(`left ${t.rulesPath}`)));
});

test('install without --group removes the rule an earlier --group install wrote', () => {
  const t = makeTree();
  const o = { dir: t.dir, node: t.node, helperSource: SOURCE, policyPath: t.policyPath, rulesPath: t.rulesPath, probe: t.probe };
  install({ ...o, group: 'plugdev' });
  assert.ok(fs.existsSync(t.rulesPath));
  const r = install(o);
  assert.deepEqual(r.removed, [t.rulesPath]);
  assert.equal(fs.existsSync(t.rulesPath), false);
});

test('install refuses a group/world-writable or non-root directory on the way, naming it, writing nothing', () => {
  const cases: [string, (t: Tree) => void, RegExp][] = [
    ['world-writable parent', (t) => { fs.mkdirSync(path.join(t.root, 'libexec')); fs.chmodSync(path.join(t.root, 'libexec'), 0o777); }, /libexec \(on the path to the install directory .*\) is writable by group or others \(mode 0777\)/],
    ['group-writable parent', (t) => { fs.mkdirSync(path.join(t.root, 'libexec')); fs.chmodSync(path.join(t.root, 'libexec'), 0o775); }, /libexec .* is writable by group or others \(mode 0775\)/],
    ['world-writable install dir', (t) => { fs.mkdirSync(t.dir, { recursive: true }); fs.chmodSync(t.dir, 0o757); }, /remote-usb .* is writable by group or others \(mode 0757\)/],
    ['writable tree root', (t) => fs.chmodSync(t.root, 0o777), /rusb-install-[^ ]+ \(on the path to the node binary .*\) is writable by group or others/],
    ['group-writable node', (t) => fs.chmodSync(t.node, 0o775), /bin\/node \(on the path to the node binary .*\) is writable by group or others \(mode 0775\)/],
    ['world-writable node dir', (t) => fs.chmodSync(path.join(t.root, 'bin'), 0o1777), /bin \(on the path to the node binary .*\) is writable by group or others \(mode 1777\)/],
    ['node not executable', (t) => fs.chmodSync(t.node, 0o644), /is not executable/],
    ['node missing', (t) => fs.unlinkSync(t.node), /bin\/node .* does not exist/],
    ['node is a directory', (t) => { fs.unlinkSync(t.node); fs.mkdirSync(t.node); }, /is not a regular file/],
    ['install dir is a file', (t) => { fs.mkdirSync(path.dirname(t.dir)); fs.writeFileSync(t.dir, ''); }, /is not a directory/],
  ];
  if (IS_ROOT) {
    cases.push(
      ['parent owned by a user', (t) => { fs.mkdirSync(path.join(t.root, 'libexec')); fs.chownSync(path.join(t.root, 'libexec'), 1000, 1000); }, /libexec .* is not owned by root \(uid 1000\)/],
      ['node owned by a user', (t) => fs.chownSync(t.node, 1000, 1000), /bin\/node .* is not owned by root \(uid 1000\)/],
    );
  }
  for (const [name, spoil, re] of cases) {
    const t = makeTree();
    spoil(t);
    const before = listTree(t.root);
    assertInstallRefused(
      () => install({ dir: t.dir, node: t.node, group: 'plugdev', helperSource: SOURCE, policyPath: t.policyPath, rulesPath: t.rulesPath, probe: t.probe }),
      re,
      Exit.INSTALL,
      name,
    );
    assert.deepEqual(listTree(t.root), before, name);
  }
});

test('install follows symlinks and checks every directory they lead through', () => {
  const t = makeTree();
  fs.mkdirSync(path.join(t.root, 'opt/node/bin'), { recursive: true, mode: 0o755 });
  const real = path.join(t.root, 'opt/node/bin/node');
  fs.renameSync(t.node, real);
  fs.symlinkSync('../opt/./node/bin/../bin/node', t.node); // relative, with . and ..
  install({ dir: t.dir, node: t.node, helperSource: SOURCE, policyPath: t.policyPath, rulesPath: t.rulesPath, probe: t.probe });
  assert.ok(fs.readFileSync(path.join(t.dir, 'remote-usb-helper'), 'utf8').startsWith(`#!${t.node}\n`));

  const u = makeTree();
  fs.mkdirSync(path.join(u.root, 'unsafe'), { mode: 0o777 });
  fs.chmodSync(path.join(u.root, 'unsafe'), 0o777);
  fs.renameSync(u.node, path.join(u.root, 'unsafe/node'));
  fs.symlinkSync(path.join(u.root, 'unsafe/node'), u.node);
  assertInstallRefused(
    () => install({ dir: u.dir, node: u.node, helperSource: SOURCE, policyPath: u.policyPath, rulesPath: u.rulesPath, probe: u.probe }),
    /unsafe \(on the path to the node binary .*\) is writable by group or others \(mode 0777\)/,
  );
});

test('walkTrusted: symlink loops, missing tails and .. are resolved like the kernel does', () => {
  const entries: Record<string, { dir?: true; link?: string; uid?: number; mode?: number }> = {
    '/': { dir: true },
    '/a': { dir: true },
    '/a/loop1': { link: 'loop2' },
    '/a/loop2': { link: '/a/loop1' },
    '/a/up': { link: '../b' },
    '/b': { dir: true, mode: 0o777 },
    '/c': { dir: true },
    '/c/file': {},
  };
  const probe: FsProbe = {
    lstat: (p) => {
      const e = entries[p];
      if (!e) throw Object.assign(new Error(`ENOENT ${p}`), { code: 'ENOENT' });
      const kind = e.link ? 0o120000 : e.dir ? 0o040000 : 0o100000;
      return {
        uid: e.uid ?? 0,
        mode: kind | (e.mode ?? (e.link ? 0o777 : 0o755)),
        isSymbolicLink: () => !!e.link,
        isDirectory: () => !!e.dir,
        isFile: () => !e.link && !e.dir,
      };
    },
    readlink: (p) => entries[p].link ?? '',
  };
  const opts = { role: 'x', hint: 'h' };
  assertInstallRefused(() => walkTrusted('/a/loop1/x', probe, opts), /too many symbolic links/);
  assertInstallRefused(() => walkTrusted('/a/up/x', probe, opts), /^unsafe install: \/b \(on the path to x\) is writable/);
  assertInstallRefused(() => walkTrusted('/c/file/x', probe, { ...opts, allowMissing: true }), /\/c\/file .* is not a directory/);
  assert.deepEqual(walkTrusted('/c/new/deeper', probe, { ...opts, allowMissing: true }), { real: '/c', missing: ['new', 'deeper'] });
  assert.deepEqual(walkTrusted('/c/file', probe, opts), { real: '/c/file', missing: [] });
  assertInstallRefused(() => walkTrusted('/c/nope', probe, opts), /does not exist/);
});

test('install into the real /tmp is refused: /tmp is world-writable', { skip: (fs.statSync(os.tmpdir()).mode & 0o002) === 0 }, () => {
  const t = makeTree();
  assertInstallRefused(
    () => install({ dir: t.dir, node: process.execPath, helperSource: SOURCE, policyPath: t.policyPath, rulesPath: t.rulesPath, probe: realProbe }),
    new RegExp(`^unsafe install: ${os.tmpdir()} \\(on the path to the`),
  );
  assert.equal(fs.existsSync(t.dir), false);
});

test('install refuses when polkit is missing or a foreign file is in the way', () => {
  let t = makeTree();
  fs.rmdirSync(path.join(t.root, 'actions'));
  assertInstallRefused(
    () => install({ dir: t.dir, node: t.node, helperSource: SOURCE, policyPath: t.policyPath, rulesPath: t.rulesPath, probe: t.probe }),
    /polkit directory .*actions is missing/,
  );
  assert.equal(fs.existsSync(t.dir), false);

  t = makeTree();
  fs.writeFileSync(t.policyPath, '<policyconfig/>');
  assertInstallRefused(
    () => install({ dir: t.dir, node: t.node, helperSource: SOURCE, policyPath: t.policyPath, rulesPath: t.rulesPath, probe: t.probe }),
    /exists and was not written by remote-usb-helper/,
  );
  assert.equal(fs.readFileSync(t.policyPath, 'utf8'), '<policyconfig/>');
  assert.equal(fs.existsSync(t.dir), false);

  t = makeTree();
  fs.writeFileSync(t.rulesPath, '// mine');
  assertInstallRefused(
    () => install({ dir: t.dir, node: t.node, group: 'plugdev', helperSource: SOURCE, policyPath: t.policyPath, rulesPath: t.rulesPath, probe: t.probe }),
    /49-remote-usb\.rules exists and was not written/,
  );
});

test('uninstall refuses a --dir that does not match the installed policy', () => {
  const t = makeTree();
  install({ dir: t.dir, node: t.node, helperSource: SOURCE, policyPath: t.policyPath, rulesPath: t.rulesPath, probe: t.probe });
  const other = path.join(t.root, 'elsewhere');
  assertInstallRefused(
    () => uninstall({ dir: other, policyPath: t.policyPath, rulesPath: t.rulesPath, probe: t.probe }),
    /belongs to an install in .*libexec\/remote-usb/,
    Exit.USAGE,
  );
  assert.ok(fs.existsSync(t.policyPath));
  assert.deepEqual(uninstall({ dir: other, policyPath: path.join(t.root, 'none'), rulesPath: path.join(t.root, 'none2'), probe: t.probe }).notes, ['nothing to uninstall']);
});

test('run(): install and uninstall need root (6) and valid flags (2) before anything is read or written', () => {
  const t = makeTree();
  let h = fakeHost('/nonexistent', { root: false, installRoot: t.root });
  assert.equal(run(['install', '--group', 'plugdev'], h), Exit.NOT_ROOT);
  assert.equal(h.sourceCalls, 0);
  h = fakeHost('/nonexistent', { root: false, installRoot: t.root });
  assert.equal(run(['uninstall'], h), Exit.NOT_ROOT);
  h = fakeHost('/nonexistent', { installRoot: t.root });
  assert.equal(run(['install', '--group', 'a;b'], h), Exit.USAGE);
  assert.equal(h.sourceCalls, 0);
  assert.equal(fs.existsSync(path.join(t.root, 'libexec')), false);

  h = fakeHost('/nonexistent', { installRoot: t.root });
  assert.equal(run(['install', '--group', 'plugdev'], h), Exit.OK, h.errLines.join('\n'));
  assert.ok(h.outLines.includes(`wrote ${t.rulesPath}`));
  h = fakeHost('/nonexistent', { installRoot: t.root });
  assert.equal(run(['uninstall'], h), Exit.OK, h.errLines.join('\n'));
  assert.ok(h.outLines.includes(`removed ${t.policyPath}`));
  assert.equal(fs.existsSync(path.join(t.root, 'libexec')), false);
});

test('polkit templates escape what they embed', () => {
  const xml = policyXml('/opt/a&b/remote-usb-helper');
  assert.ok(xml.includes('/opt/a&#38;b/remote-usb-helper'));
  assert.equal(policyExecPath(xml), '/opt/a&b/remote-usb-helper');
  assert.ok(xml.includes(MARKER));
  assert.ok(rulesJs('plugdev').startsWith(`// ${MARKER} --group plugdev;`));
  assert.ok(rulesJs('plug.dev-1').includes('subject.isInGroup("plug.dev-1")'));
});

test('the --group polkit rule says YES only to a group member in an active local session', () => {
  // evaluate the rule the way polkitd does: addRule(fn), then fn(action, subject)
  const rules: ((action: { id: string }, subject: object) => unknown)[] = [];
  const polkit = { Result: { YES: 'yes' }, addRule: (f: (typeof rules)[number]) => rules.push(f) };
  new Function('polkit', rulesJs('usbusers'))(polkit);
  assert.equal(rules.length, 1);
  const ask = (id: string, s: { active: boolean; local: boolean; group: string }): unknown =>
    rules[0]({ id }, { active: s.active, local: s.local, isInGroup: (g: string) => g === s.group });
  assert.equal(ask(ACTION_ID, { active: true, local: true, group: 'usbusers' }), 'yes');
  for (const [active, local] of [[false, true], [true, false], [false, false]]) {
    assert.equal(ask(ACTION_ID, { active, local, group: 'usbusers' }), undefined, `active ${active} local ${local}: the action's defaults decide`);
  }
  assert.equal(ask(ACTION_ID, { active: true, local: true, group: 'other' }), undefined);
  assert.equal(ask('org.example.other', { active: true, local: true, group: 'usbusers' }), undefined);
});
