import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, test } from 'node:test';
import { loadOrCreateSecretKey } from '../../server/shared/identity.js';
import { MAX_WRONG_CODES_PER_CLIENT, normalizeCode, TrustStore, WRONG_CODE_WINDOW_MS } from '../../server/trust.js';

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

test('strangers guessing cannot revoke or block the admin\'s code; one client id gets 3 wrong tries per 10 minutes', (t) => {
  const d = tmp();
  const store = new TrustStore(join(d, 'clients.toml'), d);
  const { code } = store.createPairingCode(5);
  // ten fresh keys guess wrong: on the old code the tenth revoked every pending code
  for (let i = 0; i < 10; i++) assert.equal(store.redeemPairingCode('00000-00000', i.toString(16).repeat(64), 'guesser').ok, false);
  // one key guessing in a loop is cut off, even if its next guess is right: the code is not looked at
  for (let i = 0; i < MAX_WRONG_CODES_PER_CLIENT; i++) store.redeemPairingCode('00000-00000', ID_B, 'guesser');
  assert.match((store.redeemPairingCode(code, ID_B, 'guesser') as { reason: string }).reason, /too many wrong pairing codes from this client; try again in 10 min/);
  assert.equal(store.isAllowed(ID_B), false);
  // the admin's code still works for the real client
  assert.deepEqual(store.redeemPairingCode(code, ID_A, 'alice'), { ok: true });
  // after the window the guesser may try again
  t.mock.timers.enable({ apis: ['Date'], now: Date.now() + WRONG_CODE_WINDOW_MS + 1000 });
  assert.equal((store.redeemPairingCode('00000-00000', ID_B, 'guesser') as { reason: string }).reason, 'pairing code unknown or already used');
});

test('a client name with control characters cannot pair or be allowed', () => {
  const d = tmp();
  const store = new TrustStore(join(d, 'clients.toml'), d);
  const { code } = store.createPairingCode(5);
  const osc52 = 'eve\x1b]52;c;cm0gLXJmIH4K\x07';
  assert.match((store.redeemPairingCode(code, ID_A, osc52) as { reason: string }).reason, /client name must be 1 to 128 printable characters .*got 'eve\\x1b\]52;c;cm0gLXJmIH4K\\x07'/);
  assert.equal(store.isAllowed(ID_A), false);
  assert.throws(() => store.allow(ID_A, 'line\nforged'), /printable/);
  assert.throws(() => store.allow(ID_A, 'x'.repeat(129)), /printable/);
  assert.deepEqual(store.redeemPairingCode(code, ID_A, 'alice@lab'), { ok: true }, 'the code was not used up by the refused name');
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
  assert.throws(() => new TrustStore(f, d).clients(), { message: `${f}:2: client #1: 'id' must be a 64-hex-digit endpoint id` });
  // the second entry's bad key is found on its own line
  writeFileSync(f, `# allowed\n[[client]]\nid = "${ID_A}"\nname = "a"\n\n[[client]]\nadded = "today"\nname = 7\nid = "${ID_B}"\n`);
  assert.throws(() => new TrustStore(f, d).clients(), { message: `${f}:8: client #2: 'name' must be a string` });
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
