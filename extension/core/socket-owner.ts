/**
 * Who is at the other end of a loopback TCP connection: on Linux the kernel's socket table
 * (/proc/net/tcp, /proc/net/tcp6; proc(5)) lists every TCP socket of this network namespace with the
 * uid that owns it. The peer's socket is the row whose local address is the peer's and whose remote
 * address is ours. Other systems have no such table to read without privileges: the answer there is
 * 'unknown', and callers rely on listening on loopback only.
 */
import { readFile } from 'node:fs/promises';
import { endianness } from 'node:os';
import { isIPv4 } from 'node:net';

/** proc(5): the `st` column; only a connected socket tells a live owner (TIME_WAIT rows say uid 0). */
const TCP_ESTABLISHED = 0x01;

export interface Endpoint {
  address: string;
  port: number;
}

/**
 * An address in the table: IPv4 as one 32-bit word, IPv6 as four, each printed as %08X of the word in
 * the kernel's memory, i.e. in this machine's byte order. An IPv4-mapped IPv6 address comes out as IPv4.
 */
export function procAddress(hex: string, little = endianness() === 'LE'): string {
  if (!/^[0-9A-Fa-f]{8}([0-9A-Fa-f]{24})?$/.test(hex)) throw new Error(`not an address from /proc/net/tcp: '${hex}'`);
  const bytes = Buffer.alloc(hex.length / 2);
  for (let w = 0; w < hex.length / 8; w++) {
    const v = parseInt(hex.slice(w * 8, w * 8 + 8), 16);
    if (little) bytes.writeUInt32LE(v, w * 4);
    else bytes.writeUInt32BE(v, w * 4);
  }
  if (bytes.length === 4) return [...bytes].join('.');
  if (bytes.subarray(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff) return [...bytes.subarray(12)].join('.');
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i).toString(16));
  return normalize(groups.join(':'));
}

/** IPv4 stays; IPv4-mapped IPv6 (`::ffff:127.0.0.1`) becomes IPv4; IPv6 is expanded to 8 plain groups. */
export function normalize(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1];
  if (isIPv4(address)) return address;
  const [head, tail] = address.toLowerCase().split('::');
  const h = head ? head.split(':') : [];
  const t = tail !== undefined && tail !== '' ? tail.split(':') : [];
  const fill = tail === undefined ? [] : Array(8 - h.length - t.length).fill('0');
  return [...h, ...fill, ...t].map((g) => parseInt(g, 16).toString(16)).join(':');
}

/**
 * The uid owning the connected socket whose local end is `local` and remote end `remote`, from the text
 * of /proc/net/tcp or tcp6; undefined when no connected socket matches.
 */
export function findSocketUid(table: string, local: Endpoint, remote: Endpoint, little = endianness() === 'LE'): number | undefined {
  const want = (e: Endpoint): string => `${normalize(e.address)}:${e.port}`;
  const l = want(local);
  const r = want(remote);
  for (const line of table.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 8) continue;
    const [la, lp] = f[1].split(':');
    const [ra, rp] = f[2].split(':');
    if (!lp || !rp) continue;
    if (parseInt(f[3], 16) !== TCP_ESTABLISHED) continue;
    try {
      if (`${procAddress(la, little)}:${parseInt(lp, 16)}` !== l || `${procAddress(ra, little)}:${parseInt(rp, 16)}` !== r) continue;
    } catch {
      continue;
    }
    const uid = Number(f[7]);
    return Number.isInteger(uid) && uid >= 0 ? uid : undefined;
  }
  return undefined;
}

/**
 * The uid of the process at the other end of an accepted loopback connection (`peer` is its address as
 * the accepting socket sees it, `us` ours). 'unknown' off Linux; undefined on Linux when the kernel lists
 * no such connected socket (it closed already, or lives in another network namespace).
 */
export async function loopbackPeerUid(peer: Endpoint, us: Endpoint): Promise<number | undefined | 'unknown'> {
  if (process.platform !== 'linux') return 'unknown';
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let table: string;
    try {
      table = await readFile(file, 'latin1');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue; // no IPv6 in this kernel
      throw new Error(`cannot read ${file} to check who connected: ${(e as Error).message}`, { cause: e });
    }
    const uid = findSocketUid(table, peer, us);
    if (uid !== undefined) return uid;
  }
  return undefined;
}
