// Flags -> one validated Config. Every parse error is a ConfigError naming the flag and what was
// expected, so the CLI can print one line and exit 2. The Config is plain data (it is cloned into
// every worker thread) and is never mutated after resolveConfig() returns.

import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { availableParallelism } from 'node:os';
import type { Algorithm } from './core/scheduler.ts';
import { ALGORITHMS, isAlgorithm } from './core/scheduler.ts';
import { MAX_WEIGHT } from './core/table.ts';
import type { StatsLevel } from './stats/commands.ts';
import { STATS_LEVELS } from './stats/commands.ts';

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

export interface Endpoint {
  /** As the user wrote it, e.g. `[::1]:80`: used in names and messages. */
  readonly text: string;
  /** Host without brackets; for a backend, an IP address once resolved. */
  readonly host: string;
  readonly port: number;
}

export interface BackendConfig extends Endpoint {
  /** `host:port` as written: how the stats and logs name this backend. */
  readonly name: string;
  readonly weight: number;
  readonly backup: boolean;
  /** Most live connections at once; 0: no limit. */
  readonly maxconn: number;
  /** After it comes up or joins, its weight ramps from 5% to full over this long; 0: at once. */
  readonly slowstartMs: number;
  /** PROXY protocol header to send it; -1: as its frontend says. */
  readonly sendProxy: -1 | ProxyVersion;
  /** `host` is a DNS SRV name (written `srv+NAME`): its targets give hosts, ports and weights. */
  readonly srv: boolean;
}

/** A listen address; `acceptProxy`: clients arrive behind a balancer that sends a PROXY header. */
export interface ListenEndpoint extends Endpoint {
  readonly acceptProxy: boolean;
}

/** PROXY protocol version to send to backends: 0 none, 1 (text) or 2 (binary). */
export type ProxyVersion = 0 | 1 | 2;

export interface FrontendConfig {
  readonly name: string;
  readonly listen: readonly ListenEndpoint[];
  /** PROXY protocol header sent to every backend that does not say otherwise. */
  readonly sendProxy: ProxyVersion;
  /** How long a client on an accept-proxy listener has to send its PROXY header. */
  readonly proxyTimeoutMs: number;
  readonly algorithm: Algorithm;
  /** What Maglev hashes: the client's address, or its address and port. */
  readonly hashKey: HashKey;
  readonly backends: readonly BackendConfig[];
  readonly connectTimeoutMs: number;
  readonly idleTimeoutMs: number;
  /** How long a client may wait for a backend with room when every one is at its maxconn. */
  readonly queueTimeoutMs: number;
  readonly retries: number;
  readonly health: HealthConfig;
  readonly guard: GuardConfig;
}

/** Who may connect, and how much, per frontend: checked before any backend is contacted. */
export interface GuardConfig {
  /** CIDRs; when any is given, a client must match one. */
  readonly allow: readonly string[];
  /** CIDRs; a client that matches one is refused (deny wins over allow). */
  readonly deny: readonly string[];
  /** Live connections per client address; 0: no limit. */
  readonly maxConnsPerSource: number;
  /** New connections per second per client address; 0: no limit. */
  readonly connRatePerSource: number;
}

export interface HealthConfig {
  /** Active TCP probes on; passive health (failed connects) counts either way. */
  readonly enabled: boolean;
  readonly intervalMs: number;
  readonly timeoutMs: number;
  /** Consecutive successes that mark a down backend up. */
  readonly rise: number;
  /** Consecutive failures that mark an up backend down. */
  readonly fall: number;
}

export interface Config {
  readonly workers: number;
  /** 0 means no limit. */
  readonly maxConnections: number;
  readonly drainTimeoutMs: number;
  readonly logLevel: LogLevel;
  readonly logFormat: LogFormat;
  /** One log line per finished connection, written by the workers. */
  readonly accessLog: boolean;
  readonly backlog: number;
  readonly stats: StatsConfig;
  /** Where /metrics is served (Prometheus text format); null: not served. */
  readonly metrics: Endpoint | null;
  /** Where runtime changes are kept across reloads and restarts; null: not kept. */
  readonly stateFile: string | null;
  /** Name servers (`HOST:PORT`) for hostname and SRV backends; empty: the system's. */
  readonly resolvers: readonly string[];
  /** How often hostname and SRV backends are resolved again (sooner if their TTL is shorter). */
  readonly resolveIntervalMs: number;
  readonly frontends: readonly FrontendConfig[];
}

export interface StatsConfig {
  /** Path of the stats socket; null: no socket. */
  readonly socket: string | null;
  readonly mode: number;
  readonly level: StatsLevel;
}

export const HASH_KEYS = ['source-ip', 'source-ip-port'] as const;
export type HashKey = (typeof HASH_KEYS)[number];

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export const LOG_FORMATS = ['json', 'pretty'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];
export type LogLevel = (typeof LOG_LEVELS)[number];

/** The flags as commander hands them over: strings, lists of strings, or absent. */
export interface RunFlags {
  listen?: string[];
  backend?: string[];
  algorithm?: string;
  hashKey?: string;
  sendProxy?: string;
  proxyTimeout?: string;
  workers?: string;
  connectTimeout?: string;
  idleTimeout?: string;
  queueTimeout?: string;
  retries?: string;
  allow?: string[];
  deny?: string[];
  maxConnsPerSource?: string;
  connRatePerSource?: string;
  healthInterval?: string;
  healthTimeout?: string;
  rise?: string;
  fall?: string;
  /** commander turns --no-health-check into healthCheck: false. */
  healthCheck?: boolean;
  maxConnections?: string;
  drainTimeout?: string;
  logLevel?: string;
  logFormat?: string;
  accessLog?: boolean;
  backlog?: string;
  statsSocket?: string;
  statsSocketMode?: string;
  statsLevel?: string;
  metrics?: string;
  stateFile?: string;
  resolver?: string[];
  resolveInterval?: string;
  config?: string;
}

export const DEFAULTS = {
  algorithm: 'least-conn',
  hashKey: 'source-ip',
  workers: 'auto',
  connectTimeout: '3s',
  idleTimeout: '5m',
  queueTimeout: '5s',
  proxyTimeout: '5s',
  resolveInterval: '30s',
  retries: '2',
  healthInterval: '2s',
  healthTimeout: '1s',
  rise: '2',
  fall: '3',
  maxConnections: '0',
  drainTimeout: '30s',
  logLevel: 'info',
  logFormat: 'json',
  // Linux's default somaxconn: a longer backlog is silently cut to it anyway.
  backlog: '511',
  statsSocketMode: '0600',
  statsLevel: 'admin',
} as const;

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** `500ms`, `3s`, `5m`, `1h`; a bare number is milliseconds, as in HAProxy. */
export function parseDuration(text: string, where: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (match === null) {
    throw new ConfigError(where, `"${text}" is not a duration (expected e.g. 500ms, 3s, 5m)`);
  }
  const ms = Math.round(Number(match[1]) * UNIT_MS[match[2] ?? 'ms']);
  if (ms > 2_147_483_647) throw new ConfigError(where, `"${text}" is too long (at most 24 days)`);
  return ms;
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

/** Most connections a backend's maxconn may allow. */
export const MAX_MAXCONN = 1_000_000;

/** `v1`, `v2` or `none`. */
export function parseProxyVersion(text: string, where: string): ProxyVersion {
  if (text === 'v1') return 1;
  if (text === 'v2') return 2;
  if (text === 'none') return 0;
  throw new ConfigError(
    where,
    `"${text}" is not a PROXY protocol version (expected v1, v2 or none)`,
  );
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

/** `HOST:PORT[,weight=N][,backup][,maxconn=N][,slowstart=DURATION][,send-proxy=v1|v2][,name=NAME]`. */
export function parseBackend(text: string, where: string): BackendConfig {
  const [address, ...options] = text.split(',');
  const endpoint = parseBackendAddress(address, where);
  let weight = 1;
  let backup = false;
  let maxconn = 0;
  let slowstartMs = 0;
  let sendProxy: -1 | ProxyVersion = -1;
  let name = endpoint.text;
  for (const option of options) {
    const [key, value] = option.split('=', 2);
    if (key === 'weight' && value !== undefined) {
      weight = parseInteger(value, `${where} ${endpoint.text} weight`, 0, MAX_WEIGHT);
    } else if (key === 'backup' && value === undefined) {
      backup = true;
    } else if (key === 'maxconn' && value !== undefined) {
      maxconn = parseInteger(value, `${where} ${endpoint.text} maxconn`, 0, MAX_MAXCONN);
    } else if (key === 'send-proxy' && value !== undefined) {
      sendProxy = parseProxyVersion(value, `${where} ${endpoint.text} send-proxy`);
    } else if (key === 'slowstart' && value !== undefined) {
      slowstartMs = parseDuration(value, `${where} ${endpoint.text} slowstart`);
    } else if (key === 'name' && value !== undefined) {
      name = checkName(value, `${where} ${endpoint.text} name`);
    } else {
      throw new ConfigError(
        where,
        `"${text}": unknown option "${option}" (expected weight=N, backup, maxconn=N, slowstart=DURATION, send-proxy=v1|v2 or name=NAME)`,
      );
    }
  }
  return {
    ...endpoint,
    name,
    weight,
    backup,
    maxconn,
    slowstartMs,
    sendProxy,
    srv: endpoint.port === 0,
  };
}

function parseWorkers(text: string, where: string): number {
  if (text === 'auto') return availableParallelism();
  return parseInteger(text, where, 1, 256);
}

/** Names a key for an error message: `--retries` for a flag, `FILE: frontends[0].retries` in a file. */
export type Where = (key: string) => string;

/** One frontend as written, before checking: strings as the user gave them, or absent. */
export interface FrontendInput {
  readonly name: string;
  readonly listen: readonly string[];
  /** `HOST:PORT[,weight=N][,backup]`, or the same as an object. */
  readonly backends: readonly (string | BackendInput)[];
  readonly algorithm?: string;
  readonly hashKey?: string;
  readonly sendProxy?: string;
  readonly proxyTimeout?: string;
  readonly connectTimeout?: string;
  readonly idleTimeout?: string;
  readonly queueTimeout?: string;
  readonly retries?: string;
  readonly allow?: readonly string[];
  readonly deny?: readonly string[];
  readonly maxConnsPerSource?: string;
  readonly connRatePerSource?: string;
  readonly health?: {
    readonly enabled?: boolean;
    readonly interval?: string;
    readonly timeout?: string;
    readonly rise?: string;
    readonly fall?: string;
  };
}

export interface BackendInput {
  readonly address: string;
  readonly name?: string;
  readonly weight?: string;
  readonly backup?: boolean;
  readonly maxconn?: string;
  readonly slowstart?: string;
  readonly sendProxy?: string;
}

/** The process-wide settings as written, before checking. */
export interface TopInput {
  readonly workers?: string;
  readonly maxConnections?: string;
  readonly drainTimeout?: string;
  readonly backlog?: string;
  readonly logLevel?: string;
  readonly logFormat?: string;
  readonly accessLog?: boolean;
  readonly statsSocket?: string;
  readonly statsSocketMode?: string;
  readonly statsLevel?: string;
  readonly metrics?: string;
  readonly stateFile?: string;
  readonly resolvers?: readonly string[];
  readonly resolveInterval?: string;
}

/** A frontend or backend name as stats commands address it (`FRONTEND/BACKEND`). */
const NAME = /^[A-Za-z0-9_.:[\]-]{1,64}$/;

/** Checks one frontend and builds its FrontendConfig. */
export function buildFrontend(input: FrontendInput, where: Where): FrontendConfig {
  if (!NAME.test(input.name)) {
    throw new ConfigError(
      where('name'),
      `"${input.name}" is not a name (letters, digits, _ . : - [ ]; at most 64)`,
    );
  }
  const listen = input.listen.map((text, i) => parseListen(text, where(`listen[${i}]`)));
  const backends = input.backends.map((backend, i) =>
    typeof backend === 'string'
      ? parseBackend(backend, where(`backends[${i}]`))
      : backendFromInput(backend, (key) => where(`backends[${i}].${key}`)),
  );
  if (backends.length === 0) throw new ConfigError(where('backends'), 'at least one is required');
  const names = new Set<string>();
  backends.forEach((backend, i) => {
    if (names.has(backend.name)) {
      throw new ConfigError(where(`backends[${i}]`), `${backend.name} is given twice`);
    }
    names.add(backend.name);
  });
  const algorithm = input.algorithm ?? DEFAULTS.algorithm;
  if (!isAlgorithm(algorithm)) {
    throw new ConfigError(
      where('algorithm'),
      `unknown algorithm "${algorithm}" (expected ${ALGORITHMS.join(', ')})`,
    );
  }
  const hashKey = input.hashKey ?? DEFAULTS.hashKey;
  if (!(HASH_KEYS as readonly string[]).includes(hashKey)) {
    throw new ConfigError(
      where('hashKey'),
      `unknown hash key "${hashKey}" (expected ${HASH_KEYS.join(' or ')})`,
    );
  }
  const health = input.health ?? {};
  return {
    name: input.name,
    listen,
    algorithm,
    hashKey: hashKey as HashKey,
    sendProxy:
      input.sendProxy === undefined ? 0 : parseProxyVersion(input.sendProxy, where('sendProxy')),
    proxyTimeoutMs: positiveDuration(
      input.proxyTimeout ?? DEFAULTS.proxyTimeout,
      where('proxyTimeout'),
    ),
    backends,
    connectTimeoutMs: positiveDuration(
      input.connectTimeout ?? DEFAULTS.connectTimeout,
      where('connectTimeout'),
    ),
    idleTimeoutMs: positiveDuration(
      input.idleTimeout ?? DEFAULTS.idleTimeout,
      where('idleTimeout'),
    ),
    queueTimeoutMs: positiveDuration(
      input.queueTimeout ?? DEFAULTS.queueTimeout,
      where('queueTimeout'),
    ),
    retries: parseInteger(input.retries ?? DEFAULTS.retries, where('retries'), 0, 31),
    guard: {
      allow: (input.allow ?? []).map((c, i) => checkCidr(c, where(`allow[${i}]`))),
      deny: (input.deny ?? []).map((c, i) => checkCidr(c, where(`deny[${i}]`))),
      maxConnsPerSource: parseInteger(
        input.maxConnsPerSource ?? '0',
        where('maxConnsPerSource'),
        0,
        1_000_000,
      ),
      connRatePerSource: parseRate(input.connRatePerSource ?? '0', where('connRatePerSource')),
    },
    health: {
      enabled: health.enabled !== false,
      intervalMs: positiveDuration(
        health.interval ?? DEFAULTS.healthInterval,
        where('health.interval'),
      ),
      timeoutMs: positiveDuration(
        health.timeout ?? DEFAULTS.healthTimeout,
        where('health.timeout'),
      ),
      rise: parseInteger(health.rise ?? DEFAULTS.rise, where('health.rise'), 1, 100),
      fall: parseInteger(health.fall ?? DEFAULTS.fall, where('health.fall'), 1, 100),
    },
  };
}

/** `HOST:PORT`, or `srv+NAME` for a DNS SRV name (port 0 until resolved). */
function parseBackendAddress(text: string, where: string): Endpoint {
  const trimmed = text.trim();
  if (trimmed.startsWith('srv+')) {
    const name = trimmed.slice(4);
    if (!/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+\.?$/.test(name)) {
      throw new ConfigError(
        where,
        `"${text}" is not srv+NAME with a DNS name (e.g. srv+_pg._tcp.db.internal)`,
      );
    }
    return { text: trimmed, host: name, port: 0 };
  }
  return parseEndpoint(trimmed, where, false);
}

function backendFromInput(input: BackendInput, where: Where): BackendConfig {
  const endpoint = parseBackendAddress(input.address, where('address'));
  return {
    ...endpoint,
    name: checkName(input.name ?? endpoint.text, where('name')),
    weight:
      input.weight === undefined ? 1 : parseInteger(input.weight, where('weight'), 0, MAX_WEIGHT),
    backup: input.backup === true,
    maxconn:
      input.maxconn === undefined
        ? 0
        : parseInteger(input.maxconn, where('maxconn'), 0, MAX_MAXCONN),
    slowstartMs:
      input.slowstart === undefined ? 0 : parseDuration(input.slowstart, where('slowstart')),
    sendProxy:
      input.sendProxy === undefined ? -1 : parseProxyVersion(input.sendProxy, where('sendProxy')),
    srv: endpoint.port === 0,
  };
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

function checkCidr(text: string, where: string): string {
  try {
    parseCidr(text);
  } catch (err) {
    throw new ConfigError(where, (err as Error).message);
  }
  return text.trim();
}

/** `100/s` or `100`: connections per second. */
function parseRate(text: string, where: string): number {
  const match = /^(\d+)(?:\/s)?$/.exec(text.trim());
  if (match === null) throw new ConfigError(where, `"${text}" is not a rate (expected e.g. 100/s)`);
  return parseInteger(match[1], where, 0, 1_000_000);
}

/** A backend name: what `FRONTEND/BACKEND` addresses it by. */
export function checkName(name: string, where: string): string {
  if (!NAME.test(name)) {
    throw new ConfigError(
      where,
      `"${name}" is not a name (letters, digits, _ . : - [ ]; at most 64)`,
    );
  }
  return name;
}

/** Checks the process-wide settings and every frontend, and builds the Config. */
export function buildConfig(
  top: TopInput,
  frontends: readonly FrontendInput[],
  where: Where,
  frontendWhere: (index: number) => Where,
): Config {
  const built = frontends.map((input, i) => buildFrontend(input, frontendWhere(i)));
  if (built.length === 0) throw new ConfigError(where('frontends'), 'at least one is required');
  const names = new Set<string>();
  const listens = new Map<string, string>();
  built.forEach((frontend, i) => {
    if (names.has(frontend.name)) {
      throw new ConfigError(frontendWhere(i)('name'), `"${frontend.name}" is used twice`);
    }
    names.add(frontend.name);
    frontend.listen.forEach((endpoint, l) => {
      // Port 0 picks a free port each time it is written, except twice in one frontend.
      const key =
        endpoint.port === 0
          ? `${frontend.name} ${endpoint.text}`
          : `${endpoint.host}:${endpoint.port}`;
      const other = listens.get(key);
      if (other !== undefined) {
        throw new ConfigError(
          frontendWhere(i)(`listen[${l}]`),
          `${endpoint.text} is already a listener of ${other}`,
        );
      }
      listens.set(key, frontend.name);
    });
  });
  const logLevel = top.logLevel ?? DEFAULTS.logLevel;
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    throw new ConfigError(
      where('logLevel'),
      `unknown level "${logLevel}" (expected ${LOG_LEVELS.join(', ')})`,
    );
  }
  return {
    workers: parseWorkers(top.workers ?? DEFAULTS.workers, where('workers')),
    maxConnections: parseInteger(
      top.maxConnections ?? DEFAULTS.maxConnections,
      where('maxConnections'),
      0,
      10_000_000,
    ),
    drainTimeoutMs: parseDuration(top.drainTimeout ?? DEFAULTS.drainTimeout, where('drainTimeout')),
    logLevel: logLevel as LogLevel,
    logFormat: parseLogFormat(top.logFormat ?? DEFAULTS.logFormat, where('logFormat')),
    accessLog: top.accessLog === true,
    backlog: parseInteger(top.backlog ?? DEFAULTS.backlog, where('backlog'), 1, 65535),
    stats: parseStats(top, where),
    metrics: top.metrics === undefined ? null : parseEndpoint(top.metrics, where('metrics'), true),
    stateFile: parseStateFile(top.stateFile, where('stateFile')),
    resolvers: (top.resolvers ?? []).map((r, i) => {
      const endpoint = parseEndpoint(r, where(`resolvers[${i}]`), false);
      if (isIP(endpoint.host) === 0) {
        throw new ConfigError(where(`resolvers[${i}]`), `"${r}": a name server is an IP address`);
      }
      return endpoint.text;
    }),
    resolveIntervalMs: positiveDuration(
      top.resolveInterval ?? DEFAULTS.resolveInterval,
      where('resolveInterval'),
    ),
    frontends: built,
  };
}

/** The flag each key comes from, for error messages about flags. */
const FLAG_OF: Record<string, string> = {
  listen: '--listen',
  backends: '--backend',
  algorithm: '--algorithm',
  hashKey: '--hash-key',
  sendProxy: '--send-proxy',
  proxyTimeout: '--proxy-timeout',
  connectTimeout: '--connect-timeout',
  idleTimeout: '--idle-timeout',
  queueTimeout: '--queue-timeout',
  retries: '--retries',
  allow: '--allow',
  deny: '--deny',
  maxConnsPerSource: '--max-conns-per-source',
  connRatePerSource: '--conn-rate-per-source',
  'health.interval': '--health-interval',
  'health.timeout': '--health-timeout',
  'health.rise': '--rise',
  'health.fall': '--fall',
  workers: '--workers',
  maxConnections: '--max-connections',
  drainTimeout: '--drain-timeout',
  backlog: '--backlog',
  logLevel: '--log-level',
  logFormat: '--log-format',
  statsSocket: '--stats-socket',
  statsSocketMode: '--stats-socket-mode',
  statsLevel: '--stats-level',
  metrics: '--metrics',
  stateFile: '--state-file',
  resolvers: '--resolver',
  resolveInterval: '--resolve-interval',
};

/** `backends[2].weight` -> `--backend`: a flag error names the flag. */
export function flagWhere(key: string): string {
  const base = key.replace(/\[\d+\].*$/, '');
  return FLAG_OF[key] ?? FLAG_OF[base] ?? `--${key}`;
}

/** The flags that set process-wide values: they may be combined with --config and override it. */
export const TOP_FLAGS = [
  'workers',
  'maxConnections',
  'drainTimeout',
  'backlog',
  'logLevel',
  'logFormat',
  'accessLog',
  'statsSocket',
  'statsSocketMode',
  'statsLevel',
  'metrics',
  'stateFile',
  'resolvers',
  'resolveInterval',
] as const;

/** The process-wide part of the flags. */
export function topFromFlags(flags: RunFlags): TopInput {
  return {
    workers: flags.workers,
    maxConnections: flags.maxConnections,
    drainTimeout: flags.drainTimeout,
    backlog: flags.backlog,
    logLevel: flags.logLevel,
    logFormat: flags.logFormat,
    accessLog: flags.accessLog,
    statsSocket: flags.statsSocket,
    statsSocketMode: flags.statsSocketMode,
    statsLevel: flags.statsLevel,
    metrics: flags.metrics,
    stateFile: flags.stateFile,
    resolvers: flags.resolver,
    resolveInterval: flags.resolveInterval,
  };
}

/** Checks the flags and builds a Config with one frontend, `default`; hostnames are resolved
 *  later by resolveConfig(). */
export function configFromFlags(flags: RunFlags): Config {
  // Under socket activation the listeners may all come from systemd.
  if ((flags.listen ?? []).length === 0 && process.env.LISTEN_FDS === undefined) {
    throw new ConfigError('--listen', 'at least one is required (or --config FILE)');
  }
  if ((flags.backend ?? []).length === 0) {
    throw new ConfigError('--backend', 'at least one is required');
  }
  const frontend: FrontendInput = {
    name: 'default',
    listen: flags.listen ?? [],
    backends: flags.backend ?? [],
    algorithm: flags.algorithm,
    hashKey: flags.hashKey,
    sendProxy: flags.sendProxy,
    proxyTimeout: flags.proxyTimeout,
    connectTimeout: flags.connectTimeout,
    idleTimeout: flags.idleTimeout,
    queueTimeout: flags.queueTimeout,
    retries: flags.retries,
    allow: flags.allow,
    deny: flags.deny,
    maxConnsPerSource: flags.maxConnsPerSource,
    connRatePerSource: flags.connRatePerSource,
    health: {
      enabled: flags.healthCheck,
      interval: flags.healthInterval,
      timeout: flags.healthTimeout,
      rise: flags.rise,
      fall: flags.fall,
    },
  };
  return buildConfig(topFromFlags(flags), [frontend], flagWhere, () => flagWhere);
}

function parseStateFile(path: string | undefined, where: string): string | null {
  if (path === undefined) return null;
  if (path.trim() === '') throw new ConfigError(where, 'empty path');
  return path;
}

function parseLogFormat(text: string, where: string): LogFormat {
  if (!(LOG_FORMATS as readonly string[]).includes(text)) {
    throw new ConfigError(where, `unknown format "${text}" (expected json or pretty)`);
  }
  return text as LogFormat;
}

function parseStats(top: TopInput, where: Where): StatsConfig {
  const modeText = top.statsSocketMode ?? DEFAULTS.statsSocketMode;
  if (!/^0?[0-7]{3}$/.test(modeText)) {
    throw new ConfigError(where('statsSocketMode'), `"${modeText}" is not an octal mode like 0600`);
  }
  const mode = Number.parseInt(modeText, 8);
  if ((mode & 0o600) !== 0o600) {
    throw new ConfigError(
      where('statsSocketMode'),
      `${modeText} must let the owner read and write`,
    );
  }
  if ((mode & 0o007) !== 0) {
    throw new ConfigError(
      where('statsSocketMode'),
      `${modeText} would let every user in (widen to a group: 0660)`,
    );
  }
  const level = top.statsLevel ?? DEFAULTS.statsLevel;
  if (!(STATS_LEVELS as readonly string[]).includes(level)) {
    throw new ConfigError(where('statsLevel'), `unknown level "${level}" (expected read or admin)`);
  }
  const socket = top.statsSocket ?? null;
  if (socket !== null && socket.trim() === '') {
    throw new ConfigError(where('statsSocket'), 'empty path');
  }
  return { socket, mode, level: level as StatsLevel };
}

/** A duration that must be more than zero (a timeout or an interval). */
function positiveDuration(text: string, where: string): number {
  const ms = parseDuration(text, where);
  if (ms <= 0) throw new ConfigError(where, 'must be more than 0');
  return ms;
}

/** The backend with its hostname resolved to an address (the first one DNS gives). */
export async function resolveBackend(
  backend: BackendConfig,
  where: string,
): Promise<BackendConfig> {
  if (isIP(backend.host) !== 0) return backend;
  try {
    const { address } = await lookup(backend.host);
    return { ...backend, host: address };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw new ConfigError(where, `cannot resolve ${backend.host} (${code})`);
  }
}
