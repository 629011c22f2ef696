// Rounds: one timer for many periodic per-backend tasks (health probes, agent questions, load
// scrapes). Invariants: a task is never started while its previous run is still busy (a slow
// backend is asked less often, never twice at once); a task that fell behind runs once, not in
// a burst; one timer is armed at a time, for the earliest task due; stop() ends every future run.

import type { Member, Pool } from './pool.ts';

export interface Round {
  /** performance.now() when it is next due. */
  nextAt: number;
  /** Its last run has not finished yet. */
  busy: boolean;
  readonly intervalMs: number;
}

export class Rounds<T extends Round & { readonly member: Member }> {
  private tasks: T[] = [];
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  private readonly start: (task: T) => void;

  /** `start` begins one run of a task; it sets `busy` and clears it when the run is over. */
  constructor(start: (task: T) => void) {
    this.start = start;
  }

  get all(): readonly T[] {
    return this.tasks;
  }

  /**
   * Follows the pools (a reload, a DNS change, an admin command): every member for which `wanted`
   * gives a setting keeps its task (its schedule and state), refreshed by `keep`; a new one gets
   * `make`'s task, due at once; tasks of members no longer wanted are dropped.
   */
  follow<S>(
    pools: readonly Pool[],
    wanted: (pool: Pool, member: Member) => S | null,
    make: (pool: Pool, member: Member, setting: S, now: number) => T,
    keep: (task: T, pool: Pool, setting: S) => void,
  ): void {
    const known = new Map(this.tasks.map((t) => [t.member, t]));
    const next: T[] = [];
    const now = performance.now();
    for (const pool of pools) {
      for (const member of pool.members()) {
        const setting = member.leaving ? null : wanted(pool, member);
        if (setting === null) continue;
        const kept = known.get(member);
        if (kept === undefined) next.push(make(pool, member, setting, now));
        else {
          keep(kept, pool, setting);
          next.push(kept);
        }
      }
    }
    this.set(next);
  }

  /** Replaces the tasks and rearms the timer. */
  set(tasks: T[]): void {
    this.tasks = tasks;
    this.arm();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
  }

  private arm(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    if (this.stopped || this.tasks.length === 0) return;
    let next = Number.POSITIVE_INFINITY;
    for (const task of this.tasks) next = Math.min(next, task.nextAt);
    this.timer = setTimeout(() => this.run(), Math.max(0, next - performance.now()));
    this.timer.unref();
  }

  private run(): void {
    const now = performance.now();
    for (const task of this.tasks) {
      if (task.nextAt > now) continue;
      task.nextAt += task.intervalMs;
      if (task.nextAt <= now) task.nextAt = now + task.intervalMs; // fell behind: no burst
      if (!task.busy) this.start(task);
    }
    this.arm();
  }
}
