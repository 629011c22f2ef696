// Weighted least-load: the backend with the lowest (reported load + connections placed on it
// since that report + 1) / weight wins. The load is what the backend itself says on its metrics
// page (its queue, its running requests), read by the control plane into the table; connections
// placed since are counted in, so a burst between two reports does not all land on the one
// backend that looked idle. A backend without a report (none yet, failed, stale) is judged by
// its live connections, as least-connections judges it; with no report at all this is
// least-connections. Invariant: no allocation, no division; ties rotate as in least-conn.

import type { BackendTable } from '../shared/table.ts';
import type { Scheduler } from './scheduler.ts';
import { isAvoided, isPickable, pickTiered } from './table.ts';

export class LeastLoad implements Scheduler {
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
    const { active, weight, load, sent, loadBase } = table;
    let best = -1;
    let bestLoad = 0;
    let bestWeight = 1;
    for (let k = 0; k < n; k++) {
      let i = start + k;
      if (i >= n) i -= n;
      if (!isPickable(table, i, tier) || isAvoided(avoid, i)) continue;
      const reported = load[i];
      // `sent` wraps at 2^31: the difference, taken as an int32, is still the count since.
      const l = (Number.isNaN(reported) ? active[i] : reported + ((sent[i] - loadBase[i]) | 0)) + 1;
      const w = weight[i];
      if (best < 0 || l * bestWeight < bestLoad * w) {
        best = i;
        bestLoad = l;
        bestWeight = w;
      }
    }
    return best;
  }
}
