import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, test } from 'node:test';
import { loadOrCreateSecretKey } from '../../server/identity.js';
import { MAX_FAILED_ATTEMPTS, normalizeCode, TrustStore } from '../../server/trust.js';

const dirs: string[] = [];
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'rusb-trust-'));
  dirs.push(d);
  return d;
}
afterEach(() => { while (dirs.length) rmSync(dirs.pop()!, { recursive: true, force: true }); });

const ID_A = 'a'.repeat(64);
const ID_B = 'b'.repeat(64);

test('a pairing code admits one client once, never twice', () => {
  const d = tmp();
  const t = new TrustStore(join(d, 'clients.toml'), d);
  const { code } = t.createPairingCode(5);
  assert.match(code, /^[0-9A-HJKMNP-TV-Z]{5}-[0-9A-HJKMNP-TV-Z]{5}$/);
  assert.deepEqual(t.redeemPairingCode(code.toLowerCase(), ID_A, 'alice'), { ok: true });
  assert.equal(t.isAllowed(ID_A), true);
  assert.equal(t.nameOf(ID_A), 'alice');
  assert.deepEqual(t.redeemPairingCode(code, ID_B, 'mallory'), { ok: false, reason: 'pairing code unknown or already used' });
  assert.equal(t.isAllowed(ID_B), false);
  // the code is stored hashed, never in clear
  assert.equal(readFileSync(t.pairingFile, 'utf8').includes(normalizeCode(code)), false);
  assert.equal(statSync(t.allowlistFile).mode & 0o777, 0o600);
});

test('an expired code is refused and says so', () => {
  const d = tmp();
  const t = new TrustStore(join(d, 'clients.toml'), d);
  const { code } = t.createPairingCode(1);
  const text = readFileSync(t.pairingFile, 'utf8').replace(/expires = ".*"/, `expires = "${new Date(Date.now() - 1000).toISOString()}"`);
  writeFileSync(t.pairingFile, text);
  assert.deepEqual(t.redeemPairingCode(code, ID_A, 'a'), { ok: false, reason: 'pairing code expired; ask for a new one' });
});

test('too many wrong codes revoke every pending code', () => {
  const d = tmp();
  const t = new TrustStore(join(d, 'clients.toml'), d);
  const { code } = t.createPairingCode(5);
  let last;
  for (let i = 0; i < MAX_FAILED_ATTEMPTS; i++) last = t.redeemPairingCode('00000-00000', ID_B, 'guesser');
  assert.match((last as { reason: string }).reason, /too many wrong pairing codes/);
  assert.equal(t.redeemPairingCode(code, ID_A, 'a').ok, false);
});

test('revoking re-reads the allowlist; writes leave no temp files', () => {
  const d = tmp();
  const t = new TrustStore(join(d, 'clients.toml'), d);
  t.allow(ID_A, 'alice');
  t.allow(ID_B, 'bob');
  const other = new TrustStore(join(d, 'clients.toml'), d); // e.g. the CLI in another process
  assert.equal(other.revoke('alice'), true);
  assert.equal(other.revoke('nobody'), false);
  assert.equal(t.isAllowed(ID_A), false);
  assert.equal(t.isAllowed(ID_B), true);
  assert.deepEqual(readdirSync(d).sort(), ['clients.toml']);
});

test('a broken allowlist is an error naming file and line', () => {
  const d = tmp();
  const f = join(d, 'clients.toml');
  writeFileSync(f, '[[client]]\nid = "abc\n');
  assert.throws(() => new TrustStore(f, d).clients(), { message: new RegExp(`^${f}:2:\\d+: `) });
  writeFileSync(f, '[[client]]\nid = "short"\n');
  assert.throws(() => new TrustStore(f, d).clients(), /client #1: id must be a 64-hex-digit endpoint id/);
});

test('identity: created once with mode 0600, then reused', () => {
  const d = tmp();
  const a = loadOrCreateSecretKey(d);
  assert.equal(a.created, true);
  assert.equal(statSync(join(d, 'secret.key')).mode & 0o777, 0o600);
  const b = loadOrCreateSecretKey(d);
  assert.equal(b.created, false);
  assert.deepEqual(b.key, a.key);
});

test('identity: a damaged key is an error and is never replaced', () => {
  const d = tmp();
  const f = join(d, 'secret.key');
  writeFileSync(f, 'not a key\n', { mode: 0o600 });
  assert.throws(() => loadOrCreateSecretKey(d), new RegExp(`${f}:1: not a 64-hex-digit secret key`));
  assert.equal(readFileSync(f, 'utf8'), 'not a key\n');
});

test('identity: an unreadable key is an error and is never replaced', () => {
  const d = tmp();
  const f = join(d, 'secret.key');
  // a directory where the key should be: unreadable as a file even for root
  mkdirSync(f);
  assert.throws(() => loadOrCreateSecretKey(d), /cannot read the identity key \(EISDIR\); fix its permissions — refusing to create a new identity/);
});

test('identity: a key readable by others is tightened to 0600', () => {
  const d = tmp();
  const { key } = loadOrCreateSecretKey(d);
  chmodSync(join(d, 'secret.key'), 0o644);
  assert.deepEqual(loadOrCreateSecretKey(d).key, key);
  assert.equal(statSync(join(d, 'secret.key')).mode & 0o777, 0o600);
});
