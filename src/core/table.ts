// Picking over the backend table: which slots may take a connection, and the live counts a
// connection takes and gives back. Invariant: integers only, no allocation, no throw (the
// layout itself lives in shared/table.ts, which the control plane reads too).

import type { BackendTable } from '../shared/table.ts';
import { AGENT_DOWN, BACKUP, DRAINING, ENABLED, PICKABLE_MASK, UP } from '../shared/table.ts';

/**
 * True when backend `i` may take a new connection in the tier `tier` (0 for normal, BACKUP for
 * backups): up, enabled, not draining, weight above zero, and below its maxconn if it has one.
 * The maxconn check reads `active` without a lock: two workers racing for the last place may
 * both take it, so the limit can be passed by at most workers - 1 for a moment.
 */
export function isPickable(table: BackendTable, i: number, tier: number): boolean {
  if ((table.state[i] & PICKABLE_MASK) !== (UP | ENABLED | tier) || table.weight[i] <= 0) {
    return false;
  }
  const max = table.maxconn[i];
  return max === 0 || table.active[i] < max;
}

/**
 * True when backend `i` could take a connection but for its maxconn: a client may wait for it.
 */
export function isFull(table: BackendTable, i: number): boolean {
  const max = table.maxconn[i];
  return (
    max > 0 &&
    table.active[i] >= max &&
    (table.state[i] & (UP | ENABLED | DRAINING | AGENT_DOWN)) === (UP | ENABLED) &&
    table.weight[i] > 0
  );
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

/** Counts a new connection on backend `i` (live now, and placed since its last load report). */
export function acquire(table: BackendTable, i: number): void {
  Atomics.add(table.active, i, 1);
  Atomics.add(table.sent, i, 1);
}

/** Counts a finished connection on backend `i`; the caller guarantees one release per acquire. */
export function release(table: BackendTable, i: number): void {
  Atomics.sub(table.active, i, 1);
}
