// Reads one metric out of a Prometheus text page as its bytes arrive: a line is kept only while
// it starts with the selected name, every other line is skipped to its newline unread, and each
// kept sample is parsed, checked and added to the sum at once. Invariants: the page is never held
// (memory is one sample line, at most MAX_SAMPLE_LINE bytes, whatever the page's size); a value
// counts only if it is a plain decimal number, finite and not negative, and so is the sum; the
// first thing wrong ends the reading with one line saying what.

import { printableText } from '../config/parse.ts';
import type { MetricSelector } from '../config/types.ts';

/** The longest sample line of the selected metric read; a longer one is an error, not a sink. */
export const MAX_SAMPLE_LINE = 4096;

const NEWLINE = 0x0a;
const OPEN_BRACE = 0x7b;
const SPACE = 0x20;
const TAB = 0x09;

/** A sample value as the text format writes a number (Go's ParseFloat takes more: hex, `_`). */
const DECIMAL = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/;
/** The values the format allows that are not numbers we could sum. */
const SPECIAL = /^(?:[+-]?inf|nan)$/i;

/** Where the reader is in the current line. */
const START = 0;
const SKIP = 1;
const KEEP = 2;

export class MetricReader {
  private readonly selector: MetricSelector;
  private readonly name: Buffer;
  private state = START;
  /** Bytes of the name matched so far at the start of the current line. */
  private matched = 0;
  /** A kept line split across chunks: its bytes so far. */
  private readonly carry = Buffer.allocUnsafe(MAX_SAMPLE_LINE);
  private carried = 0;
  private sum = 0;
  private found = 0;
  private lines = 0;
  private error: string | null = null;

  /** The selector's labels as the page's bytes spell them (each byte one latin1 character). */
  private readonly wanted: ReadonlyArray<readonly [string, string]>;

  constructor(selector: MetricSelector) {
    this.selector = selector;
    this.name = Buffer.from(selector.name, 'utf8');
    this.wanted = selector.labels.map(([k, v]) => [bytesOf(k), bytesOf(v)] as const);
  }

  /** Takes the next bytes of the page. */
  feed(chunk: Buffer): void {
    const length = chunk.length;
    let i = 0;
    // The chunk as one string of its bytes (latin1: a copy, no decoding), made at the first kept
    // line: every kept line of the chunk is read in place in it.
    let text: string | null = null;
    while (i < length && this.error === null) {
      if (this.state === SKIP) {
        const nl = chunk.indexOf(NEWLINE, i);
        if (nl < 0) return;
        i = nl + 1;
        this.state = START;
        this.matched = 0;
      } else if (this.state === START) {
        const name = this.name;
        while (i < length && this.matched < name.length && chunk[i] === name[this.matched]) {
          this.matched++;
          i++;
        }
        if (i === length) return;
        if (this.matched < name.length) {
          this.state = SKIP;
          continue;
        }
        const next = chunk[i];
        // `NAME{`, `NAME `, `NAME\t`, or NAME alone on its line (no value: an error below); not a
        // longer name that starts alike.
        if (next === OPEN_BRACE || next === SPACE || next === TAB || next === NEWLINE) {
          this.state = KEEP;
          this.carried = 0;
        } else {
          this.state = SKIP;
        }
      } else {
        const nl = chunk.indexOf(NEWLINE, i);
        const end = nl < 0 ? length : nl;
        if (nl >= 0 && this.carried === 0) {
          text ??= chunk.toString('latin1');
          if (end - i > MAX_SAMPLE_LINE) {
            this.error = `a line of ${this.selector.name} is longer than ${MAX_SAMPLE_LINE} bytes`;
            return;
          }
          this.sample(text, i, end);
        } else if (this.carried + end - i > MAX_SAMPLE_LINE) {
          this.error = `a line of ${this.selector.name} is longer than ${MAX_SAMPLE_LINE} bytes`;
          return;
        } else {
          this.carried += chunk.copy(this.carry, this.carried, i, end);
          if (nl >= 0) this.sample(this.carry.toString('latin1', 0, this.carried), 0, this.carried);
        }
        if (nl < 0) return;
        i = nl + 1;
        this.state = START;
        this.matched = 0;
      }
    }
  }

  /** The page has ended: the sum of the matching series, or why there is none. */
  finish(): number | string {
    if (this.error === null && this.state === KEEP) {
      this.sample(this.carry.toString('latin1', 0, this.carried), 0, this.carried);
    }
    this.state = SKIP;
    if (this.error !== null) return this.error;
    if (this.lines === 0) return `metric ${this.selector.name} not found`;
    if (this.found === 0) return `no series matches ${this.selector.text}`;
    return this.sum;
  }

  /** One sample line, `line` from `from` (just after the metric's name) to `n`, bytes as latin1:
   *  labels, value, maybe a timestamp. Scanned in place: the value is the one string it makes. */
  private sample(line: string, from: number, n: number): void {
    this.lines++;
    const wanted = this.wanted.length;
    let at = from;
    let matches = wanted === 0;
    if (line.charCodeAt(from) === OPEN_BRACE) {
      const labels = this.labels(line, from, n);
      if (labels < 0) {
        this.error = `metrics page does not parse (${excerpt(line.slice(from, n))})`;
        return;
      }
      matches = labels === wanted;
      at = this.labelsEnd + 1;
    }
    while (at < n && isBlank(line.charCodeAt(at))) at++;
    const start = at;
    while (at < n && !isBlank(line.charCodeAt(at))) at++;
    const end = at;
    while (at < n && isBlank(line.charCodeAt(at))) at++;
    if (at < n) {
      // A timestamp: an integer, and nothing after it.
      if (line.charCodeAt(at) === 0x2d) at++;
      const digits = at;
      while (at < n && isDigit(line.charCodeAt(at))) at++;
      const after = at;
      while (at < n && isBlank(line.charCodeAt(at))) at++;
      if (after === digits || at < n) {
        this.error = `metrics page does not parse (${excerpt(line.slice(from, n))})`;
        return;
      }
    }
    if (start === end) {
      this.error = `a series of ${this.selector.name} has no value`;
      return;
    }
    if (!matches) return;
    const value = line.slice(start, end);
    if (!DECIMAL.test(value)) {
      this.error = SPECIAL.test(value)
        ? `${this.selector.text} is not a finite number (${value})`
        : `${this.selector.text} is not a number (${excerpt(value)})`;
      return;
    }
    const number = Number(value);
    if (!Number.isFinite(number)) {
      this.error = `${this.selector.text} is not a finite number (${excerpt(value)})`;
    } else if (number < 0) {
      this.error = `${this.selector.text} is negative (${excerpt(value)}): a load is 0 or more`;
    } else {
      this.sum += number;
      this.found++;
      if (!Number.isFinite(this.sum)) this.error = `the sum of ${this.selector.text} is not finite`;
    }
  }

  /** Where the label set of the last line read by labels() ends (its closing brace). */
  private labelsEnd = 0;

  /**
   * Reads `{k="v",...}` at the start of `line`: how many of the selector's labels it has with
   * the selector's values, or -1 if it is not a label set. Names and values are compared where
   * they stand; only a value with escapes is copied.
   */
  private labels(line: string, from: number, n: number): number {
    const wanted = this.wanted;
    let at = from + 1;
    let matched = 0;
    for (;;) {
      while (at < n && isBlank(line.charCodeAt(at))) at++;
      if (line.charCodeAt(at) === 0x7d) break; // `}`: the set ends (also after a trailing comma)
      const keyStart = at;
      if (at < n && isDigit(line.charCodeAt(at))) return -1;
      while (at < n && isNameChar(line.charCodeAt(at))) at++;
      const keyEnd = at;
      if (keyEnd === keyStart) return -1;
      while (at < n && isBlank(line.charCodeAt(at))) at++;
      if (line.charCodeAt(at++) !== 0x3d) return -1; // `=`
      while (at < n && isBlank(line.charCodeAt(at))) at++;
      if (line.charCodeAt(at++) !== 0x22) return -1; // `"`
      const valueStart = at;
      let escaped = false;
      for (;;) {
        if (at >= n) return -1;
        const c = line.charCodeAt(at);
        if (c === 0x22) break;
        if (c === 0x5c) {
          escaped = true;
          at += 2;
        } else at++;
      }
      const valueEnd = at++;
      for (const [k, v] of wanted) {
        if (keyEnd - keyStart !== k.length || !line.startsWith(k, keyStart)) continue;
        if (escaped) {
          if (unescapeLabel(line.slice(valueStart, valueEnd)) === v) matched++;
        } else if (valueEnd - valueStart === v.length && line.startsWith(v, valueStart)) {
          matched++;
        }
      }
      while (at < n && isBlank(line.charCodeAt(at))) at++;
      const c = line.charCodeAt(at);
      if (c === 0x2c)
        at++; // `,`
      else if (c !== 0x7d) return -1;
    }
    this.labelsEnd = at;
    return matched;
  }
}

function isBlank(c: number): boolean {
  return c === SPACE || c === TAB || c === 0x0d;
}

function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

/** `[a-zA-Z0-9_]`: a label name's characters. */
function isNameChar(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || isDigit(c) || c === 0x5f;
}

/** A label value as written (`\\`, `\"`, `\n`) -> as meant. */
function unescapeLabel(text: string): string {
  return text.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
}

/** The sum of the series of `page` that `selector` matches, or why there is none. */
export function readMetric(page: string, selector: MetricSelector): number | string {
  const reader = new MetricReader(selector);
  reader.feed(Buffer.from(page, 'utf8'));
  return reader.finish();
}

/** `text` (UTF-8) as one latin1 character per byte, as feed() reads the page. */
function bytesOf(text: string): string {
  return Buffer.from(text, 'utf8').toString('latin1');
}

/** The start of `bytes` (one latin1 character per byte) for a message: decoded as UTF-8, short,
 *  control characters escaped. */
function excerpt(bytes: string): string {
  const text = Buffer.from(bytes, 'latin1').toString('utf8');
  const head = printableText(text.slice(0, 40));
  return text.length > 40 ? `${head}...` : head;
}
