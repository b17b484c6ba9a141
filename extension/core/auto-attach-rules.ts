/**
 * Auto-attach rules and device selectors (no `vscode` import: unit-tested in node).
 * A rule matches a device when every field it gives matches: `vidPid` ("2e8a:000a", "2e8a:*", or a
 * list), `serial` (exact, `*` wildcards), `port` (the bench bus id) and `bench` (its name).
 */
import type { DeviceInfo } from '../../server/protocol/messages.js';

export interface AutoAttachRule {
  bench?: string;
  vidPid?: string | string[];
  serial?: string;
  port?: string;
}

type Matchable = Pick<DeviceInfo, 'id' | 'vendorId' | 'productId' | 'serial'>;

const VID_PID = /^([0-9a-fA-F]{1,4}|\*):([0-9a-fA-F]{1,4}|\*)$/;

const hex4 = (n: number): string => n.toString(16).padStart(4, '0');

export function vidPidOf(d: Pick<DeviceInfo, 'vendorId' | 'productId'>): string {
  return `${hex4(d.vendorId)}:${hex4(d.productId)}`;
}

function wildcard(pattern: string, text: string): boolean {
  const re = new RegExp('^' + pattern.split('*').map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*') + '$', 'i');
  return re.test(text);
}

function matchesVidPid(pattern: string, d: Matchable): boolean {
  const m = VID_PID.exec(pattern.trim());
  if (!m) return false;
  const ok = (p: string, n: number): boolean => p === '*' || parseInt(p, 16) === n;
  return ok(m[1], d.vendorId) && ok(m[2], d.productId);
}

/** Problems with a rule, in words for the user (empty when fine). */
export function checkRule(rule: unknown, index: number): string[] {
  const where = `remoteUsb.autoAttach[${index}]`;
  if (typeof rule !== 'object' || rule === null || Array.isArray(rule)) return [`${where} must be an object like { "vidPid": "2e8a:*" }`];
  const r = rule as Record<string, unknown>;
  const problems: string[] = [];
  for (const k of Object.keys(r)) if (!['bench', 'vidPid', 'serial', 'port'].includes(k)) problems.push(`${where}: unknown key '${k}' (use bench, vidPid, serial, port)`);
  const pids = r.vidPid === undefined ? [] : Array.isArray(r.vidPid) ? r.vidPid : [r.vidPid];
  for (const p of pids) if (typeof p !== 'string' || !VID_PID.test(p.trim())) problems.push(`${where}.vidPid: '${String(p)}' is not VID:PID in hex (wildcards: 2e8a:*)`);
  for (const k of ['bench', 'serial', 'port']) if (r[k] !== undefined && (typeof r[k] !== 'string' || r[k] === '')) problems.push(`${where}.${k} must be a non-empty string`);
  if (problems.length === 0 && r.vidPid === undefined && r.serial === undefined && r.port === undefined) {
    problems.push(`${where} matches every device: give at least one of vidPid, serial, port`);
  }
  return problems;
}

export function ruleMatches(rule: AutoAttachRule, benchName: string, d: Matchable): boolean {
  if (rule.vidPid === undefined && rule.serial === undefined && rule.port === undefined) return false;
  if (rule.bench !== undefined && rule.bench !== benchName) return false;
  if (rule.port !== undefined && rule.port !== d.id) return false;
  if (rule.serial !== undefined && (d.serial === undefined || !wildcard(rule.serial, d.serial))) return false;
  if (rule.vidPid !== undefined) {
    const list = Array.isArray(rule.vidPid) ? rule.vidPid : [rule.vidPid];
    if (!list.some((p) => matchesVidPid(p, d))) return false;
  }
  return true;
}

/**
 * A device selector as tasks and the CLI take it: a bus id (`1-1.2`, `sim-1`), `VID:PID` with
 * wildcards, or `serial:<serial>`.
 */
export function selectorMatches(selector: string, d: Matchable): boolean {
  const s = selector.trim();
  if (s.startsWith('serial:')) return d.serial !== undefined && wildcard(s.slice(7), d.serial);
  if (VID_PID.test(s)) return matchesVidPid(s, d);
  return s === d.id;
}

export function checkSelector(selector: string): string | undefined {
  const s = selector.trim();
  if (s === '') return 'no device given: use a bus id (1-1.2), VID:PID (2e8a:*) or serial:<serial>';
  if (s.includes(':') && !s.startsWith('serial:') && !VID_PID.test(s)) return `'${s}' is not a device: use a bus id (1-1.2), VID:PID (2e8a:*) or serial:<serial>`;
  return undefined;
}

/**
 * Follows boards that re-enumerate: a device we had attached that left for any reason but the user's
 * detach (a reset into the bootloader, a reflash) is attached again when a device shows up on the same
 * bench port within `windowMs`, whatever its VID:PID now.
 */
export class ReenumerationTracker {
  private readonly left = new Map<string, number>();

  constructor(private readonly windowMs = 120_000) {}

  /** `key` is bench id + bench port. `userDetached`: the user asked, so do not follow. */
  deviceLeft(key: string, userDetached: boolean, now = Date.now()): void {
    if (userDetached) this.left.delete(key);
    else this.left.set(key, now);
  }

  /** True once for a device appearing where a followed one left (the entry is used up). */
  follows(key: string, now = Date.now()): boolean {
    const t = this.left.get(key);
    if (t === undefined) return false;
    this.left.delete(key);
    return now - t < this.windowMs;
  }
}
