/** The simulated USB backend: boards that live in memory, plug and unplug on demand. */
import { EventEmitter } from 'node:events';
import type { BackendDevice, BackendEvents, OpenedDevice, UsbBackend } from './backend.js';
import type { UrbRequest, UrbResult } from '../protocol/urb.js';
import { SimBoard } from './sim-board.js';
import { SimLoopbackBoard } from './sim-loopback-board.js';
import { SimSerialBoard } from './sim-serial-board.js';

export class SimulatedBackend extends EventEmitter<BackendEvents> implements UsbBackend {
  readonly kind = 'simulated' as const;
  private readonly boards = new Map<string, SimBoard>();
  private readonly opened = new Set<string>();

  constructor(boards: SimBoard[] = defaultBoards()) {
    super();
    for (const b of boards) this.boards.set(b.identity.id, b);
  }

  board(id: string): SimBoard | undefined {
    return this.boards.get(id);
  }

  async list(): Promise<BackendDevice[]> {
    return [...this.boards.values()].map((b) => ({ ...b.info(), tty: this.ttyOf(b.identity.id) }));
  }

  /** A serial board's bench "tty" (see serial/serial-sim.ts); like a real one, it is gone while claimed. */
  ttyOf(id: string): string | undefined {
    const b = this.boards.get(id);
    return b instanceof SimSerialBoard && !b.unplugged && !this.opened.has(id) ? `sim:${id}` : undefined;
  }

  /** Hot-plugs a board (tests and the demo). */
  plug(board: SimBoard): void {
    this.boards.set(board.identity.id, board);
    this.emit('attach', { ...board.info(), tty: this.ttyOf(board.identity.id) });
  }

  /** Unplugs the board if it is plugged in, else plugs a fresh one in (`--simulate`'s SIGUSR2). */
  togglePlug(spec: SimBoardSpec): 'unplugged' | 'plugged' {
    const id = `sim-${spec.n}`;
    if (this.boards.has(id)) {
      this.unplug(id);
      return 'unplugged';
    }
    this.plug(makeSimBoard(spec));
    return 'plugged';
  }

  /** Unplugs a board: its pending transfers end with -ENODEV. */
  unplug(id: string): void {
    const board = this.boards.get(id);
    if (!board) return;
    board.unplug();
    this.boards.delete(id);
    this.opened.delete(id);
    this.emit('detach', id);
  }

  async open(id: string): Promise<OpenedDevice> {
    const board = this.boards.get(id);
    if (!board) throw new Error(`no device ${id}`);
    if (this.opened.has(id)) throw new Error(`device ${id} is already open`);
    this.opened.add(id);
    let closed = false;
    return {
      transfer: (r: UrbRequest, signal: AbortSignal): Promise<UrbResult> => board.transfer(r, signal),
      setConfiguration: async (v: number) => board.setConfiguration(v),
      setInterface: async (i: number, a: number) => board.setInterface(i, a),
      clearHalt: async (ep: number) => board.clearHalt(ep),
      close: async () => {
        if (closed) return;
        closed = true;
        this.opened.delete(id);
      },
    };
  }

  async close(): Promise<void> {
    for (const b of this.boards.values()) b.unplug();
  }
}

let nextDevnum = 10;

/** A serial board and a loopback board, as the demo and `--simulate` show them. */
export function defaultBoards(): SimBoard[] {
  return [simSerialBoard(1), simLoopbackBoard(2)];
}

/** One simulated board: its kind and its number (it is `sim-<n>`). */
export interface SimBoardSpec {
  kind: 'serial' | 'loopback';
  n: number;
}

/** What `--simulate` serves when $REMOTE_USB_SIM_BOARDS is not set (the same as defaultBoards()). */
export const DEFAULT_SIM_BOARDS = 'serial:1,loopback:1';
/** Most simulated boards one spec may ask for. */
export const MAX_SIM_BOARDS = 64;

/**
 * Parses a board list like `serial:1,loopback:8` (kind:count, in order; numbered sim-1, sim-2, … across
 * the whole list), as $REMOTE_USB_SIM_BOARDS gives it to `remote-usb-server --simulate`. Throws an error
 * naming the bad entry.
 */
export function parseSimBoards(text: string): SimBoardSpec[] {
  const specs: SimBoardSpec[] = [];
  const entries = text.split(',').map((e) => e.trim());
  if (entries.every((e) => e === '')) throw new Error(`no boards given; expected e.g. '${DEFAULT_SIM_BOARDS}'`);
  for (const entry of entries) {
    const m = /^([a-z]+):(\d+)$/.exec(entry);
    if (!m) throw new Error(`'${entry.slice(0, 40)}' is not <kind>:<count> (e.g. 'loopback:8')`);
    const [, kind, countText] = m;
    if (kind !== 'serial' && kind !== 'loopback') throw new Error(`'${entry}': unknown board kind '${kind}' (serial or loopback)`);
    const count = Number(countText);
    if (count < 1) throw new Error(`'${entry}': the count must be at least 1`);
    if (specs.length + count > MAX_SIM_BOARDS) throw new Error(`'${text.slice(0, 80)}' asks for more than ${MAX_SIM_BOARDS} boards`);
    for (let i = 0; i < count; i++) specs.push({ kind, n: specs.length + 1 });
  }
  return specs;
}

export function makeSimBoard(s: SimBoardSpec): SimBoard {
  return s.kind === 'serial' ? simSerialBoard(s.n) : simLoopbackBoard(s.n);
}

export function simSerialBoard(n: number): SimSerialBoard {
  return new SimSerialBoard({
    id: `sim-${n}`, busnum: 9, devnum: nextDevnum++, speed: 'full',
    manufacturer: 'Remote USB', product: 'Simulated Serial Board', serial: `SIM${String(n).padStart(4, '0')}`,
  });
}

export function simLoopbackBoard(n: number): SimLoopbackBoard {
  return new SimLoopbackBoard({
    id: `sim-${n}`, busnum: 9, devnum: nextDevnum++, speed: 'high',
    manufacturer: 'Remote USB', product: 'Simulated Loopback Board', serial: `LOOP${String(n).padStart(4, '0')}`,
  });
}
