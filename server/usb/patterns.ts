/** Deterministic data for the simulated boards' source endpoint and for benchmarks. */

/** xorshift32: fast, seeded, good enough for test data. */
export function seededBytes(size: number, seed = 0x12345678): Buffer {
  const b = Buffer.allocUnsafe(size);
  let x = seed >>> 0 || 1;
  let i = 0;
  for (; i + 3 < size; i += 4) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    b.writeUInt32LE(x, i);
  }
  for (; i < size; i++) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    b[i] = x & 0xff;
  }
  return b;
}

/**
 * Looks like a microcontroller flash image: a vector table, Thumb-like code with repeated instruction
 * patterns, string tables, and long erased (0xFF) gaps between sections, as esptool/picotool/dfu-util
 * images are.
 */
export function firmwareLikeImage(size: number, seed = 7): Buffer {
  const out = Buffer.alloc(size, 0xff);
  const rnd = seededBytes(size, seed);
  const opcodes = [0x4770, 0xb580, 0xbd80, 0x2000, 0x6818, 0x4b02, 0xf000, 0xe7fe, 0x3001, 0x4298, 0xd1fb];
  let pos = 0;
  let r = 0;
  while (pos < size) {
    const section = 2048 + (rnd[r++ % size] << 6); // 2-18 KiB of code
    const end = Math.min(size, pos + section);
    for (let i = pos; i + 1 < end; i += 2) {
      const op = opcodes[rnd[(r + i) % size] % opcodes.length];
      const v = rnd[(r + i + 1) % size] < 64 ? op ^ rnd[(r + i + 2) % size] : op;
      out[i] = v & 0xff;
      out[i + 1] = v >> 8;
    }
    if (end < size) {
      const text = Buffer.from('ERROR: flash write failed at 0x%08x\0boot: chip revision %d\0wifi: connected\0');
      text.copy(out, end, 0, Math.min(text.length, size - end));
    }
    pos = end + erasedGap(rnd[r++ % size]);
  }
  return out;
}

function erasedGap(b: number): number {
  return 1024 + b * 64; // 1-17 KiB of erased flash
}
