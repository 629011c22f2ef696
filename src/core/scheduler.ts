// The scheduler contract: the only scheduling interface the data path sees.
// Invariant: pick() allocates nothing, throws nothing and returns a backend index or -1;
// every place taken (take or acquire) is matched by exactly one release(i), so active counts never go negative.

import type { BackendTable } from '../shared/table.ts';
import { LeastConnections } from './least-conn.ts';
import { LeastLoad } from './least-load.ts';
import { Maglev } from './maglev.ts';
import { PowerOfTwoChoices } from './p2c.ts';
import type { LatencyState } from './peak-ewma.ts';
import { createLatencyState, PeakEwma } from './peak-ewma.ts';
import { RoundRobin } from './round-robin.ts';
import { WeightedRoundRobin } from './weighted-round-robin.ts';

export interface Scheduler {
  /**
   * Picks a backend for a new connection, skipping those whose bit is set in `avoid` (backends
   * this connection already failed to reach). Backups are considered only when no normal backend
   * is pickable. Returns -1 when none can take it. `key` is the client's hash (the --hash-key);
   * only hashing schedulers read it.
   */
  pick(avoid: number, key: number): number;
  /** How long backend `i` made a client wait (ms); only latency-aware schedulers use it. */
  observe(i: number, ms: number): void;
}

/** What a worker keeps for its schedulers across rebuilds, by table slot. */
export interface SchedulerContext {
  /** A hash of each backend's name (0: free slot), for Maglev. */
  readonly keys: Uint32Array;
  /** This worker's latency observations, for peak-EWMA. */
  readonly latency: LatencyState;
}

export { acquire, release, take } from './table.ts';

export const ALGORITHMS = [
  'least-conn',
  'round-robin',
  'weighted-round-robin',
  'p2c',
  'maglev',
  'peak-ewma',
  'least-load',
] as const;
export type Algorithm = (typeof ALGORITHMS)[number];

export function isAlgorithm(name: string): name is Algorithm {
  return (ALGORITHMS as readonly string[]).includes(name);
}

/**
 * Builds the scheduler for `algorithm` over `table`. Each worker builds its own. `balanceFactor`:
 * bounded loads for hashing schedulers (percent; 0: off).
 */
export function createScheduler(
  algorithm: Algorithm,
  table: BackendTable,
  context: SchedulerContext = emptyContext(table.size),
  balanceFactor = 0,
): Scheduler {
  switch (algorithm) {
    case 'p2c':
      return new PowerOfTwoChoices(table);
    case 'maglev':
      return new Maglev(table, context.keys, balanceFactor);
    case 'peak-ewma':
      return new PeakEwma(table, context.latency);
    case 'least-conn':
      return new LeastConnections(table);
    case 'round-robin':
      return new RoundRobin(table);
    case 'weighted-round-robin':
      return new WeightedRoundRobin(table);
    case 'least-load':
      return new LeastLoad(table);
  }
}

/** A context for a table that stands alone (tests, benchmarks): backends keyed by slot number. */
export function emptyContext(size: number): SchedulerContext {
  return {
    keys: Uint32Array.from({ length: size }, (_, i) => i + 1),
    latency: createLatencyState(size),
  };
}
