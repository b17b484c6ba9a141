// Bundles the entry points into dist/ (and, with --tests, every test file into out/test/) as CommonJS.
// --vscode bundles the real VS Code suites (test/vscode/suite/*.ts and suite-kernel/*.ts, run inside the extension host) and its
// @vscode/test-electron runner into out/test/vscode/.
// Native modules stay external: they load from node_modules (or the per-platform package) at run time;
// our own Iroh binding's .node is found by path (server/net/native-binding.ts).
// Tests are bundled too, so they run exactly the code the bundles contain (ESM-only deps included).
// --production (for the .vsix, see extension/packaging/) minifies, drops source maps and writes the entry
// points to out/production/ instead, so it never replaces the dist/ that tests and debugging use.
import * as esbuild from 'esbuild';
import { readdirSync, statSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { buildNative } from './server/net/native/build.mjs';
import { buildUsb } from './server/usb/native/build.mjs';

// serialport too: its bindings find their prebuilt binary relative to their own __dirname.
const external = ['vscode', '@number0/iroh', '@number0/iroh/index.js', 'usb', 'serialport', '@serialport/*', 'msgpackr-extract'];
const production = process.argv.includes('--production');
// msgpackr's optional native string decoder (msgpackr-extract) is switched off everywhere: the packages
// never ship it, our messages carry few strings, and loading it costs every process ≈6 MB of memory.
const define = { 'process.env.MSGPACKR_NATIVE_ACCELERATION_DISABLED': '"true"' };
const common = { bundle: true, platform: 'node', target: 'node20', format: 'cjs', sourcemap: !production, minify: production, external, define, logLevel: 'warning' };

const entryPoints = {
  extension: 'extension/extension.ts',
  'core-worker': 'extension/core/worker/core-worker.ts',
  server: 'server/cli.ts',
  helper: 'helper/cli.ts',
  demo: 'extension/demo.ts',
  'remote-usb': 'extension/cli.ts',
};

function testFiles(dir) {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    // test/vscode/ runs inside a real VS Code extension host (--vscode), not under node --test
    if (statSync(p).isDirectory()) return p === join('test', 'vscode') ? [] : testFiles(p);
    return p.endsWith('.test.ts') ? [p] : [];
  });
}

// Our Iroh binding (server/net/native): built by cargo when its sources changed, found at run time by
// server/net/native-binding.ts; without cargo the bundles use @number0/iroh.
buildNative();
// The `usb` package's native module with libusb's netlink hot-plug (server/usb/native/build.mjs): a few
// seconds with a C++ compiler; without one the package's prebuilt binary is used.
await buildUsb();

const builds = [];
if (!process.argv.includes('--tests-only')) {
  builds.push(esbuild.build({
    ...common,
    entryPoints: Object.fromEntries(Object.entries(entryPoints).filter(([, f]) => existsSync(f))),
    outdir: production ? 'out/production' : 'dist',
  }));
}
if (process.argv.includes('--tests') || process.argv.includes('--tests-only')) {
  builds.push(esbuild.build({ ...common, entryPoints: testFiles('test'), outdir: 'out/test', outbase: 'test' }));
}
if (process.argv.includes('--kernel')) {
  // programs the qemu guest runs (test/kernel/guest/*.ts)
  const dir = 'test/kernel/guest';
  const guest = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.ts')).map((f) => join(dir, f)) : [];
  builds.push(esbuild.build({ ...common, entryPoints: guest, outdir: 'out/test/kernel/guest', outbase: dir }));
}
if (process.argv.includes('--arm-system')) {
  // the host half of the full arm64 system test (test/arm/system/run.sh)
  builds.push(esbuild.build({ ...common, entryPoints: ['test/arm/system/host.ts'], outdir: 'out/test/arm/system', outbase: 'test/arm/system' }));
}
if (process.argv.includes('--bench')) {
  builds.push(esbuild.build({ ...common, entryPoints: ['test/bench/bench.ts', 'test/bench/raw-peer.ts', 'test/bench/activation-probe.ts', 'test/bench/load.ts', 'test/bench/soak.ts'], outdir: 'out/test/bench', outbase: 'test/bench' }));
}
if (process.argv.includes('--vscode')) {
  // suite-kernel/: the real-kernel suite (npm run test:vscode:kernel), run inside the qemu guest
  const suite = ['test/vscode/suite', 'test/vscode/suite-kernel'].filter((d) => existsSync(d))
    .flatMap((dir) => readdirSync(dir).filter((f) => f.endsWith('.ts')).map((f) => join(dir, f)));
  builds.push(esbuild.build({
    ...common, entryPoints: [...suite, 'test/vscode/electron.ts'], outdir: 'out/test/vscode', outbase: 'test/vscode',
    external: [...external, 'mocha', '@vscode/test-electron'],
  }));
}
await Promise.all(builds);
