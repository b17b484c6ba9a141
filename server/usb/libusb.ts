/**
 * Loads the `usb` package (node-usb 2.x on libusb) with our own build of its native module when there is
 * one (./native/build.mjs: libusb's netlink hot-plug, which works without udevd), else its prebuilt one.
 * Loaded on first use only: a client process never pays for it.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type * as UsbPackage from 'usb';

/** The folder node-gyp-build is pointed at: it loads `<dir>/build/Release/usb_bindings.node`. */
export function ourUsbBuildDir(): string | undefined {
  const forced = process.env.REMOTE_USB_USB_NATIVE_DIR;
  if (forced) return existsSync(join(forced, 'build', 'Release', 'usb_bindings.node')) ? forced : undefined;
  // beside the bundle (packaged: lib/usb-native/ of the daemon bundle), or server/usb/native/ of the
  // source tree above it (dist/, out/test/…)
  for (let dir = __dirname, i = 0; i < 6; dir = dirname(dir), i++) {
    for (const p of [join(dir, 'usb-native'), join(dir, 'server', 'usb', 'native')]) {
      if (existsSync(join(p, 'build', 'Release', 'usb_bindings.node'))) return p;
    }
  }
  return undefined;
}

let loaded: typeof UsbPackage | undefined;

export function loadUsb(): typeof UsbPackage {
  if (loaded) return loaded;
  const ours = ourUsbBuildDir();
  if (ours && !process.env.NODE_USB_PATH) process.env.NODE_USB_PATH = ours;
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  loaded = require('usb') as typeof UsbPackage;
  return loaded;
}
