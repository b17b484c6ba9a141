/**
 * The adapter for our own binding (./native, built by ./native/build.mjs): bytes cross as Buffers, so
 * there is no conversion here. The Rust side keeps an endpoint alive while its connections live, and
 * serialises writes per stream in call order.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type * as N from './native/index.js';
import type { ByteStream } from '../protocol/stream.js';
import type { BindArgs, Binding, BoundEndpoint, OpenConnection, PeerAddress } from './binding.js';
import { irohErrorMessage } from './binding.js';

/** Bytes asked for per read: no conversion cost, so larger than @number0/iroh's 64 KiB pieces. */
const READ_SIZE = 128 * 1024;

/** napi-rs style platform name, as build.mjs names the file. */
function platformName(): string {
  const { platform, arch } = process;
  if (platform === 'linux') return `linux-${arch === 'arm' ? 'arm-gnueabihf' : `${arch}-gnu`}`;
  if (platform === 'win32') return `win32-${arch}-msvc`;
  return `${platform}-${arch}`;
}

/**
 * Where the .node is: $REMOTE_USB_IROH_NATIVE_PATH, beside the bundle (packaged: dist/ of the .vsix,
 * lib/ of the daemon bundle), or server/net/native/ of the source tree above it (dist/, out/test/…).
 */
export function nativePath(): string | undefined {
  const forced = process.env.REMOTE_USB_IROH_NATIVE_PATH;
  if (forced) return existsSync(forced) ? forced : undefined;
  const file = `remote-usb-iroh.${platformName()}.node`;
  for (let dir = __dirname, i = 0; i < 6; dir = dirname(dir), i++) {
    for (const p of [join(dir, file), join(dir, 'server', 'net', 'native', file)]) if (existsSync(p)) return p;
  }
  return undefined;
}

/** Loads our binding; throws a readable error when it is not built for this platform or does not load. */
export function loadNativeBinding(): Binding {
  const path = nativePath();
  if (!path) throw new Error(`our Iroh binding is not built for ${platformName()} (npm run build builds it when cargo is installed)`);
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const n = require(path) as typeof N;
  return {
    name: 'native',
    endpointIdOf: (secretKey) => n.endpointIdOf(secretKey),
    parseEndpointId: (s) => n.parseEndpointId(s),
    ticketFromAddr: (addr) => n.ticketFromAddr({ id: addr.id, relayUrl: addr.relayUrl, addrs: addr.addrs }),
    ticketToAddr: (ticket) => peer(n.ticketToAddr(ticket)),
    async bind(args: BindArgs): Promise<BoundEndpoint> {
      const ep = await n.Endpoint.bind({
        secretKey: args.secretKey,
        relay: args.relay.mode,
        relayUrls: args.relay.mode === 'custom' ? args.relay.urls : undefined,
        bindAddr: args.bindAddr,
        alpns: args.alpns,
      });
      return new NativeEndpoint(ep);
    },
  };
}

const peer = (a: N.PeerAddr): PeerAddress => ({ id: a.id, relayUrl: a.relayUrl ?? undefined, addrs: a.addrs });

class NativeEndpoint implements BoundEndpoint {
  readonly id: string;
  constructor(private readonly ep: N.Endpoint) {
    this.id = ep.id();
  }

  boundSockets(): string[] {
    return this.ep.boundSockets();
  }

  address(): PeerAddress {
    return peer(this.ep.addr());
  }

  async connect(p: PeerAddress, alpn: Uint8Array): Promise<OpenConnection> {
    return new NativeConnection(await this.ep.connect({ id: p.id, relayUrl: p.relayUrl, addrs: p.addrs }, alpn));
  }

  async accept(): Promise<OpenConnection | null> {
    const c = await this.ep.accept();
    return c ? new NativeConnection(c) : null;
  }

  async close(): Promise<void> {
    if (!this.ep.isClosed()) await this.ep.close();
  }

  isClosed(): boolean {
    return this.ep.isClosed();
  }
}

class NativeConnection implements OpenConnection {
  readonly remoteId: string;
  constructor(private readonly conn: N.Connection) {
    this.remoteId = conn.remoteId();
  }

  async openStream(): Promise<ByteStream> {
    try {
      return new NativeByteStream(await this.conn.openStream());
    } catch (e) {
      throw new Error(irohErrorMessage(e), { cause: e });
    }
  }

  async acceptStream(): Promise<ByteStream | null> {
    try {
      return new NativeByteStream(await this.conn.acceptStream());
    } catch {
      return null;
    }
  }

  async closed(): Promise<string> {
    return (await this.conn.closed()).split('\n')[0];
  }

  rttMs(): number | undefined {
    return this.conn.rttMs() ?? undefined;
  }

  pathKind(): 'direct' | 'relay' | undefined {
    return this.conn.pathKind() ?? undefined;
  }

  close(code: bigint, reason: Buffer): void {
    this.conn.close(code, reason);
  }
}

class NativeByteStream implements ByteStream {
  constructor(private readonly s: N.Stream) {}

  async write(data: Buffer): Promise<void> {
    if (!(data instanceof Uint8Array)) throw new TypeError('write() takes a Buffer or Uint8Array');
    if (data.length === 0) return;
    try {
      await this.s.write(data);
    } catch (e) {
      throw new Error(irohErrorMessage(e), { cause: e });
    }
  }

  async read(): Promise<Buffer | null> {
    try {
      return await this.s.read(READ_SIZE);
    } catch (e) {
      throw new Error(irohErrorMessage(e), { cause: e });
    }
  }

  async finish(): Promise<void> {
    try {
      await this.s.finish();
    } catch {
      // peer gone: nothing left to finish
    }
  }

  abort(): void {
    try {
      this.s.reset(0n);
      this.s.stop(0n);
    } catch {
      // already gone
    }
  }
}
