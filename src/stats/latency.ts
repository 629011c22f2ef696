// Latency histograms: one recorder per backend per worker, read by the main thread when asked.
// A recorder's counts live in one SharedArrayBuffer, so the main thread reads them where they are:
// a worker does nothing for a stats request but hand over the buffers, and the relay never waits
// while histograms are encoded or merged. Invariants: record() allocates nothing (a typed-array
// increment in hdr-histogram-js's JS build); only the worker that owns a recorder writes to it; the
// main thread only reads (a count may be a record behind: stats, not accounting).

import { createRequire } from 'node:module';
import type { Histogram } from 'hdr-histogram-js';

// The histogram class alone: the package's index would also load its WebAssembly build, pako and
// a number formatter, 70-90 ms per thread at every start, for nothing fulcrum uses.
const require = createRequire(import.meta.url);
/** `counts` is called (with new) once, for the counts array of the length the range needs. */
type CountsConstructor = new (length: number) => Int32Array;
/** What fulcrum uses of hdr-histogram-js's JavaScript histograms beyond its Histogram type. */
type JsHistogram = Histogram & {
  countsArrayLength: number;
  establishInternalTackingValues(): void;
};
type TypedArrayHistogramClass = new (
  counts: CountsConstructor,
  lowest: number,
  highest: number,
  digits: number,
) => JsHistogram;
const TypedArrayHistogram = (
  require('hdr-histogram-js/dist/TypedArrayHistogram.js') as { default: TypedArrayHistogramClass }
).default;

/** Microseconds. An hour caps it: anything slower than that is recorded as an hour. */
const HIGHEST_US = 3_600_000_000;

/** Two digits (1% resolution) keep a histogram near 10 KB; latency needs no finer grain. */
const SIGNIFICANT_DIGITS = 2;

/** What is timed, per backend: the index into a frontend's `latency` and the name stats print. */
export const CONNECT = 0;
export const FIRST_BYTE = 1;
export const DURATION = 2;
export const METRIC_NAMES = ['connectMs', 'firstByteMs', 'durationMs'] as const;
export type MetricName = (typeof METRIC_NAMES)[number];

/** The last minute is kept as WINDOW_SLOTS slots of SLOT_MS each, the oldest dropped on rotate(). */
export const WINDOW_SLOTS = 6;
export const SLOT_MS = 10_000;

/** A histogram of 32-bit counts (hdr-histogram-js's bitBucketSize 32) over `counts`. */
function histogram(counts: CountsConstructor): JsHistogram {
  const h = new TypedArrayHistogram(counts, 1, HIGHEST_US, SIGNIFICANT_DIGITS);
  h.autoResize = false;
  return h;
}

/** Counts per histogram: the same in every thread (fixed range and precision). */
const COUNTS = histogram(Int32Array).countsArrayLength;
/** A recorder's histograms, in its buffer in this order: the whole run, then the window's slots. */
const PER_RECORDER = 1 + WINDOW_SLOTS;

/** The `index`th histogram of a recorder's buffer, over the shared counts themselves. */
function sharedHistogram(buffer: SharedArrayBuffer, index: number): Histogram {
  return overCounts(new Int32Array(buffer, index * COUNTS * 4, COUNTS));
}

export class LatencyRecorder {
  /** Every count this recorder keeps, for the main thread to read (LatencySum). */
  readonly buffer = new SharedArrayBuffer(PER_RECORDER * COUNTS * 4);
  readonly total = sharedHistogram(this.buffer, 0);
  readonly window: Histogram[] = Array.from({ length: WINDOW_SLOTS }, (_, i) =>
    sharedHistogram(this.buffer, 1 + i),
  );
  private slot = 0;

  /** Records one value in microseconds. */
  record(us: number): void {
    const value = us < 1 ? 1 : us > HIGHEST_US ? HIGHEST_US : Math.round(us);
    this.total.recordValue(value);
    this.window[this.slot].recordValue(value);
  }

  /** Every SLOT_MS: the oldest slot becomes the current one, emptied. */
  rotate(): void {
    this.slot = (this.slot + 1) % WINDOW_SLOTS;
    this.window[this.slot].reset();
  }
}

/**
 * Timings over every worker (one backend's, or a frontend's over its backends), for the main
 * thread: the whole run and the last minute. Workers' counts are added straight from their
 * shared buffers into two histograms of this thread's own, and the totals, maximum and minimum a
 * histogram keeps beside its counts are worked out once, from the sums, when read.
 */
export class LatencySum {
  private readonly totalCounts = new Int32Array(COUNTS);
  private readonly minuteCounts = new Int32Array(COUNTS);
  private readonly total = overCounts(this.totalCounts);
  private readonly minute = overCounts(this.minuteCounts);

  /** Back to nothing, to sum something else (a sum is 26 KB: reused, not made anew). */
  clear(): void {
    this.totalCounts.fill(0);
    this.minuteCounts.fill(0);
  }

  /** Adds a worker's recorder, read where it is (a count may be a record behind). */
  addRecorder(buffer: SharedArrayBuffer): void {
    const counts = new Int32Array(buffer);
    const total = this.totalCounts;
    const minute = this.minuteCounts;
    for (let i = 0; i < COUNTS; i++) total[i] += counts[i];
    for (let slot = 1; slot < PER_RECORDER; slot++) {
      const at = slot * COUNTS;
      for (let i = 0; i < COUNTS; i++) minute[i] += counts[at + i];
    }
  }

  /** Adds another sum (a backend's into its frontend's). */
  addSum(other: LatencySum): void {
    for (let i = 0; i < COUNTS; i++) {
      this.totalCounts[i] += other.totalCounts[i];
      this.minuteCounts[i] += other.minuteCounts[i];
    }
  }

  /** Both views' percentiles. */
  read(): { total: Percentiles; lastMinute: Percentiles } {
    this.total.establishInternalTackingValues();
    this.minute.establishInternalTackingValues();
    return { total: percentiles(this.total), lastMinute: percentiles(this.minute) };
  }
}

/** A histogram over `counts` (COUNTS long): shared, or this thread's own. */
function overCounts(counts: Int32Array): JsHistogram {
  // A function, not an arrow: the histogram calls it with new, and gets `counts` back.
  return histogram(function over() {
    return counts;
  } as unknown as CountsConstructor);
}

export interface Percentiles {
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
  /** Mean, so a Prometheus summary can give a sum (mean * count). */
  mean: number;
  count: number;
}

/** Milliseconds, to the microsecond. */
export function percentiles(h: Histogram): Percentiles {
  const ms = (us: number) => Math.round(us) / 1000;
  return {
    p50: ms(h.getValueAtPercentile(50)),
    p90: ms(h.getValueAtPercentile(90)),
    p99: ms(h.getValueAtPercentile(99)),
    p999: ms(h.getValueAtPercentile(99.9)),
    max: ms(h.maxValue),
    mean: h.totalCount === 0 ? 0 : ms(mean(h as IndexedHistogram)),
    count: h.totalCount,
  };
}

/** What mean() reads of a histogram: hdr-histogram-js's JavaScript histograms have these. */
interface IndexedHistogram extends Histogram {
  getCountAtIndex(index: number): number;
  valueFromIndex(index: number): number;
  medianEquivalentValue(value: number): number;
}

/** Each count index's value as the histogram's `mean` weighs it (its bucket's median): the same
 *  for every histogram here (one range and precision), so worked out once, on first use. */
let medians: Float64Array | null = null;

/**
 * The histogram's mean, as its `mean` getter gives it, from one walk of the counts: the getter
 * walks them through an iterator object per step, and a stats answer asks it of every histogram
 * (0.3 ms each, 30 times this).
 */
function mean(h: IndexedHistogram): number {
  if (medians === null) {
    medians = new Float64Array(COUNTS);
    for (let i = 0; i < medians.length; i++)
      medians[i] = h.medianEquivalentValue(h.valueFromIndex(i));
  }
  let sum = 0;
  for (let i = 0; i < medians.length; i++) {
    const count = h.getCountAtIndex(i);
    if (count > 0) sum += medians[i] * count;
  }
  return sum / h.totalCount;
}
