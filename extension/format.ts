/** Numbers and text as the UI shows them (no `vscode` import: unit-tested in node). */
import { Command } from './contributions.js';


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

/**
 * `text` from a bench or a device (names, product strings, error details) as literal markdown: every
 * character that could start markup is backslash-escaped — links (`[x](command:…)`), theme icons
 * (`$(…)`), HTML, entities — and line breaks become spaces, so it cannot open a block of its own.
 */
export function escapeMarkdown(text: string): string {
  const inline = text.replace(/[\r\n\u2028\u2029]+/g, ' ').replace(/[\\`*_[\]()!|<>$~&]/g, '\\$&');
  // at the start of a line these would make a heading, a list or a rule
  return inline.replace(/^[#+=-]/, '\\$&').replace(/^(\d+)([.)])/, '$1\\$2');
}

/** What the status bar's tooltip says about one bench and one attached device (plain data, for tests). */
export interface StatusBench { name: string; state: string; rttMs?: number; deviceCount: number; detail?: string }
export interface StatusAttachment { product: string; localTty?: string; rate?: { inBps: number; outBps: number } }

/**
 * The status bar tooltip's markdown. It is trusted (it carries command links), so everything that came
 * from a bench goes through escapeMarkdown: a hostile bench must not be able to plant a link of its own.
 */
export function statusTooltipMarkdown(benches: StatusBench[], attached: StatusAttachment[]): string {
  let md = '**Remote USB**\n\n';
  if (benches.length === 0) md += 'No bench yet.\n\n';
  for (const b of benches) {
    const icon = b.state === 'online' ? '$(pass-filled)' : b.state === 'connecting' ? '$(sync~spin)' : '$(error)';
    const rtt = formatRtt(b.rttMs);
    const tail = b.state === 'online' ? ` · ${b.deviceCount} device(s)` : b.detail ? ` — ${escapeMarkdown(b.detail)}` : '';
    md += `${icon} ${escapeMarkdown(b.name)}: ${b.state}${rtt ? ` · ${rtt}` : ''}${tail}  \n`;
  }
  for (const a of attached) {
    const rate = a.rate ? ` · ↓${formatRate(a.rate.inBps)} ↑${formatRate(a.rate.outBps)}` : '';
    md += `$(plug) ${escapeMarkdown(a.product)} attached${a.localTty ? ` as ${escapeMarkdown(a.localTty)}` : ''}${rate}  \n`;
  }
  md += `\n[Attach](command:${Command.attachDevice}) · [Serial monitor](command:${Command.openSerialMonitor}) · `;
  if (attached.length > 0) md += `[Detach all](command:${Command.detachAll}) · `;
  md += `[Add bench](command:${Command.addBench}) · [Logs](command:${Command.showLogs})`;
  return md;
}
