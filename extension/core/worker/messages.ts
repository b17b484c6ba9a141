/**
 * Every message between the extension host's main thread and the byte-path worker (core-worker.ts), in
 * one place. Commands go in with a request id and get exactly one reply; events come out. Nothing per URB
 * crosses: URBs live and die inside the worker, next to the Iroh connection and the USB/IP bridges. What
 * crosses is state (bench snapshots, attachment traffic every 2 s), serial bytes, logs and commands.
 */
import type { RelayChoice, PeerAddress } from '../../../server/net/iroh.js';
import type { DeviceInfo } from '../../../server/protocol/messages.js';
import type { BenchState } from '../bench-client.js';
import type { SerialParams, SerialSetOptions, SerialState } from '../serial.js';
import type { BridgeCloseReason } from '../usbip/bridge.js';
import type { AttachOptions } from '../usbip/attach.js';

/** Who we are to every bench: sent first, and again after a restart. */
export interface Identity {
  secretKey: Uint8Array;
  clientName: string;
  relay: RelayChoice;
}

/** What the main thread knows of a bench: replaced whole on every change. */
export interface BenchSnapshot {
  state: BenchState;
  detail?: string;
  benchName: string;
  devices: DeviceInfo[];
  ttys: string[];
  rttMs?: number;
  /** 'direct' or 'relay' (Iroh's selected path), refreshed with every round-trip measurement. */
  path?: 'direct' | 'relay';
}

export interface Traffic {
  bytesIn: number;
  bytesOut: number;
  urbs: number;
}

/** The attach options that can cross a thread (the helper's path and, for tests, where the fake kernel is). */
export type AttachSettings = Pick<AttachOptions, 'helperPath' | 'runAsRoot' | 'pkexecPath' | 'sysfsRoot' | 'socketDir' | 'detachWaitMs'>;

export type Command =
  | { op: 'configure'; identity: Identity }
  | { op: 'parse-address'; address: string }
  | { op: 'endpoint-id'; secretKey: Uint8Array }
  /** `wait`: resolve once the bench let us in (pairing, Add Bench); otherwise connect in the background. */
  | { op: 'add-bench'; bench: string; address: PeerAddress; pairingCode?: string; wait: boolean }
  | { op: 'remove-bench'; bench: string }
  | { op: 'reconnect'; bench: string }
  | { op: 'attach'; bench: string; device: string; settings: AttachSettings }
  | { op: 'detach'; bench: string; device: string }
  | { op: 'serial-open'; bench: string; port: string; params: SerialParams; sid: number }
  | { op: 'serial-set'; sid: number; opts: SerialSetOptions }
  | { op: 'serial-close'; sid: number }
  /** Serial writes get no reply (they are queued, as SerialSession.write is). */
  | { op: 'serial-write'; sid: number; data: Uint8Array }
  /** Detach everything, release, close the connections and the endpoint. */
  | { op: 'shutdown' };

/** What each command resolves with. */
export interface Results {
  'configure': void;
  'parse-address': PeerAddress;
  'endpoint-id': string;
  'add-bench': void;
  'remove-bench': void;
  'reconnect': void;
  'attach': { port: number; devid: number };
  'detach': void;
  'serial-open': { path: string };
  'serial-set': void;
  'serial-close': void;
  'serial-write': void;
  'shutdown': void;
}

export interface Request {
  id: number;
  command: Command;
}

/** An error as it crosses: BenchError / AttachError keep the fields the UI reads (describeError). */
export interface WireError {
  name: string;
  message: string;
  code?: string;
  hint?: string;
  action?: string;
  detail?: string;
}

export type Reply = { id: number; ok: true; value: unknown } | { id: number; ok: false; error: WireError };

export type WorkerEvent =
  | { event: 'log'; level: 'error' | 'warn' | 'info' | 'debug'; message: string }
  | { event: 'bench'; bench: string; snapshot: BenchSnapshot; deviceId?: string }
  | { event: 'attachment-closed'; bench: string; device: string; reason: BridgeCloseReason; message?: string }
  | { event: 'traffic'; items: { bench: string; device: string; traffic: Traffic }[] }
  | { event: 'serial-data'; sid: number; data: Uint8Array }
  | { event: 'serial-state'; sid: number; state: SerialState; detail?: string };

export type FromWorker = Reply | WorkerEvent;

export function toWireError(e: unknown): WireError {
  const err = e as Partial<WireError> & { name?: string };
  return {
    name: err?.name ?? 'Error', message: err?.message ?? String(e),
    code: err?.code, hint: err?.hint, action: err?.action, detail: err?.detail,
  };
}

/** An Error again, with the fields describeError and callers look at (`name`, `code`, `hint`, `action`). */
export function fromWireError(w: WireError): Error {
  const e = new Error(w.message);
  Object.assign(e, { name: w.name, code: w.code, hint: w.hint, action: w.action, detail: w.detail });
  return e;
}
