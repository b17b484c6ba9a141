// Builds our Iroh binding (this folder's Rust crate) and copies it to ./remote-usb-iroh.<platform>.node,
// where server/net/native-binding.ts finds it. Run by esbuild.mjs, so `npm run build|demo|test|bench`
// all go through it. Quick when nothing changed (file times only; cargo is not even started).
// No cargo (or a failed build outside CI): one message, and server/net/ falls back to @number0/iroh.
//   CARGO_TARGET_DIR  default ~/.cache/remote-usb/cargo-target: outside the clone, so clones and CI
//                     re-runs share the compiled dependencies (a cold build takes ~10 min on 2 cores)
//   REMOTE_USB_NATIVE_BUILD=0  skip the build (use whatever .node is there, or the fallback)
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, readdirSync, renameSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

/** napi-rs style platform name: linux-x64-gnu, darwin-arm64, win32-x64-msvc … */
export function platformName(platform = process.platform, arch = process.arch) {
  if (platform === 'linux') return `linux-${arch === 'arm' ? 'arm-gnueabihf' : `${arch}-gnu`}`;
  if (platform === 'win32') return `win32-${arch}-msvc`;
  return `${platform}-${arch}`;
}

export const nodeFile = (platform, arch) => join(here, `remote-usb-iroh.${platformName(platform, arch)}.node`);

function newestSource() {
  let newest = 0;
  const visit = (p) => {
    const s = statSync(p);
    if (s.isDirectory()) for (const f of readdirSync(p)) visit(join(p, f));
    else newest = Math.max(newest, s.mtimeMs);
  };
  for (const f of ['Cargo.toml', 'Cargo.lock', 'build.rs', 'src']) visit(join(here, f));
  return newest;
}

function findCargo() {
  const candidates = ['cargo', join(homedir(), '.cargo', 'bin', 'cargo')];
  return candidates.find((c) => spawnSync(c, ['--version'], { stdio: 'ignore' }).status === 0);
}

/** Returns the .node path, or null when the fallback (@number0/iroh) will be used. */
export function buildNative({ log = (m) => console.error(m) } = {}) {
  const out = nodeFile();
  if (process.env.REMOTE_USB_NATIVE_BUILD === '0') return existsSync(out) ? out : null;
  if (existsSync(out) && statSync(out).mtimeMs >= newestSource()) return out;
  const cargo = findCargo();
  if (!cargo) {
    log('remote-usb: no Rust toolchain (cargo) found: using @number0/iroh for Iroh (slower; install Rust from https://rustup.rs for our own binding)');
    return null;
  }
  const targetDir = process.env.CARGO_TARGET_DIR || join(homedir(), '.cache', 'remote-usb', 'cargo-target');
  log(`remote-usb: building the Iroh binding (cargo build --release; the first build takes ~10 min, later ones are quick) into ${targetDir}`);
  const r = spawnSync(cargo, ['build', '--release', '--manifest-path', join(here, 'Cargo.toml')], {
    stdio: ['ignore', 'inherit', 'inherit'],
    env: { ...process.env, CARGO_TARGET_DIR: targetDir },
  });
  if (r.status !== 0) {
    const msg = `remote-usb: building the Iroh binding failed (cargo exit ${r.status ?? r.signal})`;
    if (process.env.CI || process.env.REMOTE_USB_IROH === 'native') throw new Error(msg);
    log(`${msg}: using @number0/iroh instead`);
    return null;
  }
  const lib = { darwin: 'libremote_usb_iroh.dylib', win32: 'remote_usb_iroh.dll' }[process.platform] ?? 'libremote_usb_iroh.so';
  // copy then rename: a process that has the old file loaded keeps its mapping intact
  copyFileSync(join(targetDir, 'release', lib), `${out}.tmp`);
  renameSync(`${out}.tmp`, out);
  return out;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  try {
    const out = buildNative();
    if (out) console.log(out);
  } catch (e) {
    console.error(e.message);
    process.exit(1);
  }
}
