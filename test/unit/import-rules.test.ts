// The layout's import rules, checked on the sources (README "Layout"):
//  - the extension reaches into server/ only for what both sides share: the wire contract (server/protocol/),
//    the transport (server/net/) and server/shared/ (logging, text sanitising, identity file, device table,
//    the serial port layer); never the daemon's own modules;
//  - those shared folders import nothing else of server/ (else the extension would pull the daemon in
//    through them), and server/ imports nothing of extension/;
//  - helper/ (run as root) imports nothing outside helper/;
//  - server/usb/ and server/serial/ depend one way: serial → usb (the simulated serial port rides on the
//    simulated USB board), never usb → serial;
//  - `vscode` is imported only by the extension's UI layer, never by the client core (extension/core/).
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { test } from 'node:test';
import { repoRoot } from '../helpers/repo-root.js';

const ROOT = repoRoot();
const SHARED = ['server/protocol/', 'server/net/', 'server/shared/'];

function sources(dir: string): string[] {
  return readdirSync(join(ROOT, dir)).flatMap((name) => {
    const rel = `${dir}/${name}`;
    if (name === 'node_modules' || name === 'target' || name.startsWith('.')) return [];
    if (statSync(join(ROOT, rel)).isDirectory()) return sources(rel);
    return /\.(ts|mts|mjs)$/.test(name) && !name.endsWith('.d.ts') ? [rel] : [];
  });
}

/** Every module specifier in a source file: static and type imports, re-exports, `import()` and `require()`. */
export function specifiers(text: string): string[] {
  const out: string[] = [];
  const re = /(?:\bfrom\s*|\bimport\s*\(\s*|\brequire\s*\(\s*|^\s*import\s+)(['"])([^'"\n]+)\1/gm;
  for (let m = re.exec(text); m; m = re.exec(text)) out.push(m[2]);
  return out;
}

interface Edge { from: string; to: string; spec: string }

/** Imports of `file` (repository-relative), relative ones resolved to repository-relative paths. */
function edges(file: string): Edge[] {
  return specifiers(readFileSync(join(ROOT, file), 'utf8')).map((spec) => ({
    from: file,
    spec,
    to: spec.startsWith('.') ? relative(ROOT, resolve(ROOT, dirname(file), spec)).split(sep).join('/') : spec,
  }));
}

const all = [...sources('extension'), ...sources('server'), ...sources('helper')].flatMap(edges);
const show = (es: Edge[]): string => es.map((e) => `${e.from} imports '${e.spec}'`).join('\n');
const under = (path: string, dirs: string[]): boolean => dirs.some((d) => path.startsWith(d));

test('the parser sees imports of every kind', () => {
  assert.deepEqual(specifiers(`import a from './a.js';\nimport type { B } from "../b.js";\nexport { c } from './c.js';\nimport './d.js';\n` +
    `const e = await import('./e.js');\nconst f = require('./f.js') as typeof import('./f.js');`),
  ['./a.js', '../b.js', './c.js', './d.js', './e.js', './f.js', './f.js']);
  assert.ok(all.some((e) => e.from === 'extension/extension.ts' && e.to === 'vscode'), 'extension/extension.ts imports vscode');
  assert.ok(all.some((e) => e.from.startsWith('extension/') && e.to.startsWith('server/protocol/')), 'the extension imports the protocol');
});

test('the extension imports from server/ only the shared folders', () => {
  const bad = all.filter((e) => e.from.startsWith('extension/') && e.to.startsWith('server/') && !under(e.to, SHARED));
  assert.equal(show(bad), '', `the extension may import only ${SHARED.join(', ')} of server/`);
});

test('the shared folders import nothing else of server/, and server/ nothing of extension/', () => {
  const bad = all.filter((e) => (under(e.from, SHARED) && e.to.startsWith('server/') && !under(e.to, SHARED)) ||
    (e.from.startsWith('server/') && e.to.startsWith('extension/')));
  assert.equal(show(bad), '');
});

test('helper/ imports nothing outside helper/', () => {
  const bad = all.filter((e) => e.from.startsWith('helper/') && e.spec.startsWith('.') && !e.to.startsWith('helper/'));
  assert.equal(show(bad), '');
});

test('server/usb/ never imports server/serial/ (serial → usb is the one direction)', () => {
  const bad = all.filter((e) => e.from.startsWith('server/usb/') && e.to.startsWith('server/serial/'));
  assert.equal(show(bad), '');
});

test('the client core (extension/core/) does not import vscode', () => {
  const bad = all.filter((e) => e.from.startsWith('extension/core/') && e.to === 'vscode');
  assert.equal(show(bad), '');
});
