/**
 * Text from outside — a client's name, a bench's name and error messages, a USB device's strings — on its
 * way to a terminal, a log line or the status bar's trusted tooltip. Each test plants what an attacker
 * would and checks it arrives inert.
 */
/* eslint-disable no-control-regex -- these tests look for control characters */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { escapeMarkdown, statusTooltipMarkdown } from '../../extension/format.js';
import { deviceTable } from '../../server/shared/device-table.js';
import { createLogger } from '../../server/shared/log.js';
import { printable } from '../../server/shared/text.js';

const OSC52 = '\x1b]52;c;cm0gLXJmIH4K\x07'; // sets the reader's clipboard to "rm -rf ~"

test('printable() escapes C0, DEL, C1, line separators and bidi overrides, and nothing else', () => {
  assert.equal(printable(`eve${OSC52}`), 'eve\\x1b]52;c;cm0gLXJmIH4K\\x07');
  assert.equal(printable('a\r\nb\x7f\x9bc\u2028d\u202ee\u2066'), 'a\\x0d\\x0ab\\x7f\\x9bc\\u2028d\\u202ee\\u2066');
  assert.equal(printable('alice@lab — Pico (ü) 東京'), 'alice@lab — Pico (ü) 東京');
});

test('a log line cannot be forged by a newline in a name', () => {
  const lines: string[] = [];
  const log = createLogger('info', (l) => lines.push(l));
  log.info(`paired new client 'x\n2026-12-02T00:00:00.000Z info  client admin connected${OSC52}'`);
  assert.equal(lines.length, 1);
  assert.doesNotMatch(lines[0], /[\n\x1b\x07]/);
});

test('the device table (remote-usb list, remote-usb-server list) prints names and USB strings inert', () => {
  const table = deviceTable([{
    id: 'sim-1', vendorId: 0x1209, productId: 1, product: `Board${OSC52}`, serial: 'S\x1b[2J1', speed: 'full',
    interfaces: [], claimedBy: `eve${OSC52}`,
  } as unknown as Parameters<typeof deviceTable>[0][0]]);
  assert.doesNotMatch(table, /[\x1b\x07]/);
  assert.match(table, /in use by eve\\x1b\]52/);
});

test('escapeMarkdown leaves no link, icon, HTML or new block', () => {
  const evil = 'lab](command:remoteUsb.attachDevice?%5B%22x%22%5D) $(zap) <img src=x> &#91;\n# big';
  const md = escapeMarkdown(evil);
  assert.doesNotMatch(md, /(^|[^\\])[[\]()<>$&]/, md);
  assert.doesNotMatch(md, /\n/);
  // what would start a block at the start of a line, and plain text left readable
  assert.deepEqual(['# big', '- item', '1. one', 'test-bench 1.0'].map(escapeMarkdown), ['\\# big', '\\- item', '1\\. one', 'test-bench 1.0']);
});

test('a hostile bench name, detail or product string plants no command link in the status bar tooltip', () => {
  const link = '[Click me](command:remoteUsb.attachDevice?%5B%22sim-1%22%5D)';
  const md = statusTooltipMarkdown(
    [{ name: `lab ${link}`, state: 'offline', deviceCount: 0, detail: `refused ${link}` }, { name: 'ok', state: 'online', deviceCount: 2, rttMs: 0.8 }],
    [{ product: `Pico ${link}`, localTty: '/dev/ttyACM0' }],
  );
  const links = [...md.matchAll(/(?<!\\)\[([^\]]*)\]\((command:[^)]*)\)/g)].map((m) => m[2]);
  // only our own links, each without arguments
  assert.deepEqual(links, ['command:remoteUsb.attachDevice', 'command:remoteUsb.openSerialMonitor', 'command:remoteUsb.detachAll', 'command:remoteUsb.addBench', 'command:remoteUsb.showLogs']);
  assert.match(md, /ok: online · 0\.8 ms · 2 device\(s\)/);
});
