/**
 * The Getting Started walkthrough's progress: context keys the extension sets on the real events, which the
 * steps' `completionEvents` (`onContext:remoteUsb.…`) wait for.
 *
 * Each key is set once, when its event first happens, and stays true for the session. VS Code completes a
 * step when one of its context expressions turns true *while the walkthrough is registered*: a key that was
 * true before (or flips back and forth) never completes it. So nothing is set at activation — not even to
 * false — and no key ever goes back to false.
 */
import * as vscode from 'vscode';

export const WALKTHROUGH_KEYS = {
  /** A bench is in remoteUsb.benches (added or paired). */
  benchAdded: 'remoteUsb.walkthrough.benchAdded',
  /** A bench let us in: paired, or allowed, and online. */
  benchOnline: 'remoteUsb.walkthrough.benchOnline',
  /** A board was attached to this machine's kernel. */
  attached: 'remoteUsb.walkthrough.attached',
  /** A serial monitor opened. */
  monitorOpened: 'remoteUsb.walkthrough.monitorOpened',
  /** A serial port was shared as rfc2217://. */
  shared: 'remoteUsb.walkthrough.shared',
  /** A remote-usb task ran (attach before flash), or a task asked for the device path. */
  flashTask: 'remoteUsb.walkthrough.flashTask',
} as const;

export type WalkthroughKey = keyof typeof WALKTHROUGH_KEYS;

export class WalkthroughProgress {
  /** The keys set so far, in order (tests read it). */
  readonly done: WalkthroughKey[] = [];

  /** The event happened: sets its key (once per session). */
  reached(key: WalkthroughKey): void {
    if (this.done.includes(key)) return;
    this.done.push(key);
    void vscode.commands.executeCommand('setContext', WALKTHROUGH_KEYS[key], true);
  }
}
