/**
 * The only module that imports @number0/iroh. Everything else sees IrohEndpoint / IrohConnection and
 * MessageStream-ready byte streams.
 * Pitfalls handled here (FACTS.md): the binding moves bytes as Array<number> (see bytes.ts); concurrent
 * writeAll() calls on one stream can reorder data (MessageStream serialises writes); a garbage-collected
 * Endpoint kills its connections (every IrohConnection keeps a reference to its endpoint).
 */
import { randomBytes } from 'node:crypto';
import * as iroh from '@number0/iroh/index.js';
import { ALPN } from '../protocol/constants.js';
import { ByteStream } from '../protocol/stream.js';
import { fromWireArray, toWireArray, WIRE_CHUNK } from './bytes.js';

const ALPN_BYTES = Array.from(Buffer.from(ALPN));
const READ_SIZE = WIRE_CHUNK; // see bytes.ts

export type RelayChoice =
  | { mode: 'default' } // n0's public relays and discovery: works across NAT, connect by id alone
  | { mode: 'disabled' } // direct addresses only (LAN, tests)
  | { mode: 'custom'; urls: string[] }; // your own iroh-relay servers

/** Where to find a peer: its endpoint id, and what we know of its addresses. */
export interface PeerAddress {
  id: string;
  relayUrl?: string;
  addrs: string[];
}

/** QUIC application close codes used by both sides. */
export const CloseCode = {
  normal: 0n,
  unauthorized: 1n,
  version: 2n,
  protocol: 3n,
  shutdown: 4n,
} as const;

/** The binding's errors carry a Rust backtrace; keep the first line, which says what happened. */
export function irohErrorMessage(e: unknown): string {
  const text = e instanceof Error ? e.message : String(e);
  return text.split('\n')[0].trim();
}

export function generateSecretKey(): Uint8Array {
  return new Uint8Array(randomBytes(32));
}

/** The endpoint id (public key, 64 hex digits) belonging to a secret key. */
export function endpointIdOf(secretKey: Uint8Array): string {
  return iroh.SecretKey.fromBytes(Array.from(secretKey)).public().toString();
}

export function isEndpointId(s: string): boolean {
  try {
    iroh.EndpointId.fromString(s);
    return true;
  } catch {
    return false;
  }
}

export function ticketFor(addr: PeerAddress): string {
  const id = iroh.EndpointId.fromString(addr.id);
  return iroh.EndpointTicket.fromAddr(new iroh.EndpointAddr(id, addr.relayUrl ?? null, addr.addrs)).toString();
}

/** Parses a ticket (`endpoint…`), a bare endpoint id, or `id@host:port[,host:port]`. Throws a readable error. */
export function parsePeerAddress(text: string): PeerAddress {
  const s = text.trim();
  if (s.startsWith('endpoint')) {
    let ticket: iroh.EndpointTicket;
    try {
      ticket = iroh.EndpointTicket.fromString(s);
    } catch (e) {
      throw new Error(`not a valid bench ticket (${irohErrorMessage(e)})`, { cause: e });
    }
    const a = ticket.endpointAddr();
    return { id: a.id().toString(), relayUrl: a.relayUrl() ?? undefined, addrs: a.directAddresses() };
  }
  const [id, addrList] = s.split('@', 2);
  if (!isEndpointId(id)) throw new Error(`'${s.slice(0, 80)}' is neither a bench ticket nor an endpoint id (64 hex digits)`);
  const addrs = addrList ? addrList.split(',').map((x) => x.trim()).filter(Boolean) : [];
  for (const a of addrs) {
    if (!/^(\[[0-9a-fA-F:.]+\]|[0-9.]+):\d{1,5}$/.test(a)) throw new Error(`'${a}' is not an IP:port address`);
  }
  return { id: iroh.EndpointId.fromString(id).toString(), addrs };
}

export interface EndpointOptions {
  secretKey: Uint8Array;
  relay: RelayChoice;
  /** UDP address to bind, e.g. `0.0.0.0:47100`; default: any free port on all interfaces. */
  bindAddr?: string;
  /** Accept incoming connections (the daemon) or only dial out (clients). */
  accept?: boolean;
}

export class IrohEndpoint {
  private constructor(private readonly ep: iroh.Endpoint) {}

  static async bind(options: EndpointOptions): Promise<IrohEndpoint> {
    const b = iroh.Endpoint.builder();
    if (options.relay.mode === 'default') {
      b.applyN0();
    } else {
      b.applyMinimal();
      b.relayMode(options.relay.mode === 'disabled' ? iroh.RelayMode.disabled() : iroh.RelayMode.customFromUrls(options.relay.urls));
    }
    b.secretKey(Array.from(options.secretKey));
    if (options.accept) b.alpns([ALPN_BYTES]);
    if (options.bindAddr) b.bindAddr(options.bindAddr);
    try {
      return new IrohEndpoint(await b.bind());
    } catch (e) {
      throw new Error(`cannot open the network endpoint${options.bindAddr ? ` on ${options.bindAddr}` : ''}: ${irohErrorMessage(e)}`, { cause: e });
    }
  }

  get id(): string {
    return this.ep.id().toString();
  }

  /** Local UDP sockets, e.g. ['0.0.0.0:47100', '[::]:47101']. */
  get boundSockets(): string[] {
    return this.ep.boundSockets();
  }

  /** Our address as peers should dial it: id, home relay (if any) and direct addresses. */
  address(): PeerAddress {
    const a = this.ep.addr();
    return { id: this.id, relayUrl: a.relayUrl() ?? undefined, addrs: a.directAddresses() };
  }

  async connect(peer: PeerAddress): Promise<IrohConnection> {
    const addr = new iroh.EndpointAddr(iroh.EndpointId.fromString(peer.id), peer.relayUrl ?? null, peer.addrs);
    try {
      return new IrohConnection(this.ep, await this.ep.connect(addr, ALPN_BYTES));
    } catch (e) {
      throw new Error(`cannot reach bench ${peer.id.slice(0, 10)}: ${irohErrorMessage(e)}`, { cause: e });
    }
  }

  /** Next incoming connection (handshake done, ALPN checked by QUIC), or null once the endpoint closed. */
  async accept(): Promise<IrohConnection | null> {
    for (;;) {
      const incoming = await this.ep.acceptNext();
      if (incoming === null) return null;
      try {
        const accepting = await incoming.accept();
        return new IrohConnection(this.ep, await accepting.connect());
      } catch {
        // A failed handshake (wrong ALPN, peer vanished) concerns only that peer: wait for the next one.
        continue;
      }
    }
  }

  async close(): Promise<void> {
    if (!this.ep.isClosed()) await this.ep.close();
  }
}

export class IrohConnection {
  readonly remoteId: string;

  // `endpoint` is held only so it is not garbage-collected while this connection lives.
  constructor(private readonly endpoint: iroh.Endpoint, private readonly conn: iroh.Connection) {
    this.remoteId = conn.remoteId().toString();
  }

  async openStream(): Promise<ByteStream> {
    return new IrohByteStream(await this.conn.openBi());
  }

  /** The next stream the peer opened, or null when the connection is gone. */
  async acceptStream(): Promise<ByteStream | null> {
    try {
      return new IrohByteStream(await this.conn.acceptBi());
    } catch {
      return null;
    }
  }

  /** Resolves with a readable reason when the connection ends, whoever ended it. */
  async closed(): Promise<string> {
    return (await this.conn.closed()).split('\n')[0];
  }

  /** Smoothed round-trip time measured by QUIC, in ms. */
  rttMs(): number | undefined {
    return this.conn.rtt() ?? undefined;
  }

  close(code: bigint = CloseCode.normal, reason = ''): void {
    try {
      this.conn.close(code, Array.from(Buffer.from(reason.slice(0, 200))));
    } catch {
      // already closed
    }
    void this.endpoint;
  }
}

class IrohByteStream implements ByteStream {
  private readonly send: iroh.SendStream;
  private readonly recv: iroh.RecvStream;

  constructor(bi: iroh.BiStream) {
    this.send = bi.send;
    this.recv = bi.recv;
  }

  async write(data: Buffer): Promise<void> {
    try {
      for (let off = 0; off < data.length; off += WIRE_CHUNK) {
        await this.send.writeAll(toWireArray(data.subarray(off, Math.min(off + WIRE_CHUNK, data.length))));
      }
    } catch (e) {
      throw new Error(irohErrorMessage(e), { cause: e });
    }
  }

  async read(): Promise<Buffer | null> {
    let a: number[];
    try {
      a = await this.recv.read(READ_SIZE);
    } catch (e) {
      throw new Error(irohErrorMessage(e), { cause: e });
    }
    return a.length === 0 ? null : fromWireArray(a);
  }

  async finish(): Promise<void> {
    try {
      await this.send.finish();
    } catch {
      // peer gone: nothing left to finish
    }
  }

  abort(): void {
    void this.send.reset(0n).catch(() => {});
    void this.recv.stop(0n).catch(() => {});
  }
}
