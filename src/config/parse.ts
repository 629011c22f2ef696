// Value parsers: text as a user wrote it (a flag, a file value, an admin command word) -> a checked
// value. Invariant: every failure is a ConfigError naming where the text came from and what was
// expected, in one line, so the CLI can print it and exit 2 and a reload can answer it.

import { isIP } from 'node:net';
import { availableParallelism } from 'node:os';
import type { Endpoint, ListenEndpoint, MetricSelector, ProxyVersion } from './types.ts';
import { PROXY_VERSIONS } from './types.ts';

export class ConfigError extends Error {
  readonly code = 'FULCRUM_BAD_CONFIG';
  /** The flag (or config key) at fault, e.g. `--backend`. */
  readonly where: string;

  constructor(where: string, message: string) {
    super(`${where}: ${message}`);
    this.name = 'ConfigError';
    this.where = where;
  }
}

const UNIT_MS = new Map([
  ['ms', 1],
  ['s', 1000],
  ['m', 60_000],
  ['h', 3_600_000],
]);

/** The longest duration a timer can take (setTimeout's limit, about 24.8 days). */
const MAX_DURATION_MS = 2_147_483_647;

/** `500ms`, `3s`, `5m`, `1h`; a bare number is milliseconds, as in HAProxy. */
export function parseDuration(text: string, where: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (match === null) {
    throw new ConfigError(where, `"${text}" is not a duration (expected e.g. 500ms, 3s, 5m)`);
  }
  const ms = Math.round(Number(match[1]) * (UNIT_MS.get(match[2] ?? 'ms') ?? 1));
  if (ms > MAX_DURATION_MS) throw new ConfigError(where, `"${text}" is too long (at most 24 days)`);
  return ms;
}

/** A duration that must be more than zero (a timeout or an interval). */
export function positiveDuration(text: string, where: string): number {
  const ms = parseDuration(text, where);
  if (ms <= 0) throw new ConfigError(where, 'must be more than 0');
  return ms;
}

/** A duration of at least `min` ms: a floor where a smaller one would only burn CPU and a
 *  backend's patience (probing a backend every millisecond). */
export function durationAtLeast(min: number): (text: string, where: string) => number {
  return (text, where) => {
    const ms = parseDuration(text, where);
    if (ms < min) throw new ConfigError(where, `must be at least ${min}ms`);
    return ms;
  };
}

/** A whole number in [min, max]. */
export function parseInteger(text: string, where: string, min: number, max: number): number {
  const trimmed = text.trim();
  if (!/^-?\d+$/.test(trimmed)) {
    throw new ConfigError(where, `"${text}" is not a whole number`);
  }
  const value = Number(trimmed);
  if (value < min || value > max) {
    throw new ConfigError(where, `${value} is out of range (${min}..${max})`);
  }
  return value;
}

/** A parser of whole numbers in [min, max], for the settings table. */
export function integer(min: number, max: number): (text: string, where: string) => number {
  return (text, where) => parseInteger(text, where, min, max);
}

/** One of `choices`; `what` names the kind of word in the message (`algorithm`, `level`). */
export function parseChoice<T extends string>(
  text: string,
  where: string,
  choices: readonly T[],
  what: string,
): T {
  if ((choices as readonly string[]).includes(text)) return text as T;
  throw new ConfigError(where, `unknown ${what} "${text}" (expected ${choices.join(', ')})`);
}

/** `HOST:PORT`, `[IPv6]:PORT`. A port of 0 is allowed only where `allowZeroPort`. */
export function parseEndpoint(text: string, where: string, allowZeroPort: boolean): Endpoint {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^\s:[\]]+)):(\d{1,5})$/.exec(text.trim());
  if (match === null) {
    throw new ConfigError(where, `"${text}" is not HOST:PORT (IPv6 as [ADDR]:PORT)`);
  }
  const host = match[1] ?? match[2];
  if (match[1] !== undefined && isIP(host) !== 6) {
    throw new ConfigError(where, `"${text}": ${host} is not an IPv6 address`);
  }
  const port = Number(match[3]);
  if (port > 65535 || (port === 0 && !allowZeroPort)) {
    throw new ConfigError(where, `"${text}": port ${port} is out of range (1..65535)`);
  }
  return { text: text.trim(), host, port };
}

/** `v1`, `v2` or `none`. */
export function parseProxyVersion(text: string, where: string): ProxyVersion {
  const version = (PROXY_VERSIONS as readonly string[]).indexOf(text);
  if (version < 0) {
    throw new ConfigError(
      where,
      `"${text}" is not a PROXY protocol version (expected ${PROXY_VERSIONS.join(', ')})`,
    );
  }
  return version as ProxyVersion;
}

/** `HOST:PORT[,accept-proxy|,udp]`: a listen address. Port 0 picks a free port. */
export function parseListen(text: string, where: string): ListenEndpoint {
  const [address, ...options] = text.split(',');
  const endpoint = parseEndpoint(address, where, true);
  let acceptProxy = false;
  let udp = false;
  for (const option of options) {
    if (option.trim() === 'accept-proxy') acceptProxy = true;
    else if (option.trim() === 'udp') udp = true;
    else
      throw new ConfigError(
        where,
        `"${text}": unknown option "${option}" (expected accept-proxy or udp)`,
      );
  }
  if (acceptProxy && udp) {
    throw new ConfigError(where, `"${text}": accept-proxy is for TCP; a UDP listener takes none`);
  }
  return { ...endpoint, acceptProxy, udp };
}

/** `10.0.0.0/8`, `2001:db8::/32`, or a bare address (a /32 or /128). Throws on anything else. */
export function parseCidr(text: string): {
  address: string;
  prefix: number;
  type: 'ipv4' | 'ipv6';
} {
  const [address, prefixText, extra] = text.trim().split('/');
  const family = isIP(address);
  if (family === 0 || extra !== undefined) throw new Error(`"${text}" is not an address or CIDR`);
  const max = family === 4 ? 32 : 128;
  if (prefixText !== undefined && !/^\d{1,3}$/.test(prefixText)) {
    throw new Error(`"${text}": the prefix must be 0..${max}`);
  }
  const prefix = prefixText === undefined ? max : Number(prefixText);
  if (prefix > max) throw new Error(`"${text}": the prefix must be 0..${max}`);
  return { address, prefix, type: family === 4 ? 'ipv4' : 'ipv6' };
}

/** A CIDR, kept as written (trimmed) once it parses. */
export function checkCidr(text: string, where: string): string {
  try {
    parseCidr(text);
  } catch (err) {
    throw new ConfigError(where, (err as Error).message);
  }
  return text.trim();
}

/** `100/s` or `100`: connections per second. */
export function parseRate(text: string, where: string): number {
  const match = /^(\d+)(?:\/s)?$/.exec(text.trim());
  if (match === null) throw new ConfigError(where, `"${text}" is not a rate (expected e.g. 100/s)`);
  return parseInteger(match[1], where, 0, 1_000_000);
}

/** A frontend, pool or backend name as stats commands address it (`POOL/BACKEND`). */
const NAME = /^[A-Za-z0-9_.:[\]-]{1,64}$/;

/** A frontend, pool or backend name: what `POOL/BACKEND` addresses it by. */
export function checkName(name: string, where: string): string {
  if (!NAME.test(name)) {
    throw new ConfigError(
      where,
      `"${name}" is not a name (letters, digits, _ . : - [ ]; at most 64)`,
    );
  }
  return name;
}

/** A TLS server name to route by: a host name (`api.example.com`) or a wildcard over one label
 *  (`*.example.com`), lowercased, as the ClientHello parser (data/client-hello.ts) reads them. */
export function parseServerName(text: string, where: string): string {
  const name = text.trim().toLowerCase().replace(/\.$/, '');
  const host = name.startsWith('*.') ? name.slice(2) : name;
  const label = /^[a-z0-9_-]{1,63}$/;
  if (host.length === 0 || host.length > 253 || !host.split('.').every((l) => label.test(l))) {
    throw new ConfigError(
      where,
      `"${text}" is not a server name (a host name like api.example.com, or *.example.com)`,
    );
  }
  return name;
}

/** An ALPN protocol name: 1..255 printable ASCII bytes (`h2`, `http/1.1`). */
export function parseAlpn(text: string, where: string): string {
  if (!/^[\x21-\x7e]{1,255}$/.test(text)) {
    throw new ConfigError(where, `"${text}" is not an ALPN protocol name (h2, http/1.1)`);
  }
  return text;
}

/** `auto` (one per available CPU) or a count. */
export function parseWorkers(text: string, where: string): number {
  if (text === 'auto') return availableParallelism();
  return parseInteger(text, where, 1, 256);
}

/** A file path: anything but empty. */
export function parsePath(text: string, where: string): string {
  if (text.trim() === '') throw new ConfigError(where, 'empty path');
  return text;
}

/** The stats socket's file mode: octal, the owner can read and write, others get nothing. */
export function parseSocketMode(text: string, where: string): number {
  if (!/^0?[0-7]{3}$/.test(text)) {
    throw new ConfigError(where, `"${text}" is not an octal mode like 0600`);
  }
  const mode = Number.parseInt(text, 8);
  if ((mode & 0o600) !== 0o600)
    throw new ConfigError(where, `${text} must let the owner read and write`);
  if ((mode & 0o007) !== 0) {
    throw new ConfigError(where, `${text} would let every user in (widen to a group: 0660)`);
  }
  return mode;
}

/** A name server: `IP:PORT`. */
export function parseResolver(text: string, where: string): string {
  const endpoint = parseEndpoint(text, where, false);
  if (isIP(endpoint.host) === 0) {
    throw new ConfigError(where, `"${text}": a name server is an IP address`);
  }
  return endpoint.text;
}

/**
 * An IP address in one spelling, so that two spellings of one destination compare equal: an
 * IPv4-mapped IPv6 address as IPv4, IPv6 in its compressed form, and the unspecified address
 * (0.0.0.0, ::), which a connect reaches as this host, as loopback. A hostname is unchanged.
 */
export function canonicalHost(host: string): string {
  const family = isIP(host);
  if (family === 4) return host === '0.0.0.0' ? '127.0.0.1' : host;
  if (family !== 6) return host;
  const compressed = new URL(`http://[${host}]/`).hostname.slice(1, -1);
  const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(compressed);
  if (mapped !== null) {
    const high = Number.parseInt(mapped[1], 16);
    const low = Number.parseInt(mapped[2], 16);
    return canonicalHost(`${high >> 8}.${high & 255}.${low >> 8}.${low & 255}`);
  }
  return compressed === '::' ? '::1' : compressed;
}

/** The longest text a probe or an agent check may send or expect. */
export const MAX_PROBE_TEXT = 1024;

/**
 * Text with C-style escapes (`\r \n \t \\ \xHH`) -> the bytes it stands for, one char per byte
 * (0..255): what a send/expect probe writes or looks for. Anything else after `\` is refused
 * rather than guessed.
 */
export function parseEscaped(text: string, where: string): string {
  const bytes: number[] = [];
  const literal = Buffer.from(text, 'utf8');
  for (let i = 0; i < literal.length; i++) {
    const c = literal[i];
    if (c !== 0x5c) {
      bytes.push(c);
      continue;
    }
    if (i + 1 === literal.length) {
      throw new ConfigError(
        where,
        `"${printableText(text)}": a trailing backslash escapes nothing (write \\\\ for a backslash)`,
      );
    }
    const next = String.fromCharCode(literal[i + 1]);
    const simple = ESCAPES.get(next);
    if (simple !== undefined) {
      bytes.push(simple);
      i++;
    } else if (next === 'x' && /^[0-9a-fA-F]{2}$/.test(literal.subarray(i + 2, i + 4).toString())) {
      bytes.push(Number.parseInt(literal.subarray(i + 2, i + 4).toString(), 16));
      i += 3;
    } else {
      throw new ConfigError(
        where,
        `"${printableText(text)}": unknown escape "\\${printableText(next)}" (expected \\r \\n \\t \\\\ \\xHH)`,
      );
    }
  }
  if (bytes.length === 0) throw new ConfigError(where, 'empty text');
  if (bytes.length > MAX_PROBE_TEXT) {
    throw new ConfigError(where, `${bytes.length} bytes; at most ${MAX_PROBE_TEXT}`);
  }
  return Buffer.from(bytes).toString('latin1');
}

const ESCAPES = new Map([
  ['r', 0x0d],
  ['n', 0x0a],
  ['t', 0x09],
  ['\\', 0x5c],
]);

/** Text for a message or a terminal: every control character (C0, DEL and C1, such as 0x9b, an
 *  8-bit CSI) shown as an escape, so the line stays one line and no terminal acts on it. */
export function printableText(text: string): string {
  let out = '';
  for (const c of text) {
    const code = c.charCodeAt(0);
    const control = code < 0x20 || (code >= 0x7f && code <= 0x9f);
    out += control ? `\\x${code.toString(16).padStart(2, '0')}` : c;
  }
  return out;
}

/** An HTTP request path: starts with `/`, printable, no spaces (it goes into a request line). */
export function parseHttpPath(text: string, where: string): string {
  if (!/^\/[\x21-\x7e]*$/.test(text) || text.length > MAX_PROBE_TEXT) {
    throw new ConfigError(
      where,
      `"${printableText(text)}" is not a request path (expected /PATH, printable, no spaces)`,
    );
  }
  return text;
}

/** A `Host:` header value: a host name or address, optionally with a port. */
export function parseHostHeader(text: string, where: string): string {
  if (!/^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(:\d{1,5})?$/.test(text) || text.length > 255) {
    throw new ConfigError(
      where,
      `"${printableText(text)}" is not a host name (expected e.g. api.internal or api.internal:8080)`,
    );
  }
  return text;
}

/** `200-399`, `200,204`, `200-299,301`: HTTP statuses as inclusive ranges. */
export function parseStatusRanges(text: string, where: string): Array<[number, number]> {
  const ranges: Array<[number, number]> = [];
  for (const part of text.split(',')) {
    const match = /^\s*(\d{3})(?:\s*-\s*(\d{3}))?\s*$/.exec(part);
    const low = Number(match?.[1]);
    const high = match?.[2] === undefined ? low : Number(match[2]);
    if (match === null || low < 100 || high > 599 || high < low) {
      throw new ConfigError(
        where,
        `"${printableText(text)}" is not a list of HTTP statuses (expected e.g. 200-399 or 200,204)`,
      );
    }
    ranges.push([low, high]);
  }
  return ranges;
}

/** A gRPC service name as the health protocol takes it ('' for the whole server). */
export function parseGrpcService(text: string, where: string): string {
  if (!/^[A-Za-z0-9_.-]*$/.test(text) || text.length > 127) {
    throw new ConfigError(
      where,
      `"${printableText(text)}" is not a gRPC service name (expected e.g. grpc.health.v1.Health or my.pkg.Service)`,
    );
  }
  return text;
}

/** A TCP port, 1..65535. */
export function parsePort(text: string, where: string): number {
  return parseInteger(text, where, 1, 65535);
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*$/;

/**
 * A Prometheus series selector: `NAME` or `NAME{label="value",...}` (equality matchers only).
 * The series of the page that match are summed.
 */
export function parseMetricSelector(text: string, where: string): MetricSelector {
  const trimmed = text.trim();
  const brace = trimmed.indexOf('{');
  const name = brace < 0 ? trimmed : trimmed.slice(0, brace);
  const fail = () =>
    new ConfigError(
      where,
      `"${printableText(text)}" is not a metric selector (expected NAME or NAME{label="value"})`,
    );
  if (!METRIC_NAME.test(name)) throw fail();
  const labels: Array<[string, string]> = [];
  if (brace >= 0) {
    if (!trimmed.endsWith('}')) throw fail();
    const inner = trimmed.slice(brace + 1, -1);
    // Commas inside quoted values are part of the value: split only outside quotes.
    for (const part of inner.match(/(?:[^,"]|"(?:[^"\\]|\\.)*")+/g) ?? []) {
      const match = LABEL.exec(part);
      if (match === null) throw fail();
      labels.push([match[1], match[2].replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c))]);
    }
    if (labels.length === 0) throw fail();
  }
  return { text: trimmed, name, labels };
}

/** A balance factor in percent: 0 (off) or at least 100 (a cap below the average cannot hold). */
export function parseBalanceFactor(text: string, where: string): number {
  const value = parseInteger(text, where, 0, 10_000);
  if (value !== 0 && value < 100) {
    throw new ConfigError(where, `${value} is below 100 (0 turns it off)`);
  }
  return value;
}
