// THE table of settings. Each setting is declared once, here: its key, flag, config-file key,
// scope, parser, default, help and choices. Everything else derives from it: commander's options
// (flags.ts), the file's schema (file.ts), where a value lands in the Config (build.ts), which
// flags may stand next to --config, --help, and the README's flag table (markdownTable, checked
// by a test). Invariant: adding a setting is one entry here plus the code that uses its value.

import { ALGORITHMS } from '../core/scheduler.ts';
import { BACKEND_GRAMMAR, parseBackend } from './backend.ts';
import {
  checkCidr,
  checkName,
  durationAtLeast,
  integer,
  parseBalanceFactor,
  parseChoice,
  parseDuration,
  parseEndpoint,
  parseEscaped,
  parseGrpcService,
  parseHostHeader,
  parseHttpPath,
  parseListen,
  parseMetricSelector,
  parsePath,
  parsePort,
  parseProxyVersion,
  parseRate,
  parseResolver,
  parseServerName,
  parseSocketMode,
  parseStatusRanges,
  parseWorkers,
  positiveDuration,
} from './parse.ts';
import { HASH_KEYS, LOG_FORMATS, LOG_LEVELS, PROXY_VERSIONS, STATS_LEVELS } from './types.ts';

/** Where a setting applies: the whole process, each frontend (the door: listeners, who gets in,
 *  client timeouts), or each pool (the backends and how they are reached; from flags, and in a
 *  frontend that lists its own backends, the frontend's pool). */
export type Scope = 'process' | 'frontend' | 'pool';

/**
 * `value`: one text (a YAML string or number); `list`: repeatable flag, YAML list (or one item);
 * `switch`: a flag without a value, a YAML boolean.
 */
export type Kind = 'value' | 'list' | 'switch';

export interface Setting {
  /** Unique; how code and tests name it. */
  readonly key: string;
  /** `--connect-timeout`, or `--no-health-check` for a switch that turns something off; null:
   *  the file only. */
  readonly flag: string | null;
  readonly short?: string;
  /** The flag's value as help shows it: `<duration>`. */
  readonly arg?: string;
  /** Its key in the file, within its scope: `connectTimeout`, `health.interval`, `log.level`. */
  readonly file: string;
  readonly scope: Scope;
  readonly kind: Kind;
  /** Where the value lands: a path in Config (process) or FrontendConfig (frontend). */
  readonly target: string;
  /** As a user would write it; a switch's value when not given. Absent: null, or [] for a list. */
  readonly default?: string | boolean;
  readonly help: string;
  /** The only words it takes, for help (the parser checks them). */
  readonly choices?: readonly string[];
  /** Required in the file (a frontend's name and backends). */
  readonly required?: boolean;
  /** A `value` whose flag may be given bare (`--health-grpc`): the text it then stands for; in
   *  the file, `true`. */
  readonly bare?: string;
  /** Text (for a list: each item) to its value. A `list` of backends also takes file objects:
   *  see file.ts. */
  readonly parse?: (text: string, where: string) => unknown;
}

/** The range of `priority`: wide enough for any set of classes, small enough to read. */
export const MIN_PRIORITY = -1000;
export const MAX_PRIORITY = 1000;

function choice(choices: readonly string[], what: string) {
  return (text: string, where: string) => parseChoice(text, where, choices, what);
}

/** The shortest time between probes of one backend: ten a second is already a lot of probing. */
export const MIN_HEALTH_INTERVAL_MS = 100;

/** The shortest time between two reads of a backend's metrics page: what inference gateways use
 *  (the Gateway API inference extension's endpoint picker reads every 50 ms by default). */
export const MIN_LOAD_INTERVAL_MS = 50;

export const SETTINGS: readonly Setting[] = [
  // ---- frontend: what to listen on and where to send it
  {
    key: 'name',
    flag: null,
    file: 'name',
    scope: 'frontend',
    kind: 'value',
    target: 'name',
    default: 'default',
    required: true,
    help: 'the frontend\'s name, as stats and admin commands call it (from flags: "default")',
    parse: checkName,
  },
  {
    key: 'listen',
    flag: '--listen',
    short: '-l',
    arg: '<host:port[,accept-proxy]>',
    file: 'listen',
    scope: 'frontend',
    kind: 'list',
    target: 'listen',
    help: 'address to accept clients on; repeatable ([::]:80 for IPv6; port 0: any free port); accept-proxy: clients come with a PROXY header',
    parse: parseListen,
  },
  {
    key: 'serverNames',
    flag: null,
    file: 'serverNames',
    scope: 'frontend',
    kind: 'list',
    target: 'serverNames',
    help: 'TLS server names this frontend takes on a listen address other frontends may share (api.example.com, *.example.com); read from the ClientHello, TLS is not terminated. On a shared address, the one frontend without serverNames takes every other client',
    parse: parseServerName,
  },
  {
    key: 'sources',
    flag: null,
    file: 'sources',
    scope: 'frontend',
    kind: 'list',
    target: 'sources',
    help: 'client networks (CIDRs) this frontend takes on a listen address other frontends may share: the most specific match wins, after the server name where frontends have both; the one frontend with neither serverNames nor sources takes every other client',
    parse: checkCidr,
  },
  {
    key: 'pool',
    flag: null,
    file: 'pool',
    scope: 'frontend',
    kind: 'value',
    target: 'pool',
    help: "the pool (of `pools:`) this frontend sends its clients to, instead of listing its own backends and their settings; without it, the frontend's backends and the pool settings it gives are its own pool, named after it",
    parse: checkName,
  },
  {
    key: 'priority',
    flag: null,
    file: 'priority',
    scope: 'frontend',
    kind: 'value',
    target: 'priority',
    default: '0',
    help: `its clients' class on a pool shared with other frontends, ${MIN_PRIORITY}..${MAX_PRIORITY}: when the pool's backends are at their maxconn, a freed slot goes to a waiting client of the lowest number first, whichever frontend and worker it waits in`,
    parse: integer(MIN_PRIORITY, MAX_PRIORITY),
  },
  {
    key: 'share',
    flag: null,
    file: 'share',
    scope: 'frontend',
    kind: 'value',
    target: 'share',
    default: '100',
    help: "the percent (1..100) of each backend's maxconn its clients may hold; beyond that they wait in the queue even when the backend has room (needs a maxconn on the pool's backends)",
    parse: integer(1, 100),
  },
  {
    key: 'readyMinUp',
    flag: '--ready-min-up',
    arg: '<n>',
    file: 'readyMinUp',
    scope: 'frontend',
    kind: 'value',
    target: 'readyMinUp',
    default: '1',
    help: 'fewer backends up than this makes fulcrum not ready (/ready, fulcrum ready); 0: this frontend needs none',
    parse: integer(0, 256),
  },
  {
    key: 'backends',
    flag: '--backend',
    short: '-b',
    arg: '<spec>',
    file: 'backends',
    scope: 'pool',
    kind: 'list',
    target: 'backends',
    help: `a backend, ${BACKEND_GRAMMAR}; repeatable. srv+NAME follows a DNS SRV name, a hostname every address it has; weight 0..256 (0 = never picked); backup: used only when no other can take a connection; maxconn: most live connections, more wait in the queue; slowstart: its weight ramps up over this long after it comes up; send-proxy: a PROXY header for it; name: how stats call it`,
    parse: parseBackend,
  },
  {
    key: 'algorithm',
    flag: '--algorithm',
    short: '-a',
    arg: '<name>',
    file: 'algorithm',
    scope: 'pool',
    kind: 'value',
    target: 'algorithm',
    default: 'least-conn',
    choices: ALGORITHMS,
    help: 'how a backend is picked',
    parse: choice(ALGORITHMS, 'algorithm'),
  },
  {
    key: 'hashKey',
    flag: '--hash-key',
    arg: '<key>',
    file: 'hashKey',
    scope: 'pool',
    kind: 'value',
    target: 'hashKey',
    default: 'source-ip',
    choices: HASH_KEYS,
    help: 'what maglev hashes: the client address, address and port, or the TLS server name (read from the ClientHello)',
    parse: choice(HASH_KEYS, 'hash key'),
  },
  {
    key: 'hashBalanceFactor',
    flag: '--hash-balance-factor',
    arg: '<percent>',
    file: 'hashBalanceFactor',
    scope: 'pool',
    kind: 'value',
    target: 'hashBalanceFactor',
    default: '0',
    help: 'maglev with bounded loads: no backend takes a new client while it holds more than this percent of the weighted average (at least 100; 0 = off); its clients go on along their fixed sequence',
    parse: parseBalanceFactor,
  },
  {
    key: 'sendProxy',
    flag: '--send-proxy',
    arg: '<version>',
    file: 'sendProxy',
    scope: 'pool',
    kind: 'value',
    target: 'sendProxy',
    default: 'none',
    choices: PROXY_VERSIONS,
    help: 'write a PROXY protocol header to every backend that does not say otherwise',
    parse: parseProxyVersion,
  },
  {
    key: 'proxyTimeout',
    flag: '--proxy-timeout',
    arg: '<duration>',
    file: 'proxyTimeout',
    scope: 'frontend',
    kind: 'value',
    target: 'proxyTimeoutMs',
    default: '5s',
    help: 'on an accept-proxy listener, a client must send its PROXY header within',
    parse: positiveDuration,
  },
  {
    key: 'inspectTimeout',
    flag: '--inspect-timeout',
    arg: '<duration>',
    file: 'inspectTimeout',
    scope: 'frontend',
    kind: 'value',
    target: 'inspectTimeoutMs',
    default: '5s',
    help: 'where the ClientHello is read (serverNames, --hash-key sni), a client must send it within',
    parse: positiveDuration,
  },
  {
    key: 'connectTimeout',
    flag: '--connect-timeout',
    arg: '<duration>',
    file: 'connectTimeout',
    scope: 'pool',
    kind: 'value',
    target: 'connectTimeoutMs',
    default: '3s',
    help: 'give up connecting to a backend after',
    parse: positiveDuration,
  },
  {
    key: 'idleTimeout',
    flag: '--idle-timeout',
    arg: '<duration>',
    file: 'idleTimeout',
    scope: 'frontend',
    kind: 'value',
    target: 'idleTimeoutMs',
    default: '5m',
    help: 'close a connection with no traffic for',
    parse: positiveDuration,
  },
  {
    key: 'queueTimeout',
    flag: '--queue-timeout',
    arg: '<duration>',
    file: 'queueTimeout',
    scope: 'frontend',
    kind: 'value',
    target: 'queueTimeoutMs',
    default: '5s',
    help: 'when every backend is at its maxconn, a new client waits this long for room',
    parse: positiveDuration,
  },
  {
    key: 'retries',
    flag: '--retries',
    arg: '<n>',
    file: 'retries',
    scope: 'pool',
    kind: 'value',
    target: 'retries',
    default: '2',
    help: 'connect attempts on other backends after a refused or timed-out one',
    parse: integer(0, 31),
  },
  {
    key: 'allow',
    flag: '--allow',
    arg: '<cidr>',
    file: 'allow',
    scope: 'frontend',
    kind: 'list',
    target: 'guard.allow',
    help: 'only clients in these networks may connect; repeatable',
    parse: checkCidr,
  },
  {
    key: 'acceptProxyFrom',
    flag: '--accept-proxy-from',
    arg: '<cidr>',
    file: 'acceptProxyFrom',
    scope: 'frontend',
    kind: 'list',
    target: 'guard.proxyFrom',
    help: 'on accept-proxy listeners, only peers in these networks may send a PROXY header (others are refused); repeatable',
    parse: checkCidr,
  },
  {
    key: 'deny',
    flag: '--deny',
    arg: '<cidr>',
    file: 'deny',
    scope: 'frontend',
    kind: 'list',
    target: 'guard.deny',
    help: 'clients in these networks are refused (wins over --allow); repeatable',
    parse: checkCidr,
  },
  {
    key: 'maxConnsPerSource',
    flag: '--max-conns-per-source',
    arg: '<n>',
    file: 'maxConnsPerSource',
    scope: 'frontend',
    kind: 'value',
    target: 'guard.maxConnsPerSource',
    default: '0',
    help: 'live connections one client address may hold; more are closed at once (0 = no limit)',
    parse: integer(0, 1_000_000),
  },
  {
    key: 'connRatePerSource',
    flag: '--conn-rate-per-source',
    arg: '<n/s>',
    file: 'connRatePerSource',
    scope: 'frontend',
    kind: 'value',
    target: 'guard.connRatePerSource',
    default: '0',
    help: 'new connections per second one client address may open; more are closed at once (0 = no limit)',
    parse: parseRate,
  },
  {
    key: 'healthCheck',
    flag: '--no-health-check',
    file: 'health.enabled',
    scope: 'pool',
    kind: 'switch',
    target: 'health.enabled',
    default: true,
    help: 'no probes: every backend counts as up (retries still cover failed connects); in the file, health: false',
  },
  {
    key: 'healthInterval',
    flag: '--health-interval',
    arg: '<duration>',
    file: 'health.interval',
    scope: 'pool',
    kind: 'value',
    target: 'health.intervalMs',
    default: '2s',
    help: `time between probes of each backend (at least ${MIN_HEALTH_INTERVAL_MS}ms)`,
    parse: durationAtLeast(MIN_HEALTH_INTERVAL_MS),
  },
  {
    key: 'healthTimeout',
    flag: '--health-timeout',
    arg: '<duration>',
    file: 'health.timeout',
    scope: 'pool',
    kind: 'value',
    target: 'health.timeoutMs',
    default: '1s',
    help: 'a probe not done by then (connected, and for HTTP, send/expect and gRPC, answered) fails',
    parse: positiveDuration,
  },
  {
    key: 'rise',
    flag: '--rise',
    arg: '<n>',
    file: 'health.rise',
    scope: 'pool',
    kind: 'value',
    target: 'health.rise',
    default: '2',
    help: 'consecutive successful probes that mark a down backend up',
    parse: integer(1, 100),
  },
  {
    key: 'fall',
    flag: '--fall',
    arg: '<n>',
    file: 'health.fall',
    scope: 'pool',
    kind: 'value',
    target: 'health.fall',
    default: '3',
    help: 'consecutive failures (probes or client connects) that mark an up backend down',
    parse: integer(1, 100),
  },
  {
    key: 'healthHttp',
    flag: '--health-http',
    arg: '<path>',
    file: 'health.http',
    scope: 'pool',
    kind: 'value',
    target: 'health.http',
    help: 'probe with GET PATH over HTTP/1.1 (Connection: close): healthy when the status is in --health-expect-status',
    parse: parseHttpPath,
  },
  {
    key: 'healthHost',
    flag: '--health-host',
    arg: '<name>',
    file: 'health.host',
    scope: 'pool',
    kind: 'value',
    target: 'health.host',
    help: "the HTTP probe's Host header (default: the backend's address)",
    parse: parseHostHeader,
  },
  {
    key: 'healthExpectStatus',
    flag: '--health-expect-status',
    arg: '<list>',
    file: 'health.expectStatus',
    scope: 'pool',
    kind: 'value',
    target: 'health.expectStatus',
    default: '200-399',
    help: 'HTTP statuses that count as healthy: ranges or single codes, comma-separated (200-299,404)',
    parse: parseStatusRanges,
  },
  {
    key: 'healthSend',
    flag: '--health-send',
    arg: '<text>',
    file: 'health.send',
    scope: 'pool',
    kind: 'value',
    target: 'health.send',
    help: 'write TEXT once connected (escapes \\r \\n \\t \\\\ \\xHH); needs --health-expect',
    parse: parseEscaped,
  },
  {
    key: 'healthExpect',
    flag: '--health-expect',
    arg: '<text>',
    file: 'health.expect',
    scope: 'pool',
    kind: 'value',
    target: 'health.expect',
    help: 'healthy when the reply contains TEXT (same escapes); alone, the greeting is matched and nothing is sent',
    parse: parseEscaped,
  },
  {
    key: 'healthGrpc',
    flag: '--health-grpc',
    arg: '[service]',
    file: 'health.grpc',
    scope: 'pool',
    kind: 'value',
    target: 'health.grpc',
    bare: '',
    help: 'probe with grpc.health.v1.Health/Check over cleartext HTTP/2: healthy on SERVING (no service: the whole server; in the file, grpc: true)',
    parse: parseGrpcService,
  },
  {
    key: 'healthPort',
    flag: '--health-port',
    arg: '<port>',
    file: 'health.port',
    scope: 'pool',
    kind: 'value',
    target: 'health.port',
    help: "probe this port instead of each backend's own (a sidecar or admin port)",
    parse: parsePort,
  },
  {
    key: 'agentPort',
    flag: '--agent-port',
    arg: '<port>',
    file: 'agent.port',
    scope: 'pool',
    kind: 'value',
    target: 'agent.port',
    help: "ask every backend's agent on this port (HAProxy's agent protocol; a backend's agent=PORT wins)",
    parse: parsePort,
  },
  {
    key: 'agentInterval',
    flag: '--agent-interval',
    arg: '<duration>',
    file: 'agent.interval',
    scope: 'pool',
    kind: 'value',
    target: 'agent.intervalMs',
    default: '2s',
    help: `time between two questions to each agent (at least ${MIN_HEALTH_INTERVAL_MS}ms)`,
    parse: durationAtLeast(MIN_HEALTH_INTERVAL_MS),
  },
  {
    key: 'agentSend',
    flag: '--agent-send',
    arg: '<text>',
    file: 'agent.send',
    scope: 'pool',
    kind: 'value',
    target: 'agent.send',
    help: 'write TEXT to the agent once connected (same escapes as --health-send)',
    parse: parseEscaped,
  },
  {
    key: 'loadMetric',
    flag: '--load-metric',
    arg: '<name{label="v"}>',
    file: 'load.metric',
    scope: 'pool',
    kind: 'value',
    target: 'load.metric',
    help: "read each backend's load from this Prometheus metric on its metrics page (matching series are summed), for least-load and the stats",
    parse: parseMetricSelector,
  },
  {
    key: 'loadMetricsPath',
    flag: '--load-metrics-path',
    arg: '<path>',
    file: 'load.path',
    scope: 'pool',
    kind: 'value',
    target: 'load.path',
    default: '/metrics',
    help: 'where the metrics page is',
    parse: parseHttpPath,
  },
  {
    key: 'loadMetricsPort',
    flag: '--load-metrics-port',
    arg: '<port>',
    file: 'load.port',
    scope: 'pool',
    kind: 'value',
    target: 'load.port',
    help: "read the metrics page on this port (default: each backend's own)",
    parse: parsePort,
  },
  {
    key: 'loadInterval',
    flag: '--load-interval',
    arg: '<duration>',
    file: 'load.interval',
    scope: 'pool',
    kind: 'value',
    target: 'load.intervalMs',
    default: '1s',
    help: `read every metrics page this often (at least ${MIN_LOAD_INTERVAL_MS}ms); a report older than 3 intervals is dropped`,
    parse: durationAtLeast(MIN_LOAD_INTERVAL_MS),
  },
  {
    key: 'loadTimeout',
    flag: '--load-timeout',
    arg: '<duration>',
    file: 'load.timeout',
    scope: 'pool',
    kind: 'value',
    target: 'load.timeoutMs',
    default: '2s',
    help: 'a metrics page not read whole by then is a failed report (whatever the interval)',
    parse: positiveDuration,
  },
  // ---- process
  {
    key: 'workers',
    flag: '--workers',
    short: '-w',
    arg: '<n|auto>',
    file: 'workers',
    scope: 'process',
    kind: 'value',
    target: 'workers',
    default: 'auto',
    help: 'data-plane threads (auto = available CPUs)',
    parse: parseWorkers,
  },
  {
    key: 'maxConnections',
    flag: '--max-connections',
    arg: '<n>',
    file: 'maxConnections',
    scope: 'process',
    kind: 'value',
    target: 'maxConnections',
    default: '0',
    help: 'live connections over all workers; beyond it new clients are closed (0 = no limit)',
    parse: integer(0, 10_000_000),
  },
  {
    key: 'drainTimeout',
    flag: '--drain-timeout',
    arg: '<duration>',
    file: 'drainTimeout',
    scope: 'process',
    kind: 'value',
    target: 'drainTimeoutMs',
    default: '30s',
    help: 'on SIGTERM/SIGINT, wait this long for connections to finish',
    parse: parseDuration,
  },
  {
    key: 'grace',
    flag: '--grace',
    arg: '<duration>',
    file: 'grace',
    scope: 'process',
    kind: 'value',
    target: 'graceMs',
    default: '0s',
    help: 'on SIGTERM/SIGINT, report not ready at once but keep accepting this long (for keepalived or a router to move traffic away), then drain',
    parse: parseDuration,
  },
  {
    key: 'backlog',
    flag: '--backlog',
    arg: '<n>',
    file: 'backlog',
    scope: 'process',
    kind: 'value',
    target: 'backlog',
    // Linux's default somaxconn: a longer backlog is silently cut to it anyway.
    default: '511',
    help: 'listen backlog (the kernel caps it at net.core.somaxconn)',
    parse: integer(1, 65535),
  },
  {
    key: 'accessLog',
    flag: '--access-log',
    file: 'log.access',
    scope: 'process',
    kind: 'switch',
    target: 'accessLog',
    default: false,
    help: 'one JSON line per finished connection: client, backend, bytes, times, how it ended',
  },
  {
    key: 'logFormat',
    flag: '--log-format',
    arg: '<format>',
    file: 'log.format',
    scope: 'process',
    kind: 'value',
    target: 'logFormat',
    default: 'json',
    choices: LOG_FORMATS,
    help: 'json for journald and log shippers, pretty for a terminal',
    parse: choice(LOG_FORMATS, 'format'),
  },
  {
    key: 'logLevel',
    flag: '--log-level',
    arg: '<level>',
    file: 'log.level',
    scope: 'process',
    kind: 'value',
    target: 'logLevel',
    default: 'info',
    choices: LOG_LEVELS,
    help: 'what is logged',
    parse: choice(LOG_LEVELS, 'level'),
  },
  {
    key: 'statsSocket',
    flag: '--stats-socket',
    arg: '<path>',
    file: 'statsSocket.path',
    scope: 'process',
    kind: 'value',
    target: 'stats.socket',
    help: 'serve stats and admin commands on this unix socket (in the file, statsSocket: PATH is short for statsSocket.path)',
    parse: parsePath,
  },
  {
    key: 'statsSocketMode',
    flag: '--stats-socket-mode',
    arg: '<octal>',
    file: 'statsSocket.mode',
    scope: 'process',
    kind: 'value',
    target: 'stats.mode',
    default: '0600',
    help: 'file mode of the stats socket (0660 lets a group in)',
    parse: parseSocketMode,
  },
  {
    key: 'statsLevel',
    flag: '--stats-level',
    arg: '<level>',
    file: 'statsSocket.level',
    scope: 'process',
    kind: 'value',
    target: 'stats.level',
    default: 'admin',
    choices: STATS_LEVELS,
    help: 'what the stats socket allows',
    parse: choice(STATS_LEVELS, 'level'),
  },
  {
    key: 'metrics',
    flag: '--metrics',
    arg: '<host:port>',
    file: 'metrics',
    scope: 'process',
    kind: 'value',
    target: 'metrics',
    help: 'serve Prometheus metrics on http://HOST:PORT/metrics',
    parse: (text, where) => parseEndpoint(text, where, true),
  },
  {
    key: 'resolvers',
    flag: '--resolver',
    arg: '<host:port>',
    file: 'resolvers',
    scope: 'process',
    kind: 'list',
    target: 'resolvers',
    help: "a DNS server for hostname and srv+NAME backends; repeatable (default: the system's)",
    parse: parseResolver,
  },
  {
    key: 'resolveInterval',
    flag: '--resolve-interval',
    arg: '<duration>',
    file: 'resolveInterval',
    scope: 'process',
    kind: 'value',
    target: 'resolveIntervalMs',
    default: '30s',
    help: 'resolve hostname and SRV backends again this often (sooner if the TTL is shorter)',
    parse: positiveDuration,
  },
  {
    key: 'stateFile',
    flag: '--state-file',
    arg: '<path>',
    file: 'stateFile',
    scope: 'process',
    kind: 'value',
    target: 'stateFile',
    help: 'keep runtime changes (add/del backend, weights, disable/drain) here, across reloads and restarts',
    parse: parsePath,
  },
];

/**
 * Groups of file keys that may also be written as one value: `health: false` turns probes off,
 * `statsSocket: PATH` gives only its path.
 */
export const FILE_SHORTHANDS: ReadonlyArray<{
  readonly scope: Scope;
  readonly group: string;
  readonly when: 'false' | 'string';
  /** The key of the group the one value stands for; `false` sets it to false. */
  readonly key: string;
}> = [
  { scope: 'pool', group: 'health', when: 'false', key: 'enabled' },
  { scope: 'process', group: 'statsSocket', when: 'string', key: 'path' },
];

export function settingsOf(scope: Scope): Setting[] {
  return SETTINGS.filter((s) => s.scope === scope);
}

/** The README's table of flags and file keys, generated: a test keeps the README equal to it. */
export function markdownTable(): string {
  const rows = ['| flag | file key | default | what it does |', '| --- | --- | --- | --- |'];
  for (const s of SETTINGS) {
    const flag =
      s.flag === null
        ? ''
        : `\`${[s.short, s.flag].filter(Boolean).join(', ')}${s.arg === undefined ? '' : ` ${s.arg}`}\``;
    const file =
      s.scope === 'process'
        ? `\`${s.file}\``
        : s.scope === 'frontend'
          ? `\`frontends[].${s.file}\``
          : `\`pools[].${s.file}\` or \`frontends[].${s.file}\``;
    const fallback = s.default === undefined ? '' : `\`${String(s.default)}\``;
    const choices = s.choices === undefined ? '' : ` (${s.choices.join(', ')})`;
    rows.push(
      `| ${flag.replaceAll('|', '\\|')} | ${file} | ${fallback} | ${(s.help + choices).replaceAll('|', '\\|')} |`,
    );
  }
  return rows.join('\n');
}
