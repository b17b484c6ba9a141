/** `npm run package` for this machine's platform: the .vsix holds only its natives, and they load. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { nativePath } from '../../server/net/native-binding.js';

// bundled to out/test/integration/, so the repository root is three levels up
const root = join(__dirname, '../../..');
const script = join(root, 'extension/packaging/package-vsix.mjs');
const host = `${process.platform}-${process.arch}`;
const packaged = ['linux-x64', 'linux-arm64', 'darwin-arm64', 'win32-x64'];

function run(...args: string[]): { code: number | null; out: string } {
  const r = spawnSync(process.execPath, [script, ...args], { cwd: root, encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, out: r.stdout + r.stderr };
}

test(`the ${host} .vsix carries one set of ${host} natives and they load from the unpacked copy`, {
  skip: !packaged.includes(host) && `no .vsix target for ${host}`,
}, () => {
  const r = run('--target', host);
  if (/is not published on npm/.test(r.out)) {
    assert.equal(r.code, 1, 'a target without its Iroh binary must fail');
    return;
  }
  assert.equal(r.code, 0, r.out);
  // usb, serialport, @number0/iroh, and our own Iroh binding where it is built
  const natives = nativePath() ? 4 : 3;
  assert.match(r.out, new RegExp(`${host} +\\d+ KB .*ok, ${natives} natives loaded from the unpacked vsix`));
  if (natives === 4) assert.match(r.out, /dist\/remote-usb-iroh\.linux-x64-gnu\.node \(ELF x64\)/);
  assert.match(r.out, /built: [\w-]+; built INCOMPLETE: none; not built: none/);
});

test('an unknown target is a usage error', () => {
  const r = run('--target', 'linux-sparc');
  assert.equal(r.code, 2);
  assert.match(r.out, /unknown target 'linux-sparc' \(known: linux-x64, linux-arm64, darwin-arm64, win32-x64\)/);
});
