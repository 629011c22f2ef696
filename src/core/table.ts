// Picking over the backend table: which slots may take a connection, and the live counts a
// connection takes and gives back. Invariant: integers only, no allocation, no throw (the
// layout itself lives in shared/table.ts, which the control plane reads too).

import type { BackendTable } from '../shared/table.ts';
import { AGENT_DOWN, BACKUP, DRAINING, ENABLED, PICKABLE_MASK, UP } from '../shared/table.ts';

/**
 * True when backend `i` may take a new connection in the tier `tier` (0 for normal, BACKUP for
 * backups): up, enabled, not draining, weight above zero, and below its maxconn (and this
 * frontend's share of it) if it has one. The check reads the counts without a lock; the place
 * itself is taken by take(), which is exact.
 */
export function isPickable(table: BackendTable, i: number, tier: number): boolean {
  if ((table.state[i] & PICKABLE_MASK) !== (UP | ENABLED | tier) || table.weight[i] <= 0) {
    return false;
  }
  const max = table.maxconn[i];
  return max === 0 || !atLimit(table, i, max);
}

/**
 * The most connections a frontend with `share` percent may hold on a backend with `max`: the
 * share of it rounded down, at least 1.
 */
export function shareCap(max: number, share: number): number {
  const cap = ((max * share) / 100) | 0;
  return cap > 0 ? cap : 1;
}

/** True when backend `i` (maxconn `max` > 0) has no room for this view's frontend: full, or the
 *  frontend holds its share of it. Racy like isPickable's check, and bounded the same way. */
function atLimit(table: BackendTable, i: number, max: number): boolean {
  if (table.active[i] >= max) return true;
  return table.share < 100 && table.held[i] >= shareCap(max, table.share);
}

/**
 * True when backend `i` could take a connection but for its maxconn (or this frontend's share of
 * it): a client may wait for it.
 */
export function isFull(table: BackendTable, i: number): boolean {
  const max = table.maxconn[i];
  return (
    max > 0 &&
    atLimit(table, i, max) &&
    (table.state[i] & (UP | ENABLED | DRAINING | AGENT_DOWN)) === (UP | ENABLED) &&
    table.weight[i] > 0
  );
}

/** True when some backend could take a connection for this view's frontend now (the pick's
 *  tiers: a normal backend, else a backup). */
export function hasRoom(table: BackendTable): boolean {
  for (let i = 0; i < table.size; i++) if (isPickable(table, i, 0)) return true;
  for (let i = 0; i < table.size; i++) if (isPickable(table, i, BACKUP)) return true;
  return false;
}

/** True when some backend is full (see isFull): new clients wait in the queue, not refused. */
export function anyFull(table: BackendTable): boolean {
  for (let i = 0; i < table.size; i++) if (isFull(table, i)) return true;
  return false;
}

/**
 * True when `i` is excluded by `avoid`, a bit mask of backends already tried by this connection.
 * Only the first 32 backends can be avoided; past that a retry may land on a tried backend again.
 */
export function isAvoided(avoid: number, i: number): boolean {
  return i < 32 && ((avoid >>> i) & 1) === 1;
}

/** The avoid mask with backend `i` added. */
export function avoidBit(i: number): number {
  return i < 32 ? 1 << i : 0;
}

/** Picks in the normal tier, then among backups: the two-tier rule every algorithm shares. */
export function pickTiered(
  scheduler: { pickIn(tier: number, avoid: number): number },
  avoid: number,
): number {
  const i = scheduler.pickIn(0, avoid);
  return i >= 0 ? i : scheduler.pickIn(BACKUP, avoid);
}

/** Counts a new connection on backend `i` whatever its limits: for tests and benchmarks that
 *  load a table by hand (the data path takes places with take()). */
export function acquire(table: BackendTable, i: number): void {
  Atomics.add(table.active, i, 1);
  Atomics.add(table.held, i, 1);
  Atomics.add(table.sent, i, 1);
}

/**
 * Takes a place on backend `i` for a new connection (live now, and placed since its last load
 * report); false, with nothing counted, when its maxconn or this frontend's share of it is
 * reached. Each count is raised first and checked after, so two workers racing for the last
 * place cannot both have it: a backend never holds more than its maxconn, nor a frontend more
 * than its share (an agent lowering maxconn under the live count aside).
 */
export function take(table: BackendTable, i: number): boolean {
  const max = table.maxconn[i];
  if (Atomics.add(table.active, i, 1) >= max && max > 0) {
    Atomics.sub(table.active, i, 1);
    return false;
  }
  const held = Atomics.add(table.held, i, 1);
  if (max > 0 && table.share < 100 && held >= shareCap(max, table.share)) {
    Atomics.sub(table.held, i, 1);
    Atomics.sub(table.active, i, 1);
    return false;
  }
  Atomics.add(table.sent, i, 1);
  return true;
}

/** Counts a finished connection on backend `i`; the caller guarantees one release per acquire. */
export function release(table: BackendTable, i: number): void {
  Atomics.sub(table.active, i, 1);
  Atomics.sub(table.held, i, 1);
}
