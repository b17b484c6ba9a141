/**
 * Remote USB's own N-API binding of the `iroh` crate (1.0.x, the line behind @number0/iroh 1.1.0, so the
 * two interoperate). Bytes cross as Buffer / Uint8Array: a write copies its argument once, a read returns
 * a Buffer JS owns. Only `server/net/` loads this (see native-binding.ts); this file is written by hand.
 * Errors: argument errors throw synchronously (code 'InvalidArg'); network errors reject with a message
 * whose first line says what happened.
 */

/** Where to find a peer: its endpoint id (64 hex digits), home relay URL, direct `ip:port` addresses. */
export interface PeerAddr {
  id: string;
  relayUrl?: string;
  addrs: string[];
}

export interface BindOptions {
  /** 32 bytes: the endpoint's identity. */
  secretKey: Uint8Array;
  /** 'default': n0's relays and discovery; 'disabled': direct addresses only; 'custom': `relayUrls`. */
  relay: 'default' | 'disabled' | 'custom';
  relayUrls?: string[];
  /** UDP `ip:port` to bind; default any free port on all interfaces. */
  bindAddr?: string;
  /** Protocols accepted from peers; none: the endpoint only dials out. */
  alpns?: Uint8Array[];
}

/** The endpoint id belonging to a 32-byte secret key. */
export function endpointIdOf(secretKey: Uint8Array): string;
/** The canonical form of an endpoint id; throws if `s` is not one. */
export function parseEndpointId(s: string): string;
/** An `endpoint…` ticket string for an address. */
export function ticketFromAddr(addr: PeerAddr): string;
/** The address in a ticket string; throws if it is not one. */
export function ticketToAddr(ticket: string): PeerAddr;

export class Endpoint {
  private constructor();
  static bind(options: BindOptions): Promise<Endpoint>;
  id(): string;
  /** Local UDP sockets, `ip:port`. */
  boundSockets(): string[];
  /** Our address as peers should dial it. */
  addr(): PeerAddr;
  connect(peer: PeerAddr, alpn: Uint8Array): Promise<Connection>;
  /** Next incoming connection, handshake done; null once the endpoint is closed. Failed handshakes are skipped. */
  accept(): Promise<Connection | null>;
  /** Closes all connections and sockets, waiting (bounded by iroh) for peers to learn of it. */
  close(): Promise<void>;
  isClosed(): boolean;
}

/** Keeps its endpoint alive on the Rust side: dropping the JS Endpoint does not end its connections. */
export class Connection {
  private constructor();
  remoteId(): string;
  openStream(): Promise<Stream>;
  /** Rejects once the connection is gone. */
  acceptStream(): Promise<Stream>;
  /** Resolves with a readable reason when the connection ends, whoever ended it. */
  closed(): Promise<string>;
  /** Smoothed round-trip time of the selected path, in ms. */
  rttMs(): number | null;
  /** 'direct' or 'relay' for the selected path; null before one is selected. */
  pathKind(): 'direct' | 'relay' | null;
  /** Closes at once; `code` 0..2^62-1. */
  close(code: bigint, reason: Uint8Array): void;
}

/** A bidirectional stream. One read and one write may be in flight together; writes keep call order. */
export class Stream {
  private constructor();
  /** Up to `maxLen` bytes, or null at a clean end of stream; rejects on reset or connection loss. */
  read(maxLen: number): Promise<Buffer | null>;
  /** Copies `data` at once (the caller may reuse it); resolves when QUIC took it (flow control: backpressure). */
  write(data: Uint8Array): Promise<void>;
  /** Ends the send side; the peer reads end of stream after the data. */
  finish(): Promise<void>;
  /** Abandons the send side with a code. */
  reset(code: bigint): void;
  /** Asks the peer to stop sending, with a code. */
  stop(code: bigint): void;
}
