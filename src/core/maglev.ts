// Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table of MAGLEV_SIZE entries
// (a prime), filled by letting each backend claim entries in its own pseudo-random order, in
// turns proportional to its weight. The client's address hash indexes it: the same client
// reaches the same backend; removing one of N backends moves about 1/N of clients; and every
// fulcrum process with the same backend list builds the same table, so a fleet needs no shared
// state. Invariants: the table depends only on the backends' names and weights (not on slot
// order or on any process-local state); picks allocate nothing; a backend that cannot take the
// client (down, disabled, full, already tried) sends it on through a fixed sequence of other
// entries, so clients of healthy backends never move when another fails. With a balance factor
// (bounded loads, Mirrokni, Thorup and Zadimoghaddam), a backend over its cap of the weighted
// average counts as full: its new clients go on along the same fixed sequence.

import type { BackendTable } from '../shared/table.ts';
import { BACKUP } from '../shared/table.ts';
import { mix } from './hash.ts';
import { LeastConnections } from './least-conn.ts';
import type { Scheduler } from './scheduler.ts';
import { isAvoided, isPickable } from './table.ts';

/** Entries in the lookup table: a prime, as the paper requires, about 256 per backend at 256. */
export const MAGLEV_SIZE = 65537;

/** Other entries tried when the client's own backend cannot take it. */
const REHASHES = 8;
/** With bounded loads, up to this many: a capped backend is a normal event, not a failure, and
 *  the client should still land somewhere deterministic. */
const BOUNDED_REHASHES = 64;

export class Maglev implements Scheduler {
  readonly table: BackendTable;
  /** Entry -> table slot; -1 when no backend takes part. */
  readonly lookup: Int32Array;
  /** When no entry gives a pickable backend (or for backups): fewest connections. */
  private readonly fallback: LeastConnections;
  /** Bounded loads: the cap in percent of the weighted average; 0: off. */
  private readonly factor: number;

  /**
   * `keys[i]` identifies slot i's backend across processes (a hash of its name; 0 for a free
   * slot). Backups and weight-0 backends get no entries: they are reached through the fallback.
   */
  constructor(table: BackendTable, keys: Uint32Array, factor = 0) {
    this.table = table;
    this.lookup = populate(table, keys);
    this.fallback = new LeastConnections(table);
    this.factor = factor;
  }

  pick(avoid: number, key: number): number {
    const table = this.table;
    // Bounded loads: the live connections and weight of every pickable normal backend, for the
    // caps below (the counts are the global ones every worker shares).
    let live = 0;
    let weights = 0;
    if (this.factor > 0) {
      for (let i = 0; i < table.size; i++) {
        if (!isPickable(table, i, 0)) continue;
        live += table.active[i];
        weights += table.weight[i];
      }
    }
    const rehashes = this.factor > 0 ? BOUNDED_REHASHES : REHASHES;
    let h = key | 0;
    for (let k = 0; k <= rehashes; k++) {
      const i = this.lookup[(h >>> 0) % MAGLEV_SIZE];
      if (i >= 0 && isPickable(table, i, 0) && !isAvoided(avoid, i)) {
        if (this.factor === 0 || table.active[i] < this.cap(i, live, weights)) return i;
      }
      h = mix(h + k + 1);
    }
    return this.fallback.pick(avoid, key);
  }

  /**
   * Backend i's cap: ceil(factor% x (live + 1) x its share of the weight), the +1 being the
   * connection being placed, so that an idle pool has room.
   */
  private cap(i: number, live: number, weights: number): number {
    return Math.ceil((this.factor * (live + 1) * this.table.weight[i]) / (100 * weights));
  }

  observe(_i: number, _ms: number): void {}
}

/** The Maglev table over the normal backends with a weight, each claiming entries in turn. */
function populate(table: BackendTable, keys: Uint32Array): Int32Array {
  const lookup = new Int32Array(MAGLEV_SIZE).fill(-1);
  const members: number[] = [];
  for (let i = 0; i < table.size; i++) {
    if (keys[i] !== 0 && table.weight[i] > 0 && (table.state[i] & BACKUP) === 0) members.push(i);
  }
  if (members.length === 0) return lookup;
  // The same order in every process: by the backends' keys, not by slot.
  members.sort((a, b) => keys[a] - keys[b] || a - b);
  const offset = members.map((i) => keys[i] % MAGLEV_SIZE);
  const skip = members.map((i) => ((mix(keys[i]) >>> 0) % (MAGLEV_SIZE - 1)) + 1);
  const next = new Array<number>(members.length).fill(0);
  const weights = members.map((i) => table.weight[i]);
  const heaviest = Math.max(...weights);
  const credit = new Array<number>(members.length).fill(0);
  let filled = 0;
  while (filled < MAGLEV_SIZE) {
    for (let m = 0; m < members.length && filled < MAGLEV_SIZE; m++) {
      // Each round the heaviest backend claims one entry and the others in proportion.
      credit[m] += weights[m];
      while (credit[m] >= heaviest && filled < MAGLEV_SIZE) {
        credit[m] -= heaviest;
        let entry = (offset[m] + next[m] * skip[m]) % MAGLEV_SIZE;
        while (lookup[entry] >= 0) {
          next[m]++;
          entry = (offset[m] + next[m] * skip[m]) % MAGLEV_SIZE;
        }
        lookup[entry] = members[m];
        next[m]++;
        filled++;
      }
    }
  }
  return lookup;
}
