// Load reports: every backend of a frontend with --load-metric has its Prometheus metrics page
// read each --load-interval; the matching series are summed and the sum goes into the table,
// where least-load reads it. Invariants: a failed scrape drops the backend's report at once and
// a report older than STALE_INTERVALS intervals is dropped (the backend is then judged by its
// live connections); a page is read within one interval and at most MAX_METRICS_PAGE bytes, on
// the main thread, never by a worker; a backend's failure is logged once, until it reports again.

import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { printableText } from '../config/parse.ts';
import type { MetricSelector } from '../config/types.ts';
import type { Logger } from '../log.ts';
import type { Member, Pool } from './pool.ts';
import { httpGet } from './probes.ts';
import type { Round } from './rounds.ts';
import { Rounds } from './rounds.ts';

/** The largest metrics page read; a bigger one is a failed scrape, not a memory sink. */
export const MAX_METRICS_PAGE = 4 * 1024 * 1024;

/** A report older than this many intervals is dropped. */
export const STALE_INTERVALS = 3;

/** How long one scrape may take at most, whatever the interval. */
const MAX_SCRAPE_MS = 5000;

interface LoadTask extends Round {
  readonly pool: Pool;
  readonly member: Member;
  intervalMs: number;
  /** Why its last scrape failed (logged once), or null when it reports. */
  failing: string | null;
}

/**
 * The sum of the series of `page` that `selector` matches, or why there is none. Only the lines
 * of the selected metric reach the parser: a page of thousands of series costs a scan, not a
 * parse of every one.
 */
export function readMetric(page: string, selector: MetricSelector): number | string {
  const kept: string[] = [];
  for (const line of page.split('\n')) {
    if (!line.startsWith(selector.name)) continue;
    const next = line.charCodeAt(selector.name.length);
    // `NAME{`, `NAME ` or `NAME\t`: not a longer name that starts alike.
    if (next === 0x7b || next === 0x20 || next === 0x09) kept.push(line);
  }
  if (kept.length === 0) return `metric ${selector.name} not found`;
  let families: ReturnType<typeof parsePrometheusTextFormat>;
  try {
    families = parsePrometheusTextFormat(`${kept.join('\n')}\n`);
  } catch (err) {
    return `metrics page does not parse (${printableText((err as Error).message).slice(0, 80)})`;
  }
  let sum = 0;
  let found = 0;
  for (const family of families) {
    if (family.name !== selector.name) continue;
    for (const sample of family.metrics) {
      const labels = sample.labels ?? {};
      if (!selector.labels.every(([k, v]) => labels[k] === v)) continue;
      const value = Number(sample.value);
      if (!Number.isFinite(value)) return `${selector.text} is not a finite number`;
      sum += value;
      found++;
    }
  }
  if (found === 0) return `no series matches ${selector.text}`;
  return sum;
}

export class LoadScraper {
  private readonly rounds = new Rounds<LoadTask>((task) => this.scrape(task));
  private readonly log: Logger;
  private stopped = false;

  constructor(log: Logger) {
    this.log = log;
  }

  /** Takes the current pools: every backend of a frontend with --load-metric is read, the first
   *  time at once; a backend no longer read loses its report. */
  sync(pools: readonly Pool[]): void {
    this.rounds.follow(
      pools,
      (pool) => (pool.config.load.metric === null ? null : pool.config.load.intervalMs),
      (pool, member, intervalMs, now) => ({
        pool,
        member,
        intervalMs,
        nextAt: now,
        busy: false,
        failing: null,
      }),
      (task, _pool, intervalMs) => {
        task.intervalMs = intervalMs;
      },
    );
    const read = new Set(this.rounds.all.map((t) => t.member));
    for (const pool of pools) {
      for (const member of pool.members()) {
        if (member.load !== null && !read.has(member)) pool.setLoad(member, null);
      }
    }
  }

  stop(): void {
    this.stopped = true;
    this.rounds.stop();
  }

  private scrape(task: LoadTask): void {
    task.busy = true;
    const { pool, member } = task;
    const load = pool.config.load;
    const selector = load.metric as MetricSelector;
    this.dropIfStale(task);
    const target = { host: member.config.host, port: load.port ?? member.config.port };
    const timeout = Math.min(task.intervalMs, MAX_SCRAPE_MS);
    httpGet(target, load.path, null, timeout, MAX_METRICS_PAGE, (out) => {
      task.busy = false;
      if (this.stopped || !this.rounds.all.includes(task)) return;
      let value: number | string;
      if ('failed' in out) value = out.failed;
      else if (out.status !== 200) value = `metrics page answered HTTP ${out.status}`;
      else value = readMetric(out.body.toString('utf8'), selector);
      if (typeof value === 'number') this.reported(task, value);
      else this.failed(task, value);
    });
  }

  /** A report older than STALE_INTERVALS intervals says nothing of now. */
  private dropIfStale(task: LoadTask): void {
    const report = task.member.load;
    if (report === null) return;
    if (performance.now() - report.at > STALE_INTERVALS * task.intervalMs) {
      task.pool.setLoad(task.member, null);
      this.failed(task, `no report for ${STALE_INTERVALS} intervals`);
    }
  }

  private reported(task: LoadTask, value: number): void {
    task.pool.setLoad(task.member, value);
    task.member.loadError = null;
    if (task.failing === null) return;
    task.failing = null;
    this.log.info(
      { frontend: task.pool.name, backend: task.member.config.name, load: value },
      'load report back',
    );
  }

  private failed(task: LoadTask, why: string): void {
    task.pool.setLoad(task.member, null);
    task.member.loadError = why;
    if (task.failing !== null) return;
    task.failing = why;
    this.log.warn(
      { frontend: task.pool.name, backend: task.member.config.name, reason: why },
      'load report failed: judged by its live connections until it reports again',
    );
  }
}
