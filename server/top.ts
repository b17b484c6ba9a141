/**
 * `remote-usb-server top`: a live view of the running daemon — clients, claims, per-device URB rate and
 * MB/s, serial sessions, pairing codes pending — read from its admin socket (admin-socket.ts). `--json`
 * prints one snapshot (the second, so rates are filled) and exits. Every name from a peer or a device goes
 * through printable() before it reaches the terminal.
 */
import { connect } from 'node:net';
import { createInterface } from 'node:readline';
import { printable } from './shared/text.js';
import { AdminSocket, TopSnapshot } from './admin-socket.js';

/** Reads snapshots from the daemon's socket; `onSnapshot` returns false to stop. */
export function readSnapshots(stateDir: string, onSnapshot: (s: TopSnapshot) => boolean | void): Promise<void> {
  const path = AdminSocket.pathIn(stateDir);
  return new Promise((resolve, reject) => {
    const s = connect(path);
    s.once('error', (e: NodeJS.ErrnoException) => reject(new Error(
      e.code === 'ENOENT' || e.code === 'ECONNREFUSED' ? `no daemon is serving ${path}: is remote-usb-server running with state dir ${stateDir}?`
        : e.code === 'EACCES' ? `cannot open ${path}: permission denied (run as root or as the daemon's user)`
          : `cannot open ${path}: ${e.message}`,
      { cause: e },
    )));
    s.once('close', () => resolve());
    const lines = createInterface({ input: s });
    lines.on('error', () => {}); // the socket's own 'error' above says what went wrong
    lines.on('line', (line) => {
      let snap: TopSnapshot;
      try {
        snap = JSON.parse(line) as TopSnapshot;
      } catch {
        s.destroy();
        reject(new Error(`the daemon sent something that is not a snapshot: ${printable(line.slice(0, 80))}`));
        return;
      }
      if (onSnapshot(snap) === false) s.destroy();
    });
  });
}

const pad = (s: string, n: number): string => (s.length > n ? s.slice(0, n - 1) + '…' : s.padEnd(n));

function mb(bytes: number): string {
  return bytes >= 1e9 ? `${(bytes / 1e9).toFixed(2)} GB` : bytes >= 1e6 ? `${(bytes / 1e6).toFixed(1)} MB` : `${(bytes / 1e3).toFixed(1)} kB`;
}

/** The text view of one snapshot. */
export function renderTop(s: TopSnapshot): string {
  const p = printable;
  const up = s.uptimeS >= 3600 ? `${Math.floor(s.uptimeS / 3600)} h ${Math.floor((s.uptimeS % 3600) / 60)} min` : `${Math.floor(s.uptimeS / 60)} min ${s.uptimeS % 60} s`;
  const lines = [
    `bench '${p(s.bench)}'  ${s.id.slice(0, 16)}…  up ${up}  ${new Date(s.time).toLocaleTimeString()}`,
    '',
    `CLIENTS (${s.clients.length})`,
  ];
  if (s.clients.length === 0) lines.push('  none connected');
  else lines.push(`  ${pad('name', 24)} ${pad('id', 12)} ${pad('path', 8)} ${pad('rtt', 9)} holds`);
  for (const c of s.clients) {
    const holds = [...c.claims, ...c.serial.map((x) => `serial ${x.path} (${x.state})`)].map(p).join(', ') || '—';
    lines.push(`  ${pad(p(c.name), 24)} ${pad(c.id.slice(0, 10), 12)} ${pad(c.path, 8)} ${pad(c.rttMs === null ? '—' : `${c.rttMs} ms`, 9)} ${holds}`);
  }
  lines.push('', `DEVICES (${s.devices.length})`);
  lines.push(`  ${pad('id', 10)} ${pad('device', 40)} ${pad('held by', 20)} ${pad('URB/s', 8)} ${pad('MB/s', 8)} total`);
  for (const d of s.devices) {
    const who = d.claimedBy !== null ? p(d.claimedBy) : d.shared ? 'free' : 'not shared';
    const rate = d.claimedBy === null ? '' : d.urbsPerS === null ? '…' : String(d.urbsPerS);
    const mbs = d.claimedBy === null ? '' : d.mbPerS === null ? '…' : d.mbPerS.toFixed(2);
    const total = d.claimedBy === null ? '' : `${d.urbs} URBs, ${mb(d.bytes)}${d.inFlight ? `, ${d.inFlight} in flight` : ''}`;
    lines.push(`  ${pad(p(d.id), 10)} ${pad(p(d.label), 40)} ${pad(who, 20)} ${pad(rate, 8)} ${pad(mbs, 8)} ${total}`);
  }
  const serial = s.clients.flatMap((c) => c.serial.map((x) => `  ${pad(p(x.path), 24)} ${pad(x.state, 8)} ${p(c.name)} (session ${x.sid})`));
  lines.push('', `SERIAL SESSIONS (${serial.length})`, ...(serial.length ? serial : ['  none open']));
  lines.push('', `PAIRING CODES PENDING: ${s.pairing.pending}${s.pairing.nextExpires ? ` (next expires ${new Date(s.pairing.nextExpires).toLocaleTimeString()})` : ''}`);
  return lines.join('\n') + '\n';
}

/** Runs `top`: one JSON snapshot, or a view redrawn every second until Ctrl-C / the daemon goes. */
export async function top(stateDir: string, json: boolean): Promise<number> {
  if (json) {
    let n = 0;
    let last: TopSnapshot | undefined;
    await readSnapshots(stateDir, (s) => { last = s; return ++n < 2; });
    if (!last) throw new Error('the daemon closed the admin socket before sending a snapshot');
    process.stdout.write(JSON.stringify(last, null, 2) + '\n');
    return 0;
  }
  const tty = process.stdout.isTTY === true;
  process.once('SIGINT', () => process.exit(0));
  await readSnapshots(stateDir, (s) => {
    // home + clear on a terminal; a pipe gets one view after another
    process.stdout.write((tty ? '\x1b[H\x1b[2J' : '\n') + renderTop(s));
  });
  process.stderr.write('remote-usb-server: the daemon closed the admin socket (stopped?)\n');
  return 1;
}
