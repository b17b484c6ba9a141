/**
 * The @number0/iroh adapter (the fallback where our own binding is not built: darwin, win32).
 * Pitfalls of @number0/iroh 1.1.0 handled here (each seen on this project's machines): the binding moves bytes as Array<number> (see bytes.ts); concurrent
 * writeAll() calls on one stream can reorder data (hundreds of times a run with 4 KiB writes, 8 in flight;
 * MessageStream serialises writes); a garbage-collected
 * Endpoint kills its connections (every connection keeps a reference to its endpoint).
 */
import * as iroh from '@number0/iroh/index.js';
import type { ByteStream } from '../protocol/stream.js';
import type { BindArgs, Binding, BoundEndpoint, OpenConnection, PeerAddress } from './binding.js';
import { irohErrorMessage } from './binding.js';
import { fromWireArray, toWireArray, WIRE_CHUNK } from './bytes.js';

const READ_SIZE = WIRE_CHUNK; // see bytes.ts

export const number0Binding: Binding = {
  name: 'number0',
  endpointIdOf: (secretKey) => iroh.SecretKey.fromBytes(Array.from(secretKey)).public().toString(),
  parseEndpointId: (s) => iroh.EndpointId.fromString(s).toString(),
  ticketFromAddr: (addr) => {
    const id = iroh.EndpointId.fromString(addr.id);
    return iroh.EndpointTicket.fromAddr(new iroh.EndpointAddr(id, addr.relayUrl ?? null, addr.addrs)).toString();
  },
  ticketToAddr: (ticket) => {
    const a = iroh.EndpointTicket.fromString(ticket).endpointAddr();
    return { id: a.id().toString(), relayUrl: a.relayUrl() ?? undefined, addrs: a.directAddresses() };
  },
  async bind(args: BindArgs): Promise<BoundEndpoint> {
    const b = iroh.Endpoint.builder();
    if (args.relay.mode === 'default') {
      b.applyN0();
    } else {
      b.applyMinimal();
      b.relayMode(args.relay.mode === 'disabled' ? iroh.RelayMode.disabled() : iroh.RelayMode.customFromUrls(args.relay.urls));
    }
    b.secretKey(Array.from(args.secretKey));
    if (args.alpns.length) b.alpns(args.alpns.map((a) => Array.from(a)));
    if (args.bindAddr) b.bindAddr(args.bindAddr);
    return new Number0Endpoint(await b.bind());
  },
};

class Number0Endpoint implements BoundEndpoint {
  readonly id: string;
  constructor(private readonly ep: iroh.Endpoint) {
    this.id = ep.id().toString();
  }

  boundSockets(): string[] {
    return this.ep.boundSockets();
  }

  address(): PeerAddress {
    const a = this.ep.addr();
    return { id: this.id, relayUrl: a.relayUrl() ?? undefined, addrs: a.directAddresses() };
  }

  async connect(peer: PeerAddress, alpn: Uint8Array): Promise<OpenConnection> {
    const addr = new iroh.EndpointAddr(iroh.EndpointId.fromString(peer.id), peer.relayUrl ?? null, peer.addrs);
    return new Number0Connection(this.ep, await this.ep.connect(addr, Array.from(alpn)));
  }

  async accept(): Promise<OpenConnection | null> {
    for (;;) {
      const incoming = await this.ep.acceptNext();
      if (incoming === null) return null;
      try {
        const accepting = await incoming.accept();
        return new Number0Connection(this.ep, await accepting.connect());
      } catch {
        continue; // a failed handshake concerns only that peer
      }
    }
  }

  async close(): Promise<void> {
    if (!this.ep.isClosed()) await this.ep.close();
  }

  isClosed(): boolean {
    return this.ep.isClosed();
  }
}

class Number0Connection implements OpenConnection {
  readonly remoteId: string;

  // `endpoint` is held only so it is not garbage-collected while this connection lives.
  constructor(private readonly endpoint: iroh.Endpoint, private readonly conn: iroh.Connection) {
    this.remoteId = conn.remoteId().toString();
  }

  async openStream(): Promise<ByteStream> {
    return new Number0ByteStream(await this.conn.openBi());
  }

  async acceptStream(): Promise<ByteStream | null> {
    try {
      return new Number0ByteStream(await this.conn.acceptBi());
    } catch {
      return null;
    }
  }

  async closed(): Promise<string> {
    return (await this.conn.closed()).split('\n')[0];
  }

  rttMs(): number | undefined {
    return this.conn.rtt() ?? undefined;
  }

  pathKind(): 'direct' | 'relay' | undefined {
    const p = this.conn.paths().find((x) => x.isSelected);
    return p ? (p.isRelay ? 'relay' : 'direct') : undefined;
  }

  close(code: bigint, reason: Buffer): void {
    try {
      this.conn.close(code, Array.from(reason));
    } catch {
      // already closed
    }
    void this.endpoint;
  }
}

class Number0ByteStream implements ByteStream {
  private readonly send: iroh.SendStream;
  private readonly recv: iroh.RecvStream;

  constructor(bi: iroh.BiStream) {
    this.send = bi.send;
    this.recv = bi.recv;
  }

  async write(data: Buffer): Promise<void> {
    if (!(data instanceof Uint8Array)) throw new TypeError('write() takes a Buffer or Uint8Array');
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
