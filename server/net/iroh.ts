/**
 * The transport the rest of the code sees: IrohEndpoint / IrohConnection and MessageStream-ready byte
 * streams, over one of two Iroh bindings (binding.ts): our own Buffer-native one (native-binding.ts)
 * when it is built for this platform, else @number0/iroh (number0-binding.ts).
 * REMOTE_USB_IROH=native|number0 forces one (tests, bench); EndpointOptions.binding picks one per endpoint.
 * server/net/ is the only place that loads a binding, and only on first use: importing this module
 * loads no native code (extension activation stays light).
 * Policy lives here: argument checks (TypeError / RangeError before any native call) and the wording
 * of errors a user reads.
 */
import { randomBytes } from 'node:crypto';
import { ALPN } from '../protocol/constants.js';
import { ByteStream } from '../protocol/stream.js';
import type { Binding, BindingName, BoundEndpoint, OpenConnection, PeerAddress, RelayChoice } from './binding.js';
import { irohErrorMessage } from './binding.js';
import { loadNativeBinding } from './native-binding.js';

export type { BindingName, PeerAddress, RelayChoice } from './binding.js';
export { irohErrorMessage } from './binding.js';

const ALPN_BYTES = Buffer.from(ALPN);

/** QUIC application close codes used by both sides. */
export const CloseCode = {
  normal: 0n,
  unauthorized: 1n,
  version: 2n,
  protocol: 3n,
  shutdown: 4n,
  /** The client gave a silent connection up and will resume its session on a new one. */
  abandoned: 5n,
} as const;

/**
 * The application close code in a connection's end reason when the peer closed it ("closed by peer:
 * <reason> (code N)" or "closed by peer: N"); undefined when it ended any other way (timeout, reset …).
 */
export function peerCloseCode(reason: string): bigint | undefined {
  const m = /^closed by peer: (?:.*\(code (\d+)\)|(\d+))\s*$/.exec(reason);
  return m ? BigInt(m[1] ?? m[2]) : undefined;
}

// ---- which binding ----

const loaded = new Map<BindingName, Binding>();
let defaultName: BindingName | undefined;

function load(name: BindingName): Binding {
  let b = loaded.get(name);
  if (!b) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    b = name === 'native' ? loadNativeBinding() : (require('./number0-binding.js') as typeof import('./number0-binding.js')).number0Binding;
    loaded.set(name, b);
  }
  return b;
}

/** The binding used when none is asked for: $REMOTE_USB_IROH, else ours if it loads, else @number0/iroh. */
export function defaultBindingName(): BindingName {
  if (defaultName) return defaultName;
  const env = process.env.REMOTE_USB_IROH;
  if (env) {
    if (env !== 'native' && env !== 'number0') throw new Error(`REMOTE_USB_IROH must be 'native' or 'number0', not '${env}'`);
    defaultName = env;
  } else {
    try {
      load('native');
      defaultName = 'native';
    } catch {
      defaultName = 'number0';
    }
  }
  return defaultName;
}

const binding = (name?: BindingName): Binding => load(name ?? defaultBindingName());

// ---- argument checks: wrong types and sizes never reach native code ----

function checkSecretKey(k: unknown): asserts k is Uint8Array {
  if (!(k instanceof Uint8Array)) throw new TypeError('a secret key is a Uint8Array of 32 bytes');
  if (k.length !== 32) throw new RangeError(`a secret key is 32 bytes, got ${k.length}`);
}

function checkPeer(p: unknown): asserts p is PeerAddress {
  const a = p as PeerAddress;
  if (typeof a !== 'object' || a === null || typeof a.id !== 'string' || !Array.isArray(a.addrs) || a.addrs.some((x) => typeof x !== 'string') ||
    (a.relayUrl !== undefined && typeof a.relayUrl !== 'string')) {
    throw new TypeError('a peer address is { id: string, relayUrl?: string, addrs: string[] }');
  }
}

// ---- keys, ids, tickets ----

export function generateSecretKey(): Uint8Array {
  return new Uint8Array(randomBytes(32));
}

/** The endpoint id (public key, 64 hex digits) belonging to a secret key. */
export function endpointIdOf(secretKey: Uint8Array): string {
  checkSecretKey(secretKey);
  return binding().endpointIdOf(secretKey);
}

export function isEndpointId(s: string): boolean {
  if (typeof s !== 'string') return false;
  try {
    binding().parseEndpointId(s);
    return true;
  } catch {
    return false;
  }
}

export function ticketFor(addr: PeerAddress): string {
  checkPeer(addr);
  return binding().ticketFromAddr(addr);
}

/** Parses a ticket (`endpoint…`), a bare endpoint id, or `id@host:port[,host:port]`. Throws a readable error. */
export function parsePeerAddress(text: string): PeerAddress {
  if (typeof text !== 'string') throw new TypeError('a peer address is a string');
  const s = text.trim();
  if (s.startsWith('endpoint')) {
    try {
      return binding().ticketToAddr(s);
    } catch (e) {
      throw new Error(`not a valid bench ticket (${irohErrorMessage(e)})`, { cause: e });
    }
  }
  const [id, addrList] = s.split('@', 2);
  if (!isEndpointId(id)) throw new Error(`'${s.slice(0, 80)}' is neither a bench ticket nor an endpoint id (64 hex digits)`);
  const addrs = addrList ? addrList.split(',').map((x) => x.trim()).filter(Boolean) : [];
  for (const a of addrs) {
    if (!/^(\[[0-9a-fA-F:.]+\]|[0-9.]+):\d{1,5}$/.test(a)) throw new Error(`'${a}' is not an IP:port address`);
  }
  return { id: binding().parseEndpointId(id), addrs };
}

// ---- endpoint and connection ----

export interface EndpointOptions {
  secretKey: Uint8Array;
  relay: RelayChoice;
  /** UDP address to bind, e.g. `0.0.0.0:47100`; default: any free port on all interfaces. */
  bindAddr?: string;
  /** Accept incoming connections (the daemon) or only dial out (clients). */
  accept?: boolean;
  /** Which binding (default: defaultBindingName()); the interop tests put one on each side. */
  binding?: BindingName;
}

export class IrohEndpoint {
  private constructor(private readonly ep: BoundEndpoint, readonly binding: BindingName) {}

  static async bind(options: EndpointOptions): Promise<IrohEndpoint> {
    if (typeof options !== 'object' || options === null) throw new TypeError('bind() takes an options object');
    checkSecretKey(options.secretKey);
    const relay = options.relay as RelayChoice | undefined;
    if (!relay || !['default', 'disabled', 'custom'].includes(relay.mode)) throw new TypeError("relay.mode is 'default', 'disabled' or 'custom'");
    if (relay.mode === 'custom' && (!Array.isArray(relay.urls) || relay.urls.some((u) => typeof u !== 'string'))) throw new TypeError('relay.urls is a string[]');
    if (options.bindAddr !== undefined && typeof options.bindAddr !== 'string') throw new TypeError('bindAddr is an ip:port string');
    const b = binding(options.binding);
    try {
      const ep = await b.bind({ secretKey: options.secretKey, relay, bindAddr: options.bindAddr, alpns: options.accept ? [ALPN_BYTES] : [] });
      return new IrohEndpoint(ep, b.name);
    } catch (e) {
      throw new Error(`cannot open the network endpoint${options.bindAddr ? ` on ${options.bindAddr}` : ''}: ${irohErrorMessage(e)}`, { cause: e });
    }
  }

  get id(): string {
    return this.ep.id;
  }

  /** Local UDP sockets, e.g. ['0.0.0.0:47100', '[::]:47101']. */
  get boundSockets(): string[] {
    return this.ep.boundSockets();
  }

  /** Our address as peers should dial it: id, home relay (if any) and direct addresses. */
  address(): PeerAddress {
    return this.ep.address();
  }

  async connect(peer: PeerAddress): Promise<IrohConnection> {
    checkPeer(peer);
    try {
      return new IrohConnection(this, await this.ep.connect(peer, ALPN_BYTES));
    } catch (e) {
      throw new Error(`cannot reach bench ${peer.id.slice(0, 10)}: ${irohErrorMessage(e)}`, { cause: e });
    }
  }

  /** Next incoming connection (handshake done, ALPN checked by QUIC), or null once the endpoint closed. */
  async accept(): Promise<IrohConnection | null> {
    const c = await this.ep.accept();
    return c ? new IrohConnection(this, c) : null;
  }

  async close(): Promise<void> {
    await this.ep.close();
  }
}

export class IrohConnection {
  readonly remoteId: string;

  // `endpoint` is held so it is not garbage-collected while this connection lives (@number0/iroh needs it).
  constructor(private readonly endpoint: IrohEndpoint, private readonly conn: OpenConnection) {
    this.remoteId = conn.remoteId;
  }

  async openStream(): Promise<ByteStream> {
    return this.conn.openStream();
  }

  /** The next stream the peer opened, or null when the connection is gone. */
  async acceptStream(): Promise<ByteStream | null> {
    return this.conn.acceptStream();
  }

  /** Resolves with a readable reason when the connection ends, whoever ended it. */
  async closed(): Promise<string> {
    return this.conn.closed();
  }

  /** Smoothed round-trip time measured by QUIC, in ms. */
  rttMs(): number | undefined {
    return this.conn.rttMs();
  }

  /** 'direct' (UDP to the peer) or 'relay', when known. */
  pathKind(): 'direct' | 'relay' | undefined {
    return this.conn.pathKind();
  }

  close(code: bigint = CloseCode.normal, reason = ''): void {
    if (typeof code !== 'bigint') throw new TypeError('a close code is a bigint');
    if (code < 0n || code >= 1n << 62n) throw new RangeError('a close code is from 0 to 2^62-1');
    try {
      this.conn.close(code, Buffer.from(String(reason).slice(0, 200)));
    } catch {
      // already closed
    }
    void this.endpoint;
  }
}
