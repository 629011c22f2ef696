// What the stats socket reports: a snapshot of the shared tables and counters, read on the main
// thread when asked, and the admin changes it applies to the tables. Invariant: it allocates only
// when asked (never on the data path), and every change it makes is a single store to a table.

import type { Config } from '../config.ts';
import type { BackendTable, SharedTable } from '../core/table.ts';
import { DRAINING, ENABLED, MAX_WEIGHT, openTable, UP } from '../core/table.ts';
import type { SharedCounters } from './counters.ts';
import {
  ACCEPTED,
  B_BYTES_IN,
  B_BYTES_OUT,
  B_CONNECTIONS,
  B_FAILURES,
  END_BASE,
  END_NAMES,
  LIVE,
  RETRIES,
  sumSlots,
} from './counters.ts';
import type { MetricName, Percentiles } from './latency.ts';
import { decode, METRIC_NAMES, newHistogram, percentiles } from './latency.ts';

export type BackendState = 'up' | 'down' | 'disabled' | 'draining';

/** One worker's encoded histograms: [frontend][metric][backend] = [whole run, last minute]. */
export type LatencyAnswer = Array<Array<Array<[string, string]>>>;

export type LatencyStat = { name: string } & Record<
  MetricName,
  { total: Percentiles; lastMinute: Percentiles }
>;

export interface BackendStat {
  name: string;
  address: string;
  state: BackendState;
  weight: number;
  active: number;
  total: number;
  failures: number;
  bytesIn: number;
  bytesOut: number;
  /** Time to connect, over the whole run. */
  connectMs: Omit<Percentiles, 'count'>;
}

export interface FrontendStat {
  name: string;
  listen: string[];
  algorithm: string;
  backends: BackendStat[];
}

/** A reference to one backend, resolved from `FRONTEND/BACKEND`. */
export interface BackendRef {
  table: BackendTable;
  index: number;
  name: string;
}

/** How many one-second samples the connection rate averages over. */
const RATE_WINDOW = 10;

export class StatsView {
  readonly config: Config;
  readonly tables: BackendTable[];
  readonly offsets: readonly (readonly number[])[];
  readonly counters: SharedCounters;
  readonly startedAt = Date.now();
  private readonly collect: () => Promise<LatencyAnswer[]>;
  /** Accepted-connection totals, one a second, newest last: the rate is their slope. */
  private readonly samples: number[] = [];
  private readonly sampler: NodeJS.Timeout;

  constructor(
    config: Config,
    tables: readonly SharedTable[],
    offsets: readonly (readonly number[])[],
    counters: SharedCounters,
    collect: () => Promise<LatencyAnswer[]>,
  ) {
    this.collect = collect;
    this.config = config;
    this.tables = tables.map(openTable);
    this.offsets = offsets;
    this.counters = counters;
    this.sampler = setInterval(() => {
      this.samples.push(sumSlots(this.counters)[ACCEPTED]);
      if (this.samples.length > RATE_WINDOW + 1) this.samples.shift();
    }, 1000);
    this.sampler.unref();
  }

  close(): void {
    clearInterval(this.sampler);
  }

  static state(table: BackendTable, i: number): BackendState {
    const bits = Atomics.load(table.state, i);
    if ((bits & DRAINING) !== 0) return Atomics.load(table.active, i) > 0 ? 'draining' : 'disabled';
    if ((bits & ENABLED) === 0) return 'disabled';
    return (bits & UP) !== 0 ? 'up' : 'down';
  }

  /** Every timing per frontend (all its backends) and per backend, merged over every worker. */
  async latency(): Promise<Array<LatencyStat & { backends: LatencyStat[] }>> {
    const answers = await this.collect();
    return this.config.frontends.map((frontend, f) => {
      const backends = frontend.backends.map((backend) => ({ name: backend.name }) as LatencyStat);
      const whole = { name: frontend.name } as LatencyStat;
      METRIC_NAMES.forEach((metric, m) => {
        const frontendTotal = newHistogram();
        const frontendMinute = newHistogram();
        frontend.backends.forEach((_, b) => {
          const total = newHistogram();
          const minute = newHistogram();
          for (const answer of answers) {
            total.add(decode(answer[f][m][b][0]));
            minute.add(decode(answer[f][m][b][1]));
          }
          frontendTotal.add(total);
          frontendMinute.add(minute);
          backends[b][metric] = { total: percentiles(total), lastMinute: percentiles(minute) };
        });
        whole[metric] = {
          total: percentiles(frontendTotal),
          lastMinute: percentiles(frontendMinute),
        };
      });
      return { ...whole, backends };
    });
  }

  async stat(): Promise<{ frontends: FrontendStat[] }> {
    const latency = await this.latency();
    const sums = sumSlots(this.counters);
    return {
      frontends: this.config.frontends.map((frontend, f) => {
        const table = this.tables[f];
        return {
          name: frontend.name,
          listen: frontend.listen.map((l) => l.text),
          algorithm: frontend.algorithm,
          backends: frontend.backends.map((backend, i) => {
            const o = this.offsets[f][i];
            return {
              name: backend.name,
              address: `${backend.host.includes(':') ? `[${backend.host}]` : backend.host}:${backend.port}`,
              state: StatsView.state(table, i),
              weight: Atomics.load(table.weight, i),
              active: Atomics.load(table.active, i),
              total: sums[o + B_CONNECTIONS],
              failures: sums[o + B_FAILURES],
              bytesIn: sums[o + B_BYTES_IN],
              bytesOut: sums[o + B_BYTES_OUT],
              connectMs: withoutCount(latency[f].backends[i].connectMs.total),
            };
          }),
        };
      }),
    };
  }

  info(version: string): Record<string, string | number> {
    const sums = sumSlots(this.counters);
    const first = this.samples[0] ?? sums[ACCEPTED];
    const span = Math.max(1, this.samples.length - 1);
    const info: Record<string, string | number> = {
      version,
      pid: process.pid,
      uptime_seconds: Math.floor((Date.now() - this.startedAt) / 1000),
      workers: this.config.workers,
      connections_now: sums[LIVE],
      connections_total: sums[ACCEPTED],
      connection_rate: Math.round(((sums[ACCEPTED] - first) / span) * 10) / 10,
      retries_total: sums[RETRIES],
    };
    for (let r = 0; r < END_NAMES.length; r++) info[`ended_${END_NAMES[r]}`] = sums[END_BASE + r];
    return info;
  }

  /** Resolves `FRONTEND/BACKEND`; a string is the error to answer. */
  find(ref: string): BackendRef | string {
    const slash = ref.indexOf('/');
    if (slash < 0) return `"${ref}" is not FRONTEND/BACKEND`;
    const frontendName = ref.slice(0, slash);
    const backendName = ref.slice(slash + 1);
    const f = this.config.frontends.findIndex((x) => x.name === frontendName);
    if (f < 0) return `no frontend "${frontendName}"`;
    const index = this.config.frontends[f].backends.findIndex((b) => b.name === backendName);
    if (index < 0) return `no backend "${backendName}" in frontend "${frontendName}"`;
    return { table: this.tables[f], index, name: ref };
  }

  enable(b: BackendRef): void {
    Atomics.and(b.table.state, b.index, ~DRAINING);
    Atomics.or(b.table.state, b.index, ENABLED);
  }

  disable(b: BackendRef): void {
    Atomics.and(b.table.state, b.index, ~(ENABLED | DRAINING));
  }

  drain(b: BackendRef): void {
    Atomics.or(b.table.state, b.index, DRAINING);
  }

  setWeight(b: BackendRef, weight: number): void {
    Atomics.store(b.table.weight, b.index, weight);
  }
}

function withoutCount(p: Percentiles): Omit<Percentiles, 'count'> {
  const { count: _, ...rest } = p;
  return rest;
}

export { MAX_WEIGHT };
