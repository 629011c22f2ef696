// Load reports: every backend of a frontend with --load-metric has its Prometheus metrics page
// read each --load-interval; the matching series are summed and the sum goes into the table,
// where least-load reads it. Invariants: a failed scrape drops the backend's report at once and
// a report older than STALE_INTERVALS intervals is dropped (the backend is then judged by its
// live connections); a page is read as it arrives, keeping only the selected metric's lines
// (metric-reader.ts), never whole, within --load-timeout and MAX_METRICS_PAGE bytes, on the main
// thread, never by a worker. Two lanes: pages up to SMALL_PAGE, MAX_CONCURRENT_SCRAPES at a time
// (those that report first; a failing page is read less often, backing off to
// MAX_BACKOFF_INTERVALS); bigger pages BIG_SCRAPES at a time, within BIG_PAGE_BYTES_PER_SECOND
// over all of them and PAGE_BYTES_PER_SECOND for each backend, so that what reading costs the
// main thread is bounded whatever the pages and their number. A backend's report failing and
// coming back is logged once per change (back: after REPORTS_BACK good reports in a row), never
// per scrape.

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
 *  4 s at most). */
export const PAGE_BYTES_PER_SECOND = 1024 * 1024;

/** A page above this is big: it is read in the big pages' lane. A page found bigger in the
 *  middle of a read moves to that lane, or is put off until it has room (the bytes read so far
 *  are the cost of finding out). */
export const SMALL_PAGE = 256 * 1024;

/** Big pages read at once, besides the small ones: a handful of huge pages keep no slot from
 *  the backends with ordinary pages. */
export const BIG_SCRAPES = 2;

/** Bytes a second all big pages together may cost: reading a page of matching series costs the
 *  main thread 7 to 8 ms a MiB on the bench's machine (bench:load-scrape: 29-31 ms a 4 MiB page),
 *  so at most about 60 ms a second, and forty 4 MiB pages cost it what two do. */
export const BIG_PAGE_BYTES_PER_SECOND = 8 * 1024 * 1024;

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
  /** performance.now() when its scrape was asked for: time spent waiting for a turn is ours,
   *  and does not make its report stale. */
  askedAt: number;
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
        askedAt: now,
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
    if (this.budgetTimer !== null) clearTimeout(this.budgetTimer);
  }

  /** Small pages' scrapes in flight, and big ones'. */
  private inFlight = 0;
  private bigInFlight = 0;
  /** Scrapes waiting for a turn: of backends whose small pages report, then of those that fail,
   *  then of big pages, each in the order they came. */
  private readonly waiting: [LoadTask[], LoadTask[], LoadTask[]] = [[], [], []];
  /** performance.now() when the bytes big pages have cost so far are paid for
   *  (BIG_PAGE_BYTES_PER_SECOND): no big page is read before. */
  private paidAt = 0;
  private budgetTimer: NodeJS.Timeout | null = null;

  /** Starts a scrape of `task` now, or when its lane has room. `busy` from now until it ends. */
  private scrape(task: LoadTask): void {
    task.busy = true;
    task.askedAt = performance.now();
    if (task.lastBytes > SMALL_PAGE) {
      this.waiting[2].push(task);
      this.next();
    } else if (this.inFlight < MAX_CONCURRENT_SCRAPES) this.run(task, false);
    else this.waiting[task.failures > 0 ? 1 : 0].push(task);
  }

  /** Whether a big page may be read now: the lane has room and the bytes are paid for. */
  private bigRoom(): boolean {
    return this.bigInFlight < BIG_SCRAPES && performance.now() >= this.paidAt;
  }

  /** The cost of `bytes` read of a big page, against BIG_PAGE_BYTES_PER_SECOND. */
  private spend(bytes: number): void {
    const now = performance.now();
    this.paidAt = Math.max(this.paidAt, now) + (bytes / BIG_PAGE_BYTES_PER_SECOND) * 1000;
  }

  private run(task: LoadTask, big: boolean): void {
    if (big) this.bigInFlight++;
    else this.inFlight++;
    const { pool, member } = task;
    const load = pool.config.load;
    const reader = new MetricReader(load.metric as MetricSelector);
    let bytes = 0;
    let putOff = false;
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
        if (big) this.bigInFlight--;
        else this.inFlight--;
        const gone = this.stopped || !this.rounds.all.includes(task);
        if (putOff && !gone) {
          // Found big with no room in its lane: read again there, its report kept meanwhile.
          task.lastBytes = bytes;
          this.scrape(task);
          return;
        }
        this.next();
        if (gone) return;
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
        if (putOff) return false;
        bytes += chunk.length;
        if (big) this.spend(chunk.length);
        else if (bytes > SMALL_PAGE) {
          if (!this.bigRoom()) {
            putOff = true;
            return false;
          }
          // Big after all, and its lane has room: it goes on there, and frees its small slot.
          big = true;
          this.inFlight--;
          this.bigInFlight++;
          this.spend(bytes);
          this.next();
        }
        reader.feed(chunk);
        return true;
      },
    );
  }

  /** Starts the waiting scrapes their lanes have room for (of backends still read); if big pages
   *  wait for the bytes to be paid for, looks again then. */
  private next(): void {
    for (let lane = 0; lane < this.waiting.length; lane++) {
      const queue = this.waiting[lane];
      const big = lane === 2;
      while (queue.length > 0 && (big ? this.bigRoom() : this.inFlight < MAX_CONCURRENT_SCRAPES)) {
        // A few dozen at most (a task waits once): shift() is cheap here.
        const task = queue.shift() as LoadTask;
        if (this.stopped || !this.rounds.all.includes(task)) task.busy = false;
        else this.run(task, big);
      }
    }
    const big = this.waiting[2];
    if (big.length > 0 && this.bigInFlight < BIG_SCRAPES && this.budgetTimer === null) {
      const wait = Math.max(0, this.paidAt - performance.now());
      this.budgetTimer = setTimeout(() => {
        this.budgetTimer = null;
        if (!this.stopped) this.next();
      }, wait);
      this.budgetTimer.unref();
    }
  }

  /** A report older than STALE_INTERVALS intervals says nothing of now. */
  private dropIfStale(task: LoadTask): void {
    const report = task.member.load;
    if (report === null) return;
    // Judged against the time between its reads (a big page's report is as fresh as it can be),
    // not counting the time its scrape waited for a turn.
    const between = Math.max(task.intervalMs, task.spacingMs);
    const waited = performance.now() - task.askedAt;
    if (performance.now() - report.at > STALE_INTERVALS * between + waited) {
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
