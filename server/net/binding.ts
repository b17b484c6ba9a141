/**
 * What an Iroh binding must offer the transport (iroh.ts). Two implement it: ours
 * (native-binding.ts, Buffer-native, built from ./native) and @number0/iroh's (number0-binding.ts,
 * for platforms we cannot build). Which one is used: binding-choice.ts. Errors keep the binding's
 * wording; iroh.ts adds the context a user reads.
 */
import type { ByteStream } from '../protocol/stream.js';

export type BindingName = 'native' | 'number0';

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

export interface BindArgs {
  secretKey: Uint8Array;
  relay: RelayChoice;
  bindAddr?: string;
  /** Protocols accepted; none: dial out only. */
  alpns: Uint8Array[];
}

export interface Binding {
  readonly name: BindingName;
  endpointIdOf(secretKey: Uint8Array): string;
  /** Canonical endpoint id; throws if `s` is not one. */
  parseEndpointId(s: string): string;
  ticketFromAddr(addr: PeerAddress): string;
  /** Throws if `ticket` is not one. */
  ticketToAddr(ticket: string): PeerAddress;
  bind(args: BindArgs): Promise<BoundEndpoint>;
}

export interface BoundEndpoint {
  readonly id: string;
  boundSockets(): string[];
  address(): PeerAddress;
  connect(peer: PeerAddress, alpn: Uint8Array): Promise<OpenConnection>;
  /** Next connection, handshake done; null once closed. Failed handshakes are skipped. */
  accept(): Promise<OpenConnection | null>;
  close(): Promise<void>;
  isClosed(): boolean;
}

export interface OpenConnection {
  readonly remoteId: string;
  openStream(): Promise<ByteStream>;
  /** Null when the connection is gone. */
  acceptStream(): Promise<ByteStream | null>;
  /** Resolves with the reason (first line) once the connection ends. */
  closed(): Promise<string>;
  rttMs(): number | undefined;
  /** 'direct' or 'relay' for the path in use, when the binding says. */
  pathKind(): 'direct' | 'relay' | undefined;
  close(code: bigint, reason: Buffer): void;
}

/** The binding's errors may carry a Rust backtrace; keep the first line, which says what happened. */
export function irohErrorMessage(e: unknown): string {
  const text = e instanceof Error ? e.message : String(e);
  return text.split('\n')[0].trim();
}
