import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isShared, lineOf, parseConfig } from '../../server/config.js';

test('defaults work without a file', () => {
  const c = parseConfig('', 'empty.toml');
  assert.equal(c.listen, '0.0.0.0:47100');
  assert.deepEqual(c.relay, { mode: 'default' });
  assert.equal(c.logLevel, 'info');
  assert.equal(c.pairingMinutes, 10);
  assert.deepEqual(c.serialPorts, []);
  assert.equal(c.clientSilenceLimitMs, undefined); // the daemon's 20 s
});

test('client_silence_s sets how long a silent client keeps its devices', () => {
  assert.equal(parseConfig('client_silence_s = 3\n').clientSilenceLimitMs, 3000);
  assert.equal(parseConfig('client_silence_s = 2.5\n').clientSilenceLimitMs, 2500);
});

test('[serial] ports shares extra ttys', () => {
  const c = parseConfig(`[serial]\nports = ["/dev/ttyAMA0", "/dev/serial0"]\n`);
  assert.deepEqual(c.serialPorts, ['/dev/ttyAMA0', '/dev/serial0']);
});

test('a full config is read', () => {
  const c = parseConfig(`name = "lab-3"\nlisten = "[::]:5000"\nstate_dir = "/srv/rusb"\nlog_level = "debug"\n[relay]\nmode = "custom"\nurls = ["https://relay.example.org"]\n[sharing]\ndeny = ["1d6b:*", "port:1-1.4"]\nallow = []\n`);
  assert.equal(c.name, 'lab-3');
  assert.equal(c.allowlistFile, '/srv/rusb/clients.toml');
  assert.deepEqual(c.relay, { mode: 'custom', urls: ['https://relay.example.org'] });
  assert.equal(isShared(c.sharing, { id: '1-1.2', vendorId: 0x1d6b, productId: 2 }), false);
  assert.equal(isShared(c.sharing, { id: '1-1.4', vendorId: 0x2e8a, productId: 3 }), false);
  assert.equal(isShared(c.sharing, { id: '1-1.3', vendorId: 0x2e8a, productId: 3 }), true);
});

test('allow list shares only matching devices; serial patterns', () => {
  const c = parseConfig(`[sharing]\nallow = ["2e8a:*", "serial:ABC"]\n`);
  assert.equal(isShared(c.sharing, { id: '1-1', vendorId: 0x2e8a, productId: 0x000a }), true);
  assert.equal(isShared(c.sharing, { id: '1-2', vendorId: 0x0403, productId: 0x6001, serial: 'ABC' }), true);
  assert.equal(isShared(c.sharing, { id: '1-3', vendorId: 0x0403, productId: 0x6001, serial: 'XYZ' }), false);
});

test('TOML syntax errors name file, line and column', () => {
  assert.throws(() => parseConfig('name = "x"\nlisten = \n', '/etc/remote-usb/server.toml'), (e: Error) => {
    assert.equal(e.name, 'ConfigError');
    assert.match(e.message, /^\/etc\/remote-usb\/server\.toml:2:\d+: /);
    return true;
  });
});

test('semantic errors name file, line and key', () => {
  const cases: [string, RegExp][] = [
    ['name = "x"\nlisten = "nowhere"\n', /^s\.toml:2: listen: 'nowhere' must be IP:PORT/],
    ['\n\nlog_level = "loud"\n', /^s\.toml:3: log_level: must be one of error, warn, info, debug/],
    ['[relay]\nmode = "sometimes"\n', /^s\.toml:2: relay\.mode: 'sometimes' must be "default", "custom" or "disabled"/],
    ['[relay]\nmode = "custom"\n', /^s\.toml:1: relay\.urls: mode = "custom" needs at least one relay URL/],
    ['[relay]\nmode = "custom"\nurls = ["ftp://x"]\n', /^s\.toml:3: relay\.urls: 'ftp:\/\/x' is not an http\(s\) URL/],
    ['[sharing]\n\ndeny = ["12345"]\n', /^s\.toml:3: sharing\.deny: '12345' is not a device pattern/],
    ['lsiten = "0.0.0.0:1"\n', /^s\.toml:1: lsiten: unknown key \(known: name, listen/],
    ['state_dir = "relative/dir"\n', /^s\.toml:1: state_dir: must be an absolute path/],
    ['pairing_minutes = 0\n', /^s\.toml:1: pairing_minutes: must be a whole number/],
    ['client_silence_s = 0.5\n', /^s\.toml:1: client_silence_s: must be a number of seconds, 1\.\.3600/],
    ['client_silence_s = "20"\n', /^s\.toml:1: client_silence_s: must be a number of seconds/],
    ['relay = 5\n', /^s\.toml:1: relay: must be a table/],
    ['[serial]\nports = "/dev/ttyAMA0"\n', /^s\.toml:2: serial\.ports: must be a list of strings/],
    ['[serial]\n\nports = ["ttyAMA0"]\n', /^s\.toml:3: serial\.ports: 'ttyAMA0' must be an absolute tty path, e\.g\. "\/dev\/ttyAMA0"/],
    ['[serial]\nports = ["/dev/../etc/passwd"]\n', /^s\.toml:2: serial\.ports: '\/dev\/\.\.\/etc\/passwd' must be an absolute tty path/],
    ['[serial]\nports = ["/dev/ttyS0", "/dev/ttyS0"]\n', /^s\.toml:2: serial\.ports: lists a path twice/],
    ['[serial]\nbaud = 9600\n', /^s\.toml:2: serial\.baud: unknown key \(known: ports\)/],
  ];
  for (const [text, re] of cases) {
    assert.throws(() => parseConfig(text, 's.toml'), { message: re }, text);
  }
});

test('lineOf finds keys inside the right table', () => {
  const text = 'mode = "a"\n[relay]\n  mode = "b"\n[sharing]\nmode = "c"\n';
  assert.equal(lineOf(text, '', 'mode'), 1);
  assert.equal(lineOf(text, 'relay', 'mode'), 3);
  assert.equal(lineOf(text, 'sharing', 'mode'), 5);
});
