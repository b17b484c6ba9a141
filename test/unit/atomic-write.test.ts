// The one atomic writer (helper/atomic-write.ts) on a nearly full disk (issue #12, item 4): write(2) that
// writes fewer bytes than asked, then ENOSPC; write(2) that writes nothing; a short write that the next call
// completes. The disk is simulated by replacing fs.writeSync (the bundled code reads it from the module at
// call time), so no mount is needed. Every case goes through the daemon's allowlist (TrustStore), the
// bench install's and the helper's entry points: the old file must stay whole, no temp file may be left,
// and the error must name the file.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, mock, test } from 'node:test';
import { AtomicWriteError, writeFileAtomic } from '../../helper/atomic-write.js';
import { HelperError } from '../../helper/errors.js';
import { installFile as helperInstallWrite } from '../../helper/install.js';
import { TrustStore } from '../../server/trust.js';

const dirs: string[] = [];
function tmp(): string {
  const d = fs.mkdtempSync(join(tmpdir(), 'rusb-atomic-'));
  dirs.push(d);
  return d;
}
afterEach(() => {
  mock.restoreAll();
  while (dirs.length) fs.rmSync(dirs.pop()!, { recursive: true, force: true });
});

const enospc = (): NodeJS.ErrnoException => Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', errno: -28, syscall: 'write' });

/** The disk fills up after `room` more bytes: a write past it is cut short, the next one fails with ENOSPC. */
function diskFullAfter(room: number): { calls: () => number } {
  const real = fs.writeSync;
  let left = room;
  const m = mock.method(fs, 'writeSync', (fd: number, buf: Uint8Array, off = 0, len = buf.length - off) => {
    if (left === 0) throw enospc();
    const n = Math.min(len, left);
    left -= n;
    return (real as (fd: number, b: Uint8Array, o: number, l: number) => number)(fd, buf, off, n);
  });
  return { calls: () => m.mock.callCount() };
}

function onlyFile(dir: string): string[] {
  return fs.readdirSync(dir).sort();
}

test('a short write then ENOSPC: the old file stays whole, no temp file is left, the error names the file', () => {
  const d = tmp();
  const f = join(d, 'clients.toml');
  fs.writeFileSync(f, 'old contents, complete\n');
  const disk = diskFullAfter(10);
  assert.throws(() => writeFileAtomic(f, 'x'.repeat(4096), { mode: 0o600 }), (e: unknown) => {
    assert.ok(e instanceof AtomicWriteError);
    assert.equal(e.code, 'ENOSPC');
    assert.match(e.message, new RegExp(`^writing ${f.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} failed: ENOSPC: .*; the previous clients.toml is unchanged$`));
    return true;
  });
  assert.ok(disk.calls() >= 2, 'the writer went on after the short write');
  mock.restoreAll();
  assert.equal(fs.readFileSync(f, 'utf8'), 'old contents, complete\n');
  assert.deepEqual(onlyFile(d), ['clients.toml']);
});

test('write(2) that writes nothing is an error, not an endless loop', () => {
  const d = tmp();
  const f = join(d, 'pairing.toml');
  fs.writeFileSync(f, 'old\n');
  mock.method(fs, 'writeSync', () => 0);
  assert.throws(() => writeFileAtomic(f, 'new contents\n', { mode: 0o600 }), /^AtomicWriteError: writing .*pairing\.toml failed: short write: 0 of 13 bytes written/);
  mock.restoreAll();
  assert.equal(fs.readFileSync(f, 'utf8'), 'old\n');
  assert.deepEqual(onlyFile(d), ['pairing.toml']);
});

test('a short write that the next write(2) completes gives the whole new file', () => {
  const d = tmp();
  const f = join(d, 'secret.key');
  fs.writeFileSync(f, 'old\n');
  const real = fs.writeSync;
  mock.method(fs, 'writeSync', (fd: number, buf: Uint8Array, off = 0, len = buf.length - off) =>
    (real as (fd: number, b: Uint8Array, o: number, l: number) => number)(fd, buf, off, Math.min(len, 7)));
  const text = 'new contents that take several short writes\n';
  writeFileAtomic(f, text, { mode: 0o600 });
  mock.restoreAll();
  assert.equal(fs.readFileSync(f, 'utf8'), text);
  assert.equal(fs.statSync(f).mode & 0o777, 0o600);
  assert.deepEqual(onlyFile(d), ['secret.key']);
});

test('pairing on a full disk: the allowlist keeps its clients and the pairing reports the failure', () => {
  const d = tmp();
  const t = new TrustStore(join(d, 'clients.toml'), d);
  t.allow('a'.repeat(64), 'alice');
  const before = fs.readFileSync(t.allowlistFile, 'utf8');
  diskFullAfter(16);
  assert.throws(() => t.allow('b'.repeat(64), 'bob'), /clients\.toml failed: ENOSPC/);
  mock.restoreAll();
  assert.equal(fs.readFileSync(t.allowlistFile, 'utf8'), before);
  const again = new TrustStore(join(d, 'clients.toml'), d);
  assert.equal(again.isAllowed('a'.repeat(64)), true, 'alice is still allowed');
  assert.equal(again.isAllowed('b'.repeat(64)), false);
});

test('the helper install writes through the same function: a full disk is exit 7 naming the file, old file whole', () => {
  const d = tmp();
  const f = join(d, 'dev.remoteusb.helper.policy');
  fs.writeFileSync(f, 'old policy\n');
  diskFullAfter(5);
  assert.throws(() => helperInstallWrite(f, 'p'.repeat(1000), 0o644), (e: unknown) => {
    assert.ok(e instanceof HelperError);
    assert.equal(e.exitCode, 7);
    assert.match(e.what, /^writing .*dev\.remoteusb\.helper\.policy failed: ENOSPC/);
    return true;
  });
  mock.restoreAll();
  assert.equal(fs.readFileSync(f, 'utf8'), 'old policy\n');
  assert.deepEqual(onlyFile(d), ['dev.remoteusb.helper.policy']);
});

test('a failing rename leaves no temp file and the target untouched', () => {
  const d = tmp();
  const f = join(d, 'target');
  fs.mkdirSync(f); // rename(file, non-empty dir) fails with EISDIR
  fs.writeFileSync(join(f, 'inside'), 'x');
  assert.throws(() => writeFileAtomic(f, 'data', { mode: 0o644 }), /^AtomicWriteError: writing .*target failed: E(ISDIR|NOTEMPTY|EXIST)/);
  assert.deepEqual(onlyFile(d), ['target']);
  assert.deepEqual(fs.readdirSync(f), ['inside']);
});

test('a symlink planted at the temp name is removed, never followed', () => {
  const d = tmp();
  const f = join(d, 'clients.toml');
  const victim = join(d, 'victim');
  fs.writeFileSync(victim, 'do not touch\n');
  fs.symlinkSync(victim, join(d, `.clients.toml.${process.pid}.tmp`));
  writeFileAtomic(f, 'new\n', { mode: 0o600 });
  assert.equal(fs.readFileSync(victim, 'utf8'), 'do not touch\n');
  assert.equal(fs.readFileSync(f, 'utf8'), 'new\n');
  assert.deepEqual(onlyFile(d), ['clients.toml', 'victim']);
});
