/**
 * The bench admin commands that set the machine up and check it: install, uninstall, status, doctor.
 * Their flags differ from the daemon's, so cli.ts hands them the whole argument list.
 */
import { parseArgs } from 'node:util';
import type { ServerConfig } from './config.js';
import { diagnose, formatReport } from './doctor.js';
import { findBundle, install, InstallError, InstallUsageError, realSystem, uninstall, updateUdevRules, validateSettings } from './install.js';

export const ADMIN_COMMANDS = ['install', 'uninstall', 'udev-rules', 'status', 'doctor'];

export const ADMIN_HELP = `Setting up a bench (as root, from the unpacked bundle of npm run package:server):
  install          create the remote-usb user, /etc/remote-usb/server.toml, /var/lib/remote-usb, a udev
                   rule and a systemd unit; start the service; print a ticket and a pairing code
  uninstall        undo install (keeps config, identity and allowlist; --purge removes them and the user)
  udev-rules       after changing [sharing]: rewrite the udev rule that gives the service user the shared
                   USB devices (and no others), and apply it to the devices present
  status           config, service, identity
  doctor           everything status checks, plus USB/tty access for the service user, udev rule, relay
  --user <name> (remote-usb)  --prefix <dir> (/usr/local)  --config-dir <dir> (/etc/remote-usb)
  --state-dir <dir> (/var/lib/remote-usb)  --root <dir> (install into a tree, not this system)
  install --json   print one JSON object instead of text: {"ticket", "pairingCode" (null with --no-pair),
                   "pairingExpires", "version", "target", "lines"} (errors stay on stderr, non-zero exit)
  status/doctor exit 0 healthy, 1 problems found, 2 usage
`;

export async function adminMain(argv: string[], ctx: { ticket: (config: ServerConfig, key: Uint8Array) => string }): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        user: { type: 'string' }, prefix: { type: 'string' }, 'config-dir': { type: 'string' }, 'state-dir': { type: 'string' },
        root: { type: 'string' }, purge: { type: 'boolean' }, config: { type: 'string', short: 'c' }, minutes: { type: 'string' },
        'no-pair': { type: 'boolean' }, json: { type: 'boolean' },
      },
    });
  } catch (e) {
    throw new InstallUsageError((e as Error).message);
  }
  const { values, positionals } = parsed;
  const [command, ...rest] = positionals;
  if (rest.length) throw new InstallUsageError(`'${command}' takes no arguments (got '${rest.join(' ')}')`);
  const only = (flag: string, cmds: string[]): void => {
    if ((values as Record<string, unknown>)[flag] !== undefined && !cmds.includes(command)) throw new InstallUsageError(`--${flag} is not an option of '${command}'`);
  };
  only('purge', ['uninstall']);
  only('minutes', ['install']);
  only('no-pair', ['install']);
  only('json', ['install']);
  only('config', ['status', 'doctor']);
  only('user', ['install', 'status', 'doctor']);
  only('prefix', ['install']);
  only('state-dir', ['install', 'status', 'doctor']);
  const minutes = values.minutes === undefined ? undefined : Number(values.minutes);
  if (minutes !== undefined && (!Number.isInteger(minutes) || minutes < 1 || minutes > 1440)) throw new InstallUsageError(`--minutes must be a whole number 1..1440, got '${values.minutes}'`);
  const settings = validateSettings({ user: values.user, prefix: values.prefix, configDir: values['config-dir'], stateDir: values['state-dir'], root: values.root });
  const sys = realSystem(settings.root);
  const out = (l: string): void => { process.stdout.write(l + '\n'); };

  switch (command) {
    case 'install': {
      const bundle = findBundle(require.main?.filename ?? process.argv[1]);
      const r = install(settings, bundle, sys, { pairingMinutes: minutes, pair: !values['no-pair'] });
      if (values.json) {
        // for programs (the extension's "Deploy Server to Bench…" over ssh): one object, nothing else on stdout
        out(JSON.stringify({
          ticket: ctx.ticket(r.config, r.key), pairingCode: r.pairing?.code ?? null, pairingExpires: r.pairing?.expires.toISOString() ?? null,
          version: bundle.version, target: bundle.target, lines: r.lines,
        }));
        return 0;
      }
      for (const l of r.lines) out(l);
      out('');
      out(`Bench ticket: ${ctx.ticket(r.config, r.key)}`);
      if (r.pairing) out(`Pairing code: ${r.pairing.code}   (single use, valid until ${r.pairing.expires.toLocaleTimeString()})`);
      out('');
      out('In VS Code run "Remote USB: Pair with Bench…" and paste the ticket and the code. Check the bench: remote-usb-server doctor');
      return 0;
    }
    case 'uninstall':
      for (const l of uninstall(settings, sys, { purge: values.purge })) out(l);
      return 0;
    case 'udev-rules':
      for (const l of updateUdevRules(settings, sys)) out(l);
      return 0;
    case 'status':
    case 'doctor': {
      const checks = await diagnose({ settings, sys, configPath: values.config, full: command === 'doctor' });
      process.stdout.write(formatReport(checks));
      return checks.some((c) => c.state === 'problem') ? 1 : 0;
    }
    default:
      throw new InstallError(`unknown admin command '${command}'`, 2);
  }
}
