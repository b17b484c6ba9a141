/** The bench's path and round trip, and who holds what, as the status bar and tree tooltips say them. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { benchTooltipMarkdown, formatLink, heldMarkdown, statusTooltipMarkdown } from '../../extension/format.js';

test('formatLink: path first, then the round trip; what is not known is left out', () => {
  assert.equal(formatLink('direct', 0.84), 'direct · 0.8 ms');
  assert.equal(formatLink('relay', 42.4), 'relayed · 42 ms');
  assert.equal(formatLink(undefined, 3), '3.0 ms');
  assert.equal(formatLink('direct', undefined), 'direct');
  assert.equal(formatLink(undefined, undefined), '');
  assert.equal(formatLink('relay', Number.NaN), 'relayed');
});

test('heldMarkdown: each held device with its bus id and holder, "you" for ours, escaped', () => {
  assert.equal(heldMarkdown([
    { label: 'Pico', id: '1-1.2', claimedBy: 'me@here', mine: true },
    { label: 'FTDI [x](command:evil)', id: '1-1.3', claimedBy: 'alice_lab' },
  ]), 'Pico (1-1.2) by you · FTDI \\[x\\]\\(command:evil\\) (1-1.3) by alice\\_lab');
  assert.equal(heldMarkdown([]), '');
});

test('status bar tooltip: each online bench with its path, round trip, device count and who holds what', () => {
  const md = statusTooltipMarkdown([
    { name: 'lab-pi', state: 'online', path: 'direct', rttMs: 0.8, deviceCount: 2, held: [{ label: 'Pico', id: '1-1.2', claimedBy: 'me', mine: true }, { label: 'ESP32', id: '1-1.3', claimedBy: 'alice@lab' }] },
    { name: 'home-pi', state: 'online', path: 'relay', rttMs: 48, deviceCount: 1, held: [] },
    { name: 'gone', state: 'offline', path: 'relay', rttMs: 48, deviceCount: 0, detail: 'timed out' },
  ], []);
  const lines = md.split('\n');
  assert.ok(lines.includes('$(pass-filled) lab-pi: online · direct · 0.8 ms · 2 device(s)  '), md);
  assert.ok(lines.includes('$(lock) held: Pico (1-1.2) by you · ESP32 (1-1.3) by alice@lab  '), md);
  assert.ok(lines.includes('$(pass-filled) home-pi: online · relayed · 48 ms · 1 device(s)  '), md);
  // an offline bench has no path or round trip, only what is wrong
  assert.ok(lines.includes('$(error) gone: offline — timed out  '), md);
  assert.equal(md.match(/held:/g)?.length, 1, 'no held line for a bench where nothing is held');
});

test('bench tooltip in the tree: connection path and round trip, who holds what, links', () => {
  const id = 'b1b94cd8b0412374'.repeat(4);
  const online = benchTooltipMarkdown({
    name: 'lab-pi', id, state: 'online', path: 'direct', rttMs: 0.84, deviceCount: 3,
    held: [{ label: 'Pico', id: '1-1.2', claimedBy: 'me', mine: true }, { label: 'ESP32', id: '1-1.3', claimedBy: 'alice@lab' }],
  });
  assert.equal(online, [
    '**$(vm) lab-pi** — online',
    '',
    'Connection: direct (peer to peer), round trip 0.8 ms',
    '',
    'Endpoint `b1b94cd8b0412374…` · 3 device(s)',
    '',
    'Held: Pico (1-1.2) by you · ESP32 (1-1.3) by alice@lab',
    '',
    '[Reconnect](command:remoteUsb.refresh) · [Show logs](command:remoteUsb.showLogs)',
  ].join('\n'));
  const relayed = benchTooltipMarkdown({ name: 'home', id, state: 'online', path: 'relay', rttMs: 61, deviceCount: 0, held: [] });
  assert.match(relayed, /^Connection: relayed \(through an Iroh relay server\), round trip 61 ms$/m);
  assert.doesNotMatch(relayed, /Held:/);
  const early = benchTooltipMarkdown({ name: 'home', id, state: 'online', deviceCount: 0, held: [] });
  assert.match(early, /^Connection: path not chosen yet$/m);
  const refused = benchTooltipMarkdown({ name: 'x', id, state: 'refused', path: 'direct', rttMs: 1, detail: 'not on the allowlist [go](command:evil)', deviceCount: 0, held: [] });
  assert.doesNotMatch(refused, /Connection:/, 'no path for a bench that is not online');
  assert.match(refused, /^not on the allowlist \\\[go\\\]\\\(command:evil\\\)$/m);
  assert.match(refused, /\[Pair with a code\]\(command:remoteUsb\.pairBench\)/);
});
