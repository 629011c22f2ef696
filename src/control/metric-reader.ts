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
const CLOSE_BRACE = 0x7d;
const EQUALS = 0x3d;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const PLUS = 0x2b;
const MINUS = 0x2d;
const DOT = 0x2e;

/** The values the format allows that are not numbers we could sum. */
const SPECIAL = /^(?:[+-]?inf|nan)$/i;

/** Where the reader is in the current line. */
const START = 0;
const SKIP = 1;
const KEEP = 2;

export class MetricReader {
  private readonly selector: MetricSelector;
  private readonly name: Uint8Array;
  private state = START;
  /** Bytes of the name matched so far at the start of the current line. */
  private matched = 0;
  /** A kept line split across chunks: its bytes so far. */
  private readonly carry = new Uint8Array(MAX_SAMPLE_LINE);
  private carried = 0;
  private sum = 0;
  private found = 0;
  private lines = 0;
  private error: string | null = null;

  /** The selector's label names and values as the page spells them (UTF-8 bytes), side by side;
   *  the values also as latin1 text (one character per byte) for a value written with escapes. */
  private readonly keys: Uint8Array[];
  private readonly values: Uint8Array[];
  private readonly valueTexts: string[];

  constructor(selector: MetricSelector) {
    this.selector = selector;
    this.name = bytesOf(selector.name);
    this.keys = selector.labels.map(([k]) => bytesOf(k));
    this.values = selector.labels.map(([, v]) => bytesOf(v));
    this.valueTexts = selector.labels.map(([, v]) => Buffer.from(v, 'utf8').toString('latin1'));
  }

  /** Takes the next bytes of the page. */
  feed(chunk: Buffer): void {
    const length = chunk.length;
    // Every byte is read through a plain Uint8Array: Buffers made by the socket and by
    // Buffer.from() have different maps, and code that sees both reads each byte the slow way.
    const bytes = new Uint8Array(chunk.buffer, chunk.byteOffset, length);
    let i = 0;
    while (i < length && this.error === null) {
      if (this.state === SKIP) {
        const nl = chunk.indexOf(NEWLINE, i);
        if (nl < 0) return;
        i = nl + 1;
        this.state = START;
        this.matched = 0;
      } else if (this.state === START) {
        const name = this.name;
        let matched = this.matched;
        // Empty lines, passed over here: a native search for each would cost 50 times more.
        if (matched === 0) while (i < length && bytes[i] === NEWLINE) i++;
        while (i < length && matched < name.length && bytes[i] === name[matched]) {
          matched++;
          i++;
        }
        this.matched = matched;
        if (i === length) return;
        if (matched < name.length) {
          this.state = SKIP;
          continue;
        }
        const next = bytes[i];
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
          // The whole line is in this chunk: read where it stands.
          if (end - i > MAX_SAMPLE_LINE) {
            this.error = `a line of ${this.selector.name} is longer than ${MAX_SAMPLE_LINE} bytes`;
            return;
          }
          this.sample(bytes, i, end);
        } else if (this.carried + end - i > MAX_SAMPLE_LINE) {
          this.error = `a line of ${this.selector.name} is longer than ${MAX_SAMPLE_LINE} bytes`;
          return;
        } else {
          this.carry.set(bytes.subarray(i, end), this.carried);
          this.carried += end - i;
          if (nl >= 0) this.sample(this.carry, 0, this.carried);
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
    if (this.error === null && this.state === KEEP) this.sample(this.carry, 0, this.carried);
    this.state = SKIP;
    if (this.error !== null) return this.error;
    if (this.lines === 0) return `metric ${this.selector.name} not found`;
    if (this.found === 0) return `no series matches ${this.selector.text}`;
    return this.sum;
  }

  /**
   * One sample line, bytes `from` (just after the metric's name) to `n` of `line`: labels, value,
   * maybe a timestamp. Scanned where it stands, byte by byte (a string per line would be most of
   * the cost of a page of matching series); the value too (decimal()).
   */
  private sample(line: Uint8Array, from: number, n: number): void {
    this.lines++;
    let at = from;
    let matches = this.keys.length === 0;
    if (line[from] === OPEN_BRACE) {
      const labels = this.labels(line, from, n);
      if (labels < 0) {
        this.error = `metrics page does not parse (${excerpt(line, from, n)})`;
        return;
      }
      matches = labels === this.keys.length;
      at = this.labelsEnd + 1;
    }
    while (at < n && isBlank(line[at])) at++;
    const start = at;
    while (at < n && !isBlank(line[at])) at++;
    const end = at;
    while (at < n && isBlank(line[at])) at++;
    if (at < n) {
      // A timestamp: an integer, and nothing after it.
      if (line[at] === MINUS) at++;
      const digits = at;
      while (at < n && isDigit(line[at])) at++;
      const after = at;
      while (at < n && isBlank(line[at])) at++;
      if (after === digits || at < n) {
        this.error = `metrics page does not parse (${excerpt(line, from, n)})`;
        return;
      }
    }
    if (start === end) {
      this.error = `a series of ${this.selector.name} has no value`;
      return;
    }
    if (!matches) return;
    const number = decimal(line, start, end);
    if (Number.isNaN(number)) {
      const value = latin1(line, start, end);
      this.error = SPECIAL.test(value)
        ? `${this.selector.text} is not a finite number (${value})`
        : `${this.selector.text} is not a number (${excerpt(line, start, end)})`;
    } else if (!Number.isFinite(number)) {
      this.error = `${this.selector.text} is not a finite number (${excerpt(line, start, end)})`;
    } else if (number < 0) {
      this.error = `${this.selector.text} is negative (${excerpt(line, start, end)}): a load is 0 or more`;
    } else {
      this.sum += number;
      this.found++;
      if (!Number.isFinite(this.sum)) this.error = `the sum of ${this.selector.text} is not finite`;
    }
  }

  /** Where the label set of the last line read by labels() ends (its closing brace). */
  private labelsEnd = 0;

  /**
   * Reads `{k="v",...}` at `from`: how many of the selector's labels it has with the selector's
   * values, or -1 if it is not a label set. Names and values are compared where they stand; only
   * a value with escapes is copied.
   */
  private labels(line: Uint8Array, from: number, n: number): number {
    const keys = this.keys;
    let at = from + 1;
    let matched = 0;
    for (;;) {
      while (at < n && isBlank(line[at])) at++;
      if (at < n && line[at] === CLOSE_BRACE) break; // the set ends (also after a trailing comma)
      const keyStart = at;
      if (at < n && isDigit(line[at])) return -1;
      while (at < n && isNameChar(line[at])) at++;
      const keyEnd = at;
      if (keyEnd === keyStart) return -1;
      while (at < n && isBlank(line[at])) at++;
      if (at >= n || line[at++] !== EQUALS) return -1;
      while (at < n && isBlank(line[at])) at++;
      if (at >= n || line[at++] !== QUOTE) return -1;
      const valueStart = at;
      let escaped = false;
      for (;;) {
        if (at >= n) return -1;
        const c = line[at];
        if (c === QUOTE) break;
        if (c === BACKSLASH) {
          escaped = true;
          at += 2;
        } else at++;
      }
      const valueEnd = at++;
      for (let k = 0; k < keys.length; k++) {
        if (!sameBytes(line, keyStart, keyEnd, keys[k])) continue;
        if (escaped) {
          const text = unescapeLabel(latin1(line, valueStart, valueEnd));
          if (text === this.valueTexts[k]) matched++;
        } else if (sameBytes(line, valueStart, valueEnd, this.values[k])) {
          matched++;
        }
      }
      while (at < n && isBlank(line[at])) at++;
      if (at >= n) return -1;
      const c = line[at];
      if (c === COMMA) at++;
      else if (c !== CLOSE_BRACE) return -1;
    }
    this.labelsEnd = at;
    return matched;
  }
}

/** Whether bytes `from` to `to` of `line` are `want`. */
function sameBytes(line: Uint8Array, from: number, to: number, want: Uint8Array): boolean {
  if (to - from !== want.length) return false;
  for (let i = 0; i < want.length; i++) if (line[from + i] !== want[i]) return false;
  return true;
}

/** Powers of ten a double holds exactly. */
const EXACT_POWERS = Array.from({ length: 23 }, (_, k) => 10 ** k);

/**
 * Bytes `from` to `to` of `line` as a sample value the text format writes
 * (`[+-]?(digits[.digits*]|.digits)([eE][+-]?digits)?`; not Go's hex or `_`), or NaN if they are
 * not one. A value of at most 15 digits and a small exponent is worked out here: its digits and
 * its power of ten are both exact doubles, so one multiplication or division rounds once, to the
 * number Number() would give; any other value is read by Number() from its text.
 */
function decimal(line: Uint8Array, from: number, to: number): number {
  let at = from;
  const negative = line[at] === MINUS;
  if (negative || line[at] === PLUS) at++;
  let digits = 0;
  let mantissa = 0;
  let scale = 0;
  while (at < to && isDigit(line[at])) {
    mantissa = mantissa * 10 + line[at++] - 0x30;
    digits++;
  }
  if (at < to && line[at] === DOT) {
    at++;
    while (at < to && isDigit(line[at])) {
      mantissa = mantissa * 10 + line[at++] - 0x30;
      digits++;
      scale--;
    }
  }
  if (digits === 0) return Number.NaN;
  if (at < to && (line[at] | 0x20) === 0x65) {
    // `e` or `E`, then an integer
    at++;
    const minus = line[at] === MINUS;
    if (at < to && (minus || line[at] === PLUS)) at++;
    const exponent = at;
    let power = 0;
    while (at < to && isDigit(line[at]) && power < 1e6) power = power * 10 + line[at++] - 0x30;
    while (at < to && isDigit(line[at])) at++;
    if (at === exponent) return Number.NaN;
    scale += minus ? -power : power;
  }
  if (at !== to) return Number.NaN;
  if (digits > 15 || scale < -22 || scale > 22) return Number(latin1(line, from, to));
  const value = scale < 0 ? mantissa / EXACT_POWERS[-scale] : mantissa * EXACT_POWERS[scale];
  return negative ? -value : value;
}

/** Each byte's classes, so that a class test is one load (most of a page's cost is such tests). */
const BLANK = 1;
const DIGIT = 2;
const NAME_CHAR = 4;
const CLASSES = new Uint8Array(256);
for (const c of [SPACE, TAB, 0x0d]) CLASSES[c] = BLANK;
for (let c = 0; c < 256; c++) {
  const letter = (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || c === 0x5f;
  if (c >= 0x30 && c <= 0x39) CLASSES[c] = DIGIT | NAME_CHAR;
  else if (letter) CLASSES[c] = NAME_CHAR;
}

function isBlank(c: number): boolean {
  return (CLASSES[c] & BLANK) !== 0;
}

function isDigit(c: number): boolean {
  return (CLASSES[c] & DIGIT) !== 0;
}

/** `[a-zA-Z0-9_]`: a label name's characters. */
function isNameChar(c: number): boolean {
  return (CLASSES[c] & NAME_CHAR) !== 0;
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

/** `text` as the page spells it: its UTF-8 bytes. */
function bytesOf(text: string): Uint8Array {
  const buffer = Buffer.from(text, 'utf8');
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.length);
}

/** Bytes `from` to `to` of `bytes` as one latin1 character each. */
function latin1(bytes: Uint8Array, from: number, to: number): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset + from, to - from).toString('latin1');
}

/** Bytes `from` to `to` of `line` for a message: decoded as UTF-8, short, control characters
 *  escaped. */
function excerpt(line: Uint8Array, from: number, to: number): string {
  const text = Buffer.from(line.buffer, line.byteOffset + from, to - from).toString('utf8');
  const head = printableText(text.slice(0, 40));
  return text.length > 40 ? `${head}...` : head;
}
