// package.json's `contributes` against the code's one table of names (extension/contributions.ts): every
// contributed command has a handler and every handler a contribution (commands.ts's table is typed by
// the same ids), every menu `when` regex on `viewItem` matches a contextValue the tree can produce, and
// every context key a `when` clause reads is one the extension sets.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { repoRoot } from '../helpers/repo-root.js';
import { allTreeItemContexts, Command, ContextKey, contextValue, VIEW_ID } from '../../extension/contributions.js';

interface MenuItem { command: string; when?: string; group?: string }
interface Contributes {
  commands: { command: string }[];
  menus: Record<string, MenuItem[]>;
  views: Record<string, { id: string }[]>;
  viewsWelcome?: { view: string; contents: string; when?: string }[];
  walkthroughs?: { steps: { description?: string; when?: string; completionEvents?: string[] }[] }[];
}

const contributes = (JSON.parse(readFileSync(join(repoRoot(), 'package.json'), 'utf8')) as { contributes: Contributes }).contributes;
const ids = new Set<string>(Object.values(Command));
const values = allTreeItemContexts().map(contextValue);
const itemMenus = contributes.menus['view/item/context'] ?? [];

/** The `viewItem =~ /re/` regexes and `viewItem == x` values of a `when` clause. */
function viewItemTests(when: string): ((value: string) => boolean)[] {
  const out: ((value: string) => boolean)[] = [];
  for (const m of when.matchAll(/viewItem\s*=~\s*\/((?:\\.|[^/\\])+)\/([a-z]*)/g)) {
    const re = new RegExp(m[1], m[2]);
    out.push((v) => re.test(v));
  }
  for (const m of when.matchAll(/viewItem\s*==\s*'?([\w.-]+)'?/g)) out.push((v) => v === m[1]);
  return out;
}

/** The item menu's commands for a tree item with this contextValue. */
function menuFor(value: string): string[] {
  return itemMenus.filter((m) => viewItemTests(m.when ?? '').every((t) => t(value))).map((m) => m.command);
}

test('every contributed command has a handler, and every command id is contributed', () => {
  const contributed = contributes.commands.map((c) => c.command);
  assert.deepEqual([...contributed].sort(), [...ids].sort());
  assert.equal(new Set(contributed).size, contributed.length, 'a command is contributed twice');
});

test('every menu entry names a contributed command', () => {
  for (const [menu, items] of Object.entries(contributes.menus)) {
    for (const m of items) assert.ok(ids.has(m.command), `${menu}: '${m.command}' is not a command`);
  }
});

test("every `viewItem` test in the item menus matches a contextValue the tree produces", () => {
  for (const m of itemMenus) {
    const tests = viewItemTests(m.when ?? '');
    assert.ok(tests.length > 0, `${m.command} (${m.group}): its when clause does not test viewItem: ${m.when}`);
    for (const t of tests) assert.ok(values.some(t), `${m.command} (${m.group}): '${m.when}' matches none of ${values.join(', ')}`);
  }
});

test('the item menus offer what each kind of tree item needs', () => {
  const inline = (value: string): string[] => itemMenus.filter((m) => m.group?.startsWith('inline') && viewItemTests(m.when ?? '').every((t) => t(value))).map((m) => m.command);
  assert.deepEqual(inline(contextValue({ kind: 'device', state: 'available', serial: true })), [Command.attachDevice, Command.openSerialMonitor]);
  assert.deepEqual(inline(contextValue({ kind: 'device', state: 'attached', serial: false })), [Command.detachDevice]);
  assert.deepEqual(inline(contextValue({ kind: 'device', state: 'in-use', serial: false })), []);
  assert.deepEqual(inline(contextValue({ kind: 'tty' })), [Command.openSerialMonitor]);
  for (const c of allTreeItemContexts()) {
    const menu = menuFor(contextValue(c));
    if (c.kind === 'device') assert.ok(menu.includes(Command.copyDeviceInfo), `${contextValue(c)} can copy its details`);
    if (c.kind === 'device') assert.equal(menu.includes(Command.attachDevice), c.state === 'available', `${contextValue(c)}: attach`);
    if (c.kind === 'device') assert.equal(menu.includes(Command.detachDevice), c.state === 'attached', `${contextValue(c)}: detach`);
    if (c.kind !== 'bench') assert.equal(menu.includes(Command.openSerialMonitor), c.kind === 'tty' || c.serial, `${contextValue(c)}: serial monitor`);
    if (c.kind === 'bench') assert.deepEqual(menu, [Command.renameBench, Command.refresh, Command.removeBench], contextValue(c));
  }
});

test('every context key a when clause reads is one the extension sets, and the view is ours', () => {
  const known = new Set<string>([...Object.values(ContextKey), VIEW_ID]);
  const clauses = [
    ...Object.values(contributes.menus).flat().map((m) => m.when ?? ''),
    ...(contributes.viewsWelcome ?? []).map((w) => w.when ?? ''),
    ...(contributes.walkthroughs ?? []).flatMap((w) => w.steps.map((s) => s.when ?? '')),
  ];
  for (const when of clauses) {
    // config.remoteUsb.* reads a setting, not a context key
    for (const m of when.matchAll(/(?<![\w.])remoteUsb\.[\w.]+/g)) assert.ok(known.has(m[0]), `'${m[0]}' in '${when}' is not a context key the extension sets (extension/contributions.ts ContextKey)`);
  }
  assert.ok(Object.values(contributes.views).flat().some((v) => v.id === VIEW_ID));
});

test('command links and completion events in the manifest name contributed commands', () => {
  const texts = [
    ...(contributes.viewsWelcome ?? []).map((w) => w.contents),
    ...(contributes.walkthroughs ?? []).flatMap((w) => w.steps.flatMap((s) => [s.description ?? '', ...(s.completionEvents ?? [])])),
  ];
  for (const text of texts) {
    for (const m of text.matchAll(/(?:command:|onCommand:)(remoteUsb\.[\w.]+)/g)) assert.ok(ids.has(m[1]), `'${m[1]}' in '${text.slice(0, 80)}' is not a command`);
  }
});
