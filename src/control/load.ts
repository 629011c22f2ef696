// Load reports: every backend of a frontend with --load-metric has its Prometheus metrics page
// read each --load-interval; the matching series are summed and the sum goes into the table,
// where least-load reads it. Invariants: a failed scrape drops the backend's report at once and
// a report older than STALE_INTERVALS intervals is dropped (the backend is then judged by its
// live connections); a page is read as it arrives, keeping only the selected metric's lines
// (metric-reader.ts), never whole, within --load-timeout and MAX_METRICS_PAGE bytes, at most
// MAX_CONCURRENT_SCRAPES at a time (small pages that report first; a failing page is read less
// often, backing off to MAX_BACKOFF_INTERVALS; a big page at most PAGE_BYTES_PER_SECOND), on the
// main thread, never by a worker; a backend's report failing and coming back is logged once per
// change (back: after REPORTS_BACK good reports in a row), never per scrape.

import type { MetricSelector } from '../config/types.ts';
import type { Logger } from '../log.ts';
import { MetricReader } from './metric-reader.ts';
import type { Member, Pool } from './pool.ts';
import { httpGet } from './probes.ts';
import type { Round } from './rounds.ts';
import { Rounds } from './rounds.ts';

export { readMetric } from './metric-reader.ts';

/** The largest metrics page read; a bigger one is a failed scrape, not a memory sink. */
export const MAX_METRICS_PAGE = 4 * 1024 * 1024;

/** A report older than this many intervals is dropped. */
export const STALE_INTERVALS = 3;

/** Scrapes in flight at once, over every frontend: forty hostile pages cost what eight do. The
 *  rest wait their turn: small pages that report first, then the others, each in the order they
 *  came (a slow page delays others, never starves them). */
export const MAX_CONCURRENT_SCRAPES = 8;

/** Good reports in a row before a backend that failed is logged as reporting again: a backend
 *  flapping at every scrape is one line, not one per scrape. */
const REPORTS_BACK = 3;

/** A backend whose page fails is read less often, up to this many intervals apart (HAProxy's
 *  `downinter` for checks): a page that fails costs little, and reports that work come first. */
const MAX_BACKOFF_INTERVALS = 8;

/** Bytes a second one backend's page may cost: a bigger page is read less often (4 MiB: every
 *  4 s), so forty huge pages cost the main thread what forty ordinary ones (~100 KiB) do. */
export const PAGE_BYTES_PER_SECOND = 1024 * 1024;

/** A page above this is big: its scrapes wait behind those of small pages. */
const SMALL_PAGE = 64 * 1024;

interface LoadTask extends Round {
  readonly pool: Pool;
  readonly member: Member;
  intervalMs: number;
  /** Why it failed since it was last logged as reporting (logged once), or null. */
  failing: string | null;
  /** Good reports in a row since it last failed. */
  good: number;
  /** Failed scrapes in a row. */
  failures: number;
  /** Bytes of its last page, and the time that costs it between reads (PAGE_BYTES_PER_SECOND). */
  lastBytes: number;
  spacingMs: number;
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
        good: 0,
        failures: 0,
        lastBytes: 0,
        spacingMs: 0,
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

  /** Scrapes in flight now, and those waiting for one of them to end: of backends that report
   *  first, then of those that fail, each in the order they came. */
  private inFlight = 0;
  private readonly waiting: [LoadTask[], LoadTask[]] = [[], []];

  /** Starts a scrape of `task` now, or once one in flight ends. `busy` from now until it ends. */
  private scrape(task: LoadTask): void {
    task.busy = true;
    if (this.inFlight < MAX_CONCURRENT_SCRAPES) this.run(task);
    else this.waiting[task.failures > 0 || task.lastBytes > SMALL_PAGE ? 1 : 0].push(task);
  }

  private run(task: LoadTask): void {
    this.inFlight++;
    const { pool, member } = task;
    const load = pool.config.load;
    const reader = new MetricReader(load.metric as MetricSelector);
    let bytes = 0;
    this.dropIfStale(task);
    const target = { host: member.config.host, port: load.port ?? member.config.port };
    httpGet(
      target,
      load.path,
      null,
      load.timeoutMs,
      MAX_METRICS_PAGE,
      (out) => {
        task.busy = false;
        this.inFlight--;
        this.next();
        if (this.stopped || !this.rounds.all.includes(task)) return;
        let value: number | string;
        if ('failed' in out) value = out.failed;
        else if (out.status !== 200) value = `metrics page answered HTTP ${out.status}`;
        else value = reader.finish();
        task.lastBytes = bytes;
        // A page that reports is read as often as its size allows; one that fails, as its
        // failures allow (below).
        task.spacingMs = typeof value === 'number' ? (bytes / PAGE_BYTES_PER_SECOND) * 1000 : 0;
        task.nextAt = Math.max(task.nextAt, performance.now() + task.spacingMs);
        if (typeof value === 'number') {
          task.failures = 0;
          this.reported(task, value);
        } else {
          task.failures++;
          const intervals = Math.min(2 ** (task.failures - 1), MAX_BACKOFF_INTERVALS);
          task.nextAt = Math.max(task.nextAt, performance.now() + intervals * task.intervalMs);
          this.failed(task, value);
        }
      },
      (chunk) => {
        bytes += chunk.length;
        reader.feed(chunk);
      },
    );
  }

  /** Starts the next waiting scrape whose backend is still read. */
  private next(): void {
    for (const queue of this.waiting) {
      while (queue.length > 0 && this.inFlight < MAX_CONCURRENT_SCRAPES) {
        // A few dozen at most (a task waits once): shift() is cheap here.
        const task = queue.shift() as LoadTask;
        if (this.stopped || !this.rounds.all.includes(task)) task.busy = false;
        else this.run(task);
      }
    }
  }

  /** A report older than STALE_INTERVALS intervals says nothing of now. */
  private dropIfStale(task: LoadTask): void {
    const report = task.member.load;
    if (report === null) return;
    // Judged against the time between its reads: a big page's report is as fresh as it can be.
    const between = Math.max(task.intervalMs, task.spacingMs);
    if (performance.now() - report.at > STALE_INTERVALS * between) {
      task.pool.setLoad(task.member, null);
      this.failed(task, `no report for ${STALE_INTERVALS} intervals`);
    }
  }

  private reported(task: LoadTask, value: number): void {
    task.pool.setLoad(task.member, value);
    task.member.loadError = null;
    if (task.failing === null || ++task.good < REPORTS_BACK) return;
    task.failing = null;
    this.log.info(
      { frontend: task.pool.name, backend: task.member.config.name, load: value },
      'load report back',
    );
  }

  private failed(task: LoadTask, why: string): void {
    task.pool.setLoad(task.member, null);
    task.member.loadError = why;
    task.good = 0;
    if (task.failing !== null) return;
    task.failing = why;
    this.log.warn(
      { frontend: task.pool.name, backend: task.member.config.name, reason: why },
      'load report failed: judged by its live connections until it reports again',
    );
  }
}
