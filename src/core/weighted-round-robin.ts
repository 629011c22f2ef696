// Smooth weighted round-robin (nginx's algorithm): weights 5,1,1 give a a b a c a a, never a
// burst of five a's. Invariant: no allocation; `current` is per worker and sized with the table.

import type { BackendTable } from '../shared/table.ts';
import type { Scheduler } from './scheduler.ts';
import { isAvoided, isPickable, pickTiered } from './table.ts';

export class WeightedRoundRobin implements Scheduler {
  readonly table: BackendTable;
  readonly current: Float64Array;

  constructor(table: BackendTable) {
    this.table = table;
    this.current = new Float64Array(table.size);
  }

  pick(avoid: number, _key = 0): number {
    return pickTiered(this, avoid);
  }

  observe(_i: number, _ms: number): void {}

  pickIn(tier: number, avoid: number): number {
    const table = this.table;
    const weight = table.weight;
    const current = this.current;
    let best = -1;
    let total = 0;
    for (let i = 0; i < table.size; i++) {
      if (!isPickable(table, i, tier) || isAvoided(avoid, i)) continue;
      const w = weight[i];
      current[i] += w;
      total += w;
      if (best < 0 || current[i] > current[best]) best = i;
    }
    if (best >= 0) current[best] -= total;
    return best;
  }
}
