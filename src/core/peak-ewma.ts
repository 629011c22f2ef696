// Peak-EWMA (Finagle's and Linkerd's latency-aware balancer, at L4): each backend's cost is a
// moving average of how long it makes clients wait (connect time, then time to first byte) that
// jumps up at once on a slower sample (peak-sensitive) and decays toward zero with time; two
// random pickable backends are drawn and the lower cost * (active + 1) / weight wins.
// Invariants: no allocation; costs are this worker's own observations, kept by slot outside the
// scheduler (LatencyState) so they survive a rebuild; a backend with no sample yet is compared on
// load alone, so a new backend is neither flooded nor starved.

import type { BackendTable } from '../shared/table.ts';
import { candidate } from './p2c.ts';
import { Random } from './random.ts';
import type { Scheduler } from './scheduler.ts';
import { pickTiered } from './table.ts';

/**
 * The time peak-EWMA reads, in ms: one cell the worker's coarse clock writes every tick (100 ms,
 * fine against a 2 s decay). Reading an array cell, not calling a clock, keeps picks free of
 * boxed numbers.
 */
export const clockCell = new Float64Array(1);

/** How fast a cost forgets: a sample's weight halves every DECAY_MS * ln 2 (about 1.4 s). */
export const DECAY_MS = 2000;

/** One worker's latency observations by table slot: cost in ms, and when it was last updated
 *  (0: never). */
export interface LatencyState {
  readonly cost: Float64Array;
  readonly stamp: Float64Array;
}

export function createLatencyState(slots: number): LatencyState {
  return { cost: new Float64Array(slots), stamp: new Float64Array(slots) };
}

export class PeakEwma implements Scheduler {
  readonly table: BackendTable;
  readonly state: LatencyState;
  readonly random: Random;
  /** Milliseconds, monotonic, in [0]; a parameter so tests can drive time. */
  readonly clock: Float64Array;

  constructor(
    table: BackendTable,
    state: LatencyState,
    random = new Random(),
    clock: Float64Array = clockCell,
  ) {
    this.table = table;
    this.state = state;
    this.random = random;
    this.clock = clock;
  }

  pick(avoid: number, _key: number): number {
    return pickTiered(this, avoid);
  }

  pickIn(tier: number, avoid: number): number {
    const a = candidate(this.table, this.random, tier, avoid, -1);
    if (a < 0) return -1;
    const b = candidate(this.table, this.random, tier, avoid, a);
    if (b < 0) return a;
    // Costs decayed to now, inline (a helper returning a double would box it on every pick).
    const now = this.clock[0];
    const { cost, stamp } = this.state;
    let ca = 1;
    let cb = 1;
    // No sample yet on one side: judge both on load alone.
    if (stamp[a] !== 0 && stamp[b] !== 0) {
      ca = cost[a] * Math.exp((stamp[a] - now) / DECAY_MS);
      cb = cost[b] * Math.exp((stamp[b] - now) / DECAY_MS);
    }
    const active = this.table.active;
    const weight = this.table.weight;
    return ca * (active[a] + 1) * weight[b] <= cb * (active[b] + 1) * weight[a] ? a : b;
  }

  /** The cost of `i` at `now`, decayed since its last sample; -1 before the first sample. */
  cost(i: number, now: number): number {
    const stamp = this.state.stamp[i];
    if (stamp === 0) return -1;
    return this.state.cost[i] * Math.exp(-(now - stamp) / DECAY_MS);
  }

  /** A sample: how long backend `i` made a client wait, in ms. */
  observe(i: number, ms: number): void {
    if (i < 0) return;
    const now = this.clock[0];
    const state = this.state;
    const current = state.stamp[i] === 0 ? 0 : state.cost[i];
    if (ms > current) {
      state.cost[i] = ms; // peak: a slower sample counts in full at once
    } else {
      const decay = Math.exp(-(now - state.stamp[i]) / DECAY_MS);
      state.cost[i] = current * decay + ms * (1 - decay);
    }
    state.stamp[i] = now === 0 ? Number.MIN_VALUE : now;
  }
}
