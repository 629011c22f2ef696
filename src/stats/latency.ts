// Latency histograms: one recorder per backend per worker, merged by the main thread when asked.
// Invariant: record() allocates nothing (a typed-array increment in hdr-histogram-js's JS build);
// encoding, decoding and merging happen only when stats are asked for, off the data path.

import { createRequire } from 'node:module';
import type { Histogram } from 'hdr-histogram-js';

// Every thread records, so every thread loads the histogram; the package's index would also load
// its WebAssembly build, pako and a number formatter (70-90 ms per thread at every start). The
// class alone is ~8 ms; the encoding (with pako) loads when stats are first asked for.
const require = createRequire(import.meta.url);
type HistogramClass = new (lowest: number, highest: number, digits: number) => Histogram;
const Int32Histogram = (
  require('hdr-histogram-js/dist/Int32Histogram.js') as { default: HistogramClass }
).default;

interface Encoding {
  encodeIntoCompressedBase64(histogram: Histogram): string;
  decodeFromCompressedBase64(encoded: string, bitBucketSize: number): Histogram;
}
let encoding: Encoding | null = null;

function codec(): Encoding {
  encoding ??= require('hdr-histogram-js/dist/encoding.js') as Encoding;
  return encoding;
}

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

/** 32-bit counts (hdr-histogram-js's bitBucketSize 32), fixed range, its JavaScript build. */
export function newHistogram(): Histogram {
  const histogram = new Int32Histogram(1, HIGHEST_US, SIGNIFICANT_DIGITS);
  histogram.autoResize = false;
  return histogram;
}

export class LatencyRecorder {
  readonly total = newHistogram();
  readonly window: Histogram[] = Array.from({ length: WINDOW_SLOTS }, newHistogram);
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

  /** Both views, encoded to cross a thread boundary: [whole run, last minute]. */
  encode(): [string, string] {
    const minute = newHistogram();
    for (const h of this.window) minute.add(h);
    const { encodeIntoCompressedBase64 } = codec();
    return [encodeIntoCompressedBase64(this.total), encodeIntoCompressedBase64(minute)];
  }
}

export function decode(encoded: string): Histogram {
  return codec().decodeFromCompressedBase64(encoded, 32);
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
    mean: h.totalCount === 0 ? 0 : ms(h.mean),
    count: h.totalCount,
  };
}
