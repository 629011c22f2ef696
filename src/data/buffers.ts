// Read buffers for the relay, one set per worker thread. libuv keeps a pointer into a written
// buffer until the write completes, so a buffer may be read into again only once no write of it
// is pending. Invariants: the idle buffer is shared by every socket of the thread that is not
// streaming, so bytes read into it are copied out (into the out buffer) in the same read
// callback, before anything is written; the out buffer is written from only by the write in
// progress, and lent to its socket (and replaced) when that write pends; a lent small buffer or a
// large buffer belongs to at most one socket at a time, from take/lend to give. So an idle
// connection holds no buffer at all, and a small read is relayed without allocating.

/**
 * What a socket reads into while it is not streaming: a typical request or small response
 * arrives in one read. A read that fills it moves the socket to a large buffer.
 */
export const SMALL_SIZE = 1024;

/** What a socket reads into while data streams: libuv's own read size, one syscall per 64 KiB. */
export const LARGE_SIZE = 64 * 1024;

/** Small buffers are cut from slabs so that each does not carry its own ArrayBuffer. */
const SMALL_PER_SLAB = 64;

/** Free buffers kept for reuse; beyond this a returned one is left to the GC. */
const SMALL_KEEP = 1024;
const LARGE_KEEP = 64;

/** The thread's shared read buffer for sockets that are not streaming (see the invariants). */
export const IDLE: Buffer = Buffer.allocUnsafeSlow(SMALL_SIZE);

const small: Buffer[] = [];
const large: Buffer[] = [];
let largeInUse = 0;
let smallInUse = 0;

function newSmall(): Buffer {
  const b = small.pop();
  if (b !== undefined) return b;
  const slab = Buffer.allocUnsafeSlow(SMALL_SIZE * SMALL_PER_SLAB);
  for (let k = 1; k < SMALL_PER_SLAB; k++) {
    small.push(slab.subarray(k * SMALL_SIZE, (k + 1) * SMALL_SIZE));
  }
  return slab.subarray(0, SMALL_SIZE);
}

/** Where bytes read into IDLE are copied before their write, and its views by length (made once
 *  each: `write` needs a buffer of the exact length, and a view per write would be garbage). */
let out: Buffer = newSmall();
let outViews: (Buffer | undefined)[] = new Array(SMALL_SIZE + 1);

/** Copies the first `n` bytes of IDLE out; returns them, to be written at once. */
export function copyOut(n: number): Buffer {
  IDLE.copy(out, 0, 0, n);
  let view = outViews[n];
  if (view === undefined) {
    view = out.subarray(0, n);
    outViews[n] = view;
  }
  return view;
}

/** The write of copyOut()'s bytes pends: the out buffer now belongs to that socket until the
 *  write completes (give it back with giveSmall), and the next copy goes to a new one. */
export function lendOut(): Buffer {
  const lent = out;
  smallInUse++;
  out = newSmall();
  outViews = new Array(SMALL_SIZE + 1);
  return lent;
}

export function giveSmall(b: Buffer): void {
  smallInUse--;
  if (small.length < SMALL_KEEP) small.push(b);
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

/** Small buffers held by pending writes right now (for tests and stats). */
export function smallBuffersInUse(): number {
  return smallInUse;
}
