/**
 * The names that package.json's `contributes` and the code share, in one place: command ids, context
 * keys, the view id, and the `contextValue` of every tree item (which the menus' `when` clauses match).
 * Pure (no vscode): test/unit/contributions.test.ts checks package.json against it, so a command
 * without a handler, a handler without a command, or a `when` regex no tree item can satisfy fails a
 * test instead of a click. Use these constants, never the string literals.
 */
import { assertNever } from '../server/shared/assert-never.js';
import type { BenchState } from './core/bench-client.js';

/** Every contributed command (package.json `contributes.commands`); commands.ts has a handler for each. */
export const Command = {
  addBench: 'remoteUsb.addBench',
  pairBench: 'remoteUsb.pairBench',
  deployBench: 'remoteUsb.deployBench',
  renameBench: 'remoteUsb.renameBench',
  removeBench: 'remoteUsb.removeBench',
  attachDevice: 'remoteUsb.attachDevice',
  detachDevice: 'remoteUsb.detachDevice',
  detachAll: 'remoteUsb.detachAll',
  openSerialMonitor: 'remoteUsb.openSerialMonitor',
  shareSerialPort: 'remoteUsb.shareSerialPort',
  stopSerialShare: 'remoteUsb.stopSerialShare',
  copyDeviceInfo: 'remoteUsb.copyDeviceInfo',
  showLogs: 'remoteUsb.showLogs',
  installHelper: 'remoteUsb.installHelper',
  refresh: 'remoteUsb.refresh',
  showActions: 'remoteUsb.showActions',
  devicePath: 'remoteUsb.devicePath',
  // the serial monitor's (serial-monitors.ts): they act on the active monitor terminal
  serialChangeSettings: 'remoteUsb.serial.changeSettings',
  serialToggleDtr: 'remoteUsb.serial.toggleDtr',
  serialToggleRts: 'remoteUsb.serial.toggleRts',
  serialToggleHex: 'remoteUsb.serial.toggleHex',
  serialToggleTimestamps: 'remoteUsb.serial.toggleTimestamps',
  serialToggleEcho: 'remoteUsb.serial.toggleEcho',
  serialChangeLineEnding: 'remoteUsb.serial.changeLineEnding',
  serialLogToFile: 'remoteUsb.serial.logToFile',
  serialSendFile: 'remoteUsb.serial.sendFile',
} as const;
export type CommandId = (typeof Command)[keyof typeof Command];
/** A command's handler: its arguments are its own (a tree node, or plain values from tests and tasks). */
export type CommandHandler = (...args: never[]) => unknown;
/** The serial monitor's commands: handled by SerialMonitors. */
export type SerialCommandId = Extract<CommandId, `remoteUsb.serial.${string}`>;

/** Context keys the extension sets (`setContext`) and package.json's `when` clauses read. */
export const ContextKey = {
  hasBenches: 'remoteUsb.hasBenches',
  attachedHere: 'remoteUsb.attachedHere',
  serialMonitorOpen: 'remoteUsb.serialMonitorOpen',
  serialShared: 'remoteUsb.serialShared',
} as const;
export type ContextKeyName = (typeof ContextKey)[keyof typeof ContextKey];

/** The Remote USB tree view (package.json `contributes.views`). */
export const VIEW_ID = 'remoteUsb.benches';
/** The status bar item's id. */
export const STATUS_BAR_ID = 'remoteUsb.status';

/** A bench as the tree shows it: its connection state, or 'invalid' when its address does not parse. */
export type BenchItemState = BenchState | 'invalid';
export type DeviceState = 'available' | 'attaching' | 'attached' | 'mine' | 'in-use' | 'not-shared';

/** What a tree item is, as far as its menus care. */
export type TreeItemContext =
  | { kind: 'bench'; state: BenchItemState }
  /** `serial`: a serial monitor can open on it (a tty on the bench, or a local one when attached here). */
  | { kind: 'device'; state: DeviceState; serial: boolean }
  | { kind: 'tty' };

/** The one builder of `TreeItem.contextValue`: `bench.<state>`, `device.<state>[.serial]`, `tty`. */
export function contextValue(c: TreeItemContext): string {
  switch (c.kind) {
    case 'bench': return `bench.${c.state}`;
    case 'device': return `device.${c.state}${c.serial ? '.serial' : ''}`;
    case 'tty': return 'tty';
    default: return assertNever(c);
  }
}

// Records, so that a new state that is not listed here is a compile error.
const BENCH_STATES: Record<BenchItemState, true> = { connecting: true, online: true, offline: true, refused: true, closed: true, invalid: true };
const DEVICE_STATES: Record<DeviceState, true> = { available: true, attaching: true, attached: true, mine: true, 'in-use': true, 'not-shared': true };

/** Every context an item of the tree can have (for the manifest test). */
export function allTreeItemContexts(): TreeItemContext[] {
  return [
    ...(Object.keys(BENCH_STATES) as BenchItemState[]).map((state) => ({ kind: 'bench', state }) as const),
    ...(Object.keys(DEVICE_STATES) as DeviceState[]).flatMap((state) => [false, true].map((serial) => ({ kind: 'device', state, serial }) as const)),
    { kind: 'tty' },
  ];
}

