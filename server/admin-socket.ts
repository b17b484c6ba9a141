/**
 * The daemon's admin socket: `<state_dir>/admin.sock`, a unix socket (never TCP) only the daemon's own
 * user (and root) can open — the socket is 0600 and the state dir 0700, both the service user's. It serves
 * `remote-usb-server top`: on connect, one snapshot of the bench as a line of JSON, then one a second
 * until the reader hangs up. Nothing is read from it, so a reader cannot make the daemon do anything.
 */
import { chmodSync, lstatSync, unlinkSync } from 'node:fs';
import { createServer, Server, Socket } from 'node:net';
import { join } from 'node:path';
import type { Logger } from './shared/log.js';

export const ADMIN_SOCKET = 'admin.sock';
/** sun_path is 108 bytes on Linux, 104 on macOS. */
const MAX_SOCKET_PATH = 103;
const INTERVAL_MS = 1000;

/** One client as `top` shows it; rates are per second since the previous snapshot on the same connection. */
export interface TopClient {
  name: string;
  id: string;
  /** The connection's selected path: UDP straight to the client ('direct') or through a relay; 'unknown' before one is chosen. */
  path: 'direct' | 'relay' | 'unknown';
  rttMs: number | null;
  claims: string[];
  serial: { sid: number; path: string; state: string }[];
  backlogBytes: number;
}

export interface TopDevice {
  id: string;
  label: string;
  shared: boolean;
  claimedBy: string | null;
  tty: string | null;
  urbs: number;
  bytes: number;
  inFlight: number;
  urbsPerS: number | null;
  mbPerS: number | null;
}

export interface TopSnapshot {
  v: 1;
  bench: string;
  id: string;
  time: string;
  uptimeS: number;
  clients: TopClient[];
  devices: TopDevice[];
  pairing: { pending: number; nextExpires: string | null };
}

/** Counts that grow; the socket turns them into rates. */
export type SnapshotSource = () => TopSnapshot;

export class AdminSocket {
  private server?: Server;
  private readonly sockets = new Set<Socket>();

  constructor(readonly path: string, private readonly snapshot: SnapshotSource, private readonly log: Logger) {}

  static pathIn(stateDir: string): string {
    return join(stateDir, ADMIN_SOCKET);
  }

  /** Listens; a path too long or a directory that refuses is logged, and the daemon runs on without it. */
  async start(): Promise<void> {
    if (Buffer.byteLength(this.path) > MAX_SOCKET_PATH) {
      this.log.warn(`admin socket not opened: ${this.path} is longer than a unix socket path can be; 'remote-usb-server top' will not reach this daemon`);
      return;
    }
    try {
      // A socket left by a daemon that was killed: a live daemon on the same state dir would be a mistake anyway.
      if (lstatSync(this.path).isSocket()) unlinkSync(this.path);
    } catch { /* not there */ }
    const server = createServer((s) => this.serve(s));
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(this.path, () => resolve());
      });
      chmodSync(this.path, 0o600);
    } catch (e) {
      this.log.warn(`admin socket not opened at ${this.path}: ${(e as Error).message}; 'remote-usb-server top' will not reach this daemon`);
      server.close();
      return;
    }
    this.server = server;
  }

  private serve(s: Socket): void {
    this.sockets.add(s);
    s.on('error', () => {});
    s.on('data', () => s.destroy()); // nothing is to be said to us
    let prev: Map<string, { urbs: number; bytes: number; at: number }> | undefined;
    const send = (): void => {
      const snap = this.snapshot();
      const now = performance.now();
      const next = new Map<string, { urbs: number; bytes: number; at: number }>();
      for (const d of snap.devices) {
        const p = prev?.get(d.id);
        if (p && now > p.at && d.urbs >= p.urbs) {
          const dt = (now - p.at) / 1000;
          d.urbsPerS = Math.round((d.urbs - p.urbs) / dt);
          d.mbPerS = Math.round(((d.bytes - p.bytes) / dt / 1e6) * 1000) / 1000;
        }
        next.set(d.id, { urbs: d.urbs, bytes: d.bytes, at: now });
      }
      prev = next;
      // a reader that does not read gets no more than a snapshot queued
      if (s.writableLength < 1024 * 1024) s.write(JSON.stringify(snap) + '\n');
    };
    send();
    const timer = setInterval(send, INTERVAL_MS);
    s.once('close', () => {
      clearInterval(timer);
      this.sockets.delete(s);
    });
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    try { unlinkSync(this.path); } catch { /* gone */ }
  }
}
