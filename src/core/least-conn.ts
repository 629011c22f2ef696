// Weighted least-connections: the backend with the lowest (active + 1) / weight wins (as HAProxy
// counts it: the +1 is the connection being placed, so weights matter even when all are idle,
// and a backend ramping up in slow start is not flooded just because it has no connection yet).
// Invariant: no allocation, no division; ties are broken from a start that rotates on every
// pick, so that at low load (all counts equal) connections still spread over every backend.

import type { BackendTable } from '../shared/table.ts';
import type { Scheduler } from './scheduler.ts';
import { isAvoided, isPickable, pickTiered } from './table.ts';

export class LeastConnections implements Scheduler {
  readonly table: BackendTable;
  cursor = 0;

  constructor(table: BackendTable) {
    this.table = table;
  }

  pick(avoid: number, _key = 0): number {
    return pickTiered(this, avoid);
  }

  observe(_i: number, _ms: number): void {}

  pickIn(tier: number, avoid: number): number {
    const table = this.table;
    const n = table.size;
    if (n === 0) return -1;
    const start = this.cursor;
    this.cursor = start + 1 === n ? 0 : start + 1;
    const active = table.active;
    const weight = table.weight;
    let best = -1;
    let bestActive = 0;
    let bestWeight = 1;
    for (let k = 0; k < n; k++) {
      let i = start + k;
      if (i >= n) i -= n;
      if (!isPickable(table, i, tier) || isAvoided(avoid, i)) continue;
      // A plain read: an aligned Int32 cannot tear, and a count a few nanoseconds stale only
      // makes a near-tie go the other way, which least-connections tolerates by design.
      const a = active[i] + 1;
      const w = weight[i];
      // (active+1)/w < best's, cross-multiplied: exact in doubles for any real count.
      if (best < 0 || a * bestWeight < bestActive * w) {
        best = i;
        bestActive = a;
        bestWeight = w;
      }
    }
    return best;
  }
}
