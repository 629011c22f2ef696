// Health: active probes from the main thread (TCP, HTTP, send/expect or gRPC: probes.ts), and
// passive health from the data plane's own connect failures (read from the workers' counter
// slots). Invariant: only a transition changes a backend's UP bit, and only transitions are
// logged, once each; a probe never touches a client; every backend's last probe result is kept
// on its member for the stats.

import net from 'node:net';
import tls from 'node:tls';
import type { BackendTlsConfig, HealthConfig } from '../config/types.ts';
import { backendContextOf } from '../data/tls.ts';
import type { Logger } from '../log.ts';
import { B_CONNECTIONS, B_FAILURES, backendOffset, sumSlots } from '../shared/counters.ts';
import { UP } from '../shared/table.ts';
import type { Member, Pool } from './pool.ts';
import { probe } from './probes.ts';
import type { Round } from './rounds.ts';
import { Rounds } from './rounds.ts';

/** How often the data plane's connect failures are read: well under any sane --health-interval. */
const PASSIVE_POLL_MS = 100;

interface BackendHealth extends Round {
  readonly pool: Pool;
  readonly member: Member;
  health: HealthConfig;
  intervalMs: number;
  up: boolean;
  /** Added while running: the first good probe brings it up, whatever `rise` says. */
  fresh: boolean;
  /** Consecutive results of one kind; the other kind resets it. */
  successes: number;
  failures: number;
  /** Counter sums at the last passive poll. */
  seenFailures: number;
  seenConnections: number;
}

export class HealthChecker {
  private readonly rounds = new Rounds<BackendHealth>((b) => this.probe(b));
  private readonly log: Logger;
  private passive: NodeJS.Timeout | null = null;
  /** The local error probes last met, until one gets through; null: none. */
  private troubled: string | null = null;
  private stopped = false;
  private started = false;

  constructor(log: Logger) {
    this.log = log;
  }

  /** Whether every watched backend has had a probe answer (or failure) since it was added. */
  allProbed(): boolean {
    return this.rounds.all.every((b) => b.member.check !== null);
  }

  /**
   * Takes the current pools: backends it already watches keep their streaks and schedule;
   * new ones are probed at once (or, at the first start, spread over the interval); leaving
   * ones and frontends without health checks are dropped.
   */
  sync(pools: readonly Pool[]): void {
    const known = new Map(this.rounds.all.map((b) => [b.member, b]));
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
          kept.intervalMs = pool.config.health.intervalMs;
          next.push(kept);
          return;
        }
        const up = (Atomics.load(pool.table.state, member.index) & UP) !== 0;
        const offset = backendOffset(member.index);
        next.push({
          pool,
          member,
          health: pool.config.health,
          intervalMs: pool.config.health.intervalMs,
          up,
          fresh: !up,
          successes: 0,
          failures: 0,
          // Spread a frontend's first probes over its interval rather than firing them together;
          // a backend that is waiting to join is probed at once.
          nextAt: up ? now + (pool.config.health.intervalMs * i) / members.length : now,
          busy: false,
          seenFailures: sums[offset + B_FAILURES],
          seenConnections: sums[offset + B_CONNECTIONS],
        });
      });
    }
    this.rounds.set(next);
    if (!this.started) {
      this.started = true;
      this.passive = setInterval(() => this.pollPassive(), PASSIVE_POLL_MS);
      this.passive.unref();
    }
  }

  stop(): void {
    this.stopped = true;
    this.rounds.stop();
    if (this.passive !== null) clearInterval(this.passive);
  }

  private probe(b: BackendHealth): void {
    b.busy = true;
    const started = performance.now();
    const { host, port } = b.member.config;
    const target = { host, port: b.health.port ?? port, tls: tlsProbe(b.pool, b.member) };
    probe(target, b.health, (ok, result) => {
      b.busy = false;
      if (ok === null) {
        this.localTrouble(result);
        return;
      }
      this.troubled = null;
      const ms = Math.round(performance.now() - started);
      // A backend that left while its probe ran is no longer ours to judge.
      if (this.stopped || !this.rounds.all.includes(b)) return;
      b.member.check = { ok, result, ms };
      this.record(b, ok, result);
    });
  }

  /** A probe could not be made for want of a local resource: logged once until probes work. */
  private localTrouble(reason: string): void {
    if (this.troubled === reason) return;
    this.troubled = reason;
    this.log.error(
      { reason },
      'health checks cannot probe: fulcrum is out of a local resource (not counted against any backend)',
    );
  }

  /** Connect failures the workers saw since the last poll count as failed probes. */
  private pollPassive(): void {
    const sums = new Map<Pool, Float64Array>();
    for (const b of this.rounds.all) {
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
      // How long the probe that decided took (a passive strike has no probe of its own).
      checkMs: b.member.check?.result === reason ? b.member.check.ms : undefined,
      checks,
    };
    if (up) this.log.info(line, 'backend up');
    else this.log.warn(line, 'backend down');
    if (!up && this.rounds.all.every((x) => x.pool !== b.pool || !x.up)) {
      this.log.error({ frontend: b.pool.name }, 'no backend available: new clients are closed');
    }
  }
}

/**
 * How a TLS backend is probed: as its clients' connections reach it (the pool's CA, client
 * certificate and verification; its SNI, where that is a fixed name). null: plain TCP, or a
 * probe of another port (health.port: a plain health endpoint).
 */
function tlsProbe(pool: Pool, member: Member): tls.ConnectionOptions | null {
  const settings = pool.config.backendTls;
  if (!(settings.enabled || member.config.tls) || pool.config.health.port !== null) return null;
  const sni = member.config.sni ?? settings.sni;
  const name = sni === null || sni === 'client' ? member.config.host : sni;
  // With sni=client the name is each client's: a probe has none, so only the chain is checked.
  const named = settings.verify === 'required' && sni !== 'client';
  return {
    servername: net.isIP(name) === 0 ? name : undefined,
    secureContext: probeContext(settings),
    rejectUnauthorized: settings.verify === 'required',
    checkServerIdentity: named ? tls.checkServerIdentity : anyIdentity,
  };
}

function anyIdentity(): undefined {
  return undefined;
}

/** Probes' secure contexts, one per pool's settings (a reload makes new ones): a CA bundle is
 *  parsed once, not at every probe. */
const probeContexts = new WeakMap<BackendTlsConfig, tls.SecureContext>();

function probeContext(settings: BackendTlsConfig): tls.SecureContext {
  let context = probeContexts.get(settings);
  if (context === undefined) {
    context = backendContextOf(settings);
    probeContexts.set(settings, context);
  }
  return context;
}
