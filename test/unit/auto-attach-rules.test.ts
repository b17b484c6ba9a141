import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { checkRule, checkSelector, ReenumerationTracker, ruleMatches, selectorMatches } from '../../extension/core/auto-attach-rules.js';

const pico = { id: '1-1.2', vendorId: 0x2e8a, productId: 0x000a, serial: 'E6616407E3' };
const picoBoot = { ...pico, productId: 0x0003, serial: 'E0C912D24340' };

test('a rule matches every field it gives', () => {
  assert.ok(ruleMatches({ vidPid: '2e8a:000a' }, 'lab', pico));
  assert.ok(ruleMatches({ vidPid: '2E8A:*' }, 'lab', pico));
  assert.ok(ruleMatches({ vidPid: '*:000a' }, 'lab', pico));
  assert.ok(!ruleMatches({ vidPid: '2e8a:0003' }, 'lab', pico));
  assert.ok(ruleMatches({ vidPid: ['2e8a:0003', '2e8a:000a'] }, 'lab', pico), 'a list matches any of its entries');
  assert.ok(ruleMatches({ serial: 'E6616407*' }, 'lab', pico));
  assert.ok(!ruleMatches({ serial: 'E661' }, 'lab', pico), 'serial is exact unless it has a wildcard');
  assert.ok(ruleMatches({ port: '1-1.2' }, 'lab', picoBoot), 'a port rule follows the board into its bootloader');
  assert.ok(!ruleMatches({ port: '1-1.3' }, 'lab', pico));
  assert.ok(ruleMatches({ vidPid: '2e8a:*', bench: 'lab' }, 'lab', pico));
  assert.ok(!ruleMatches({ vidPid: '2e8a:*', bench: 'other' }, 'lab', pico));
  assert.ok(!ruleMatches({ vidPid: '2e8a:*', serial: 'nope' }, 'lab', pico), 'all given fields must match');
  assert.ok(!ruleMatches({ bench: 'lab' }, 'lab', pico), 'a rule without a device field never matches everything');
  assert.ok(!ruleMatches({ serial: '*' }, 'lab', { ...pico, serial: undefined }), 'no serial, no serial match');
});

test('bad rules are named with their index and the fix', () => {
  assert.deepEqual(checkRule({ vidPid: '2e8a:*' }, 0), []);
  assert.match(checkRule({ vidPid: 'pico' }, 2)[0], /remoteUsb\.autoAttach\[2\]\.vidPid: 'pico' is not VID:PID/);
  assert.match(checkRule({ vid: '2e8a' }, 0)[0], /unknown key 'vid'/);
  assert.match(checkRule({ bench: 'lab' }, 1)[0], /matches every device/);
  assert.match(checkRule('2e8a:*', 0)[0], /must be an object/);
  assert.match(checkRule({ serial: '' }, 0)[0], /serial must be a non-empty string/);
});

test('task selectors: bus id, VID:PID with wildcards, serial:', () => {
  assert.ok(selectorMatches('1-1.2', pico));
  assert.ok(selectorMatches('2e8a:*', pico));
  assert.ok(selectorMatches('serial:E661*', pico));
  assert.ok(!selectorMatches('sim-1', pico));
  assert.equal(checkSelector('2e8a:*'), undefined);
  assert.equal(checkSelector('sim-1'), undefined);
  assert.match(checkSelector('')!, /no device given/);
  assert.match(checkSelector('usb:thing')!, /is not a device/);
});

test('a board that left on its own is followed on its port for a while; a user detach is not', () => {
  const t = new ReenumerationTracker(120_000);
  t.deviceLeft('bench/1-1.2', false, 1000);
  assert.ok(!t.follows('bench/1-1.3', 2000), 'another port');
  assert.ok(t.follows('bench/1-1.2', 2000), 'back on the same port (bootloader PID or not)');
  assert.ok(!t.follows('bench/1-1.2', 3000), 'used up once followed');
  t.deviceLeft('bench/1-1.2', false, 0);
  assert.ok(!t.follows('bench/1-1.2', 120_001), 'too late');
  t.deviceLeft('bench/1-1.2', false, 0);
  t.deviceLeft('bench/1-1.2', true, 1);
  assert.ok(!t.follows('bench/1-1.2', 2), 'the user detached it');
});
