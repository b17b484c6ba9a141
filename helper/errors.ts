import { getSystemErrorMap } from 'node:util';

// Exit codes and the one-line error format of remote-usb-helper (table repeated in helper/README.md).
//
//   0  ok
//   1  internal error (a bug, or a kernel status format we do not know) - report it
//   2  usage: unknown verb, missing/extra/malformed argument, port not on this machine, speed does not
//      fit the port's hub (high-speed vs super-speed), bad install flag
//   3  stdin (fd 0) is not a connected AF_UNIX SOCK_STREAM socket (attach only)
//   4  vhci_hcd is not loaded (run `remote-usb-helper load` or `modprobe vhci-hcd`), or loading it failed
//   5  port busy, or the kernel refused the write to attach/detach (the errno is in the message)
//   6  not running as root (run it through pkexec, or sudo)
//   7  install/uninstall refused (unsafe path, polkit missing, foreign file in the way) or failed
//   8  detach: nothing is attached on that port (a caller cleaning up may treat this as done)
//   9  detach: the port was attached by another user (only that user, or root, may detach it)
//
// Every error is printed to stderr as exactly one line: `remote-usb-helper: <what> (<hint>)`.

export const Exit = {
  OK: 0,
  INTERNAL: 1,
  USAGE: 2,
  NOT_SOCKET: 3,
  NO_VHCI: 4,
  REFUSED: 5,
  NOT_ROOT: 6,
  INSTALL: 7,
  NOT_ATTACHED: 8,
  NOT_OWNER: 9,
} as const;
export type ExitCode = (typeof Exit)[keyof typeof Exit];

export class HelperError extends Error {
  constructor(
    readonly exitCode: ExitCode,
    readonly what: string,
    readonly hint: string,
  ) {
    super(`${what} (${hint})`);
    this.name = 'HelperError';
  }
}

/** Printable ASCII only: messages are one line, and nothing a caller or the file system supplied can
 * inject a newline or a terminal escape into them. */
export function oneLine(s: string): string {
  return s.replace(/[^\x20-\x7e]/g, '?');
}

export function formatError(what: string, hint: string): string {
  return `remote-usb-helper: ${oneLine(what)} (${oneLine(hint)})`;
}

/** Quotes a caller-supplied value for an error message: escaped, and cut after `max` characters. */
export function quote(s: string, max = 24): string {
  const cut = s.length > max ? s.slice(0, max) : s;
  const escaped = cut.replace(/[^\x20-\x7e]|["\\]/g, (c) =>
    c === '"' || c === '\\' ? `\\${c}` : `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
  return `"${escaped}"${s.length > max ? `... (${s.length} chars)` : ''}`;
}

/** `EBUSY (Device or resource busy)` for a Node system error; the message otherwise. */
export function errnoText(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  if (err && typeof err.code === 'string') {
    const text = typeof err.errno === 'number' ? getSystemErrorMap().get(err.errno)?.[1] : undefined;
    return text ? `${err.code}: ${text}` : err.code;
  }
  return e instanceof Error ? e.message : String(e);
}

export function isErrno(e: unknown, code: string): boolean {
  return (e as NodeJS.ErrnoException | undefined)?.code === code;
}
