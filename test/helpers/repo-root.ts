import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';

/** The repository root (tests run bundled from out/test/…, so walk up to package.json). */
export function repoRoot(): string {
  let dir = __dirname;
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot find the repository root');
    dir = up;
  }
  return dir;
}
