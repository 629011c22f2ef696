// Value parsers: text as a user wrote it (a flag, a file value, an admin command word) -> a checked
// value. Invariant: every failure is a ConfigError naming where the text came from and what was
// expected, in one line, so the CLI can print it and exit 2 and a reload can answer it.

import { isIP } from 'node:net';
import { availableParallelism } from 'node:os';
import type { Endpoint, ListenEndpoint, ProxyVersion } from './types.ts';
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

/** `HOST:PORT[,accept-proxy]`: a listen address. Port 0 picks a free port. */
export function parseListen(text: string, where: string): ListenEndpoint {
  const [address, ...options] = text.split(',');
  const endpoint = parseEndpoint(address, where, true);
  let acceptProxy = false;
  for (const option of options) {
    if (option.trim() === 'accept-proxy') acceptProxy = true;
    else
      throw new ConfigError(where, `"${text}": unknown option "${option}" (expected accept-proxy)`);
  }
  return { ...endpoint, acceptProxy };
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

/** A frontend or backend name as stats commands address it (`FRONTEND/BACKEND`). */
const NAME = /^[A-Za-z0-9_.:[\]-]{1,64}$/;

/** A frontend or backend name: what `FRONTEND/BACKEND` addresses it by. */
export function checkName(name: string, where: string): string {
  if (!NAME.test(name)) {
    throw new ConfigError(
      where,
      `"${name}" is not a name (letters, digits, _ . : - [ ]; at most 64)`,
    );
  }
  return name;
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
