// One frontend as the control plane keeps it: its config, its own counters, the pool it sends
// clients to, and what it keeps of its class on that pool (its live count on each of the pool's
// backends, for its share; how many of its clients wait, for priorities).
// Invariants: the counters outlive a move to another pool (a frontend's totals never go back);
// the per-backend counts and the waiting count belong to one pool, so a move gets new ones and
// the connections the old pool holds keep counting there until they end.

import { randomBytes } from 'node:crypto';
import { TICKET_KEY_BYTES } from '../config/tls.ts';
import type { FrontendConfig } from '../config/types.ts';
import type { SharedCounters } from '../shared/counters.ts';
import { allocateCounters } from '../shared/counters.ts';
import type { FrontendUpdate } from '../shared/messages.ts';
import { allocateSources } from '../shared/sources.ts';
import { TABLE_SLOTS } from '../shared/table.ts';
import type { Pool } from './pool.ts';

/**
 * The process's TLS session ticket keys: one set for every frontend in every worker, so a ticket
 * one worker sealed opens in any other. Made at start (or taken from the process this one
 * upgrades, with their age) and replaced by rotateTicketKeys (the supervisor does once they are
 * TICKET_ROTATE_MS old, then publishes); a frontend with tls.ticketKeys uses its file's instead.
 */
let ticketKeys: Uint8Array = randomBytes(TICKET_KEY_BYTES);
/** When they were made (Date.now()). */
let ticketKeysMadeAt = Date.now();

export function rotateTicketKeys(): void {
  ticketKeys = randomBytes(TICKET_KEY_BYTES);
  ticketKeysMadeAt = Date.now();
}

/** The keys in use and when they were made: what a successor inherits. */
export function currentTicketKeys(): { keys: Uint8Array; madeAt: number } {
  return { keys: ticketKeys, madeAt: ticketKeysMadeAt };
}

/** Uses the keys the process this one upgrades had, so its clients' tickets still open. */
export function adoptTicketKeys(keys: Uint8Array, madeAt: number): void {
  ticketKeys = keys;
  ticketKeysMadeAt = madeAt;
}

export class Frontend {
  config: FrontendConfig;
  /** Accepted, live, queued, ends by reason: this frontend's, whatever pool it is on. */
  readonly counters: SharedCounters;
  pool: Pool;
  /** Its live connections on each backend slot of `pool` (Int32, Atomics), every worker's. */
  private held: Int32Array<SharedArrayBuffer>;
  /** Its clients waiting for a slot of `pool`, every worker's (one Int32, Atomics). */
  private waiting: Int32Array<SharedArrayBuffer>;
  /** A UDP frontend's live sessions, every worker's (one Int32, Atomics): kept across moves. */
  private readonly sessions: Int32Array<SharedArrayBuffer> = newCounts(1);
  /** Shared per-source counts, allocated the first time the frontend needs them. */
  private sources: SharedArrayBuffer | null = null;

  constructor(config: FrontendConfig, pool: Pool, workers: number) {
    this.config = config;
    this.pool = pool;
    this.counters = allocateCounters(workers, 0);
    this.held = newCounts(TABLE_SLOTS);
    this.waiting = newCounts(1);
  }

  get name(): string {
    return this.config.name;
  }

  /** Takes a new config and, when it names another pool, that pool (with counts of its own). */
  reconfigure(config: FrontendConfig, pool: Pool): void {
    this.config = config;
    if (pool === this.pool) return;
    this.pool = pool;
    this.held = newCounts(TABLE_SLOTS);
    this.waiting = newCounts(1);
  }

  /** Its live connections on backend slot `index` of its pool. */
  heldOn(index: number): number {
    return Atomics.load(this.held, index);
  }

  /** A UDP frontend's live sessions now, over every worker. */
  liveSessions(): number {
    return Atomics.load(this.sessions, 0);
  }

  /** Its clients waiting now, over every worker. */
  queued(): number {
    return Atomics.load(this.waiting, 0);
  }

  /** This frontend, with its pool as it is now, as a worker receives it. */
  update(): FrontendUpdate {
    const guard = this.config.guard;
    if (this.sources === null && (guard.maxConnsPerSource > 0 || guard.connRatePerSource > 0)) {
      this.sources = allocateSources();
    }
    return {
      config: this.config,
      poolId: this.pool.id,
      table: this.pool.shared,
      counters: this.counters,
      poolCounters: this.pool.counters,
      held: this.held.buffer,
      waiting: this.waiting.buffer,
      sessions: this.sessions.buffer,
      members: this.pool.workerMembers(),
      sources: this.sources,
      ticketKeys,
    };
  }
}

/** `n` shared counts, zero. */
function newCounts(n: number): Int32Array<SharedArrayBuffer> {
  return new Int32Array(new SharedArrayBuffer(n * 4));
}
