/**
 * What the bench persists survives a crash mid-write: a writer process adds clients to the allowlist as
 * fast as it can and is SIGKILLed at random moments; after every kill the allowlist reads back whole
 * (the old list or the new one, never a torn file), no client that was confirmed written is lost, and
 * the next write removes the temp files the killed writers left.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TrustStore } from '../../server/trust.js';

const CHILD = process.env.REMOTE_USB_CRASH_WRITER;

if (CHILD) {
  // The writer: append one client at a time, report each one after allow() returned.
  const store = new TrustStore(join(CHILD, 'clients.toml'), CHILD);
  for (let n = store.clients().length; ; n++) {
    store.allow(n.toString(16).padStart(64, '0'), `client-${n}`);
    process.stdout.write(`${n}\n`);
  }
} else {
  test('the allowlist survives 40 SIGKILLs mid-write: always whole, nothing confirmed is lost', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'remote-usb-crash-'));
    try {
      let confirmed = -1;
      for (let round = 0; round < 40; round++) {
        const child = spawn(process.execPath, [__filename], { env: { ...process.env, REMOTE_USB_CRASH_WRITER: dir }, stdio: ['ignore', 'pipe', 'inherit'] });
        let out = '';
        child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
        // once it writes (node's start-up takes long on a busy machine), let it go on for a random
        // 0-100 ms, then kill it wherever it is
        await new Promise<void>((r) => {
          const t = setTimeout(r, 10_000);
          child.stdout.once('data', () => { clearTimeout(t); r(); });
        });
        await new Promise((r) => setTimeout(r, Math.random() * 100));
        child.kill('SIGKILL');
        await new Promise((r) => child.once('exit', r));
        const lines = out.trim().split('\n').filter(Boolean).map(Number);
        if (lines.length > 0) confirmed = Math.max(confirmed, lines.at(-1)!);
        const clients = new TrustStore(join(dir, 'clients.toml'), dir).clients(); // throws on a torn file
        assert.ok(clients.length >= confirmed + 1, `round ${round}: ${clients.length} clients on disk, ${confirmed + 1} confirmed`);
        clients.forEach((c, i) => assert.equal(c.name, `client-${i}`, `round ${round}: client ${i} intact`));
      }
      assert.ok(confirmed > 40, `the writer got going (${confirmed + 1} clients written)`);
      // the next write clears what killed writers left behind
      new TrustStore(join(dir, 'clients.toml'), dir).allow('f'.repeat(64), 'last');
      assert.deepEqual(readdirSync(dir).filter((f) => f.endsWith('.tmp')), [], 'no temp files of dead writers left');
      console.log(`# ${confirmed + 1} clients written across 40 kills`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
