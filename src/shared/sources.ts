// The per-source table's layout: live connections and recent connects per client address,
// shared by every worker of a frontend (Atomics over one SharedArrayBuffer). Invariant: fixed in
// size, allocated once per frontend; the guard (data/guard.ts) is its only writer of entries,
// and releaseSource its only decrement.

/** Entries in the per-source table: a power of two. */
export const SOURCE_SLOTS = 65536;
/** Entries probed for one address before giving up (the client is then not tracked). */
export const PROBES = 16;
/** Int32 fields per entry. */
export const KEY = 0;
export const LIVE = 1;
export const SECOND = 2;
export const COUNT = 3;
export const PREVIOUS = 4;
export const FIELDS = 5;

export function allocateSources(): SharedArrayBuffer {
  return new SharedArrayBuffer(SOURCE_SLOTS * FIELDS * 4);
}

/** Gives back a live connection counted on `entry` of a per-source table. */
export function releaseSource(table: Int32Array, entry: number): void {
  if (entry >= 0) Atomics.sub(table, entry * FIELDS + LIVE, 1);
}
