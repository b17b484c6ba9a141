/** Numbers as the UI shows them (no `vscode` import: unit-tested in node). */

/** "0.8 ms", "12 ms"; '' when not measured. */
export function formatRtt(ms: number | undefined): string {
  if (ms === undefined || !Number.isFinite(ms)) return '';
  return ms < 10 ? `${ms.toFixed(1)} ms` : `${Math.round(ms)} ms`;
}

/** "1.2 MB/s", "340 kB/s", "12 B/s" */
export function formatRate(bps: number): string {
  if (bps >= 1e6) return `${(bps / 1e6).toFixed(1)} MB/s`;
  if (bps >= 1e3) return `${Math.round(bps / 1e3)} kB/s`;
  return `${Math.round(bps)} B/s`;
}
