// The scheduler contract: the only scheduling interface the data path sees.
// Invariant: pick() allocates nothing, throws nothing and returns a backend index or -1;
// every acquire(i) is matched by exactly one release(i), so active counts never go negative.

import { LeastConnections } from './least-conn.ts';
import { RoundRobin } from './round-robin.ts';
import type { BackendTable } from './table.ts';
import { WeightedRoundRobin } from './weighted-round-robin.ts';

export interface Scheduler {
  /**
   * Picks a backend for a new connection, skipping those whose bit is set in `avoid` (backends
   * this connection already failed to reach). Backups are considered only when no normal backend
   * is pickable. Returns -1 when none can take it.
   */
  pick(avoid: number): number;
}

export { acquire, release } from './table.ts';

export const ALGORITHMS = ['least-conn', 'round-robin', 'weighted-round-robin'] as const;
export type Algorithm = (typeof ALGORITHMS)[number];

export function isAlgorithm(name: string): name is Algorithm {
  return (ALGORITHMS as readonly string[]).includes(name);
}

/** Builds the scheduler for `algorithm` over `table`. Each worker builds its own. */
export function createScheduler(algorithm: Algorithm, table: BackendTable): Scheduler {
  switch (algorithm) {
    case 'least-conn':
      return new LeastConnections(table);
    case 'round-robin':
      return new RoundRobin(table);
    case 'weighted-round-robin':
      return new WeightedRoundRobin(table);
  }
}
