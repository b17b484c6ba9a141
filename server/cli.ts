/**
 * `remote-usb-server`: the bench daemon and its admin commands.
 * Exit codes: 0 ok, 1 runtime failure, 2 bad command line or config.
 */
import { existsSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { parseArgs } from 'node:util';
import { ConfigError, defaultConfigPath, describeSharing, loadConfig, ServerConfig } from './config.js';
import { Daemon, describeDevice } from './daemon.js';
import { loadOrCreateSecretKey } from './shared/identity.js';
import { createLogger } from './shared/log.js';
import { printable } from './shared/text.js';
import { endpointIdOf, ticketFor } from './net/iroh.js';
import { clientNameProblem, TrustStore } from './trust.js';
import type { UsbBackend } from './usb/backend.js';
import { DEFAULT_SIM_BOARDS, makeSimBoard, parseSimBoards, SimBoardSpec, SimulatedBackend } from './usb/simulated.js';
import { deviceTable } from './shared/device-table.js';
import { ADMIN_COMMANDS, ADMIN_HELP, adminMain } from './admin.js';
import { dropToStateOwner, InstallError } from './install.js';
import { notifyReady } from './sd-notify.js';
import { top } from './top.js';
import { renderUnicodeCompact } from 'uqr';

declare const REMOTE_USB_VERSION: string | undefined;
const VERSION = typeof REMOTE_USB_VERSION === 'string' ? REMOTE_USB_VERSION : '0.1.0';

const HELP = `remote-usb-server ${VERSION} — share this machine's USB devices with Remote USB clients over Iroh

Usage: remote-usb-server [command] [options]

Commands:
  run              serve (the default)
  list             show the USB devices here and whether they are shared
  id               print this bench's endpoint id
  ticket           print a ticket (id + addresses) clients can connect with
  pair             print a one-time pairing code that lets a new client add itself
                   (--qr: the ticket as a QR code too, to scan into another device)
  clients          list the clients allowed to connect
  allow <id>       allow a client by its endpoint id (\`remote-usb id\` prints it), e.g. for CI machines
  revoke <client>  remove a client (id, id prefix of 8+ digits, or name) from the allowlist
  top              live view of the running daemon: clients (name, id, round trip), claims, URB rate and
                   MB/s per device, serial sessions, pairing codes pending (--json: one snapshot); read
                   from <state_dir>/admin.sock, which only the daemon's user and root can open

${ADMIN_HELP}
Options:
  -c, --config <file>  TOML config (default: ~/.config/remote-usb/server.toml, else /etc/remote-usb/server.toml
                       if present, else built-in defaults)
  --simulate           use simulated boards instead of real USB (demo, tests, machines without USB):
                       $REMOTE_USB_SIM_BOARDS lists them (default ${DEFAULT_SIM_BOARDS}; serial:1,loopback:8
                       makes sim-1 … sim-9), and SIGUSR2 unplugs the last one or plugs it back in
  --json               machine-readable output (list, clients, top)
  --minutes <n>        pairing code lifetime (pair; default from config, 10)
  --name <name>        client name shown on the bench (allow)
  -h, --help           this help
  -v, --version        print the version
`;

class UsageError extends Error {}

const INSTALLED_CONFIG = '/etc/remote-usb/server.toml';

async function main(argv: string[]): Promise<number> {
  const first = argv.find((a) => !a.startsWith('-'));
  if (first && ADMIN_COMMANDS.includes(first) && !argv.some((a) => ['-h', '--help', '-v', '--version'].includes(a))) return adminMain(argv, { ticket: benchTicket });
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        config: { type: 'string', short: 'c' },
        simulate: { type: 'boolean' },
        json: { type: 'boolean' },
        qr: { type: 'boolean' },
        minutes: { type: 'string' },
        name: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'v' },
      },
    });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help) { process.stdout.write(HELP); return 0; }
  if (values.version) { process.stdout.write(`${VERSION}\n`); return 0; }
  const [command = 'run', ...rest] = positionals;
  const wantsArg = command === 'revoke' || command === 'allow';
  if (values.qr && command !== 'pair') throw new UsageError(`--qr goes with 'pair'`);
  if (rest.length > (wantsArg ? 1 : 0) || (wantsArg && rest.length !== 1)) {
    throw new UsageError(wantsArg ? `'${command}' takes exactly one client` : `'${command}' takes no arguments (got '${rest.join(' ')}')`);
  }
  const config = loadConfig(values.config ?? defaultConfigPath() ?? (existsSync(INSTALLED_CONFIG) ? INSTALLED_CONFIG : undefined));
  // as root on an installed bench, act as the service user so the files written stay the daemon's
  if (command !== 'run' && command !== 'list') dropToStateOwner(config.stateDir);
  let simBoards: SimBoardSpec[] | undefined;
  if (values.simulate) {
    try {
      simBoards = parseSimBoards(process.env.REMOTE_USB_SIM_BOARDS ?? DEFAULT_SIM_BOARDS);
    } catch (e) {
      throw new UsageError(`REMOTE_USB_SIM_BOARDS: ${(e as Error).message}`);
    }
  }
  const backend = (): UsbBackend => (simBoards ? new SimulatedBackend(simBoards.map(makeSimBoard)) : loadRealBackend());

  switch (command) {
    case 'run': return run(config, backend(), simBoards?.at(-1));
    case 'list': {
      const b = backend();
      const devices = (await b.list()).map((d) => ({ ...d, shared: describeSharing(config, d) }));
      await b.close();
      process.stdout.write(values.json ? JSON.stringify(devices, null, 2) + '\n' : deviceTable(devices) + '\n');
      return 0;
    }
    case 'id': {
      const { key } = loadOrCreateSecretKey(config.stateDir);
      process.stdout.write(endpointIdOf(key) + '\n');
      return 0;
    }
    case 'ticket': {
      const { key } = loadOrCreateSecretKey(config.stateDir);
      process.stdout.write(benchTicket(config, key) + '\n');
      return 0;
    }
    case 'pair': {
      const minutes = values.minutes === undefined ? config.pairingMinutes : Number(values.minutes);
      if (!Number.isInteger(minutes) || minutes < 1 || minutes > 1440) throw new UsageError(`--minutes must be a whole number 1..1440, got '${values.minutes}'`);
      const { key } = loadOrCreateSecretKey(config.stateDir);
      const trust = new TrustStore(config.allowlistFile, config.stateDir);
      const { code, expires } = trust.createPairingCode(minutes);
      const ticket = benchTicket(config, key);
      process.stdout.write(
        `Pairing code: ${code}   (single use, valid until ${expires.toLocaleTimeString()})\n` +
        `Bench ticket: ${ticket}\n\n` +
        `In VS Code run "Remote USB: Pair with Bench…" and paste the ticket and the code.\n`);
      // the ticket only: the code is typed, so a photo of the screen alone does not pair anyone
      if (values.qr) process.stdout.write(`\nThe ticket as a QR code:\n${renderUnicodeCompact(ticket, { border: 2 })}\n`);
      return 0;
    }
    case 'top': return top(config.stateDir, values.json === true);
    case 'clients': {
      const clients = new TrustStore(config.allowlistFile, config.stateDir).clients();
      if (values.json) process.stdout.write(JSON.stringify(clients, null, 2) + '\n');
      else if (clients.length === 0) process.stdout.write(`no clients allowed yet (allowlist: ${config.allowlistFile}); run 'remote-usb-server pair'\n`);
      else for (const c of clients) process.stdout.write(`${c.id}  ${printable(c.name)}  (added ${printable(c.added)})\n`);
      return 0;
    }
    case 'allow': {
      const id = rest[0].toLowerCase();
      if (!/^[0-9a-f]{64}$/.test(id)) throw new UsageError(`'${rest[0].slice(0, 80)}' is not a client endpoint id (64 hex digits, from 'remote-usb id')`);
      const name = values.name ?? id.slice(0, 10);
      const problem = clientNameProblem(name);
      if (problem) throw new UsageError(`--name: ${problem}`);
      new TrustStore(config.allowlistFile, config.stateDir).allow(id, name);
      process.stdout.write(`allowed ${name} (${id})\n`);
      return 0;
    }
    case 'revoke': {
      const ok = new TrustStore(config.allowlistFile, config.stateDir).revoke(rest[0]);
      if (!ok) { process.stderr.write(`remote-usb-server: no client '${rest[0]}' in ${config.allowlistFile}\n`); return 1; }
      process.stdout.write(`revoked ${rest[0]}; it can no longer connect (existing connections end when it reconnects)\n`);
      return 0;
    }
    default:
      throw new UsageError(`unknown command '${command}'`);
  }
}

function loadRealBackend(): UsbBackend {
  // Loaded on demand so `--simulate` and the admin commands work where the native module cannot load.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { RealUsbBackend } = require('./usb/usb-real.js') as typeof import('./usb/usb-real.js');
  return new RealUsbBackend();
}

/** Ticket with every non-loopback address of this machine on the configured port. */
function benchTicket(config: ServerConfig, key: Uint8Array): string {
  const port = Number(config.listen.split(':').pop());
  const host = config.listen.slice(0, config.listen.lastIndexOf(':'));
  const addrs: string[] = [];
  if (host !== '0.0.0.0' && host !== '[::]') addrs.push(config.listen);
  else {
    for (const list of Object.values(networkInterfaces())) {
      for (const a of list ?? []) {
        if (a.internal) continue;
        if (a.family === 'IPv4' && host === '0.0.0.0') addrs.push(`${a.address}:${port}`);
        if (a.family === 'IPv6' && host === '[::]' && !a.address.startsWith('fe80')) addrs.push(`[${a.address}]:${port}`);
      }
    }
    if (addrs.length === 0) addrs.push(`127.0.0.1:${port}`);
  }
  return ticketFor({ id: endpointIdOf(key), addrs });
}

async function run(config: ServerConfig, backend: UsbBackend, hotplugBoard?: SimBoardSpec): Promise<number> {
  const log = createLogger(config.logLevel);
  const { key, created } = loadOrCreateSecretKey(config.stateDir);
  if (created) log.info(`created a new bench identity in ${config.stateDir}`);
  const daemon = new Daemon({ config, backend, secretKey: key, log });
  let stopping = false;
  const stopped = new Promise<void>((resolve) => {
    const stop = (sig: string): void => {
      if (stopping) return;
      stopping = true;
      log.info(`${sig}: releasing devices and stopping`);
      void daemon.stop().then(() => backend.close()).then(resolve, resolve);
    };
    // Simulated hot-plug from outside (load tests, trying a client): SIGUSR2 toggles the last board.
    if (backend instanceof SimulatedBackend && hotplugBoard) {
      process.on('SIGUSR2', () => log.info(`SIGUSR2: sim-${hotplugBoard.n} ${backend.togglePlug(hotplugBoard)}`));
    }
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGTERM', () => stop('SIGTERM'));
  });
  try {
    // A broken allowlist or an unusable address fails here, before systemd hears READY=1.
    await daemon.start();
  } catch (e) {
    await backend.close().catch(() => {});
    throw e;
  }
  log.info(`ticket: ${benchTicket(config, key)}`);
  if (daemon.trust.clients().length === 0) log.info(`no clients paired yet: run 'remote-usb-server pair' to add one`);
  await notifyReady(`serving as ${endpointIdOf(key).slice(0, 16)}…`, log);
  for (const d of await backend.list()) log.debug(`device: ${describeDevice(d)}`);
  await stopped;
  // Every device is released; native modules (usb's hot-plug thread) could keep the event loop alive.
  process.exit(0);
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (e: Error) => {
    const usage = e instanceof UsageError || e instanceof ConfigError || e.name === 'UsageError';
    process.stderr.write(`remote-usb-server: ${e.message}${usage && !(e instanceof ConfigError) ? `\nTry 'remote-usb-server --help'.` : ''}\n`);
    // exit now: a daemon that failed to start may hold native handles (usb's hot-plug thread) open
    process.exit(e instanceof InstallError ? e.exitCode : usage ? 2 : 1);
  },
);
