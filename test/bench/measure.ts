/** Statistics and /proc readings shared by the bench, load and soak scripts. */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

export const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
export const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
};
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const CLK_TCK = ((): number => {
  try { return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100; } catch { return 100; }
})();

/** Resident memory of a process, KiB. */
export function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

/** Anonymous memory the process wrote (Private_Dirty), KiB: RSS without the shared, file-backed code pages. */
export function privateDirtyKiB(pid: number): number {
  const m = /Private_Dirty:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

/**
 * utime + stime in seconds (fields 14 and 15 of /proc/<pid>/stat, after the parenthesised name); with
 * `tid`, of that one thread (`process.pid` as the tid is the main thread).
 */
export function cpuSeconds(pid: number, tid?: number): number {
  const stat = readFileSync(tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

export function ownCpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** Cores not busy with other work right now: online cores minus the 1-minute load average (≥ 0). */
export function freeCores(): number {
  const cores = Number(execFileSync('nproc', { encoding: 'utf8' }).trim());
  const load = Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]);
  return Math.max(0, cores - load);
}
