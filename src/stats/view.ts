// What the stats socket reports: a snapshot of the shared tables and counters, read on the main
// thread when asked. Invariant: read-only (admin commands act through control/admin.ts), and it
// allocates only when asked, never on the data path.

import type { Frontend } from '../control/frontend.ts';
import type { CheckResult, Member, Pool } from '../control/pool.ts';
import { WEIGHT_SCALE } from '../control/pool.ts';
import {
  ACCEPTED,
  addFrontendFields,
  B_BYTES_IN,
  B_BYTES_OUT,
  B_CONNECTIONS,
  B_DGRAMS_IN,
  B_DGRAMS_OUT,
  B_FAILURES,
  BYTES_IN,
  BYTES_OUT,
  backendOffset,
  DGRAMS_IN,
  DGRAMS_OUT,
  DROP_BASE,
  DROP_NAMES,
  END_BASE,
  END_NAMES,
  LIVE,
  openSlot,
  QUEUED,
  RETRIES,
  sumSlots,
  TLS_BACKEND_FAILED,
  TLS_FAIL_BASE,
  TLS_FAIL_NAMES,
  TLS_HANDSHAKES,
  TLS_RESUMED,
} from '../shared/counters.ts';
import type { LatencyAnswer } from '../shared/messages.ts';
import type { BackendTable } from '../shared/table.ts';
import { AGENT_DOWN, DRAINING, ENABLED, UP } from '../shared/table.ts';
import type { MetricName, Percentiles } from './latency.ts';
import { LatencySum, METRIC_NAMES } from './latency.ts';

export type BackendState = 'up' | 'down' | 'disabled' | 'draining';

export type LatencyStat = { name: string } & Record<
  MetricName,
  { total: Percentiles; lastMinute: Percentiles }
>;

/** A frontend's timings (all its backends), each backend's, and its TLS handshake times (null
 *  where it terminates none). */
export type FrontendLatency = LatencyStat & {
  backends: LatencyStat[];
  handshakeMs: { total: Percentiles; lastMinute: Percentiles } | null;
};

const EMPTY_PERCENTILES: Percentiles = {
  p50: 0,
  p90: 0,
  p99: 0,
  p999: 0,
  max: 0,
  mean: 0,
  count: 0,
};

export interface BackendStat {
  name: string;
  address: string;
  state: BackendState;
  /** Passes its health checks (or has none), whatever an operator set. */
  up: boolean;
  /** Configured weight. */
  weight: number;
  /** The weight picks use now: configured, times its agent's share, ramped in slow start. */
  effectiveWeight: number;
  /** The maxconn in force (its agent's, else the configured one); 0: no limit. */
  maxconn: number;
  /** Its last health probe: verdict, what happened in words, how long; null: none yet. */
  check: CheckResult | null;
  /** What its agent said last and what that set; null: it has no agent. */
  agent: AgentStat | null;
  /** The load it reported last, while fresh; null: none (see loadError). */
  load: number | null;
  /** How old that report is. */
  loadAgeMs: number | null;
  /** Why its load could not be read last time; null: it reads, or nothing is asked. */
  loadError: string | null;
  /** Live connections on it, every frontend of its pool together. */
  active: number;
  /** Of those, the ones this frontend holds. */
  held: number;
  /** Connections, failures and bytes: the pool's, every frontend's together. */
  total: number;
  failures: number;
  bytesIn: number;
  bytesOut: number;
  /** UDP: datagrams from clients sent to it, and its replies sent out (0 for TCP). */
  datagramsIn: number;
  datagramsOut: number;
  /** Health transitions (up to down and back) so far. */
  transitions: number;
  /** Time to connect, over the whole run. */
  connectMs: Omit<Percentiles, 'count'>;
}

export interface AgentStat {
  /** The agent's last line, or why it could not be asked. */
  said: string | null;
  weightPercent: number | null;
  admin: 'drain' | 'maint' | null;
  down: string | null;
  maxconn: number | null;
}

export interface FrontendStat {
  name: string;
  /** The pool it sends clients to: a named one of `pools:`, or its own (its name). */
  pool: string;
  /** Its class on the pool. */
  priority: number;
  share: number;
  listen: string[];
  algorithm: string;
  protocol: 'tcp' | 'udp';
  /** Clients accepted, live now, waiting in the queue now (UDP: sessions started, live). */
  accepted: number;
  live: number;
  queued: number;
  /** UDP: datagrams and bytes each way, and datagrams dropped by reason; null for TCP. */
  udp: UdpStat | null;
  /** TLS it terminates: handshakes, failures, certificates; null where it does not. */
  tls: TlsStat | null;
  /** Connect attempts to TLS backends whose handshake failed (a certificate not verified). */
  backendTlsFailures: number;
  /** Its pool's backends, as this frontend sees them. */
  backends: BackendStat[];
}

export interface UdpStat {
  /** From clients (sent on to backends), and to them (backends' replies). */
  datagramsIn: number;
  datagramsOut: number;
  bytesIn: number;
  bytesOut: number;
  /** By reason: no-backend, session-limit, too-large, backend-refused, denied, send-failed. */
  dropped: Record<(typeof DROP_NAMES)[number], number>;
}

export interface TlsStat {
  /** Handshakes done, and of those resumed (a session ticket). */
  handshakes: number;
  resumed: number;
  /** Handshakes failed, by reason (TLS_FAIL_NAMES). */
  failed: Record<(typeof TLS_FAIL_NAMES)[number], number>;
  /** Handshake time over the whole run (show latency has the last minute too). */
  handshakeMs: Percentiles;
  /** Handshakes and resumptions by worker thread: a ticket opens in any of them. */
  workers: Array<{ handshakes: number; resumed: number }>;
  certificates: CertificateStat[];
}

export interface CertificateStat {
  file: string;
  /** The server names it is chosen for. */
  names: string[];
  subject: string;
  serial: string;
  keyType: string;
  /** When it expires (ISO 8601), and in how many seconds (negative: expired). */
  notAfter: string;
  expiresInSeconds: number;
}

/** A terminating frontend's TLS counts (sums and per worker), its certificates, its times. */
export function tlsStat(front: Frontend, own: Float64Array, handshakeMs: Percentiles): TlsStat {
  const failed = {} as TlsStat['failed'];
  TLS_FAIL_NAMES.forEach((name, r) => {
    failed[name] = own[TLS_FAIL_BASE + r];
  });
  const workers: TlsStat['workers'] = [];
  for (let w = 0; w < front.counters.workers; w++) {
    const slot = openSlot(front.counters, w);
    workers.push({ handshakes: slot[TLS_HANDSHAKES], resumed: slot[TLS_RESUMED] });
  }
  const now = Date.now();
  return {
    handshakes: own[TLS_HANDSHAKES],
    resumed: own[TLS_RESUMED],
    failed,
    handshakeMs,
    workers,
    certificates: front.config.tls.certificates.map((c) => ({
      file: c.certFile,
      names: [...c.serverNames],
      subject: c.subject,
      serial: c.serial,
      keyType: c.keyType,
      notAfter: new Date(c.notAfter).toISOString(),
      expiresInSeconds: Math.round((c.notAfter - now) / 1000),
    })),
  };
}

/** The UDP counts of a frontend's counter sums. */
export function udpStat(own: Float64Array): UdpStat {
  const dropped = {} as UdpStat['dropped'];
  DROP_NAMES.forEach((name, r) => {
    dropped[name] = own[DROP_BASE + r];
  });
  return {
    datagramsIn: own[DGRAMS_IN],
    datagramsOut: own[DGRAMS_OUT],
    bytesIn: own[BYTES_IN],
    bytesOut: own[BYTES_OUT],
    dropped,
  };
}

/** One pool: its backends' live counts, by frontend, and who waits for them, by priority. */
export interface PoolStat {
  name: string;
  algorithm: string;
  frontends: string[];
  /** Clients waiting for a slot now, by priority (as text: the keys of a JSON object). */
  waiting: Record<string, number>;
  backends: Array<{
    name: string;
    state: BackendState;
    maxconn: number;
    active: number;
    /** Live connections each frontend holds on it. */
    held: Record<string, number>;
  }>;
}

/** What the view reads of the control plane; the pools change with every reload. */
export interface ViewSource {
  workers(): number;
  frontends(): readonly Frontend[];
  pools(): readonly Pool[];
  /** Counter sums of frontends a reload removed, so process totals never go backwards. */
  retiredTotals(): Float64Array;
  collectLatency(): Promise<LatencyAnswer[]>;
  /** Which process answers and what upgrade it is in: added to `show info`. */
  processInfo?(): Record<string, string | number>;
  /** Whether traffic should come here, and if not, why (see Supervisor.readiness). */
  readiness?(): Readiness;
}

export interface Readiness {
  ready: boolean;
  /** `ready`, or why not, in one line. */
  reason: string;
}

/** How many one-second samples the connection rate averages over. */
const RATE_WINDOW = 10;

/**
 * How old a collection of every worker's timings may be and still answer. Collecting asks every
 * worker thread to encode its histograms, time taken from connections: a client asking in a loop
 * (or a crowd of them) costs the data plane at most one collection per this period.
 */
export const LATENCY_MIN_AGE_MS = 250;

/**
 * A value that is costly to get: askers at the same time share one fetch, and an answer younger
 * than `minAgeMs` is given again. A failed fetch is not kept.
 */
export class Coalesced<T> {
  private readonly fetch: () => Promise<T>;
  private readonly minAgeMs: number;
  private readonly now: () => number;
  private pending: Promise<T> | null = null;
  private last: { value: T; at: number } | null = null;

  constructor(
    fetch: () => Promise<T>,
    minAgeMs: number,
    now: () => number = performance.now.bind(performance),
  ) {
    this.fetch = fetch;
    this.minAgeMs = minAgeMs;
    this.now = now;
  }

  get(): Promise<T> {
    if (this.last !== null && this.now() - this.last.at < this.minAgeMs) {
      return Promise.resolve(this.last.value);
    }
    if (this.pending === null) {
      const at = this.now();
      this.pending = this.fetch().then(
        (value) => {
          this.pending = null;
          this.last = { value, at };
          return value;
        },
        (err: unknown) => {
          this.pending = null;
          throw err;
        },
      );
    }
    return this.pending;
  }
}

export class StatsView {
  readonly source: ViewSource;
  readonly startedAt = Date.now();
  /** Accepted-connection totals, one a second, newest last: the rate is their slope. */
  private readonly samples: number[] = [];
  private readonly sampler: NodeJS.Timeout;
  private readonly latencies: Coalesced<LatencyAnswer[]>;

  constructor(source: ViewSource) {
    this.source = source;
    this.latencies = new Coalesced(() => source.collectLatency(), LATENCY_MIN_AGE_MS);
    this.sampler = setInterval(() => {
      this.samples.push(this.totals()[ACCEPTED]);
      if (this.samples.length > RATE_WINDOW + 1) this.samples.shift();
    }, 1000);
    this.sampler.unref();
  }

  close(): void {
    clearInterval(this.sampler);
  }

  /** The frontend-level counters over every frontend, removed ones included. */
  totals(): Float64Array {
    return addFrontendFields([
      ...this.source.frontends().map((f) => sumSlots(f.counters)),
      this.source.retiredTotals(),
    ]);
  }

  /** Each current frontend's counter sums, by name. */
  frontendSums(): Map<string, Float64Array> {
    return new Map(this.source.frontends().map((f) => [f.name, sumSlots(f.counters)]));
  }

  static state(table: BackendTable, i: number): BackendState {
    const bits = Atomics.load(table.state, i);
    if ((bits & DRAINING) !== 0) return Atomics.load(table.active, i) > 0 ? 'draining' : 'disabled';
    if ((bits & ENABLED) === 0) return 'disabled';
    return (bits & UP) !== 0 && (bits & AGENT_DOWN) === 0 ? 'up' : 'down';
  }

  /** Every timing per frontend (all its backends) and per backend, merged over every worker. */
  async latency(): Promise<FrontendLatency[]> {
    const answers = await this.latencies.get();
    return this.source.frontends().map((front) => {
      const pool = front.pool;
      const members = pool.members();
      const backends = members.map((m) => ({ name: m.config.name }) as LatencyStat);
      const whole = { name: front.name } as LatencyStat;
      METRIC_NAMES.forEach((metric, m) => {
        const frontend = new LatencySum();
        const backend = new LatencySum();
        members.forEach((member, b) => {
          backend.clear();
          for (const answer of answers) {
            const latency = answer.get(front.name);
            // A worker that has not seen this member yet has no timings for it.
            if (latency?.ids[member.index] !== member.id) continue;
            const buffer = latency.metrics[m][member.index];
            if (buffer !== null) backend.addRecorder(buffer);
          }
          frontend.addSum(backend);
          backends[b][metric] = backend.read();
        });
        whole[metric] = frontend.read();
      });
      let handshakeMs: LatencyStat['connectMs'] | null = null;
      if (front.config.tls.certificates.length > 0) {
        const sum = new LatencySum();
        for (const answer of answers) {
          const buffer = answer.get(front.name)?.handshakeTime ?? null;
          if (buffer !== null) sum.addRecorder(buffer);
        }
        handshakeMs = sum.read();
      }
      return { ...whole, backends, handshakeMs };
    });
  }

  async stat(): Promise<{ frontends: FrontendStat[]; pools: PoolStat[] }> {
    const latency = await this.latency();
    return {
      frontends: this.source.frontends().map((front, f) => {
        const pool = front.pool;
        const own = sumSlots(front.counters);
        const sums = sumSlots(pool.counters);
        return {
          name: front.name,
          pool: pool.name,
          priority: front.config.priority,
          share: front.config.share,
          listen: front.config.listen.map((l) => (l.udp ? `${l.text},udp` : l.text)),
          algorithm: pool.config.algorithm,
          protocol: front.config.protocol,
          accepted: own[ACCEPTED],
          live: own[LIVE],
          queued: own[QUEUED],
          udp: front.config.protocol === 'udp' ? udpStat(own) : null,
          tls:
            front.config.tls.certificates.length > 0
              ? tlsStat(front, own, latency[f].handshakeMs?.total ?? EMPTY_PERCENTILES)
              : null,
          backendTlsFailures: own[TLS_BACKEND_FAILED],
          backends: pool.members().map((member, b) => {
            const o = backendOffset(member.index);
            const { host, port } = member.config;
            return {
              name: member.config.name,
              address: `${host.includes(':') ? `[${host}]` : host}:${port}`,
              state: StatsView.state(pool.table, member.index),
              up: (Atomics.load(pool.table.state, member.index) & UP) !== 0,
              weight: member.config.weight,
              ...checksOf(pool, member),
              active: Atomics.load(pool.table.active, member.index),
              held: front.heldOn(member.index),
              total: sums[o + B_CONNECTIONS],
              failures: sums[o + B_FAILURES],
              bytesIn: sums[o + B_BYTES_IN],
              bytesOut: sums[o + B_BYTES_OUT],
              datagramsIn: sums[o + B_DGRAMS_IN],
              datagramsOut: sums[o + B_DGRAMS_OUT],
              transitions: member.transitions,
              connectMs: withoutCount(latency[f].backends[b].connectMs.total),
            };
          }),
        };
      }),
      pools: this.pools(),
    };
  }

  /** Every pool: live counts by frontend, waiting clients by priority. */
  pools(): PoolStat[] {
    const frontends = this.source.frontends();
    return this.source.pools().map((pool) => {
      const on = frontends.filter((f) => f.pool === pool);
      const waiting: Record<string, number> = {};
      for (const f of on) {
        const key = String(f.config.priority);
        waiting[key] = (waiting[key] ?? 0) + f.queued();
      }
      return {
        name: pool.name,
        algorithm: pool.config.algorithm,
        frontends: on.map((f) => f.name),
        waiting,
        backends: pool.members().map((member) => ({
          name: member.config.name,
          state: StatsView.state(pool.table, member.index),
          maxconn: Atomics.load(pool.table.maxconn, member.index),
          active: Atomics.load(pool.table.active, member.index),
          held: Object.fromEntries(on.map((f) => [f.name, f.heldOn(member.index)])),
        })),
      };
    });
  }

  /** Ready unless the control plane says otherwise (a view without one: tests). */
  readiness(): Readiness {
    return this.source.readiness?.() ?? { ready: true, reason: 'ready' };
  }

  info(version: string): Record<string, string | number> {
    const sums = this.totals();
    const readiness = this.readiness();
    const first = this.samples[0] ?? sums[ACCEPTED];
    const span = Math.max(1, this.samples.length - 1);
    const info: Record<string, string | number> = {
      version,
      pid: process.pid,
      uptime_seconds: Math.floor((Date.now() - this.startedAt) / 1000),
      workers: this.source.workers(),
      ready: readiness.ready ? 'yes' : `no: ${readiness.reason}`,
      connections_now: sums[LIVE],
      connections_total: sums[ACCEPTED],
      connection_rate: Math.round(((sums[ACCEPTED] - first) / span) * 10) / 10,
      retries_total: sums[RETRIES],
      ...this.source.processInfo?.(),
    };
    for (let r = 0; r < END_NAMES.length; r++) info[`ended_${END_NAMES[r]}`] = sums[END_BASE + r];
    info.datagrams_in_total = sums[DGRAMS_IN];
    info.datagrams_out_total = sums[DGRAMS_OUT];
    for (let r = 0; r < DROP_NAMES.length; r++) {
      info[`datagrams_dropped_${DROP_NAMES[r]}`] = sums[DROP_BASE + r];
    }
    return info;
  }
}

/** What health checks, the agent and load reports say of a backend now. */
function checksOf(pool: Pool, member: Member) {
  const i = member.index;
  const agent = member.agent;
  const hasAgent = (member.config.agentPort ?? pool.config.agent.port) !== null;
  return {
    effectiveWeight: Math.round((Atomics.load(pool.table.weight, i) / WEIGHT_SCALE) * 100) / 100,
    maxconn: Atomics.load(pool.table.maxconn, i),
    check: member.check,
    agent: hasAgent
      ? {
          said: agent.said,
          weightPercent: agent.weightPercent,
          admin: agent.admin,
          down: agent.down,
          maxconn: agent.maxconn,
        }
      : null,
    load: member.load?.value ?? null,
    loadAgeMs: member.load === null ? null : Math.round(performance.now() - member.load.at),
    loadError: member.loadError,
  };
}

function withoutCount(p: Percentiles): Omit<Percentiles, 'count'> {
  const { count: _, ...rest } = p;
  return rest;
}
