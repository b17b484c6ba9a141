/**
 * The RFC 2217 share against a stand-in SerialSession and a raw TCP client on loopback: every
 * COM-PORT-OPTION request and its answer, order of data and settings, refusals (another uid, a second
 * client), flow control, purge, modem state following the port, and the end of the share.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { connect, Socket } from 'node:net';
import { after, describe, test } from 'node:test';
import { Rfc2217Share } from '../../extension/core/rfc2217-server.js';
import {
  ComPort, comPort, escapeIac, Modem, negotiation, OPT_BINARY, OPT_COM_PORT, OPT_ECHO, OPT_SGA, TelnetDecoder, TelnetEvent, u32,
} from '../../extension/core/rfc2217.js';
import { findSocketUid, loopbackPeerUid, normalize, procAddress } from '../../extension/core/socket-owner.js';
import type { SerialSession, SerialSessionEvents, SerialSetOptions, SerialState } from '../../extension/core/serial.js';
import { until } from '../helpers/bench-fixture.js';

class FakeSession extends EventEmitter<SerialSessionEvents> implements SerialSession {
  state: SerialState = 'open';
  path = 'fake:1';
  written: Buffer[] = [];
  sets: SerialSetOptions[] = [];
  /** Next set() waits for this / fails with this. */
  gate?: Promise<void>;
  refuse?: string;
  log: string[] = [];
  closed = false;
  write(data: Uint8Array): void {
    this.written.push(Buffer.from(data));
    this.log.push(`write ${Buffer.from(data).toString('latin1')}`);
  }
  async set(opts: SerialSetOptions): Promise<void> {
    this.log.push(`set ${JSON.stringify(opts)}`);
    if (this.gate) await this.gate;
    if (this.refuse) throw new Error(this.refuse);
    this.sets.push(opts);
  }
  async close(): Promise<void> {
    this.closed = true;
  }
  get bytes(): Buffer {
    return Buffer.concat(this.written);
  }
}

class Client {
  readonly events: TelnetEvent[] = [];
  readonly raw: Buffer[] = [];
  private readonly decoder = new TelnetDecoder();
  closed = false;
  constructor(readonly socket: Socket) {
    socket.on('data', (d: Buffer) => { this.raw.push(d); this.events.push(...this.decoder.push(d)); });
    socket.on('close', () => { this.closed = true; });
    socket.on('error', () => {});
  }
  static async open(port: number): Promise<Client> {
    const s = connect({ host: '127.0.0.1', port });
    await new Promise((resolve, reject) => { s.once('connect', resolve); s.once('error', reject); });
    return new Client(s);
  }
  send(b: Buffer): void {
    this.socket.write(b);
  }
  get data(): Buffer {
    return Buffer.concat(this.events.filter((e) => e.kind === 'data').map((e) => (e as { data: Buffer }).data));
  }
  get text(): string {
    return Buffer.concat(this.raw).toString('latin1');
  }
  /** The COM-PORT answers so far, as [command, ...value]. */
  get answers(): number[][] {
    return this.events.filter((e) => e.kind === 'subnegotiation' && e.option === OPT_COM_PORT).map((e) => [...(e as { payload: Buffer }).payload]);
  }
  async answer(command: number, n = 1): Promise<number[]> {
    await until(() => this.answers.filter((a) => a[0] === command).length >= n, 3000, `answer ${command}`);
    return this.answers.filter((a) => a[0] === command)[n - 1];
  }
  close(): void {
    this.socket.destroy();
  }
}

const PARAMS = { baud: 115200, dataBits: 8 as const, parity: 'none' as const, stopBits: 1 as const };

describe('RFC 2217 share (stand-in session, raw client)', () => {
  const shares: Rfc2217Share[] = [];
  after(async () => { for (const s of shares) await s.stop(); });
  const start = async (session = new FakeSession(), extra: Partial<Parameters<typeof Rfc2217Share.start>[1]> = {}): Promise<[Rfc2217Share, FakeSession]> => {
    const share = await Rfc2217Share.start(session, { params: PARAMS, name: 'fake-1', ...extra });
    shares.push(share);
    return [share, session];
  };

  test('listens on 127.0.0.1 only, on the port asked for; a taken port is named', async () => {
    const [share] = await start();
    assert.match(share.url, /^rfc2217:\/\/127\.0\.0\.1:\d+$/);
    await assert.rejects(start(new FakeSession(), { port: share.port }), new RegExp(`port ${share.port} on 127.0.0.1 is already in use`));
    await assert.rejects(start(new FakeSession(), { port: 70000 }), /the RFC 2217 port must be a whole number 0..65535, got 70000/);
  });

  test('negotiation: offers BINARY both ways, SGA, ECHO; agrees to COM-PORT-OPTION; refuses the rest; never loops', async () => {
    const [share] = await start();
    const c = await Client.open(share.port);
    await until(() => c.events.length >= 4, 3000, 'the opening offers');
    assert.deepEqual(c.events.slice(0, 4), [
      { kind: 'negotiate', verb: 'will', option: OPT_BINARY }, { kind: 'negotiate', verb: 'do', option: OPT_BINARY },
      { kind: 'negotiate', verb: 'will', option: OPT_SGA }, { kind: 'negotiate', verb: 'will', option: OPT_ECHO },
    ]);
    c.events.length = 0;
    // what pyserial sends; acks of our own offers get no answer
    c.send(Buffer.concat([negotiation('do', OPT_ECHO), negotiation('will', OPT_SGA), negotiation('do', OPT_SGA), negotiation('do', OPT_COM_PORT), negotiation('will', OPT_COM_PORT), negotiation('will', OPT_BINARY), negotiation('do', 24), negotiation('will', 31)]));
    await until(() => c.events.length >= 6, 3000, 'answers');
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(c.events, [
      { kind: 'negotiate', verb: 'do', option: OPT_SGA },
      { kind: 'negotiate', verb: 'will', option: OPT_COM_PORT },
      // COM-PORT-OPTION on: the first modem state, so the client can read CTS/DSR/CD
      { kind: 'subnegotiation', option: OPT_COM_PORT, payload: Buffer.of(107, Modem.CTS | Modem.DSR | Modem.CD) },
      { kind: 'negotiate', verb: 'do', option: OPT_COM_PORT },
      { kind: 'negotiate', verb: 'wont', option: 24 },
      { kind: 'negotiate', verb: 'dont', option: 31 },
    ]);
    c.events.length = 0;
    c.send(Buffer.concat([negotiation('dont', OPT_ECHO), negotiation('dont', OPT_ECHO), negotiation('wont', 31)]));
    await until(() => c.events.length >= 1, 3000, 'WONT ECHO');
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(c.events, [{ kind: 'negotiate', verb: 'wont', option: OPT_ECHO }]);
    c.close();
  });

  test('line settings: each applied on the port, answered with the value in force; 0 asks; bad values are answered with the current one', async () => {
    const [share, session] = await start();
    const c = await Client.open(share.port);
    c.send(Buffer.concat([
      comPort(ComPort.SET_BAUDRATE, u32(921600)), comPort(ComPort.SET_DATASIZE, [7]), comPort(ComPort.SET_PARITY, [3]), comPort(ComPort.SET_STOPSIZE, [3]),
    ]));
    assert.deepEqual(await c.answer(101), [101, ...u32(921600)]);
    assert.deepEqual(await c.answer(102), [102, 7]);
    assert.deepEqual(await c.answer(103), [103, 3]);
    assert.deepEqual(await c.answer(104), [104, 3]);
    assert.deepEqual(session.sets, [{ baud: 921600 }, { dataBits: 7 }, { parity: 'even' }, { stopBits: 1.5 }]);
    // queries and out-of-range values change nothing
    c.send(Buffer.concat([
      comPort(ComPort.SET_BAUDRATE, u32(0)), comPort(ComPort.SET_BAUDRATE, u32(30_000_000)), comPort(ComPort.SET_DATASIZE, [9]),
      comPort(ComPort.SET_PARITY, [0]), comPort(ComPort.SET_PARITY, [6]), comPort(ComPort.SET_STOPSIZE, [0]), comPort(ComPort.SET_STOPSIZE, [4]),
    ]));
    assert.deepEqual(await c.answer(101, 2), [101, ...u32(921600)]);
    assert.deepEqual(await c.answer(101, 3), [101, ...u32(921600)]);
    assert.deepEqual(await c.answer(102, 2), [102, 7]);
    assert.deepEqual(await c.answer(103, 3), [103, 3]);
    assert.deepEqual(await c.answer(104, 3), [104, 3]);
    assert.equal(session.sets.length, 4);
    // the bench refuses: the answer is the old value (pyserial: "remote rejected value")
    session.refuse = 'the tty cannot do that';
    c.send(comPort(ComPort.SET_BAUDRATE, u32(300)));
    assert.deepEqual(await c.answer(101, 4), [101, ...u32(921600)]);
    assert.equal(share.settings.baud, 921600);
    c.close();
  });

  test('SET-CONTROL: DTR, RTS, break set and asked; flow control answered "none"', async () => {
    const [share, session] = await start();
    const c = await Client.open(share.port);
    const control = async (v: number, n: number): Promise<number> => {
      c.send(comPort(ComPort.SET_CONTROL, [v]));
      return (await c.answer(105, n))[1];
    };
    assert.equal(await control(9, 1), 9); // DTR off
    assert.equal(await control(7, 2), 9); // DTR?
    assert.equal(await control(12, 3), 12); // RTS off
    assert.equal(await control(10, 4), 12);
    assert.equal(await control(11, 5), 11); // RTS on
    assert.equal(await control(8, 6), 8); // DTR on
    assert.equal(await control(5, 7), 5); // break on
    assert.equal(await control(4, 8), 5);
    assert.equal(await control(6, 9), 6);
    assert.equal(await control(0, 10), 1); // flow setting? none
    assert.equal(await control(1, 11), 1);
    assert.equal(await control(3, 12), 1); // hardware flow: not available, still none
    assert.equal(await control(2, 13), 1);
    assert.equal(await control(13, 14), 14);
    assert.equal(await control(16, 15), 14);
    assert.deepEqual(session.sets, [{ dtr: false }, { rts: false }, { rts: true }, { dtr: true }, { brk: true }, { brk: false }]);
    c.close();
  });

  test('masks, line/modem state polls, signature, purge', async () => {
    const [share] = await start();
    const c = await Client.open(share.port);
    c.send(Buffer.concat([
      comPort(ComPort.SET_LINESTATE_MASK, [0x02]), comPort(ComPort.SET_MODEMSTATE_MASK, [0xff]),
      comPort(ComPort.NOTIFY_LINESTATE), comPort(ComPort.NOTIFY_MODEMSTATE), comPort(ComPort.SIGNATURE), comPort(ComPort.SIGNATURE, [...Buffer.from('pyserial')]),
      comPort(ComPort.PURGE_DATA, [1]), comPort(ComPort.PURGE_DATA, [2]), comPort(ComPort.PURGE_DATA, [3]),
    ]));
    assert.deepEqual(await c.answer(110), [110, 0x02]);
    assert.deepEqual(await c.answer(111), [111, 0xff]);
    assert.deepEqual(await c.answer(106), [106, 0x60]);
    assert.deepEqual(await c.answer(107), [107, 0xb0]);
    assert.equal(Buffer.from((await c.answer(100)).slice(1)).toString(), 'Remote USB fake-1');
    assert.deepEqual(await c.answer(112, 3), [112, 3]);
    assert.equal(c.answers.filter((a) => a[0] === 100).length, 1, 'a client signature is not answered');
    c.close();
  });

  test('data: IAC escaping both ways, byte-identical; a settings change is applied before the bytes sent after it', async () => {
    const [share, session] = await start();
    const c = await Client.open(share.port);
    const all = Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7) & 0xff));
    c.send(escapeIac(all));
    await until(() => session.bytes.length >= all.length, 3000, 'bytes at the port');
    assert.deepEqual(session.bytes, all);
    session.emit('data', all);
    await until(() => c.data.length >= all.length, 3000, 'bytes at the client');
    assert.deepEqual(c.data, all);
    // order: write A, baud change (held by the bench for a while), write B
    session.log.length = 0;
    let open!: () => void;
    session.gate = new Promise((r) => { open = r; });
    c.send(Buffer.concat([Buffer.from('A'), comPort(ComPort.SET_BAUDRATE, u32(9600)), Buffer.from('B')]));
    await until(() => session.log.length >= 2, 3000, 'A and the set');
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(session.log, ['write A', 'set {"baud":9600}']);
    open();
    await until(() => session.log.length >= 3, 3000, 'B');
    assert.deepEqual(session.log, ['write A', 'set {"baud":9600}', 'write B']);
    c.close();
  });

  test('FLOWCONTROL-SUSPEND holds the port\'s bytes until RESUME; PURGE receive drops what is held', async () => {
    const [share, session] = await start();
    const c = await Client.open(share.port);
    c.send(comPort(ComPort.FLOWCONTROL_SUSPEND));
    c.send(comPort(ComPort.SET_LINESTATE_MASK, [0])); // a round trip, so SUSPEND is in force
    await c.answer(110);
    session.emit('data', Buffer.from('held'));
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(c.data.length, 0);
    c.send(comPort(ComPort.FLOWCONTROL_RESUME));
    await until(() => c.data.toString() === 'held', 3000, 'held bytes');
    c.send(comPort(ComPort.FLOWCONTROL_SUSPEND));
    c.send(comPort(ComPort.SET_LINESTATE_MASK, [0]));
    await c.answer(110, 2);
    session.emit('data', Buffer.from('purged'));
    c.send(Buffer.concat([comPort(ComPort.PURGE_DATA, [1]), comPort(ComPort.FLOWCONTROL_RESUME)]));
    await c.answer(112);
    session.emit('data', Buffer.from('!'));
    await until(() => c.data.toString() === 'held!', 3000, 'only the later byte');
    c.close();
  });

  test('the port going away and coming back shows in the modem lines, with deltas', async () => {
    const [share, session] = await start();
    const c = await Client.open(share.port);
    c.send(negotiation('will', OPT_COM_PORT));
    await c.answer(107);
    session.emit('state', 'waiting', 'board reset');
    assert.deepEqual(await c.answer(107, 2), [107, Modem.DELTA_CD | Modem.DELTA_DSR | Modem.DELTA_CTS]);
    session.emit('state', 'open', 'reopened');
    assert.deepEqual(await c.answer(107, 3), [107, 0xb0 | 0x0b]);
    c.close();
  });

  test('one client at a time: a second is told and closed; after the first leaves, the next gets in', async () => {
    const [share] = await start();
    const first = await Client.open(share.port);
    await until(() => share.connected, 3000, 'the first client');
    const second = await Client.open(share.port);
    await until(() => second.closed, 3000, 'the second to be closed');
    assert.match(second.text, /remote-usb: refused: fake-1 is in use by another local program; one at a time/);
    first.close();
    await until(() => !share.connected, 3000, 'the first to leave');
    const third = await Client.open(share.port);
    await until(() => share.connected, 3000, 'the third client');
    assert.equal(third.closed, false);
    third.close();
  });

  test('a connection from another uid is refused before anything is read from it', async () => {
    const [share, session] = await start(new FakeSession(), { peerUid: async () => 4242 });
    const refused: string[] = [];
    share.on('refused', (r) => refused.push(r));
    const c = await Client.open(share.port);
    c.send(Buffer.from('sneaky'));
    await until(() => c.closed, 3000, 'the refusal');
    assert.match(c.text, new RegExp(`refused: this port is shared with user ${process.getuid!()} only, not with user 4242`));
    assert.equal(session.written.length, 0);
    assert.equal(share.connected, false);
    assert.equal(refused.length, 1);
    const [share2] = await start(new FakeSession(), { peerUid: async () => undefined });
    const c2 = await Client.open(share2.port);
    await until(() => c2.closed, 3000, 'the refusal');
    assert.match(c2.text, /the kernel lists no such connection/);
  });

  test('the session closing for good ends the share: client disconnected, listener closed', async () => {
    const [share, session] = await start();
    const c = await Client.open(share.port);
    await until(() => share.connected, 3000, 'client');
    const ended = new Promise<string>((r) => share.once('end', r));
    session.state = 'closed';
    session.emit('state', 'closed', 'bench removed');
    assert.equal(await ended, 'the serial port closed: bench removed');
    await until(() => c.closed, 3000, 'client closed');
    assert.equal(share.ended, true);
    await assert.rejects(Client.open(share.port), /ECONNREFUSED/);
  });

  test('stop() disconnects the client and closes the session', async () => {
    const [share, session] = await start();
    const c = await Client.open(share.port);
    await until(() => share.connected, 3000, 'client');
    await share.stop();
    await until(() => c.closed, 3000, 'client closed');
    assert.equal(session.closed, true);
  });
});

describe('who owns a loopback connection (/proc/net/tcp)', () => {
  const TABLE = [
    '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
    '   0: 0100007F:9C40 0100007F:1F90 06 00000000:00000000 03:00000FA0 00000000     0        0 0 3 0000000000000000',
    '   1: 0100007F:1F90 0100007F:9C40 01 00000000:00000000 00:00000000 00000000  1000        0 1 1 0000000000000000',
    '   2: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1001        0 2 1 0000000000000000',
  ].join('\n');

  test('addresses as the kernel prints them, in either byte order; v4-mapped v6 is v4', () => {
    assert.equal(procAddress('0100007F', true), '127.0.0.1');
    assert.equal(procAddress('7F000001', false), '127.0.0.1');
    assert.equal(procAddress('0000000000000000FFFF00000100007F', true), '127.0.0.1');
    assert.equal(procAddress('00000000000000000000000001000000', true), '0:0:0:0:0:0:0:1');
    assert.equal(normalize('::1'), '0:0:0:0:0:0:0:1');
    assert.equal(normalize('::ffff:127.0.0.1'), '127.0.0.1');
    assert.throws(() => procAddress('zz'), /not an address from \/proc\/net\/tcp: 'zz'/);
  });

  test('the row whose local end is the peer and remote end is us; only a connected one counts', () => {
    // 40000 → 8080: row 0 is TIME_WAIT (uid 0, must not count), row 2 the live one
    assert.equal(findSocketUid(TABLE, { address: '127.0.0.1', port: 40000 }, { address: '127.0.0.1', port: 8080 }, true), 1001);
    assert.equal(findSocketUid(TABLE, { address: '127.0.0.1', port: 8080 }, { address: '127.0.0.1', port: 40000 }, true), 1000);
    assert.equal(findSocketUid(TABLE, { address: '127.0.0.1', port: 40001 }, { address: '127.0.0.1', port: 8080 }, true), undefined);
    assert.equal(findSocketUid('garbage\nmore garbage here 1 2 3 4 5 6 7\n', { address: '127.0.0.1', port: 1 }, { address: '127.0.0.1', port: 2 }), undefined);
  });

  test('a real loopback connection from this process is ours', { skip: process.platform !== 'linux' && 'Linux only' }, async () => {
    const { createServer } = await import('node:net');
    const server = createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const accepted = new Promise<Socket>((r) => server.once('connection', r));
    const s = connect({ host: '127.0.0.1', port: (server.address() as { port: number }).port });
    const peer = await accepted;
    assert.equal(await loopbackPeerUid({ address: peer.remoteAddress!, port: peer.remotePort! }, { address: peer.localAddress!, port: peer.localPort! }), process.getuid!());
    s.destroy();
    peer.destroy();
    server.close();
  });
});
