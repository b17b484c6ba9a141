// Builds the `usb` package's native module (node-usb 2.x + the libusb it bundles, both from
// node_modules/usb) with libusb's *netlink* hot-plug backend instead of its prebuilt *udev* one, into
// ./build/Release/usb_bindings.node, where server/usb/libusb.ts points the package (NODE_USB_PATH).
// Why our own build: the prebuilt binary links libudev and learns about devices only from udevd's
// messages, so where no udevd runs (containers, minimal images, the qemu guest of the kernel suite) its
// device list freezes at start-up; the netlink backend hears the kernel itself. It also gets libusb's
// timerfd (the prebuilt checks timeouts only once a minute).
// Run by esbuild.mjs; quick when nothing changed. Plain cc/c++, no node-gyp (whose headers come from
// nodejs.org): N-API's headers come from the node-api-headers package.
//   CC / CXX                   compilers (default gcc / g++); CROSS=<triplet>- prefixes both (cross-builds)
//   REMOTE_USB_USB_BUILD=0     skip: the package's prebuilt binary is used (udev hot-plug)
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..', '..');
export const outFile = (dir = here) => join(dir, 'build', 'Release', 'usb_bindings.node');

const LIBUSB = ['core.c', 'descriptor.c', 'hotplug.c', 'io.c', 'strerror.c', 'sync.c',
  'os/events_posix.c', 'os/threads_posix.c', 'os/linux_usbfs.c', 'os/linux_netlink.c'];
const LIBUSB_DEFINES = ['ENABLE_LOGGING=1', 'PLATFORM_POSIX=1', 'THREADS_POSIX=1', 'OS_LINUX=1', '_GNU_SOURCE=1',
  'PRINTF_FORMAT(a,b)=__attribute__((__format__(__printf__,a,b)))', 'DEFAULT_VISIBILITY=', 'HAVE_GETTIMEOFDAY=1',
  'HAVE_POLL_H=1', 'HAVE_SYS_TIME_H=1', 'HAVE_CLOCK_GETTIME=1', 'HAVE_NFDS_T=1', 'POLL_NFDS_TYPE=nfds_t',
  'HAVE_EVENTFD=1', 'HAVE_TIMERFD=1', 'HAVE_PIPE2=1', 'HAVE_LINUX_NETLINK_H=1'];
const BINDING = ['node_usb.cc', 'device.cc', 'transfer.cc', 'thread_name.cc', 'hotplug.cc'];

function run(cmd, args) {
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.status !== 0) throw new Error(`${cmd} ${args.at(-1)} failed (exit ${r.status ?? r.signal})`);
}

/** Compiles the jobs one per core (at most 4): libusb's files are small, the C++ ones take a few seconds. */
async function compileAll(jobs) {
  const queue = [...jobs];
  const worker = async () => {
    for (let job; (job = queue.shift());) {
      await new Promise((resolve, reject) => {
        const p = spawn(job.cmd, job.args, { stdio: ['ignore', 'inherit', 'inherit'] });
        p.on('error', reject);
        p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${job.cmd} ${job.args.at(-1)} failed (exit ${code})`))));
      });
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(4, cpus().length)) }, worker));
}

/**
 * Builds for this machine (or `cross`, e.g. 'aarch64-linux-gnu-') into `dir`/build/Release. Returns the
 * .node path, or null when it cannot be built here (not Linux, no compiler): the prebuilt is used then.
 */
export async function buildUsb({ dir = here, cross = process.env.CROSS ?? '', log = (m) => console.error(m) } = {}) {
  const out = outFile(dir);
  if (process.env.REMOTE_USB_USB_BUILD === '0' || (process.platform !== 'linux' && !cross)) return existsSync(out) ? out : null;
  const req = createRequire(join(root, 'package.json'));
  const pkg = dirname(req.resolve('usb/package.json'));
  const version = JSON.parse(readFileSync(join(pkg, 'package.json'), 'utf8')).version;
  const stamp = `${out}.version`;
  if (existsSync(out) && existsSync(stamp) && readFileSync(stamp, 'utf8') === `${version} ${cross}` && statSync(out).mtimeMs >= statSync(fileURLToPath(import.meta.url)).mtimeMs) return out;
  const cc = process.env.CC || `${cross}gcc`;
  const cxx = process.env.CXX || `${cross}g++`;
  if (spawnSync(cxx, ['--version'], { stdio: 'ignore' }).status !== 0) {
    const msg = `remote-usb: no C++ compiler (${cxx}) to build the USB module; the prebuilt one needs udevd for hot-plug (apt install g++)`;
    if (process.env.CI) throw new Error(msg);
    log(msg);
    return null;
  }
  const addonApi = dirname(createRequire(join(pkg, 'package.json')).resolve('node-addon-api/package.json'));
  const napiHeaders = join(dirname(req.resolve('node-api-headers/package.json')), 'include');
  const obj = join(dir, 'build', 'obj');
  rmSync(join(dir, 'build'), { recursive: true, force: true });
  mkdirSync(obj, { recursive: true });
  mkdirSync(dirname(out), { recursive: true });
  log(`remote-usb: building the USB module (usb ${version} + its libusb, netlink hot-plug)${cross ? ` for ${cross.slice(0, -1)}` : ''}`);
  const libusbDir = join(pkg, 'libusb', 'libusb');
  const common = ['-c', '-O2', '-fPIC', '-w', '-pthread'];
  const jobs = [
    ...LIBUSB.map((f, i) => ({ cmd: cc, args: [...common, ...LIBUSB_DEFINES.map((d) => `-D${d}`), `-I${join(pkg, 'libusb_config')}`, `-I${libusbDir}`, `-I${join(libusbDir, 'os')}`, '-o', join(obj, `libusb${i}.o`), join(libusbDir, f)] })),
    ...BINDING.map((f, i) => ({ cmd: cxx, args: [...common, '-std=c++17', '-fexceptions', '-DNAPI_VERSION=8', '-DNAPI_CPP_EXCEPTIONS', '-D_FILE_OFFSET_BITS=64', '-D_LARGEFILE_SOURCE',
      `-I${join(pkg, 'src')}`, `-I${libusbDir}`, `-I${addonApi}`, `-I${napiHeaders}`, '-o', join(obj, `binding${i}.o`), join(pkg, 'src', f)] })),
  ];
  try {
    await compileAll(jobs);
    const objects = [...LIBUSB.map((_, i) => join(obj, `libusb${i}.o`)), ...BINDING.map((_, i) => join(obj, `binding${i}.o`))];
    // N-API symbols come from the node binary that loads the module: leave them undefined.
    run(cxx, ['-shared', '-pthread', '-Wl,--as-needed', '-static-libstdc++', '-static-libgcc', '-o', `${out}.tmp`, ...objects]);
  } catch (e) {
    const msg = `remote-usb: building the USB module failed: ${e.message}`;
    if (process.env.CI) throw new Error(msg, { cause: e });
    log(`${msg}; using the prebuilt one (hot-plug needs udevd)`);
    return null;
  }
  renameSync(`${out}.tmp`, out);
  rmSync(obj, { recursive: true, force: true });
  writeFileSync(stamp, `${version} ${cross}`);
  return out;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  buildUsb().then((out) => { if (out) console.log(out); }, (e) => { console.error(e.message); process.exit(1); });
}
