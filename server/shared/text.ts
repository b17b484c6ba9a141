// Text from outside (a peer, a device, a config file) made safe to show; the daemon, the client core and the extension all use it.
/**
 * Control characters (C0, DEL, C1), line and paragraph separators and bidi overrides, which would let
 * text from outside — a client's name, a bench's error message, a USB device's product string — forge
 * log lines, move a terminal's cursor, set its clipboard (OSC 52) or reorder what a reader sees.
 */
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const UNPRINTABLE = /[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

/** `text` with every unprintable character shown as an escape (`\x1b`, `\u202e`): safe for a terminal or a log line. */
export function printable(text: string): string {
  return text.replace(UNPRINTABLE, (ch) => {
    const c = ch.charCodeAt(0);
    return c <= 0xff ? `\\x${c.toString(16).padStart(2, '0')}` : `\\u${c.toString(16).padStart(4, '0')}`;
  });
}

/** True when `text` has nothing `printable` would escape. */
export function isPrintable(text: string): boolean {
  return printable(text) === text;
}
