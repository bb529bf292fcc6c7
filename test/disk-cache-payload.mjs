// The deterministic entry payload shared by test/disk-cache.test.ts and the
// writer processes it forks (test/disk-cache-child.mjs).

/** Payload of (writer id, round): 8 bytes naming them, then LCG bytes. */
export function payload(id, round, bytes) {
  const a = new Uint8Array(bytes);
  const dv = new DataView(a.buffer);
  dv.setUint32(0, id, true);
  dv.setUint32(4, round, true);
  let x = (id * 2654435761 + round * 40503 + 1) >>> 0;
  for (let i = 8; i < bytes; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    a[i] = x >>> 24;
  }
  return a;
}
