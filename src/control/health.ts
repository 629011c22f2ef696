// Health: active TCP probes from the main thread, and passive health from the data plane's own
// connect failures (read from the workers' counter slots). Invariant: only a transition changes a
// backend's UP bit, and only transitions are logged, once each; a probe never touches a client.

import net from 'node:net';
import type { FrontendConfig, HealthConfig } from '../config.ts';
import type { BackendTable, SharedTable } from '../core/table.ts';
import { openTable, UP } from '../core/table.ts';
import type { Logger } from '../log.ts';
import type { SharedCounters } from '../stats/counters.ts';
import { B_CONNECTIONS, B_FAILURES, sumSlots } from '../stats/counters.ts';

/** How often the data plane's connect failures are read: well under any sane --health-interval. */
const PASSIVE_POLL_MS = 100;

interface BackendHealth {
  readonly frontend: string;
  readonly name: string;
  readonly host: string;
  readonly port: number;
  readonly health: HealthConfig;
  readonly table: BackendTable;
  readonly index: number;
  /** Offset of this backend's fields in a counter slot. */
  readonly offset: number;
  up: boolean;
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
  private readonly backends: BackendHealth[] = [];
  private readonly counters: SharedCounters;
  private readonly log: Logger;
  private wake: NodeJS.Timeout | null = null;
  private passive: NodeJS.Timeout | null = null;
  private stopped = false;

  constructor(
    frontends: readonly FrontendConfig[],
    tables: readonly SharedTable[],
    offsets: readonly (readonly number[])[],
    counters: SharedCounters,
    log: Logger,
  ) {
    this.counters = counters;
    this.log = log;
    frontends.forEach((frontend, f) => {
      if (!frontend.health.enabled) return;
      const table = openTable(tables[f]);
      frontend.backends.forEach((backend, i) => {
        this.backends.push({
          frontend: frontend.name,
          name: backend.name,
          host: backend.host,
          port: backend.port,
          health: frontend.health,
          table,
          index: i,
          offset: offsets[f][i],
          up: (Atomics.load(table.state, i) & UP) !== 0,
          successes: 0,
          failures: 0,
          // Spread each frontend's probes over its interval rather than firing them together.
          nextProbeAt: (frontend.health.intervalMs * i) / frontend.backends.length,
          probing: false,
          seenFailures: 0,
          seenConnections: 0,
        });
      });
    });
  }

  start(): void {
    if (this.backends.length === 0) return;
    const origin = performance.now();
    for (const b of this.backends) b.nextProbeAt += origin;
    this.schedule();
    this.passive = setInterval(() => this.pollPassive(), PASSIVE_POLL_MS);
    this.passive.unref();
  }

  stop(): void {
    this.stopped = true;
    if (this.wake !== null) clearTimeout(this.wake);
    if (this.passive !== null) clearInterval(this.passive);
  }

  /** One loop for every probe: sleep until the earliest one is due. */
  private schedule(): void {
    if (this.stopped) return;
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
    const socket = net.connect({ host: b.host, port: b.port });
    socket.setTimeout(b.health.timeoutMs);
    const done = (ok: boolean, reason: string) => {
      if (!b.probing) return;
      b.probing = false;
      socket.destroy();
      if (!this.stopped) this.record(b, ok, reason);
    };
    socket.once('connect', () => done(true, 'probe succeeded'));
    socket.once('timeout', () => done(false, `probe timed out after ${b.health.timeoutMs} ms`));
    socket.once('error', (err: NodeJS.ErrnoException) =>
      done(false, `probe failed: ${err.code ?? err.message}`),
    );
  }

  /** Connect failures the workers saw since the last poll count as failed probes. */
  private pollPassive(): void {
    const sums = sumSlots(this.counters);
    for (const b of this.backends) {
      const failures = sums[b.offset + B_FAILURES];
      const connections = sums[b.offset + B_CONNECTIONS];
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
      if (!b.up && b.successes >= b.health.rise) this.transition(b, true, reason);
    } else {
      b.failures++;
      b.successes = 0;
      if (b.up && b.failures >= b.health.fall) this.transition(b, false, reason);
    }
  }

  private transition(b: BackendHealth, up: boolean, reason: string): void {
    b.up = up;
    if (up) Atomics.or(b.table.state, b.index, UP);
    else Atomics.and(b.table.state, b.index, ~UP);
    const checks = up ? `${b.successes}/${b.health.rise}` : `${b.failures}/${b.health.fall}`;
    const line = {
      frontend: b.frontend,
      backend: b.name,
      from: up ? 'down' : 'up',
      to: up ? 'up' : 'down',
      reason,
      checks,
    };
    if (up) this.log.info(line, 'backend up');
    else this.log.warn(line, 'backend down');
    if (!up && this.backends.every((x) => x.frontend !== b.frontend || !x.up)) {
      this.log.error({ frontend: b.frontend }, 'no backend available: new clients are closed');
    }
  }
}
