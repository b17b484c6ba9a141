/**
 * Run by `npm run bench` in a fresh process: loads dist/extension.js and calls activate() against a
 * stand-in `vscode` module whose every property, call and `new` gives another stand-in (no UI, no
 * settings), and prints {"loadMs","activateMs","natives":[…]} — how long loading and activating take,
 * and which native modules (.node files) got loaded on the way. The real VS Code figure comes from
 * `npm run test:vscode` (the suite logs activationMs); this one is here so every bench run has it.
 *   node activation-probe.js <path of dist/extension.js>
 */
import { readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import Module from 'node:module';

const natives: string[] = [];
const dlopen = process.dlopen.bind(process);
process.dlopen = (module: { exports: unknown }, filename: string, flags?: number): void => {
  natives.push(filename);
  dlopen(module, filename, flags);
};

/** A callable, constructible object whose every property is another stand-in; never a thenable. */
function standIn(): unknown {
  const cache = new Map<PropertyKey, unknown>();
  const target = function standInFunction(): void {};
  return new Proxy(target, {
    get(t, p) {
      if (p === 'then') return undefined;
      if (p === 'prototype') return t.prototype;
      if (p === Symbol.toPrimitive) return () => '';
      if (p === Symbol.iterator) return function* empty(): Generator<never> {};
      if (!cache.has(p)) cache.set(p, standIn());
      return cache.get(p);
    },
    set(_t, p, v) {
      cache.set(p, v);
      return true;
    },
    apply: () => standIn(),
    construct: () => standIn() as object,
  });
}

// esbuild's interop copies the module's own properties, so the stand-in module lists every name
// @types/vscode declares at its top level.
const file = process.argv[2];
const declarations = readFileSync(Module.createRequire(file).resolve('@types/vscode/index.d.ts'), 'utf8');
const vscode: Record<string, unknown> = {};
for (const m of declarations.matchAll(/^\t?export (?:class|namespace|enum|function|const|let) (\w+)/gm)) vscode[m[1]] = standIn();
const load = (Module as unknown as { _load: (req: string, ...rest: unknown[]) => unknown })._load;
(Module as unknown as { _load: (req: string, ...rest: unknown[]) => unknown })._load = (req: string, ...rest: unknown[]) =>
  (req === 'vscode' ? vscode : load(req, ...rest));

const t0 = performance.now();
// eslint-disable-next-line @typescript-eslint/no-require-imports
const extension = require(file) as { activate: (context: unknown) => unknown };
const t1 = performance.now();
const context = standIn() as Record<string, unknown>;
context.extensionPath = dirname(dirname(file)); // dist/extension.js → the extension's folder
extension.activate(context);
const t2 = performance.now();
process.stdout.write(JSON.stringify({ loadMs: t1 - t0, activateMs: t2 - t1, natives }) + '\n');
// Timers the extension started (reconnects, status refresh) would keep us alive.
process.exit(0);
