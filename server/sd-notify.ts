/**
 * systemd readiness (Type=notify). Node has no unix datagram sockets (node:dgram is UDP only), and a
 * native addon for one message is not worth a dependency, so READY=1 goes out through `systemd-notify`,
 * which waits until systemd has processed it (sd_notify_barrier, systemd >= 246). The message comes from
 * that child, not from our main PID, so the unit says NotifyAccess=all (any process in the service's own
 * cgroup: only us and our children).
 */
import { spawn } from 'node:child_process';
import type { Logger } from './shared/log.js';

/** Tells systemd we serve, when started by it with Type=notify (NOTIFY_SOCKET set); else does nothing. */
export function notifyReady(status: string, log: Logger): Promise<void> {
  if (!process.env.NOTIFY_SOCKET) return Promise.resolve();
  return new Promise((resolve) => {
    const child = spawn('systemd-notify', ['--ready', `--status=${status.slice(0, 200)}`], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    child.on('error', (e) => { log.warn(`cannot tell systemd we are ready (systemd-notify: ${e.message}); the unit will time out`); resolve(); });
    child.on('close', (code) => {
      if (code === 0) log.debug('told systemd: READY=1');
      else log.warn(`systemd-notify --ready exited ${code}: ${err.trim()}`);
      resolve();
    });
  });
}
