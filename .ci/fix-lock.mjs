// @number0/iroh 1.1.0 lists optional per-platform packages that the npm registry does not serve
// (404: android, linux-arm*, linux-arm64-*, win32-*). `npm install` then leaves them out of
// package-lock.json and `npm ci` refuses the lock as "out of sync". This adds them back as optional,
// platform-gated entries (npm skips them on other platforms and tolerates their absence).
// Run after any `npm install`: node .ci/fix-lock.mjs
import { readFileSync, writeFileSync } from 'node:fs';

const file = new URL('../package-lock.json', import.meta.url);
const lock = JSON.parse(readFileSync(file, 'utf8'));
const version = lock.packages['node_modules/@number0/iroh'].version;
const platforms = {
  'android-arm-eabi': [['android'], ['arm']],
  'android-arm64': [['android'], ['arm64']],
  'linux-arm-gnueabihf': [['linux'], ['arm'], ['glibc']],
  'linux-arm-musleabihf': [['linux'], ['arm'], ['musl']],
  'linux-arm64-gnu': [['linux'], ['arm64'], ['glibc']],
  'linux-arm64-musl': [['linux'], ['arm64'], ['musl']],
  'win32-arm64-msvc': [['win32'], ['arm64']],
  'win32-x64-msvc': [['win32'], ['x64']],
};
let added = 0;
for (const [name, [os, cpu, libc]] of Object.entries(platforms)) {
  const key = `node_modules/@number0/iroh-${name}`;
  if (lock.packages[key]) continue;
  lock.packages[key] = { version, optional: true, os, cpu, ...(libc ? { libc } : {}) };
  added++;
}
const entries = Object.entries(lock.packages);
lock.packages = Object.fromEntries([entries.find(([k]) => k === ''), ...entries.filter(([k]) => k !== '').sort(([a], [b]) => a.localeCompare(b))]);
writeFileSync(file, JSON.stringify(lock, null, 2) + '\n');
console.log(`package-lock.json: ${added} missing optional @number0/iroh platform entries added`);
