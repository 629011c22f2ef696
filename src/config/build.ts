// Inputs (flags or the file, as written) -> one validated Config. Every setting's value is
// parsed by its entry in the settings table and put where the table says; then what spans
// settings is checked here: required values, unique names, listeners, and the limits.
// Invariant: `fulcrum check`, a start and a reload all build through buildConfig, so what one
// accepts the others accept; the result is plain data, never mutated afterwards.

import { BlockList } from 'node:net';
import { MAX_BACKENDS } from '../shared/table.ts';
import { backendFromObject } from './backend.ts';
import { ConfigError, checkName, parseCidr, parsePath, parseServerName } from './parse.ts';
import type { Scope, Setting } from './settings.ts';
import { SETTINGS, settingsOf } from './settings.ts';
import type {
  BackendConfig,
  BackendTlsConfig,
  Config,
  FrontendConfig,
  TlsCertificate,
  TlsConfig,
} from './types.ts';

/** A value as written, and where: `--retries`, or `FILE: frontends[0].retries`. */
export interface Input {
  /** Text for a value, a boolean for a switch, items (texts, or backend objects) for a list. */
  readonly value: string | boolean | readonly unknown[];
  readonly where: string;
  /** From the file: a list item's place is named with its index (`backends[2]`). */
  readonly indexed: boolean;
}

/** The settings of one scope as written, by setting key. */
export type Inputs = ReadonlyMap<string, Input>;

/** Where list item `i` was written: `FILE: ...backends[2]`, or the flag. */
function itemWhere(input: Input, i: number): string {
  return input.indexed ? `${input.where}[${i}]` : input.where;
}

/** The value of `setting`: parsed from what was written, else its default. */
function settingValue(setting: Setting, input: Input | undefined): unknown {
  const parse = setting.parse ?? ((text: string) => text);
  if (setting.kind === 'switch')
    return input === undefined ? setting.default === true : input.value === true;
  if (setting.kind === 'list') {
    if (input === undefined) return [];
    return (input.value as readonly unknown[]).map((item, i) => {
      const where = itemWhere(input, i);
      // A backend may be an object in the file: `{ address, weight, ... }`; a certificate is one.
      if (typeof item === 'object' && item !== null) {
        const at = (key: string) => `${where}.${key}`;
        return setting.key === 'tlsCertificates'
          ? certificateFromObject(item as Record<string, unknown>, at)
          : backendFromObject(item as Record<string, unknown>, at);
      }
      return parse(String(item), where);
    });
  }
  if (input !== undefined) return parse(String(input.value), input.where);
  if (setting.default === undefined) return null;
  return parse(String(setting.default), setting.flag ?? setting.file);
}

/** Every setting of `scope` parsed and put at its target path. */
function buildScope(scope: Scope, inputs: Inputs): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const setting of settingsOf(scope)) {
    const path = setting.target.split('.');
    let at = out;
    for (const key of path.slice(0, -1)) {
      at[key] ??= {};
      at = at[key] as Record<string, unknown>;
    }
    at[path[path.length - 1]] = settingValue(setting, inputs.get(setting.key));
  }
  return out;
}

/** Where a frontend-level check points: the key as written for this frontend. */
function whereIn(inputs: Inputs, key: string, fallback: string): string {
  return inputs.get(key)?.where ?? fallback;
}

/** Where `key` of this frontend (or pool) would have been written: beside its name in the file,
 *  or the flag. */
function keyWhere(inputs: Inputs, key: string, flag: string): string {
  const name = inputs.get('name');
  return (
    inputs.get(key)?.where ?? (name?.indexed === true ? name.where.replace(/name$/, key) : flag)
  );
}

/** Most source networks a frontend lists: each costs a few integer operations per client on
 *  its address (data/networks.ts); a longer list belongs in allow/deny or a firewall. */
export const MAX_SOURCES = 256;

/** One frontend from its settings and its pool's (its own, or a named one's: `pool` says). */
export function buildFrontend(inputs: Inputs): FrontendConfig {
  const built = { ...buildScope('frontend', inputs), ...buildPool(inputs) };
  const protocol = protocolOf(built.listen as FrontendConfig['listen'], inputs);
  const pool = built.pool ?? built.name;
  const health = built.health as FrontendConfig['health'];
  const frontend = {
    ...built,
    pool,
    protocol,
    health: { ...health, udp: protocol === 'udp' && udpProbe(health) },
  } as unknown as FrontendConfig;
  checkProtocol(frontend, inputs);
  (frontend as { tls: TlsConfig }).tls = buildTls(built.tls as BuiltTls, inputs);
  (frontend as { backendTls: BackendTlsConfig }).backendTls = buildBackendTls(
    frontend.backendTls,
    inputs,
  );
  if (frontend.sources.length > MAX_SOURCES) {
    throw new ConfigError(
      keyWhere(inputs, 'sources', 'sources'),
      `${frontend.sources.length} networks; a frontend has at most ${MAX_SOURCES}`,
    );
  }
  return frontend;
}

/** What a frontend's listen addresses speak: all `,udp` or none. */
function protocolOf(listen: FrontendConfig['listen'], inputs: Inputs): FrontendConfig['protocol'] {
  const udp = listen.filter((e) => e.udp).length;
  if (udp > 0 && udp < listen.length) {
    const l = listen.findIndex((e) => e.udp !== listen[0].udp);
    throw new ConfigError(
      listenWhere(inputs, l),
      `${listen[l].text}${listen[l].udp ? ',udp is UDP' : ' is TCP'} and ${listen[0].text}${listen[0].udp ? ',udp' : ''} is not: one frontend listens on TCP or on UDP, never both (make two frontends)`,
    );
  }
  return udp > 0 ? 'udp' : 'tcp';
}

/** Whether a UDP pool's probe is a datagram: unless it is HTTP, gRPC, or a plain TCP connect to
 *  a health port (a service's TCP side). */
function udpProbe(health: FrontendConfig['health']): boolean {
  if (health.http !== null || health.grpc !== null) return false;
  return !(health.port !== null && health.expect === null);
}

/** A certificate as the file writes it: `{ cert, key, names }` (checked in shape by the schema). */
function certificateFromObject(
  item: Record<string, unknown>,
  where: (key: string) => string,
): TlsCertificate {
  const names = (item.names as string[] | undefined) ?? [];
  return unreadCertificate(
    parsePath(String(item.cert), where('cert')),
    parsePath(String(item.key), where('key')),
    names.map((name, i) => parseServerName(name, `${where('names')}[${i}]`)),
  );
}

/** A certificate whose files are still to be read (config/tls.ts reads them). */
export function unreadCertificate(
  certFile: string,
  keyFile: string,
  names: readonly string[],
): TlsCertificate {
  return {
    certFile,
    keyFile,
    names,
    cert: '',
    key: '',
    serverNames: names,
    serial: '',
    subject: '',
    notAfter: 0,
    keyType: '',
  };
}

/** The tls settings as the table puts them: --tls-key's files still apart from --tls-cert's. */
type BuiltTls = Omit<TlsConfig, 'caPem' | 'crlPem' | 'ticketKeyBytes'> & {
  keys: readonly string[];
};

/** Every tls setting that needs certificates to mean anything, by key. */
const TLS_SETTINGS = [
  'tlsKeys',
  'tlsCa',
  'tlsCrl',
  'tlsVerify',
  'tlsAlpn',
  'tlsStrictSni',
  'tlsMinVersion',
  'tlsHandshakeTimeout',
  'tlsTicketKeys',
];

/** The frontend's TLS: --tls-cert and --tls-key paired in order, and the settings that need
 *  each other (a client certificate needs a CA to be checked against). */
function buildTls(built: BuiltTls, inputs: Inputs): TlsConfig {
  const { keys, ...rest } = built;
  const certsWhere = keyWhere(inputs, 'tlsCertificates', '--tls-cert');
  let certificates = built.certificates;
  if (keys.length > 0 || certificates.some((c) => c.keyFile === '')) {
    // From flags: the nth --tls-key is the nth --tls-cert's.
    if (keys.length !== certificates.length) {
      throw new ConfigError(
        keys.length > certificates.length ? '--tls-key' : '--tls-cert',
        `${certificates.length} --tls-cert and ${keys.length} --tls-key: give one key after each certificate`,
      );
    }
    certificates = certificates.map((c, i) => unreadCertificate(c.certFile, keys[i], c.names));
  }
  if (certificates.length === 0) {
    const given = TLS_SETTINGS.find((key) => inputs.has(key));
    if (given !== undefined) {
      throw new ConfigError(
        (inputs.get(given) as Input).where,
        `needs a certificate to terminate TLS with (${settingName('tlsCertificates', certsWhere !== '--tls-cert')})`,
      );
    }
  }
  if (built.verify !== 'none' && built.ca === null) {
    throw new ConfigError(
      keyWhere(inputs, 'tlsVerify', '--tls-verify'),
      `${built.verify} needs ${settingName('tlsCa', certsWhere !== '--tls-cert')} (the CA client certificates are checked against)`,
    );
  }
  return { ...rest, certificates, caPem: null, crlPem: null, ticketKeyBytes: null };
}

/** A pool's TLS towards its backends: a client certificate comes with its key. */
function buildBackendTls(built: BackendTlsConfig, inputs: Inputs): BackendTlsConfig {
  if ((built.cert === null) !== (built.key === null)) {
    const given = built.cert === null ? 'backendTlsKey' : 'backendTlsCert';
    const missing = built.cert === null ? 'backendTlsCert' : 'backendTlsKey';
    const file = (inputs.get(given) as Input).indexed;
    throw new ConfigError(
      (inputs.get(given) as Input).where,
      `needs ${settingName(missing, file)} beside it`,
    );
  }
  return { ...built, caPem: null, certPem: null, keyPem: null };
}

/** Settings that mean something for TCP only, refused on a UDP frontend (by key). */
const TCP_ONLY = [
  'serverNames',
  'sources',
  'sendProxy',
  'proxyTimeout',
  'inspectTimeout',
  'acceptProxyFrom',
  'idleTimeout',
  'queueTimeout',
  'connectTimeout',
  'retries',
  'maxConnsPerSource',
  'connRatePerSource',
  'tlsCertificates',
  ...TLS_SETTINGS,
  'backendTls',
  'backendTlsVerify',
  'backendTlsCa',
  'backendTlsSni',
  'backendTlsCert',
  'backendTlsKey',
];

/** Settings that mean something for UDP only, refused on a TCP frontend. */
const UDP_ONLY = [
  'udpIdleTimeout',
  'udpResponses',
  'udpRequests',
  'udpMaxSessions',
  'udpMaxDatagram',
];

/** A UDP frontend takes none of TCP's settings, nor a TCP frontend UDP's: one line names it. */
function checkProtocol(frontend: FrontendConfig, inputs: Inputs): void {
  const udp = frontend.protocol === 'udp';
  for (const key of udp ? TCP_ONLY : UDP_ONLY) {
    const input = inputs.get(key);
    if (input === undefined) continue;
    throw new ConfigError(
      input.where,
      udp
        ? `is for TCP; ${frontend.name} is a UDP frontend (its listen addresses end in ,udp)`
        : `is for UDP; ${frontend.name} is a TCP frontend (a UDP one lists HOST:PORT,udp)`,
    );
  }
  if (!udp) return;
  if (frontend.hashKey === 'sni') {
    throw new ConfigError(
      keyWhere(inputs, 'hashKey', '--hash-key'),
      `sni is for TLS over TCP; ${frontend.name} is a UDP frontend (hash source-ip or source-ip-port)`,
    );
  }
  for (const [option, has] of [
    ['send-proxy', (b: BackendConfig) => b.sendProxy > 0],
    ['tls', (b: BackendConfig) => b.tls || b.sni !== null],
  ] as const) {
    const at = frontend.backends.findIndex(has);
    if (at < 0) continue;
    const backends = inputs.get('backends');
    throw new ConfigError(
      backends === undefined ? '--backend' : itemWhere(backends, at),
      `${option} is for TCP; ${frontend.name} is a UDP frontend`,
    );
  }
}

/** A pool's settings, checked: its backends (at least one, at most MAX_BACKENDS, each name once)
 *  and the checks that only make sense together. */
function buildPool(inputs: Inputs, backendsWhere = keyWhere(inputs, 'backends', '--backend')) {
  const pool = buildScope('pool', inputs) as unknown as FrontendConfig;
  if (pool.backends.length === 0) {
    throw new ConfigError(backendsWhere, 'at least one is required');
  }
  if (pool.backends.length > MAX_BACKENDS) {
    throw new ConfigError(
      backendsWhere,
      `${pool.backends.length} backends; a frontend has at most ${MAX_BACKENDS}`,
    );
  }
  const names = new Set<string>();
  pool.backends.forEach((backend: BackendConfig, i) => {
    if (names.has(backend.name)) {
      const input = inputs.get('backends');
      throw new ConfigError(
        input === undefined ? backendsWhere : itemWhere(input, i),
        `${backend.name} is given twice`,
      );
    }
    names.add(backend.name);
  });
  checkChecks(pool, inputs);
  return pool as unknown as Record<string, unknown>;
}

/** How a setting is named to someone who writes flags (`--health-http`) or a file (`health.http`). */
function settingName(key: string, file: boolean): string {
  const setting = SETTINGS.find((s) => s.key === key) as Setting;
  return file || setting.flag === null ? setting.file : setting.flag;
}

/** The health, agent and load settings that only make sense together, or not together. */
function checkChecks(frontend: FrontendConfig, inputs: Inputs): void {
  const file = [...inputs.values()].some((input) => input.indexed);
  const where = (key: string) => inputs.get(key)?.where ?? null;
  const kinds = [
    where('healthHttp'),
    where('healthGrpc'),
    where('healthExpect') ?? where('healthSend'),
  ].filter((w): w is string => w !== null);
  if (kinds.length > 1) {
    throw new ConfigError(
      kinds[1],
      `cannot be used with ${kinds[0]}: one kind of probe per frontend`,
    );
  }
  const needs: Array<[string, string]> = [
    ['healthHost', 'healthHttp'],
    ['healthExpectStatus', 'healthHttp'],
    ['healthSend', 'healthExpect'],
    ['loadMetricsPath', 'loadMetric'],
    ['loadMetricsPort', 'loadMetric'],
    ['loadInterval', 'loadMetric'],
  ];
  for (const [key, needed] of needs) {
    const at = where(key);
    if (at !== null && !inputs.has(needed)) {
      throw new ConfigError(at, `needs ${settingName(needed, file)}`);
    }
  }
  const agentAt = where('agentInterval') ?? where('agentSend');
  if (
    agentAt !== null &&
    frontend.agent.port === null &&
    frontend.backends.every((b) => b.agentPort === null)
  ) {
    throw new ConfigError(
      agentAt,
      `needs ${settingName('agentPort', file)}, or agent=PORT on a backend`,
    );
  }
  if (frontend.algorithm === 'least-load' && frontend.load.metric === null) {
    throw new ConfigError(
      whereIn(inputs, 'algorithm', '--algorithm'),
      `least-load needs ${settingName('loadMetric', file)} (the load each backend reports)`,
    );
  }
}

/** A pool of the file's `pools:` as written: its name, where that is, and its settings. */
export interface PoolInputs {
  readonly name: string;
  readonly where: string;
  readonly inputs: Inputs;
}

/**
 * Each frontend's settings with its pool's: a frontend that names a pool gives none of a pool's
 * settings itself (they are the pool's, in one place), and gets the named pool's. Pool names are
 * unique, and none is the name of a frontend with a pool of its own. Warns of a pool nobody uses.
 */
function withPools(
  frontends: readonly Inputs[],
  pools: readonly PoolInputs[],
  warnings: string[],
): Inputs[] {
  const named = new Map<string, PoolInputs>();
  for (const pool of pools) {
    checkName(pool.name, pool.where);
    if (named.has(pool.name)) throw new ConfigError(pool.where, `"${pool.name}" is used twice`);
    // Checked whether or not a frontend uses it, and named where it is written.
    buildPool(pool.inputs, pool.where.replace(/name$/, 'backends'));
    named.set(pool.name, pool);
  }
  const users = new Set<string>();
  const merged = frontends.map((inputs) => {
    const name = String(inputs.get('name')?.value ?? 'default');
    const choice = inputs.get('pool');
    if (choice === undefined) {
      const clash = named.get(name);
      if (clash !== undefined) {
        throw new ConfigError(
          clash.where,
          `"${name}" is the name of frontend ${name}'s own pool (it lists its backends); name this pool otherwise, or give ${name} pool: ${name}`,
        );
      }
      return inputs;
    }
    const poolName = checkName(String(choice.value), choice.where);
    const own = [...inputs].find(([key]) => settingsOf('pool').some((s) => s.key === key));
    if (own !== undefined) {
      throw new ConfigError(
        own[1].where,
        `cannot be given beside pool: ${poolName}; a pool's settings are given in the pool`,
      );
    }
    const pool = named.get(poolName);
    if (pool === undefined) {
      throw new ConfigError(
        choice.where,
        `"${poolName}" names no pool (${named.size === 0 ? 'there is no pools: section' : `pools: ${[...named.keys()].join(', ')}`})`,
      );
    }
    users.add(poolName);
    return new Map([...inputs, ...pool.inputs]);
  });
  for (const pool of pools) {
    if (!users.has(pool.name))
      warnings.push(`${pool.where}: pool ${pool.name} is used by no frontend`);
  }
  return merged;
}

/** Checks the process-wide settings, the pools and every frontend, and builds the Config. */
export function buildConfig(
  top: Inputs,
  frontends: readonly Inputs[],
  where: string,
  pools: readonly PoolInputs[] = [],
): Config {
  const warnings: string[] = [];
  const built = withPools(frontends, pools, warnings).map(buildFrontend);
  if (built.length === 0) throw new ConfigError(where, 'at least one frontend is required');
  const names = new Set<string>();
  built.forEach((frontend, i) => {
    if (names.has(frontend.name)) {
      throw new ConfigError(
        whereIn(frontends[i], 'name', 'name'),
        `"${frontend.name}" is used twice`,
      );
    }
    names.add(frontend.name);
  });
  checkListeners(built, frontends);
  const poolProtocol = new Map<string, FrontendConfig>();
  built.forEach((frontend, i) => {
    const first = poolProtocol.get(frontend.pool);
    if (first === undefined) poolProtocol.set(frontend.pool, frontend);
    else if (first.protocol !== frontend.protocol) {
      throw new ConfigError(
        whereIn(frontends[i], 'pool', 'pool'),
        `pool ${frontend.pool} serves ${first.name} over ${first.protocol.toUpperCase()}; ${frontend.name} is ${frontend.protocol.toUpperCase()}: a pool's backends speak one protocol`,
      );
    }
  });
  built.forEach((frontend, i) => {
    if (frontend.share < 100 && frontend.backends.every((b) => b.maxconn === 0)) {
      warnings.push(
        `${whereIn(frontends[i], 'share', 'share')}: share ${frontend.share} means nothing here: no backend of pool ${frontend.pool} has a maxconn to take a share of`,
      );
    }
  });
  return { ...(buildScope('process', top) as unknown as Config), frontends: built, warnings };
}

/** What a client meets before its server name is known: on a shared address, every frontend
 *  must say the same (by setting key, and how to read its value off a frontend). */
const DOOR_SETTINGS: ReadonlyArray<[string, (f: FrontendConfig) => unknown]> = [
  ['allow', (f) => f.guard.allow],
  ['deny', (f) => f.guard.deny],
  ['acceptProxyFrom', (f) => f.guard.proxyFrom],
  ['maxConnsPerSource', (f) => f.guard.maxConnsPerSource],
  ['connRatePerSource', (f) => f.guard.connRatePerSource],
  ['proxyTimeout', (f) => f.proxyTimeoutMs],
  ['inspectTimeout', (f) => f.inspectTimeoutMs],
];

/**
 * Frontends may share a listen address only to be chosen by TLS server name: each name (exact or
 * wildcard) belongs to one of them, at most one has no serverNames (it takes every other client),
 * and they agree on what is checked before the name is known (allow/deny, per-source limits,
 * the PROXY header, the timeouts). Port 0 is never shared: each `:0` is a port of its own.
 */
function checkListeners(built: readonly FrontendConfig[], inputs: readonly Inputs[]): void {
  const owners = new Map<string, number[]>();
  built.forEach((frontend, i) => {
    const serverNames = inputs[i].get('serverNames');
    const seen = new Set<string>();
    frontend.serverNames.forEach((name, n) => {
      if (seen.has(name)) {
        throw new ConfigError(itemWhere(serverNames as Input, n), `"${name}" is given twice`);
      }
      seen.add(name);
    });
    frontend.listen.forEach((endpoint, l) => {
      const kind = endpoint.udp ? 'udp' : 'tcp';
      const key =
        endpoint.port === 0 ? `${i} ${endpoint.text}` : `${kind} ${endpoint.host}:${endpoint.port}`;
      const sharing = owners.get(key) ?? [];
      const where = listenWhere(inputs[i], l);
      if (sharing.includes(i)) {
        throw new ConfigError(where, `${endpoint.text} is already a listener of ${frontend.name}`);
      }
      if (endpoint.udp && sharing.length > 0) {
        throw new ConfigError(
          where,
          `${endpoint.text} is already a UDP listener of ${built[sharing[0]].name}; UDP frontends cannot share an address (a datagram carries no server name to tell them apart)`,
        );
      }
      for (const j of sharing) checkShared(built, inputs, j, i, endpoint.text, where);
      sharing.push(i);
      owners.set(key, sharing);
    });
  });
}

/** Two frontends equal on the name on one address: their sources must tell their clients apart
 *  (one may have none: it takes the rest; no network may be in both). */
function checkSources(
  inputs: Inputs,
  a: FrontendConfig,
  b: FrontendConfig,
  address: string,
  how: string,
): void {
  if (a.sources.length === 0 || b.sources.length === 0) return;
  b.sources.forEach((cidr, n) => {
    const same = a.sources.find((other) => sameNetwork(other, cidr));
    if (same === undefined) return;
    throw new ConfigError(
      itemWhere(inputs.get('sources') as Input, n),
      `"${cidr}" is the network of ${a.name}'s source "${same}" too (${a.name} and ${b.name} share ${address}, ${how}); the same clients cannot go to both`,
    );
  });
}

/** Whether two CIDRs are one network (`10.8.0.0/16` and `10.8.3.0/16` are). */
function sameNetwork(x: string, y: string): boolean {
  const [p, q] = [parseCidr(x), parseCidr(y)];
  if (p.type !== q.type || p.prefix !== q.prefix) return false;
  const list = new BlockList();
  list.addSubnet(p.address, p.prefix, p.type);
  return list.check(q.address, q.type);
}

function listenWhere(inputs: Inputs, l: number): string {
  const input = inputs.get('listen');
  return input === undefined ? '--listen' : itemWhere(input, l);
}

/** Frontend `i` lists `address`, which frontend `j` (earlier) lists too: may they share it? */
function checkShared(
  built: readonly FrontendConfig[],
  inputs: readonly Inputs[],
  j: number,
  i: number,
  address: string,
  where: string,
): void {
  const [a, b] = [built[j], built[i]];
  const plain = (f: FrontendConfig) => f.serverNames.length === 0 && f.sources.length === 0;
  if (plain(a) && plain(b)) {
    throw new ConfigError(
      where,
      `${address} is already a listener of ${a.name}, and neither ${a.name} nor ${b.name} has serverNames or sources; frontends may share an address only to be chosen by serverNames or sources, and at most one of them has none`,
    );
  }
  // Frontends equal on the name (both without serverNames, or both with one name) are told apart
  // by their sources: not two without, and no network in both.
  if (a.serverNames.length === 0 && b.serverNames.length === 0) {
    checkSources(inputs[i], a, b, address, 'without serverNames');
  }
  const l = b.listen.findIndex((e) => e.text === address);
  const other = a.listen.find((e) => e.host === b.listen[l].host && e.port === b.listen[l].port);
  if (other?.acceptProxy !== b.listen[l].acceptProxy) {
    throw new ConfigError(
      where,
      `${address} is a listener of ${a.name} too: accept-proxy must be the same on both`,
    );
  }
  const names = new Set(a.serverNames);
  b.serverNames.forEach((name, n) => {
    if (!names.has(name)) return;
    if (a.sources.length === 0 && b.sources.length === 0) {
      throw new ConfigError(
        itemWhere(inputs[i].get('serverNames') as Input, n),
        `"${name}" is a server name of both ${a.name} and ${b.name}, which share ${address}`,
      );
    }
    checkSources(inputs[i], a, b, address, `on the name ${name}`);
  });
  for (const [key, read] of DOOR_SETTINGS) {
    if (JSON.stringify(read(a)) !== JSON.stringify(read(b))) {
      throw new ConfigError(
        whereIn(inputs[i], key, whereIn(inputs[j], key, where)),
        `must be the same in ${a.name} and ${b.name}: they share ${address}, and it is checked before the server name is known`,
      );
    }
  }
}

/** The config with its TLS files read, relative paths from `base` (node:tls only loaded where
 *  a frontend terminates TLS). */
export async function withTls(config: Config, base = process.cwd()): Promise<Config> {
  if (!config.frontends.some(readsTlsFiles)) return config;
  return (await import('./tls.ts')).loadTls(config, base);
}

/** Whether a frontend names TLS files: certificates to terminate with, or its pool's backend
 *  TLS CA or client certificate. */
function readsTlsFiles(f: FrontendConfig): boolean {
  const b = f.backendTls;
  return f.tls.certificates.length > 0 || b.ca !== null || b.cert !== null;
}
