// The backend table's layout: one pool's backends as a struct of typed arrays over
// SharedArrayBuffers, shared by the control plane and every worker.
// Invariant: its memory is sized once, when built (a change rebuilds the schedulers over a new
// size); every field is an integer read by index, so a scheduler scans it without allocating.
// `active` is shared by every worker (Atomics); `state` and `weight` are written only by the
// control plane and read racily by workers, which is benign.

/** Health: the backend answers (probes or passive health flip it). */
export const UP = 1;
/** Admin: an operator has not disabled it. */
export const ENABLED = 2;
/** Admin: takes no new connection; live ones run to their end. */
export const DRAINING = 4;
/** Used only when no normal backend can take a connection. */
export const BACKUP = 8;
/** Its agent said down, stopped or fail: not picked whatever the health checks say. */
export const AGENT_DOWN = 16;

/** The bits a backend must show, besides BACKUP, to be picked (and must not: DRAINING,
 *  AGENT_DOWN). */
export const PICKABLE_MASK = UP | ENABLED | DRAINING | BACKUP | AGENT_DOWN;

/** Largest weight a backend may carry; 0 means never picked. */
export const MAX_WEIGHT = 256;

/**
 * Most backends in one frontend, configured, added and discovered together. A frontend of 256
 * replicas is already far past what one L4 pool in front of a service usually holds; the limit
 * keeps every per-backend array small and fixed, and a DNS answer larger than it is refused.
 */
export const MAX_BACKENDS = 256;

/**
 * Slots in a frontend's table: twice MAX_BACKENDS, so that a reload may replace every backend at
 * once while the removed ones still drain in their own slots (a slot is freed only when its last
 * connection has finished).
 */
export const TABLE_SLOTS = 2 * MAX_BACKENDS;

export interface BackendTable {
  readonly size: number;
  /** Live connections per backend, all workers together. Atomics only. */
  readonly active: Int32Array;
  /** Configured weight, 0..MAX_WEIGHT. */
  readonly weight: Int32Array;
  /** Flag bits: UP | ENABLED | DRAINING | BACKUP. */
  readonly state: Int32Array;
  /** Most live connections the backend may have; 0 means no limit. */
  readonly maxconn: Int32Array;
  /** Connections placed on the backend so far (wraps; compare by difference). Atomics only. */
  readonly sent: Int32Array;
  /** The load the backend last reported on its metrics page; NaN: no report (none, failed or
   *  stale). Written by the control plane only; a worker's plain read of an aligned double is
   *  whole on every platform Node runs on, and a report read one pick late is harmless. */
  readonly load: Float64Array;
  /** `sent` when that report was read: connections placed since are not in the report yet. */
  readonly loadBase: Int32Array;
  /** Live connections per backend of the one frontend this view picks for (its class on a pool
   *  shared by several frontends). Atomics only. */
  readonly held: Int32Array;
  /** The percent of each backend's maxconn that frontend may hold (its `share`); 100: all. */
  readonly share: number;
}

/** The shared memory behind a table, as it is sent to a worker thread. */
export interface SharedTable {
  readonly size: number;
  readonly active: SharedArrayBuffer;
  readonly weight: SharedArrayBuffer;
  readonly state: SharedArrayBuffer;
  readonly maxconn: SharedArrayBuffer;
  readonly sent: SharedArrayBuffer;
  readonly load: SharedArrayBuffer;
  readonly loadBase: SharedArrayBuffer;
}

/** Allocates shared memory for `size` backends, all up and enabled with weight 1. */
export function allocateTable(size: number): SharedTable {
  const shared: SharedTable = {
    size,
    active: new SharedArrayBuffer(size * 4),
    weight: new SharedArrayBuffer(size * 4),
    state: new SharedArrayBuffer(size * 4),
    maxconn: new SharedArrayBuffer(size * 4),
    sent: new SharedArrayBuffer(size * 4),
    load: new SharedArrayBuffer(size * 8),
    loadBase: new SharedArrayBuffer(size * 4),
  };
  const table = openTable(shared);
  table.weight.fill(1);
  table.load.fill(Number.NaN);
  table.state.fill(UP | ENABLED);
  return shared;
}

/**
 * Views shared memory as a table; the same call works on the main thread and in a worker.
 * `size` is how many slots a scheduler scans (the slots in use); by default, all of them.
 * `held` and `share`: the counts and the share of the frontend that picks through this view
 * (by default counts of its own, and no share).
 */
export function openTable(
  shared: SharedTable,
  size = shared.size,
  held: SharedArrayBuffer = new SharedArrayBuffer(shared.size * 4),
  share = 100,
): BackendTable {
  return {
    held: new Int32Array(held),
    share,
    size,
    active: new Int32Array(shared.active),
    weight: new Int32Array(shared.weight),
    state: new Int32Array(shared.state),
    maxconn: new Int32Array(shared.maxconn),
    sent: new Int32Array(shared.sent),
    load: new Float64Array(shared.load),
    loadBase: new Int32Array(shared.loadBase),
  };
}

/** A table in plain memory, for tests and benchmarks that need no threads. */
export function createTable(
  weights: readonly number[],
  backup: readonly boolean[] = [],
): BackendTable {
  const table = openTable(allocateTable(weights.length));
  for (let i = 0; i < weights.length; i++) {
    table.weight[i] = weights[i];
    if (backup[i] === true) table.state[i] |= BACKUP;
  }
  return table;
}
