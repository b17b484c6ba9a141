// Is our fd 0 a connected AF_UNIX SOCK_STREAM socket? Pure: the caller reads /proc/self/fd/0 and
// /proc/net/unix and passes their contents, so tests can feed any table.
//
// vhci_hcd itself only checks SOCK_STREAM (a TCP socket would pass too). We insist on a *connected unix*
// stream socket, the only thing the extension ever passes: it never opens a TCP port, so no other local
// user can reach the device (README, "How it stays safe"). Refusing here also gives the caller a clear
// exit 3 instead of the kernel's bare EINVAL for a pipe ("failed to lookup sock") or a datagram socket.
//
// /proc/net/unix lines: `Num RefCount Protocol Flags Type St Inode [Path]` (kernel: net/unix/af_unix.c
// unix_seq_show). A bound path is printed raw and may itself contain a newline followed by a forged
// line, so a line only counts if it has the exact field layout, and an inode that appears on more than
// one such line is refused as ambiguous (a forged copy of a real socket's line). The worst a forger can
// reach is handing vhci a non-unix stream socket the kernel accepts anyway.

/** kernel: include/linux/net.h enum sock_type */
export const SOCK_STREAM = 1;
export const SOCK_DGRAM = 2;
export const SOCK_SEQPACKET = 5;
/** kernel: include/uapi/linux/net.h socket_state */
export const SS_UNCONNECTED = 1;
export const SS_CONNECTING = 2;
export const SS_CONNECTED = 3;
export const SS_DISCONNECTING = 4;
/** kernel: include/uapi/linux/net.h (a listening socket's Flags) */
export const SO_ACCEPTCON = 0x0001_0000;

export interface UnixSocketLine {
  inode: number;
  flags: number;
  type: number;
  state: number;
}

export type StdinVerdict = { ok: true; inode: number } | { ok: false; reason: string };

const LINE = /^[0-9a-fA-F]{1,16}: [0-9A-F]{8} [0-9A-F]{8} ([0-9A-F]{8}) ([0-9A-F]{4}) ([0-9A-F]{2}) +([0-9]{1,20})(?: |$)/;
const SOCKET_LINK = /^socket:\[([0-9]{1,20})\]$/;

export function parseProcNetUnix(text: string): UnixSocketLine[] {
  const out: UnixSocketLine[] = [];
  for (const line of text.split('\n')) {
    const m = LINE.exec(line);
    if (!m) continue; // header, or the tail of a path that contained a newline
    out.push({
      flags: parseInt(m[1], 16),
      type: parseInt(m[2], 16),
      state: parseInt(m[3], 16),
      inode: Number(m[4]),
    });
  }
  return out;
}

const TYPE_NAMES: Record<number, string> = { [SOCK_DGRAM]: 'SOCK_DGRAM', [SOCK_SEQPACKET]: 'SOCK_SEQPACKET' };

/**
 * @param fd0Link `readlink /proc/self/fd/0`, or null if fd 0 is closed or /proc is unreadable
 * @param procNetUnix the text of /proc/net/unix ('' when fd 0 is not a socket at all)
 */
export function checkStdinSocket(fd0Link: string | null, procNetUnix: string): StdinVerdict {
  if (fd0Link === null) return { ok: false, reason: 'fd 0 is closed or /proc/self/fd/0 is unreadable' };
  const m = SOCKET_LINK.exec(fd0Link);
  if (!m) {
    const kind = fd0Link.startsWith('pipe:') ? 'a pipe' : 'not a socket';
    return { ok: false, reason: `fd 0 is ${kind}: ${fd0Link.slice(0, 80)}` };
  }
  const inode = Number(m[1]);
  const lines = parseProcNetUnix(procNetUnix).filter((l) => l.inode === inode);
  if (lines.length === 0) {
    return { ok: false, reason: `fd 0 is socket inode ${inode}, which is not an AF_UNIX socket (TCP, UDP, netlink...)` };
  }
  if (lines.length > 1) return { ok: false, reason: `fd 0 socket inode ${inode} is ambiguous in /proc/net/unix` };
  const [s] = lines;
  if (s.type !== SOCK_STREAM) {
    const name = TYPE_NAMES[s.type] ?? `type ${s.type}`;
    return { ok: false, reason: `fd 0 is an AF_UNIX ${name} socket, not SOCK_STREAM` };
  }
  if (s.flags & SO_ACCEPTCON) return { ok: false, reason: 'fd 0 is a listening AF_UNIX socket, not a connected one' };
  if (s.state !== SS_CONNECTED) {
    return { ok: false, reason: `fd 0 is an AF_UNIX stream socket in state ${s.state}, not connected (3)` };
  }
  return { ok: true, inode };
}
