// The one backend codec: a spec string (`HOST:PORT,weight=2,backup`, as flags, the file and
// `add backend` write it), a file object (`{ address, weight, ... }`) and the BackendConfig the
// rest of fulcrum reads all convert here, and only here. The state file keeps a backend as its
// spec (formatBackend), so what is read back is what was added. Invariant: for every backend,
// parseBackend(formatBackend(b)) equals b; a new backend option is one entry in OPTIONS.

import { MAX_WEIGHT } from '../shared/table.ts';
import {
  ConfigError,
  checkName,
  integer,
  parseDuration,
  parseEndpoint,
  parsePort,
  parseProxyVersion,
  parseServerName,
} from './parse.ts';
import type { BackendConfig, Endpoint } from './types.ts';
import { PROXY_VERSIONS } from './types.ts';

/** Most connections a backend's maxconn may allow. */
export const MAX_MAXCONN = 1_000_000;

/** The fields of a backend an option may set. */
type OptionField =
  | 'weight'
  | 'backup'
  | 'maxconn'
  | 'slowstartMs'
  | 'sendProxy'
  | 'agentPort'
  | 'tls'
  | 'sni'
  | 'name';

/** One backend option: `key=VALUE` in a spec, `fileKey: VALUE` in a file object. */
export interface BackendOption {
  /** In a spec string: `weight`, `send-proxy`. */
  readonly key: string;
  /** In a file object and messages: `weight`, `sendProxy`. */
  readonly fileKey: string;
  /** What its value looks like in help (`N`, `DURATION`); null for a bare word (`backup`). */
  readonly arg: string | null;
  readonly field: OptionField;
  readonly help: string;
  parse(text: string, where: string): BackendConfig[OptionField];
  /** The value as a spec writes it; null when it is the default (left out). */
  format(value: BackendConfig[OptionField], backend: BackendConfig): string | null;
}

export const OPTIONS: readonly BackendOption[] = [
  {
    key: 'weight',
    fileKey: 'weight',
    arg: 'N',
    field: 'weight',
    help: `0..${MAX_WEIGHT} (default 1; 0 = never picked)`,
    parse: integer(0, MAX_WEIGHT),
    format: (v) => (v === 1 ? null : String(v)),
  },
  {
    key: 'backup',
    fileKey: 'backup',
    arg: null,
    field: 'backup',
    help: 'used only when no other backend can take a connection',
    parse: () => true,
    format: (v) => (v === true ? '' : null),
  },
  {
    key: 'maxconn',
    fileKey: 'maxconn',
    arg: 'N',
    field: 'maxconn',
    help: 'most live connections; more wait in the queue (0 = no limit)',
    parse: integer(0, MAX_MAXCONN),
    format: (v) => (v === 0 ? null : String(v)),
  },
  {
    key: 'slowstart',
    fileKey: 'slowstart',
    arg: 'DURATION',
    field: 'slowstartMs',
    help: 'after it comes up or joins, its weight ramps from 5% to full over this long',
    parse: parseDuration,
    format: (v) => (v === 0 ? null : `${v}ms`),
  },
  {
    key: 'send-proxy',
    fileKey: 'sendProxy',
    arg: PROXY_VERSIONS.join('|'),
    field: 'sendProxy',
    help: "a PROXY protocol header to send it (default: the frontend's)",
    parse: parseProxyVersion,
    format: (v) => (v === -1 ? null : PROXY_VERSIONS[v as number]),
  },
  {
    key: 'agent',
    fileKey: 'agent',
    arg: 'PORT',
    field: 'agentPort',
    help: "its agent's port (HAProxy's agent protocol: it reports weight, drain, maint, up/down)",
    parse: parsePort,
    format: (v) => (v === null ? null : String(v)),
  },
  {
    key: 'tls',
    fileKey: 'tls',
    arg: null,
    field: 'tls',
    help: "speak TLS to it (its certificate verified as the pool's backendTls says)",
    parse: () => true,
    format: (v) => (v === true ? '' : null),
  },
  {
    key: 'sni',
    fileKey: 'sni',
    arg: 'NAME|client',
    field: 'sni',
    help: "with tls: the server name to send it and verify its certificate against (client: the client's own)",
    parse: parseSni,
    format: (v) => (v === null ? null : String(v)),
  },
  {
    key: 'name',
    fileKey: 'name',
    arg: 'NAME',
    field: 'name',
    help: 'how stats and admin commands call it (default: its address)',
    parse: checkName,
    format: (v, b) => (v === b.text ? null : String(v)),
  },
];

/** A server name to send a TLS backend, or `client`: the one the client sent. */
export function parseSni(text: string, where: string): string {
  return text === 'client' ? text : parseServerName(text, where);
}

/** The spec grammar, for help texts and usage lines. */
export const BACKEND_GRAMMAR = `HOST:PORT|srv+NAME${OPTIONS.map((o) => `[,${o.key}${o.arg === null ? '' : `=${o.arg}`}]`).join('')}`;

/** `HOST:PORT`, or `srv+NAME` for a DNS SRV name (port 0 until resolved). */
function parseAddress(text: string, where: string): Endpoint {
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

function withDefaults(endpoint: Endpoint): BackendConfig {
  return {
    ...endpoint,
    name: endpoint.text,
    weight: 1,
    backup: false,
    maxconn: 0,
    slowstartMs: 0,
    sendProxy: -1,
    srv: endpoint.port === 0,
    agentPort: null,
    tls: false,
    sni: null,
  };
}

/** A spec string: `HOST:PORT[,weight=N][,backup]...` (see BACKEND_GRAMMAR). */
export function parseBackend(text: string, where: string): BackendConfig {
  const [address, ...words] = text.split(',');
  const backend: Record<string, unknown> = { ...withDefaults(parseAddress(address, where)) };
  for (const word of words) {
    const eq = word.indexOf('=');
    const key = eq < 0 ? word : word.slice(0, eq);
    const option = OPTIONS.find((o) => o.key === key);
    if (option === undefined || (option.arg === null) !== eq < 0) {
      throw new ConfigError(
        where,
        `"${text}": unknown option "${word}" (expected ${OPTIONS.map((o) => (o.arg === null ? o.key : `${o.key}=${o.arg}`)).join(', ')})`,
      );
    }
    backend[option.field] = option.parse(word.slice(eq + 1), `${where} ${address.trim()} ${key}`);
  }
  return backend as unknown as BackendConfig;
}

/** A backend written as a file object (shape already checked by the file's schema). */
export function backendFromObject(
  input: Readonly<Record<string, unknown>>,
  where: (key: string) => string,
): BackendConfig {
  const backend: Record<string, unknown> = {
    ...withDefaults(parseAddress(String(input.address), where('address'))),
  };
  for (const option of OPTIONS) {
    const value = input[option.fileKey];
    if (value === undefined || value === false) continue;
    backend[option.field] = option.parse(String(value), where(option.fileKey));
  }
  return backend as unknown as BackendConfig;
}

/** The spec that parses back to `backend` (for the state file and messages). */
export function formatBackend(backend: BackendConfig): string {
  let spec = backend.text;
  for (const option of OPTIONS) {
    const value = option.format(backend[option.field], backend);
    if (value === null) continue;
    spec += value === '' ? `,${option.key}` : `,${option.key}=${value}`;
  }
  return spec;
}
