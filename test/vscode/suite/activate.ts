/** The start of every real-VS-Code suite: clean Remote USB settings, then the extension activated and ready. */
import * as assert from 'node:assert/strict';
import * as vscode from 'vscode';
import type { RemoteUsbApi } from '../../../extension/extension.js';

export const config = (): vscode.WorkspaceConfiguration => vscode.workspace.getConfiguration('remoteUsb');
export const G = vscode.ConfigurationTarget.Global;

/** No benches, no auto-attach rules, direct connections only (the tests' benches are on loopback). */
export async function activateClean(): Promise<RemoteUsbApi> {
  await config().update('relay', 'disabled', G);
  await config().update('benches', [], G);
  await config().update('autoAttach', [], G);
  const ext = vscode.extensions.getExtension<RemoteUsbApi>('remote-usb.remote-usb');
  assert.ok(ext, 'the extension remote-usb.remote-usb is installed');
  const api = await ext.activate();
  await api.ready;
  return api;
}
