/** Numbers and text as the UI shows them (no `vscode` import: unit-tested in node). */
import { Command } from './contributions.js';


/** "0.8 ms", "12 ms"; '' when not measured. */
export function formatRtt(ms: number | undefined): string {
  if (ms === undefined || !Number.isFinite(ms)) return '';
  return ms < 10 ? `${ms.toFixed(1)} ms` : `${Math.round(ms)} ms`;
}

/** How a connection reaches its peer: Iroh's selected path. */
export type PathKind = 'direct' | 'relay';

/** "direct · 0.8 ms", "relayed · 42 ms", "0.8 ms" (path not known yet), '' (neither). */
export function formatLink(path: PathKind | undefined, rttMs: number | undefined): string {
  return [path === 'relay' ? 'relayed' : path, formatRtt(rttMs)].filter(Boolean).join(' · ');
}

/** One device someone holds on a bench. */
export interface HeldDevice { label: string; id: string; claimedBy: string; mine?: boolean }

/** "Pico (1-1.2) by you · FTDI (1-1.3) by alice@lab", escaped: labels and names come from the bench. */
export function heldMarkdown(held: HeldDevice[]): string {
  return held.map((d) => `${escapeMarkdown(d.label)} (${escapeMarkdown(d.id)}) by ${d.mine ? 'you' : escapeMarkdown(d.claimedBy)}`).join(' · ');
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
export interface StatusBench { name: string; state: string; rttMs?: number; path?: PathKind; deviceCount: number; detail?: string; held?: HeldDevice[] }
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
    const link = b.state === 'online' ? formatLink(b.path, b.rttMs) : '';
    const tail = b.state === 'online' ? ` · ${b.deviceCount} device(s)` : b.detail ? ` — ${escapeMarkdown(b.detail)}` : '';
    md += `${icon} ${escapeMarkdown(b.name)}: ${b.state}${link ? ` · ${link}` : ''}${tail}  \n`;
    if (b.state === 'online' && b.held?.length) md += `$(lock) held: ${heldMarkdown(b.held)}  \n`;
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

/** What the tree's tooltip on a bench says (plain data, for tests). */
export interface BenchTooltip { name: string; id: string; state: string; rttMs?: number; path?: PathKind; detail?: string; deviceCount: number; held: HeldDevice[] }

/**
 * The tree's tooltip on a bench, as markdown: state, path (direct / relayed) and round trip, what is wrong
 * when it is not online, who holds which device, and links (the tree item trusts only its own commands).
 */
export function benchTooltipMarkdown(b: BenchTooltip): string {
  let md = `**$(vm) ${escapeMarkdown(b.name)}** — ${b.state}\n\n`;
  if (b.state === 'online') {
    const parts = [b.path === 'relay' ? 'relayed (through an Iroh relay server)' : b.path === 'direct' ? 'direct (peer to peer)' : 'path not chosen yet'];
    const rtt = formatRtt(b.rttMs);
    if (rtt) parts.push(`round trip ${rtt}`);
    md += `Connection: ${parts.join(', ')}\n\n`;
  }
  if (b.detail && b.state !== 'online') md += `${escapeMarkdown(b.detail)}\n\n`;
  md += `Endpoint \`${b.id.slice(0, 16)}…\` · ${b.deviceCount} device(s)\n\n`;
  if (b.held.length > 0) md += `Held: ${heldMarkdown(b.held)}\n\n`;
  if (b.state === 'refused') md += '[Pair with a code](command:remoteUsb.pairBench) · ';
  md += '[Reconnect](command:remoteUsb.refresh) · [Show logs](command:remoteUsb.showLogs)';
  return md;
}
