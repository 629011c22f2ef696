// Read buffers for the pipe, one set per worker thread. Node keeps a pointer into a written
// buffer until the write completes, so a buffer may be read into again only once no write of it
// is pending. Invariant: a large buffer belongs to at most one socket at a time, from take() to
// give(); a small buffer belongs to one connection for its whole life.

/**
 * What an idle socket reads into. Small enough that 10k idle connections hold little (two per
 * connection), large enough that a typical request or small response arrives in one read.
 */
export const SMALL_SIZE = 1024;

/** What a socket reads into while data streams: libuv's own read size, one syscall per 64 KiB. */
export const LARGE_SIZE = 64 * 1024;

/** Small buffers are cut from slabs so that each does not carry its own ArrayBuffer. */
const SMALL_PER_SLAB = 64;

/** Free large buffers kept for reuse; beyond this a returned one is left to the GC. */
const LARGE_KEEP = 64;

const small: Buffer[] = [];
const large: Buffer[] = [];
let largeInUse = 0;

/** A small buffer for one connection's socket; give it back with giveSmall when the socket closes. */
export function takeSmall(): Buffer {
  const b = small.pop();
  if (b !== undefined) return b;
  const slab = Buffer.allocUnsafeSlow(SMALL_SIZE * SMALL_PER_SLAB);
  for (let k = 1; k < SMALL_PER_SLAB; k++) {
    small.push(slab.subarray(k * SMALL_SIZE, (k + 1) * SMALL_SIZE));
  }
  return slab.subarray(0, SMALL_SIZE);
}

export function giveSmall(b: Buffer): void {
  small.push(b);
}

/** A large buffer for a socket whose data is streaming. */
export function takeLarge(): Buffer {
  largeInUse++;
  return large.pop() ?? Buffer.allocUnsafeSlow(LARGE_SIZE);
}

export function giveLarge(b: Buffer): void {
  largeInUse--;
  if (large.length < LARGE_KEEP) large.push(b);
}

/** Large buffers held by sockets right now (for tests and stats). */
export function largeBuffersInUse(): number {
  return largeInUse;
}
