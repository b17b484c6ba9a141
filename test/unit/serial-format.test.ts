import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { SerialRenderer, echoTyped, encodeTyped } from '../../extension/serial-format.js';

const bytes = (s: string): Buffer => Buffer.from(s, 'latin1');

test('text view: bare LF becomes CRLF for the terminal, CRLF stays, lines span chunks', () => {
  const r = new SerialRenderer({ hex: false, timestamps: false });
  assert.equal(r.render(bytes('a\nb\r')), 'a\r\nb\r');
  assert.equal(r.render(bytes('\nc')), '\nc', 'CR at the end of one chunk and LF at the start of the next are one line end');
  assert.equal(r.render(Buffer.from('é€\n', 'utf8')), 'é€\r\n', 'UTF-8 decoded');
});

test('timestamps prefix each line, including across chunks', () => {
  const r = new SerialRenderer({ hex: false, timestamps: true }, () => new Date(2026, 0, 1, 9, 5, 7, 42));
  const out = r.render(bytes('one\ntw')) + r.render(bytes('o\n'));
  assert.equal(out.split('\x1b[2m').join('').split('\x1b[0m').join(''), '[09:05:07.042] one\r\n[09:05:07.042] two\r\n');
});

test('hex view: 16 bytes a row with an ASCII column; flush pads the last row', () => {
  const r = new SerialRenderer({ hex: true, timestamps: false });
  const out = r.render(bytes('0123456789abcdef')) + r.render(bytes('AB\x00'));
  assert.equal(out, '30 31 32 33 34 35 36 37 38 39 61 62 63 64 65 66  0123456789abcdef\r\n41 42 00 ');
  assert.equal(r.flush(), '   '.repeat(13) + ' AB.\r\n');
});

test('typing: Enter becomes the configured line ending; echo shows CRLF and backspace', () => {
  assert.deepEqual(encodeTyped('hi\r', 'CRLF'), bytes('hi\r\n'));
  assert.deepEqual(encodeTyped('hi\r', 'LF'), bytes('hi\n'));
  assert.deepEqual(encodeTyped('hi\r', 'CR'), bytes('hi\r'));
  assert.deepEqual(encodeTyped('hi\r', 'none'), bytes('hi'));
  assert.equal(echoTyped('a\rb\x7f'), 'a\r\nb\b \b');
});

test('round trips and rates as the tree shows them', async () => {
  const { formatRate, formatRtt } = await import('../../extension/format.js');
  assert.equal(formatRtt(0.84), '0.8 ms');
  assert.equal(formatRtt(12.4), '12 ms');
  assert.equal(formatRtt(undefined), '');
  assert.equal(formatRtt(NaN), '');
  assert.equal(formatRate(1_234_567), '1.2 MB/s');
  assert.equal(formatRate(340_400), '340 kB/s');
  assert.equal(formatRate(12), '12 B/s');
});
