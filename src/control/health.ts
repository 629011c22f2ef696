// Health: active TCP probes from the main thread, and passive health from the data plane's own
// connect failures (read from the workers' counter slots). Invariant: only a transition changes a
// backend's UP bit, and only transitions are logged, once each; a probe never touches a client.

import net from 'node:net';
import type { HealthConfig } from '../config/types.ts';
import type { Logger } from '../log.ts';
import { B_CONNECTIONS, B_FAILURES, backendOffset, sumSlots } from '../shared/counters.ts';
import { isLocalError } from '../shared/errors.ts';
import { UP } from '../shared/table.ts';
import type { Member, Pool } from './pool.ts';

/** How often the data plane's connect failures are read: well under any sane --health-interval. */
const PASSIVE_POLL_MS = 100;

interface BackendHealth {
  readonly pool: Pool;
  readonly member: Member;
  health: HealthConfig;
  up: boolean;
  /** Added while running: the first good probe brings it up, whatever `rise` says. */
  fresh: boolean;
  /** Consecutive results of one kind; the other kind resets it. */
  successes: number;
  failures: number;
  nextProbeAt: number;
  probing: boolean;
  /** Counter sums at the last passive poll. */
  seenFailures: number;
  seenConnections: number;
}

export class HealthChecker {
  private backends: BackendHealth[] = [];
  private readonly log: Logger;
  private wake: NodeJS.Timeout | null = null;
  private passive: NodeJS.Timeout | null = null;
  /** The local error probes last met, until one gets through; null: none. */
  private troubled: string | null = null;
  private stopped = false;
  private started = false;

  constructor(log: Logger) {
    this.log = log;
  }

  /**
   * Takes the current pools: backends it already watches keep their streaks and schedule;
   * new ones are probed at once (or, at the first start, spread over the interval); leaving
   * ones and frontends without health checks are dropped.
   */
  sync(pools: readonly Pool[]): void {
    const known = new Map(this.backends.map((b) => [b.member, b]));
    const next: BackendHealth[] = [];
    const now = performance.now();
    for (const pool of pools) {
      if (!pool.config.health.enabled) continue;
      const members = pool.members().filter((m) => !m.leaving);
      const sums = sumSlots(pool.counters);
      members.forEach((member, i) => {
        const kept = known.get(member);
        if (kept !== undefined) {
          kept.health = pool.config.health;
          next.push(kept);
          return;
        }
        const up = (Atomics.load(pool.table.state, member.index) & UP) !== 0;
        const offset = backendOffset(member.index);
        next.push({
          pool,
          member,
          health: pool.config.health,
          up,
          fresh: !up,
          successes: 0,
          failures: 0,
          // Spread a frontend's first probes over its interval rather than firing them together;
          // a backend that is waiting to join is probed at once.
          nextProbeAt: up ? now + (pool.config.health.intervalMs * i) / members.length : now,
          probing: false,
          seenFailures: sums[offset + B_FAILURES],
          seenConnections: sums[offset + B_CONNECTIONS],
        });
      });
    }
    this.backends = next;
    if (!this.started) {
      this.started = true;
      this.passive = setInterval(() => this.pollPassive(), PASSIVE_POLL_MS);
      this.passive.unref();
    }
    if (this.wake !== null) clearTimeout(this.wake);
    this.schedule();
  }

  stop(): void {
    this.stopped = true;
    if (this.wake !== null) clearTimeout(this.wake);
    if (this.passive !== null) clearInterval(this.passive);
  }

  /** One loop for every probe: sleep until the earliest one is due. */
  private schedule(): void {
    if (this.stopped) return;
    if (this.backends.length === 0) return;
    let next = Number.POSITIVE_INFINITY;
    for (const b of this.backends) next = Math.min(next, b.nextProbeAt);
    this.wake = setTimeout(() => this.run(), Math.max(0, next - performance.now()));
    this.wake.unref();
  }

  private run(): void {
    const now = performance.now();
    for (const b of this.backends) {
      if (b.nextProbeAt > now) continue;
      b.nextProbeAt += b.health.intervalMs;
      if (b.nextProbeAt <= now) b.nextProbeAt = now + b.health.intervalMs; // fell behind: no burst
      if (!b.probing) this.probe(b);
    }
    this.schedule();
  }

  private probe(b: BackendHealth): void {
    b.probing = true;
    const socket = net.connect({ host: b.member.config.host, port: b.member.config.port });
    socket.setTimeout(b.health.timeoutMs);
    /** `ok` null: no verdict (fulcrum could not even try: the probe says nothing). */
    const done = (ok: boolean | null, reason: string) => {
      if (!b.probing) return;
      b.probing = false;
      socket.destroy();
      // A backend that left while its probe ran is no longer ours to judge.
      if (ok !== null && !this.stopped && this.backends.includes(b)) this.record(b, ok, reason);
    };
    socket.once('connect', () => {
      this.troubled = null;
      done(true, 'probe succeeded');
    });
    socket.once('timeout', () => done(false, `probe timed out after ${b.health.timeoutMs} ms`));
    socket.once('error', (err: NodeJS.ErrnoException) => {
      const local = isLocalError(err.code);
      if (local) this.localTrouble(err.code as string);
      done(local ? null : false, `probe failed: ${err.code ?? err.message}`);
    });
  }

  /** A probe could not be made for want of a local resource: logged once until probes work. */
  private localTrouble(code: string): void {
    if (this.troubled === code) return;
    this.troubled = code;
    this.log.error(
      { reason: code },
      'health checks cannot probe: fulcrum is out of a local resource (not counted against any backend)',
    );
  }

  /** Connect failures the workers saw since the last poll count as failed probes. */
  private pollPassive(): void {
    const sums = new Map<Pool, Float64Array>();
    for (const b of this.backends) {
      let sum = sums.get(b.pool);
      if (sum === undefined) {
        sum = sumSlots(b.pool.counters);
        sums.set(b.pool, sum);
      }
      const offset = backendOffset(b.member.index);
      const failures = sum[offset + B_FAILURES];
      const connections = sum[offset + B_CONNECTIONS];
      const newFailures = failures - b.seenFailures;
      const newConnections = connections - b.seenConnections;
      b.seenFailures = failures;
      b.seenConnections = connections;
      if (newFailures < 0 || newConnections < 0) continue; // counters were reset: start over
      // Connections that got through end a failure streak. Within one poll the order is not
      // known: count the failures as coming after them, the later news being the likelier.
      if (newConnections > 0) b.failures = 0;
      for (let k = 0; k < newFailures && b.up; k++) this.record(b, false, 'connect failed');
    }
  }

  private record(b: BackendHealth, ok: boolean, reason: string): void {
    if (ok) {
      b.successes++;
      b.failures = 0;
      if (!b.up && (b.fresh || b.successes >= b.health.rise)) this.transition(b, true, reason);
      b.fresh = false;
    } else {
      b.failures++;
      b.successes = 0;
      b.fresh = false;
      if (b.up && b.failures >= b.health.fall) this.transition(b, false, reason);
    }
  }

  private transition(b: BackendHealth, up: boolean, reason: string): void {
    b.up = up;
    b.member.transitions++;
    const state = b.pool.table.state;
    if (up) {
      Atomics.or(state, b.member.index, UP);
      b.pool.startRamp(b.member);
    } else {
      Atomics.and(state, b.member.index, ~UP);
    }
    const checks = up ? `${b.successes}/${b.health.rise}` : `${b.failures}/${b.health.fall}`;
    const line = {
      frontend: b.pool.name,
      backend: b.member.config.name,
      from: up ? 'down' : 'up',
      to: up ? 'up' : 'down',
      reason,
      checks,
    };
    if (up) this.log.info(line, 'backend up');
    else this.log.warn(line, 'backend down');
    if (!up && this.backends.every((x) => x.pool !== b.pool || !x.up)) {
      this.log.error({ frontend: b.pool.name }, 'no backend available: new clients are closed');
    }
  }
}
