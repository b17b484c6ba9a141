/// <reference types="mocha" />
/** Smoke test of the harness itself: real VS Code, our extension loaded from the repo and active. */
import * as assert from 'node:assert/strict';
import * as vscode from 'vscode';
import { screenshot } from './screenshot';

const EXTENSION_ID = 'remote-usb.remote-usb';

suite('smoke: Remote USB in a real VS Code', () => {
  test('the vscode API is the real one', () => {
    assert.match(vscode.version, /^1\.\d+\.\d+/);
    assert.equal(typeof vscode.window.createTreeView, 'function');
  });

  test(`${EXTENSION_ID} is present and activates`, async () => {
    const ext = vscode.extensions.getExtension(EXTENSION_ID);
    assert.ok(ext, `${EXTENSION_ID} is not loaded (extensionDevelopmentPath should be the repo root)`);
    await ext.activate();
    assert.equal(ext.isActive, true);
    assert.equal(ext.packageJSON.name, 'remote-usb');
  });

  test('the Remote USB view container opens', async () => {
    await vscode.commands.executeCommand('workbench.view.extension.remoteUsb');
    await new Promise((r) => setTimeout(r, 1000)); // let the side bar render before the shot
    await screenshot('smoke');
  });
});
