/** Typed access to the `remoteUsb.*` settings (package.json declares them with their defaults). */
import * as vscode from 'vscode';
import type { LogLevel } from '../server/shared/log.js';
import type { RelayChoice } from '../server/net/iroh.js';
import type { AutoAttachRule } from './core/auto-attach-rules.js';

export interface BenchSetting {
  name?: string;
  address: string;
}

export type LineEnding = 'CRLF' | 'LF' | 'CR' | 'none';

export interface SerialDefaults {
  baudRate: number;
  dataBits: 5 | 6 | 7 | 8;
  parity: 'none' | 'even' | 'odd' | 'mark' | 'space';
  stopBits: 1 | 1.5 | 2;
  lineEnding: LineEnding;
  localEcho: boolean;
  timestamps: boolean;
  hexView: boolean;
  preferLocalTty: boolean;
}

const section = (): vscode.WorkspaceConfiguration => vscode.workspace.getConfiguration('remoteUsb');

export function benchSettings(): BenchSetting[] {
  const raw = section().get<unknown[]>('benches', []);
  return (Array.isArray(raw) ? raw : []).filter(
    (b): b is BenchSetting => typeof b === 'object' && b !== null && typeof (b as BenchSetting).address === 'string',
  );
}

export async function saveBenchSettings(benches: BenchSetting[]): Promise<void> {
  await section().update('benches', benches, vscode.ConfigurationTarget.Global);
}

export function autoAttachRules(): AutoAttachRule[] {
  const raw = section().get<unknown[]>('autoAttach', []);
  return Array.isArray(raw) ? (raw as AutoAttachRule[]) : [];
}

/** How to reach benches: `remoteUsb.relay` (+ `remoteUsb.relayUrls` for custom relays). */
export function relayChoice(): RelayChoice {
  const mode = section().get<string>('relay');
  if (mode === 'disabled') return { mode: 'disabled' };
  if (mode === 'custom') return { mode: 'custom', urls: section().get<string[]>('relayUrls', []).filter((u) => typeof u === 'string' && u !== '') };
  return { mode: 'default' };
}

export function clientName(fallback: string): string {
  return section().get<string>('clientName')?.trim() || fallback;
}

export function helperPath(): string | undefined {
  return section().get<string>('helperPath')?.trim() || undefined;
}

export function logLevel(): LogLevel {
  const l = section().get<string>('logLevel');
  return l === 'error' || l === 'warn' || l === 'debug' ? l : 'info';
}

export function serialDefaults(): SerialDefaults {
  const s = section();
  return {
    baudRate: s.get<number>('serial.baudRate', 115200),
    dataBits: s.get<5 | 6 | 7 | 8>('serial.dataBits', 8),
    parity: s.get<SerialDefaults['parity']>('serial.parity', 'none'),
    stopBits: s.get<1 | 1.5 | 2>('serial.stopBits', 1),
    lineEnding: s.get<LineEnding>('serial.lineEnding', 'CRLF'),
    localEcho: s.get<boolean>('serial.localEcho', false),
    timestamps: s.get<boolean>('serial.timestamps', false),
    hexView: s.get<boolean>('serial.hexView', false),
    preferLocalTty: s.get<boolean>('serial.preferLocalTty', true),
  };
}
