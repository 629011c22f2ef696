// The config as the rest of fulcrum reads it: plain data, cloned into every worker thread and
// never mutated once built. Invariant: this file declares shapes and the closed lists of words a
// setting may take; it imports no code (only a type), so anything may import it.

import type { Algorithm } from '../core/scheduler.ts';

export type { Algorithm };

export interface Endpoint {
  /** As the user wrote it, e.g. `[::1]:80`: used in names and messages. */
  readonly text: string;
  /** Host without brackets; for a backend, an IP address once resolved. */
  readonly host: string;
  readonly port: number;
}

/** PROXY protocol version to send to backends: 0 none, 1 (text) or 2 (binary). */
export type ProxyVersion = 0 | 1 | 2;

/** How a PROXY protocol version is written, by version number. */
export const PROXY_VERSIONS = ['none', 'v1', 'v2'] as const;

export interface BackendConfig extends Endpoint {
  /** How the stats, logs and admin commands name this backend (default: the address as written). */
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
  /** Port of its agent (HAProxy's agent protocol); null: the frontend's --agent-port, if any. */
  readonly agentPort: number | null;
  /** Speak TLS to it (as its pool's backendTls says; that may turn TLS on for all). */
  readonly tls: boolean;
  /** The server name its TLS sends and its certificate is checked against; `client`: the
   *  client's own; null: the pool's (backendTls.sni). */
  readonly sni: string | null;
}

export const BACKEND_TLS_VERIFY = ['required', 'none'] as const;
export type BackendTlsVerify = (typeof BACKEND_TLS_VERIFY)[number];

/** How a pool speaks TLS to its backends (each backend with `tls`, or all when enabled). */
export interface BackendTlsConfig {
  /** Every backend of the pool speaks TLS. */
  readonly enabled: boolean;
  /** `required`: a backend whose certificate the CA does not vouch for (or whose name does not
   *  match) is refused, like a backend that refuses the connection; `none` must be written. */
  readonly verify: BackendTlsVerify;
  /** The CA file backends' certificates are checked against; null: Node's bundled roots. */
  readonly ca: string | null;
  /** The server name sent and verified; `client`: the client's own; null: the backend's host. */
  readonly sni: string | null;
  /** A client certificate and key to show backends that ask for one. */
  readonly cert: string | null;
  readonly key: string | null;
  /** The files' PEM texts, read with the config (config/tls.ts). */
  readonly caPem: string | null;
  readonly certPem: string | null;
  readonly keyPem: string | null;
}

/** A listen address; `acceptProxy`: clients arrive behind a balancer that sends a PROXY header;
 *  `udp`: a datagram socket (written `HOST:PORT,udp`), not a TCP listener. */
export interface ListenEndpoint extends Endpoint {
  readonly acceptProxy: boolean;
  readonly udp: boolean;
}

/** What a frontend's listeners speak: every listen address of one frontend is of one kind. */
export type Protocol = 'tcp' | 'udp';

/** How a UDP frontend keeps its sessions (a session: one client address:port, one backend). */
export interface UdpConfig {
  /** A session with no datagram either way for this long ends. */
  readonly idleTimeoutMs: number;
  /** Replies expected for each client datagram; once all are in, the session ends. 0: no limit. */
  readonly responses: number;
  /** Datagrams a session carries from its client; the next one starts a new session. 0: no limit. */
  readonly requests: number;
  /** Sessions of this frontend at once, every worker's; 0: only the process's limit. */
  readonly maxSessions: number;
  /** Larger client datagrams are dropped, never truncated. */
  readonly maxDatagram: number;
}

/** Whether a terminating frontend asks its clients for a certificate, and what it does without
 *  a valid one: `none` asks nothing; `optional` asks, and lets a client without one (or with one
 *  the CA does not vouch for) in, unverified; `required` fails the handshake of such a client. */
export const TLS_VERIFY = ['none', 'optional', 'required'] as const;
export type TlsVerify = (typeof TLS_VERIFY)[number];

export const TLS_VERSIONS = ['TLSv1.2', 'TLSv1.3'] as const;
export type TlsVersion = (typeof TLS_VERSIONS)[number];

/** One certificate of a terminating frontend: its files as written, then, once they are read
 *  (config/tls.ts), what they hold. */
export interface TlsCertificate {
  readonly certFile: string;
  readonly keyFile: string;
  /** The names it is chosen for, as given (`names:` in the file); empty: the certificate's own. */
  readonly names: readonly string[];
  /** The PEM texts ('' until read). */
  readonly cert: string;
  readonly key: string;
  /** The names it serves: as given, else its subjectAltName DNS names (else its CN); lowercase,
   *  `*.` wildcards over one label. */
  readonly serverNames: readonly string[];
  /** Hex, as openssl prints it. */
  readonly serial: string;
  readonly subject: string;
  /** When it expires, ms since the epoch. */
  readonly notAfter: number;
  /** `ec` or `rsa` (or what else node:crypto calls its key). */
  readonly keyType: string;
}

/** TLS a frontend terminates (`tls:`); no certificates: it does not (the bytes pass through). */
export interface TlsConfig {
  readonly certificates: readonly TlsCertificate[];
  /** The CA file client certificates are checked against (and its PEM once read). */
  readonly ca: string | null;
  readonly caPem: string | null;
  /** A CRL file (PEM) of revoked client certificates (and its text once read). */
  readonly crl: string | null;
  readonly crlPem: string | null;
  readonly verify: TlsVerify;
  /** Protocols offered by ALPN, the server's preference first; empty: no ALPN. */
  readonly alpn: readonly string[];
  /** A client whose server name no certificate covers (or that sends none) fails the
   *  handshake, instead of getting the first certificate. */
  readonly strictSni: boolean;
  readonly minVersion: TlsVersion;
  readonly handshakeTimeoutMs: number;
  /** A file of session ticket keys shared by several fulcrum instances; null: the process's own,
   *  rotated (see data/tls.ts). */
  readonly ticketKeys: string | null;
  /** The 48 bytes read from it, base64; null without the file. */
  readonly ticketKeyBytes: string | null;
}

export const HASH_KEYS = ['source-ip', 'source-ip-port', 'sni'] as const;
export type HashKey = (typeof HASH_KEYS)[number];

export interface FrontendConfig {
  readonly name: string;
  /** The pool its clients go to: one of the file's `pools:`, or its own, named after it (its
   *  backend-side settings below are that pool's either way). */
  readonly pool: string;
  /** Backends of its pool that must be up for fulcrum to call itself ready; 0: none. */
  readonly readyMinUp: number;
  /** Its clients' class on the pool: a lower number is served first from the pool's queue. */
  readonly priority: number;
  /** The percent of each backend's maxconn its clients may hold (100: all of it). */
  readonly share: number;
  readonly listen: readonly ListenEndpoint[];
  /** What its listeners speak (from the listen addresses: `,udp` on every one, or on none). */
  readonly protocol: Protocol;
  readonly udp: UdpConfig;
  /** The TLS it terminates (TCP only): certificates by server name, client certificates. */
  readonly tls: TlsConfig;
  /** TLS server names it takes on a listen address it may share with other frontends: host
   *  names and `*.` wildcards over one label, lowercased; empty: clients no other frontend on
   *  the address takes (or, alone on it, every client). */
  readonly serverNames: readonly string[];
  /** Client networks (CIDRs) this frontend takes on a listen address it may share: the most
   *  specific match wins among frontends equal on the server name; empty: clients from anywhere
   *  no other frontend takes. */
  readonly sources: readonly string[];
  /** How long a client has to send its ClientHello where it is read (serverNames, hashKey sni). */
  readonly inspectTimeoutMs: number;
  /** PROXY protocol header sent to every backend that does not say otherwise. */
  readonly sendProxy: ProxyVersion;
  /** How long a client on an accept-proxy listener has to send its PROXY header. */
  readonly proxyTimeoutMs: number;
  readonly algorithm: Algorithm;
  /** What Maglev hashes: the client's address, its address and port, or its TLS server name. */
  readonly hashKey: HashKey;
  /** Bounded loads for hashing: no backend takes a new client while it holds more than this
   *  percent of the (weighted) average; 0: off. */
  readonly hashBalanceFactor: number;
  readonly backends: readonly BackendConfig[];
  /** TLS towards the backends of its pool. */
  readonly backendTls: BackendTlsConfig;
  readonly connectTimeoutMs: number;
  readonly idleTimeoutMs: number;
  /** How long a client may wait for a backend with room when every one is at its maxconn. */
  readonly queueTimeoutMs: number;
  readonly retries: number;
  readonly health: HealthConfig;
  readonly agent: AgentConfig;
  readonly load: LoadConfig;
  readonly guard: GuardConfig;
}

/** Who may connect, and how much, per frontend: checked before any backend is contacted. */
export interface GuardConfig {
  /** CIDRs; when any is given, a client must match one. */
  readonly allow: readonly string[];
  /** CIDRs; a client that matches one is refused (deny wins over allow). */
  readonly deny: readonly string[];
  /** CIDRs of the peers that may send a PROXY header on an accept-proxy listener; empty: any. */
  readonly proxyFrom: readonly string[];
  /** Live connections per client address; 0: no limit. */
  readonly maxConnsPerSource: number;
  /** New connections per second per client address; 0: no limit. */
  readonly connRatePerSource: number;
}

export interface HealthConfig {
  /** Active probes on; passive health (failed connects) counts either way. */
  readonly enabled: boolean;
  readonly intervalMs: number;
  /** The whole probe (connect, send, reply) must be done by then. */
  readonly timeoutMs: number;
  /** Consecutive successes that mark a down backend up. */
  readonly rise: number;
  /** Consecutive failures that mark an up backend down. */
  readonly fall: number;
  /** HTTP probe: `GET` this path; null: not an HTTP probe. */
  readonly http: string | null;
  /** The HTTP probe's `Host:`; null: the backend's address. */
  readonly host: string | null;
  /** HTTP statuses that count as healthy, as inclusive ranges. */
  readonly expectStatus: readonly (readonly [number, number])[];
  /** Bytes to write once connected (one char per byte, 0..255); null: nothing is sent. */
  readonly send: string | null;
  /** Bytes the reply must contain (one char per byte); null: not a send/expect probe. */
  readonly expect: string | null;
  /** gRPC health probe of this service ('' asks about the whole server); null: not gRPC. */
  readonly grpc: string | null;
  /** Probe this port instead of the backend's own; null: the backend's. */
  readonly port: number | null;
  /** The probe is a datagram (a UDP pool without an HTTP, gRPC or plain TCP probe on a health
   *  port): `send` as one datagram; healthy when the reply contains `expect`, or, without
   *  `expect`, when no ICMP refusal comes back within the timeout. Set by the build. */
  readonly udp: boolean;
}

/** HAProxy's agent check: a backend's own agent says its weight, admin and operational state. */
export interface AgentConfig {
  /** Agent port of every backend that names none; null: only backends with `agent=PORT`. */
  readonly port: number | null;
  readonly intervalMs: number;
  /** Written to the agent once connected (one char per byte); null: nothing. */
  readonly send: string | null;
}

/** A Prometheus series selector: a metric name and label values every summed series must have. */
export interface MetricSelector {
  /** As written, for messages: `vllm:num_requests_waiting{model_name="m"}`. */
  readonly text: string;
  readonly name: string;
  readonly labels: readonly (readonly [string, string])[];
}

/** Load the backends report on their metrics page, for least-load and the stats. */
export interface LoadConfig {
  /** What to read; null: no scraping. */
  readonly metric: MetricSelector | null;
  readonly path: string;
  /** Scrape this port instead of the backend's own; null: the backend's. */
  readonly port: number | null;
  readonly intervalMs: number;
  /** A scrape not done by then fails. */
  readonly timeoutMs: number;
}

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export const LOG_FORMATS = ['json', 'pretty'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

export const STATS_LEVELS = ['read', 'admin'] as const;
export type StatsLevel = (typeof STATS_LEVELS)[number];

export interface StatsConfig {
  /** Path of the stats socket; null: no socket. */
  readonly socket: string | null;
  readonly mode: number;
  readonly level: StatsLevel;
}

export interface Config {
  readonly workers: number;
  /** 0 means no limit. */
  readonly maxConnections: number;
  readonly drainTimeoutMs: number;
  /** On SIGTERM/SIGINT: not ready at once, still accepting for this long, then the drain. */
  readonly graceMs: number;
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
  /** What is allowed but probably not meant (a pool no frontend uses): `check` prints each, a
   *  start and a reload log each. */
  readonly warnings: readonly string[];
}
