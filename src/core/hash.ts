// 32-bit FNV-1a over a string's UTF-16 code units: the hash Maglev uses for client addresses and
// backend names. Invariant: the same string gives the same number in every process and on every
// machine (no seed, no randomization), which is what lets fulcrum instances agree on a mapping.

const OFFSET_BASIS = 0x811c9dc5;
const PRIME = 0x01000193;

export function fnv1a(text: string, seed = 0): number {
  let h = (OFFSET_BASIS ^ seed) >>> 0;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, PRIME);
  }
  return h >>> 0;
}

/**
 * A second, independent-looking hash of a 32-bit value (a finalizer from MurmurHash3). Returns a
 * signed 32-bit value, which V8 keeps unboxed; read it as unsigned with `>>> 0` where needed.
 */
export function mix(h: number): number {
  let x = h | 0;
  x ^= x >>> 16;
  x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  x ^= x >>> 16;
  return x | 0;
}
