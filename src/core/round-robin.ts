// Round-robin: each pickable backend in turn, weights ignored (but weight 0 is never picked).
// Invariant: no allocation; the cursor is per worker, so each worker rotates on its own.

import type { BackendTable } from '../shared/table.ts';
import type { Scheduler } from './scheduler.ts';
import { isAvoided, isPickable, pickTiered } from './table.ts';

export class RoundRobin implements Scheduler {
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
    for (let k = 0; k < n; k++) {
      let i = this.cursor + k;
      if (i >= n) i -= n;
      if (isPickable(table, i, tier) && !isAvoided(avoid, i)) {
        this.cursor = i + 1 === n ? 0 : i + 1;
        return i;
      }
    }
    return -1;
  }
}
