// Strict parsing of the helper's command line. Pure: no file system, no environment.
//
// Every argument is checked against an exact ASCII pattern before anything else happens, so nothing a
// caller types reaches a file, a process or a message unchecked: numbers are plain decimal (no sign,
// spaces, leading zeros, hex, exponent or non-ASCII digits), install paths are absolute with a small
// character set, group names are POSIX-like. Anything else is exit 2.

import { Exit, HelperError, quote } from './errors';

/** Hard cap on a vhci port number; the machine's real ports come from vhci's status files. */
export const MAX_PORT = 255;
/** devid is `(busnum << 16) | devnum` on the exporting host; the kernel reads it with `%u`. */
export const MAX_DEVID = 0xffff_ffff;

/** kernel: include/uapi/linux/usb/ch9.h enum usb_device_speed */
export const USB_SPEED_LOW = 1;
export const USB_SPEED_FULL = 2;
export const USB_SPEED_HIGH = 3;
export const USB_SPEED_WIRELESS = 4;
export const USB_SPEED_SUPER = 5;
export const USB_SPEED_SUPER_PLUS = 6;
export type UsbSpeed = 1 | 2 | 3 | 4 | 5 | 6;

export const SPEED_NAMES: Readonly<Record<UsbSpeed, string>> = {
  1: 'low-speed',
  2: 'full-speed',
  3: 'high-speed',
  4: 'wireless',
  5: 'super-speed',
  6: 'super-speed-plus',
};

/** Longest accepted install path (node path shorter still: it goes on a `#!` line). */
export const MAX_PATH_LEN = 200;
export const MAX_NODE_PATH_LEN = 120;

export type Command =
  | { verb: 'attach'; port: number; devid: number; speed: UsbSpeed }
  | { verb: 'detach'; port: number }
  | { verb: 'load' }
  | { verb: 'status' }
  | { verb: 'install'; dir?: string; node?: string; group?: string }
  | { verb: 'uninstall'; dir?: string }
  | { verb: 'help' }
  | { verb: 'version' };

export const USAGE: Readonly<Record<Command['verb'], string>> = {
  attach: 'remote-usb-helper attach <port> <devid> <speed> <&socket',
  detach: 'remote-usb-helper detach <port>',
  load: 'remote-usb-helper load',
  status: 'remote-usb-helper status',
  install: 'remote-usb-helper install [--dir <abs dir>] [--node <abs node path>] [--group <group>]',
  uninstall: 'remote-usb-helper uninstall [--dir <abs dir>]',
  help: 'remote-usb-helper help',
  version: 'remote-usb-helper version',
};

export const HELP_TEXT = [
  'usage:',
  ...Object.values(USAGE).map((u) => `  ${u}`),
  '',
  '  stdin  (attach) one end of a connected AF_UNIX SOCK_STREAM socket pair; vhci_hcd keeps it',
  '  port   decimal vhci port, 0..(ports on this machine - 1), at most 255 (see `status`);',
  '         speeds 1-4 need a high-speed (hs) port, 5-6 a super-speed (ss) port',
  '  devid  decimal 1..4294967295, (busnum << 16) | devnum of the device on the exporting host',
  '  speed  1 low, 2 full, 3 high, 4 wireless, 5 super, 6 super-plus (kernel enum usb_device_speed)',
  '',
  'exit codes: 0 ok, 1 internal, 2 usage, 3 stdin not a connected unix stream socket,',
  '  4 vhci_hcd not loaded, 5 port busy / kernel refused, 6 not root, 7 install refused or failed,',
  '  8 detach: port not attached',
].join('\n');

const DECIMAL = /^(?:0|[1-9][0-9]*)$/;
/** Absolute, no empty/trailing components; letters, digits and `. _ + -` only. */
const SAFE_ABS_PATH = /^(?:\/[A-Za-z0-9._+-]+)+$/;
const GROUP_NAME = /^[A-Za-z_][A-Za-z0-9_.-]{0,31}$/;

function usage(verb: Command['verb'] | undefined, what: string): HelperError {
  const hint = verb ? `usage: ${USAGE[verb]}` : 'run `remote-usb-helper help` for usage';
  return new HelperError(Exit.USAGE, what, hint);
}

function parseDecimal(
  verb: Command['verb'],
  name: string,
  s: string | undefined,
  min: number,
  max: number,
): number {
  if (s === undefined) throw usage(verb, `missing ${name}`);
  const maxLen = String(max).length;
  if (s.length === 0) throw usage(verb, `${name} is empty`);
  if (s.length > maxLen) throw usage(verb, `${name} ${quote(s)} is too long (at most ${maxLen} digits)`);
  if (!DECIMAL.test(s)) {
    throw usage(verb, `${name} ${quote(s)} is not a plain decimal number (no sign, spaces, leading zeros or hex)`);
  }
  const n = Number(s);
  if (n < min || n > max) throw usage(verb, `${name} ${s} is out of range ${min}..${max}`);
  return n;
}

export function parsePort(verb: Command['verb'], s: string | undefined): number {
  return parseDecimal(verb, 'port', s, 0, MAX_PORT);
}

export function parseDevid(s: string | undefined): number {
  return parseDecimal('attach', 'devid', s, 1, MAX_DEVID);
}

export function parseSpeed(s: string | undefined): UsbSpeed {
  return parseDecimal('attach', 'speed', s, USB_SPEED_LOW, USB_SPEED_SUPER_PLUS) as UsbSpeed;
}

export function validateAbsPath(what: string, s: string, maxLen: number): string {
  if (s.length > maxLen) throw new HelperError(Exit.USAGE, `${what} ${quote(s)} is too long`, `at most ${maxLen} characters`);
  if (!SAFE_ABS_PATH.test(s) || s.split('/').some((c) => c === '.' || c === '..')) {
    throw new HelperError(
      Exit.USAGE,
      `${what} ${quote(s)} is not a plain absolute path`,
      'use /a/b/c with letters, digits and . _ + - only; no trailing /, no . or .. components',
    );
  }
  return s;
}

export function validateGroup(s: string): string {
  if (!GROUP_NAME.test(s)) {
    throw new HelperError(
      Exit.USAGE,
      `group ${quote(s)} is not a valid group name`,
      'a letter or _ then up to 31 letters, digits, _ . or -',
    );
  }
  return s;
}

function exactly(verb: Command['verb'], rest: readonly string[], n: number): void {
  if (rest.length < n) return; // the missing one is reported by name
  if (rest.length > n) throw usage(verb, `unexpected extra argument ${quote(rest[n])}`);
}

type FlagSpec = Record<string, (value: string) => string>;

function parseFlags(verb: Command['verb'], rest: readonly string[], spec: FlagSpec): Record<string, string> {
  const seen: Record<string, string> = {};
  for (let i = 0; i < rest.length; i += 2) {
    const flag = rest[i];
    if (!Object.hasOwn(spec, flag)) throw usage(verb, `unknown option ${quote(flag)}`);
    if (Object.hasOwn(seen, flag)) throw usage(verb, `option ${flag} given twice`);
    const value = rest[i + 1];
    if (value === undefined) throw usage(verb, `option ${flag} needs a value`);
    seen[flag] = spec[flag](value);
  }
  return seen;
}

/** argv without node and the script: `['attach', '3', '65538', '3']`. Throws HelperError(USAGE). */
export function parseArgs(argv: readonly string[]): Command {
  if (argv.length === 0) throw usage(undefined, 'no verb given');
  if (argv.length > 7) throw usage(undefined, `too many arguments (${argv.length})`);
  const [verb, ...rest] = argv;
  switch (verb) {
    case 'attach': {
      exactly(verb, rest, 3);
      const port = parsePort(verb, rest[0]);
      const devid = parseDevid(rest[1]);
      const speed = parseSpeed(rest[2]);
      return { verb, port, devid, speed };
    }
    case 'detach':
      exactly(verb, rest, 1);
      return { verb, port: parsePort(verb, rest[0]) };
    case 'load':
    case 'status':
    case 'help':
    case 'version':
      exactly(verb, rest, 0);
      return { verb };
    case 'install': {
      const f = parseFlags(verb, rest, {
        '--dir': (v) => validateAbsPath('--dir', v, MAX_PATH_LEN),
        '--node': (v) => validateAbsPath('--node', v, MAX_NODE_PATH_LEN),
        '--group': validateGroup,
      });
      return { verb, dir: f['--dir'], node: f['--node'], group: f['--group'] };
    }
    case 'uninstall': {
      const f = parseFlags(verb, rest, { '--dir': (v) => validateAbsPath('--dir', v, MAX_PATH_LEN) });
      return { verb, dir: f['--dir'] };
    }
    default:
      throw usage(undefined, `unknown verb ${quote(verb)}`);
  }
}
