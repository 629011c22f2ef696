// A small fast random source for schedulers: xorshift32 over a typed array, so drawing a number
// allocates nothing (Math.random() does not allocate either, but cannot be seeded, and tests
// want repeatable sequences). Invariant: the state is never 0, which would make it stick.

import { randomInt } from 'node:crypto';

export class Random {
  // Signed: V8 keeps 32-bit signed integers unboxed; an unsigned one above 2^30 would be boxed.
  private readonly state = new Int32Array(1);

  /** `seed` for a repeatable sequence; by default, a random one. */
  constructor(seed = randomInt(1, 0xffffffff)) {
    this.state[0] = seed === 0 ? 1 : seed | 0;
  }

  /** A whole number in [0, n), n > 0. The modulo bias is below 1e-7 for n <= 256. */
  below(n: number): number {
    let x = this.state[0];
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.state[0] = x;
    return (x >>> 0) % n;
  }
}
