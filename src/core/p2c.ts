// Power of two random choices (Envoy's least-request): draw two different pickable backends at
// random and take the one with fewer active connections per unit of weight. Invariant: no
// allocation; O(1) draws when most backends are pickable, a scan only when few are.

import type { BackendTable } from '../shared/table.ts';
import { Random } from './random.ts';
import type { Scheduler } from './scheduler.ts';
import { isAvoided, isPickable, pickTiered } from './table.ts';

/** Random draws before falling back to a scan for a pickable backend. */
const DRAWS = 4;

export class PowerOfTwoChoices implements Scheduler {
  readonly table: BackendTable;
  readonly random: Random;

  constructor(table: BackendTable, random = new Random()) {
    this.table = table;
    this.random = random;
  }

  pick(avoid: number, _key: number): number {
    return pickTiered(this, avoid);
  }

  observe(_i: number, _ms: number): void {}

  pickIn(tier: number, avoid: number): number {
    const a = candidate(this.table, this.random, tier, avoid, -1);
    if (a < 0) return -1;
    const b = candidate(this.table, this.random, tier, avoid, a);
    if (b < 0) return a;
    const active = this.table.active;
    const weight = this.table.weight;
    // (active+1)/weight, cross-multiplied: the +1 makes an idle heavy backend beat an idle light one.
    return (active[a] + 1) * weight[b] <= (active[b] + 1) * weight[a] ? a : b;
  }
}

/** A random pickable backend other than `not`: a few draws, then a scan from a random start. */
export function candidate(
  table: BackendTable,
  random: Random,
  tier: number,
  avoid: number,
  not: number,
): number {
  const n = table.size;
  if (n === 0) return -1;
  for (let k = 0; k < DRAWS; k++) {
    const i = random.below(n);
    if (i !== not && isPickable(table, i, tier) && !isAvoided(avoid, i)) return i;
  }
  const start = random.below(n);
  for (let k = 0; k < n; k++) {
    let i = start + k;
    if (i >= n) i -= n;
    if (i !== not && isPickable(table, i, tier) && !isAvoided(avoid, i)) return i;
  }
  return -1;
}
