/** A throwaway root tree for `remote-usb-server install --root`: its own /etc with this machine's user databases. */
import * as fs from 'node:fs';
import { join } from 'node:path';

export function freshRoot(parent: string): string {
  const d = fs.mkdtempSync(join(parent, 'root-'));
  fs.chmodSync(d, 0o755);
  fs.mkdirSync(join(d, 'etc'), { mode: 0o755 });
  for (const f of ['passwd', 'group', 'shadow', 'gshadow', 'login.defs']) if (fs.existsSync(`/etc/${f}`)) fs.copyFileSync(`/etc/${f}`, join(d, 'etc', f));
  return d;
}
