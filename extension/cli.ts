/**
 * `remote-usb`: the client core from a terminal — for scripts, CI and the real-kernel tests.
 * Exit codes: 0 ok, 1 failure (bench unreachable, refused, attach failed), 2 bad command line.
 */
import { homedir, hostname, userInfo } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { deviceTable } from '../server/shared/device-table.js';
import { loadOrCreateSecretKey } from '../server/shared/identity.js';
import { endpointIdOf, parsePeerAddress, RelayChoice } from '../server/net/iroh.js';
import { createLogger, LOG_LEVELS, Logger, LogLevel } from '../server/shared/log.js';
import { printable } from '../server/shared/text.js';
import { BenchClient } from './core/bench-client.js';
import { AttachError, attachDevice, AttachOptions } from './core/usbip/attach.js';
import { DEFAULT_SERIAL_PARAMS } from './core/serial.js';
import { Rfc2217Share } from './core/rfc2217-server.js';

const HELP = `remote-usb — use a Remote USB bench from the command line

Usage: remote-usb <command> [options]

Commands:
  id                      print this client's endpoint id (for 'remote-usb-server allow')
  pair                    pair with a bench using a one-time code (--bench, --code)
  list                    list the bench's devices (--bench) [--json]
  attach <device>         claim a device (bus id from 'list') and attach it to this machine's kernel
                          through vhci_hcd until Ctrl-C / SIGTERM, then detach and release it
  serial [<bench>] <port> open a serial port on the bench (a device id with a tty, or a tty the bench
                          shares) at --baud (default 115200) 8N1: stdin → port, port → stdout, raw bytes;
                          Ctrl-] quits when stdin is a terminal, else end of stdin (after 0.5 s);
                          with --rfc2217, shares it with local tools instead (see below)

Options:
  -b, --bench <ticket>    bench ticket, endpoint id, or id@host:port (default: $REMOTE_USB_BENCH)
  --code <code>           pairing code from 'remote-usb-server pair'
  --relay <mode>          default | disabled (default: default)
  --key-dir <dir>         where this client's identity lives (default: ~/.config/remote-usb)
  --name <name>           name shown on the bench (default: user@host)
  --json                  machine-readable output
  --helper <path>         remote-usb-helper launcher (default: where 'remote-usb-helper install' puts it)
  --direct                run the helper directly (already root) instead of through pkexec
  --log-level <level>     error | warn | info | debug (attach; default info)
  --baud <n>              serial: baud rate (default 115200)
  --rfc2217               serial: serve the port as an RFC 2217 server on 127.0.0.1 and print its
                          URL (rfc2217://127.0.0.1:N) for esptool, pyserial, PlatformIO; one local
                          program at a time, and on Linux only your own user's; Ctrl-C stops it
  --port <n>              serial --rfc2217: the TCP port (default: any free one)
  -h, --help
`;

class UsageError extends Error {}

async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv, allowPositionals: true,
      options: {
        bench: { type: 'string', short: 'b' }, code: { type: 'string' }, relay: { type: 'string' },
        'key-dir': { type: 'string' }, name: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
        helper: { type: 'string' }, direct: { type: 'boolean' }, 'log-level': { type: 'string' }, baud: { type: 'string' },
        rfc2217: { type: 'boolean' }, port: { type: 'string' },
      },
    });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help || positionals.length === 0) { process.stdout.write(HELP); return values.help ? 0 : 2; }
  const [command, ...rest] = positionals;
  if (command === 'serial') {
    if (rest.length < 1 || rest.length > 2) throw new UsageError(`'serial' takes a port (device id or bench tty), optionally after the bench: serial [<bench>] <port>`);
    if (rest.length === 2) values.bench = rest.shift();
  } else if (command === 'attach' ? rest.length !== 1 : rest.length > 0) {
    throw new UsageError(command === 'attach' ? `'attach' takes exactly one device (its bus id from 'remote-usb list')` : `'${command}' takes no arguments (got '${rest.join(' ')}')`);
  }
  const keyDir = values['key-dir'] ?? join(homedir(), '.config', 'remote-usb');
  const key = (): Uint8Array => loadOrCreateSecretKey(keyDir).key;
  if (command === 'id') { process.stdout.write(endpointIdOf(key()) + '\n'); return 0; }
  if (command !== 'pair' && command !== 'list' && command !== 'attach' && command !== 'serial') throw new UsageError(`unknown command '${command}'`);
  const baud = Number(values.baud ?? DEFAULT_SERIAL_PARAMS.baud);
  if (!Number.isInteger(baud) || baud < 1 || baud > 20_000_000) throw new UsageError(`--baud must be a whole number 1..20000000, got '${values.baud}'`);
  const logLevel = (values['log-level'] ?? 'info') as LogLevel;
  if (!LOG_LEVELS.includes(logLevel)) throw new UsageError(`--log-level must be one of ${LOG_LEVELS.join(', ')}`);
  if ((values.rfc2217 || values.port !== undefined) && command !== 'serial') throw new UsageError(`--rfc2217 and --port go with 'serial'`);
  if (values.port !== undefined && !values.rfc2217) throw new UsageError(`--port goes with --rfc2217`);
  const tcpPort = Number(values.port ?? 0);
  if (!/^\d+$/.test(values.port ?? '0') || tcpPort > 65535) throw new UsageError(`--port must be a whole number 0..65535, got '${values.port}'`);

  const benchText = values.bench ?? process.env.REMOTE_USB_BENCH;
  if (!benchText) throw new UsageError('which bench? pass --bench <ticket> (from remote-usb-server ticket) or set REMOTE_USB_BENCH');
  let bench;
  try { bench = parsePeerAddress(benchText); } catch (e) { throw new UsageError((e as Error).message); }
  const relayMode = values.relay ?? 'default';
  if (relayMode !== 'default' && relayMode !== 'disabled') throw new UsageError(`--relay must be 'default' or 'disabled', got '${relayMode}'`);
  if (command === 'pair' && !values.code) throw new UsageError(`'pair' needs --code <code> from 'remote-usb-server pair'`);
  const client = await BenchClient.connect({
    secretKey: key(), bench, relay: { mode: relayMode } as RelayChoice,
    clientName: values.name ?? `${userInfo().username}@${hostname()}`,
    pairingCode: command === 'pair' ? values.code : undefined,
  });
  try {
    if (command === 'serial' && values.rfc2217) return await shareSerial(client, rest[0], baud, tcpPort, createLogger(logLevel));
    if (command === 'serial') return await serial(client, rest[0], baud);
    if (command === 'attach') return await attach(client, rest[0], { helperPath: values.helper, runAsRoot: values.direct ? 'direct' : undefined, log: createLogger(logLevel) });
    if (command === 'pair') {
      process.stdout.write(`paired with bench '${printable(client.benchName)}' (${bench.id}); ${client.devices.length} device(s)\n`);
    } else {
      const devices = await client.list();
      process.stdout.write(values.json ? JSON.stringify(devices, null, 2) + '\n' : `bench '${printable(client.benchName)}':\n${deviceTable(devices)}\n`);
    }
  } finally {
    await client.close();
  }
  return 0;
}

/** Ctrl-]: telnet's and picocom's escape, a byte a serial session rarely needs to send. */
const QUIT_BYTE = 0x1d;

/** Streams a bench serial port to stdout and stdin to it until Ctrl-], end of stdin, a signal, or 'closed'. */
async function serial(client: BenchClient, port: string, baud: number): Promise<number> {
  const s = await client.openSerial(port, { ...DEFAULT_SERIAL_PARAMS, baud });
  const stdin = process.stdin;
  const interactive = stdin.isTTY === true;
  process.stderr.write(`connected to ${port} (${s.path}) on bench '${printable(client.benchName)}' at ${baud} 8N1; ${interactive ? 'Ctrl-] quits' : 'end of input quits'}\r\n`);
  s.on('data', (d) => process.stdout.write(d));
  const code = await new Promise<number>((resolve) => {
    s.on('state', (state, detail) => {
      process.stderr.write(`\r\n[${state}${detail ? `: ${printable(detail)}` : ''}]\r\n`);
      if (state === 'closed') resolve(1);
    });
    process.once('SIGINT', () => resolve(0));
    process.once('SIGTERM', () => resolve(0));
    if (interactive) stdin.setRawMode(true);
    stdin.on('data', (d: Buffer) => {
      const quit = interactive ? d.indexOf(QUIT_BYTE) : -1;
      if (quit >= 0) {
        if (quit > 0) s.write(d.subarray(0, quit));
        resolve(0);
        return;
      }
      s.write(d);
    });
    // like socat: after the input ends, wait a moment for the answers
    stdin.on('end', () => setTimeout(() => resolve(0), 500));
  });
  if (interactive) stdin.setRawMode(false);
  stdin.pause();
  await s.close();
  return code;
}

/** Serves a bench serial port as rfc2217://127.0.0.1:N until a signal or until the port closes for good. */
async function shareSerial(client: BenchClient, port: string, baud: number, tcpPort: number, log: Logger): Promise<number> {
  const params = { ...DEFAULT_SERIAL_PARAMS, baud };
  const s = await client.openSerial(port, params);
  let share;
  try {
    share = await Rfc2217Share.start(s, { port: tcpPort, params, name: `${port} on bench '${client.benchName}'`, log });
  } catch (e) {
    await s.close();
    throw e;
  }
  process.stdout.write(`${share.url}\n`);
  process.stderr.write(`sharing ${port} (${printable(s.path)}) on bench '${printable(client.benchName)}' with local programs at ${share.url}; Ctrl-C stops\n`);
  const code = await new Promise<number>((resolve) => {
    share.once('end', (why) => resolve(why === 'share stopped' ? 0 : 1));
    process.once('SIGINT', () => resolve(0));
    process.once('SIGTERM', () => resolve(0));
  });
  await share.stop();
  return code;
}

/** Attaches until a signal or until the device leaves; returns the exit code. */
async function attach(client: BenchClient, id: string, options: AttachOptions): Promise<number> {
  if (!client.device(id)) throw new Error(`bench '${printable(client.benchName)}' has no device '${id}' (see 'remote-usb list')`);
  const dev = await client.claim(id);
  let attachment;
  try {
    attachment = await attachDevice(dev, options);
  } catch (e) {
    await dev.release().catch(() => {});
    if (e instanceof AttachError) throw new Error(`${e.message} ${e.hint}`, { cause: e });
    throw e;
  }
  process.stdout.write(`attached ${id} from bench '${printable(client.benchName)}' as vhci port ${attachment.port} (devid ${attachment.devid}); Ctrl-C detaches\n`);
  const stopped = await new Promise<'signal' | 'closed'>((resolve) => {
    process.once('SIGINT', () => resolve('signal'));
    process.once('SIGTERM', () => resolve('signal'));
    void attachment.closed.then(() => resolve('closed'));
  });
  const info = stopped === 'closed' ? await attachment.closed : undefined;
  await attachment.detach();
  await dev.release().catch(() => {});
  process.stdout.write(stopped === 'signal' ? `detached ${id}\n` : `${id} left the kernel: ${info?.reason}${info?.message ? ` (${printable(info.message)})` : ''}\n`);
  return stopped === 'signal' ? 0 : 1;
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (e: Error) => {
    process.stderr.write(`remote-usb: ${e.message.split('\n').map(printable).join('\n')}${e instanceof UsageError ? `\nTry 'remote-usb --help'.` : ''}\n`);
    process.exitCode = e instanceof UsageError ? 2 : 1;
  },
);
