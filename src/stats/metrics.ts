// Prometheus metrics on http://HOST:PORT/metrics, in the text format, through prom-client.
// Invariant: nothing is counted twice and nothing here runs on the data path: each scrape takes
// one snapshot of the shared counters and the workers' histograms (the same the stats socket
// shows) and every metric reads that snapshot. Labels: frontend for what a frontend counts; pool
// and backend for what a backend counts (once per pool, whatever the number of its frontends:
// a sum over the labels never counts a connection twice); frontend and backend for timings and
// for a frontend's own live count on a backend.
// The port is a side channel and must never starve the data plane: it holds at most
// MAX_METRICS_CLIENTS connections, and closes silent or idle ones within seconds.

import http from 'node:http';
import type net from 'node:net';
import { Counter, Gauge, type Metric, Registry } from 'prom-client';
import type { Endpoint } from '../config/types.ts';
import { MAX_METRICS_CLIENTS } from '../control/descriptors.ts';
import type { Logger } from '../log.ts';
import { DROP_NAMES, END_BASE, END_NAMES, RETRIES, TLS_FAIL_NAMES } from '../shared/counters.ts';
import type { MetricName, Percentiles } from './latency.ts';
import type {
  BackendStat,
  FrontendLatency,
  FrontendStat,
  PoolStat,
  StatsView,
  TlsStat,
  UdpStat,
} from './view.ts';

/** A timing's percentiles over the whole run and the last minute. */
type Windows = { total: Percentiles; lastMinute: Percentiles };

/** One scrape's view of everything. */
interface Snapshot {
  frontends: FrontendStat[];
  pools: PoolStat[];
  latency: FrontendLatency[];
  /** Per frontend: counters of how connections ended, and retries. */
  ends: Map<string, Float64Array>;
}

const STATES = ['up', 'down', 'disabled', 'draining'] as const;

/** The `reason` label of refused clients, and the end reason each counts. */
const REFUSALS: Array<[string, (typeof END_NAMES)[number]]> = [
  ['limit', 'refused-limit'],
  ['no-backend', 'no-backend'],
  ['denied', 'denied'],
  ['source-limit', 'source-limit'],
  ['untrusted-proxy', 'untrusted-proxy'],
  ['no-frontend', 'no-frontend'],
];

/** One sample: its labels and value. */
type Row = [Record<string, string>, number];

/**
 * A Prometheus summary whose quantiles come from our HDR histograms (prom-client's own Summary
 * keeps its own samples, which would mean observing every connection twice). Quantiles cover
 * the last minute; _count and _sum the whole run, as with any summary.
 */
class HdrSummary {
  readonly name: string;
  readonly help: string;
  readonly type = 'summary';
  readonly aggregator = 'omit';
  private readonly windows: (s: Snapshot) => Array<[Record<string, string>, Windows]>;
  private readonly snapshot: () => Snapshot | null;

  constructor(
    name: string,
    help: string,
    windows: (s: Snapshot) => Array<[Record<string, string>, Windows]>,
    snapshot: () => Snapshot | null,
  ) {
    this.name = name;
    this.help = help;
    this.windows = windows;
    this.snapshot = snapshot;
  }

  get() {
    const values: Array<{
      labels: Record<string, string | number>;
      value: number;
      metricName?: string;
    }> = [];
    const snapshot = this.snapshot();
    for (const [labels, { lastMinute: minute, total }] of snapshot === null
      ? []
      : this.windows(snapshot)) {
      for (const [quantile, key] of QUANTILES) {
        // No connection in the last minute: no quantile to give (NaN, as prom-client does).
        const value = minute.count === 0 ? Number.NaN : minute[key] / 1000;
        values.push({ labels: { ...labels, quantile }, value });
      }
      values.push({
        metricName: `${this.name}_sum`,
        labels,
        value: (total.mean * total.count) / 1000,
      });
      values.push({ metricName: `${this.name}_count`, labels, value: total.count });
    }
    return {
      name: this.name,
      help: this.help,
      type: this.type,
      values,
      aggregator: this.aggregator,
    };
  }

  reset(): void {}
}

const QUANTILES: Array<[number, keyof Percentiles]> = [
  [0.5, 'p50'],
  [0.9, 'p90'],
  [0.99, 'p99'],
  [0.999, 'p999'],
];

/** A connection that has not sent its request headers by then is closed. */
export const HEADERS_TIMEOUT_MS = 5000;
/** A kept-alive connection idle this long is closed. */
export const IDLE_TIMEOUT_MS = 5000;

export class MetricsServer {
  private readonly view: StatsView;
  private readonly log: Logger;
  private readonly registry = new Registry();
  private readonly server: http.Server;
  private snapshot: Snapshot | null = null;
  /** One scrape at a time builds the snapshot; concurrent scrapes share it. */
  private pending: Promise<string> | null = null;
  /** Open connections, oldest first, and those with a request in progress. */
  private readonly sockets = new Set<net.Socket>();
  private readonly busy = new Set<net.Socket>();

  constructor(view: StatsView, log: Logger) {
    this.view = view;
    this.log = log;
    this.define();
    // Timeouts are checked every second (Node's default is 30 s): a client that opens a
    // connection and says nothing holds its descriptor for HEADERS_TIMEOUT_MS at most.
    this.server = http.createServer({ connectionsCheckingInterval: 1000 }, (req, res) => {
      void this.serve(req, res);
    });
    this.server.keepAliveTimeout = IDLE_TIMEOUT_MS;
    this.server.headersTimeout = HEADERS_TIMEOUT_MS;
    this.server.requestTimeout = HEADERS_TIMEOUT_MS * 2;
    this.server.on('connection', (socket: net.Socket) => this.admit(socket));
  }

  /**
   * At most MAX_METRICS_CLIENTS connections: a new one takes the place of the oldest idle one
   * (so idle clients cannot lock a scraper out), and is closed when all are busy. Descriptors
   * are the data plane's: the metrics port may never take more than this many.
   */
  private admit(socket: net.Socket): void {
    socket.on('error', () => {});
    if (this.sockets.size >= MAX_METRICS_CLIENTS) {
      const idle = [...this.sockets].find((s) => !this.busy.has(s));
      if (idle === undefined) {
        socket.destroy();
        return;
      }
      idle.destroy();
      this.sockets.delete(idle);
    }
    this.sockets.add(socket);
    socket.once('close', () => {
      this.sockets.delete(socket);
      this.busy.delete(socket);
    });
  }

  async start(endpoint: Endpoint): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen({ host: endpoint.host, port: endpoint.port }, resolve);
    });
    this.server.unref();
    const address = this.server.address();
    return typeof address === 'object' && address !== null ? address.port : endpoint.port;
  }

  close(): void {
    this.server.close();
  }

  /** Closes the port, and resolves once it is free (for a successor to bind, on an upgrade). */
  stop(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private async serve(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const socket = req.socket;
    this.busy.add(socket);
    res.once('close', () => this.busy.delete(socket));
    const path = (req.url ?? '').split('?')[0];
    if (path === '/ready' || path === '/live') {
      // For routers, keepalived and cloud health checks: one line, the status says it all.
      const { ready, reason } =
        path === '/ready' ? this.view.readiness() : { ready: true, reason: 'live' };
      res
        .writeHead(ready ? 200 : 503, { 'content-type': 'text/plain', 'cache-control': 'no-store' })
        .end(req.method === 'HEAD' ? undefined : `${ready ? reason : `not ready: ${reason}`}\n`);
      return;
    }
    if (path !== '/metrics') {
      res
        .writeHead(404, { 'content-type': 'text/plain' })
        .end('not found: try /metrics, /ready or /live\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    try {
      this.pending ??= this.scrape().finally(() => {
        this.pending = null;
      });
      const body = await this.pending;
      res
        .writeHead(200, { 'content-type': this.registry.contentType })
        .end(req.method === 'HEAD' ? undefined : body);
    } catch (err) {
      this.log.error({ err }, 'metrics scrape failed');
      res.writeHead(500, { 'content-type': 'text/plain' }).end('scrape failed\n');
    }
  }

  private async scrape(): Promise<string> {
    const [stat, latency] = await Promise.all([this.view.stat(), this.view.latency()]);
    this.snapshot = {
      frontends: stat.frontends,
      pools: stat.pools,
      latency,
      ends: this.view.frontendSums(),
    };
    try {
      return await this.registry.metrics();
    } finally {
      this.snapshot = null;
    }
  }

  private define(): void {
    const registry = this.registry;
    const snap = () => this.snapshot;
    /** A gauge or counter whose samples are read from the scrape's snapshot: one row each. */
    const series = (
      type: 'gauge' | 'counter',
      name: string,
      help: string,
      labelNames: string[],
      rows: (s: Snapshot) => Row[],
    ) => {
      const options = { name, help, labelNames, registers: [registry] };
      if (type === 'gauge') {
        new Gauge({
          ...options,
          collect() {
            this.reset();
            const s = snap();
            if (s !== null) for (const [labels, value] of rows(s)) this.set(labels, value);
          },
        });
      } else {
        // A counter's total is read, not counted here: reset, then add it whole.
        new Counter({
          ...options,
          collect() {
            this.reset();
            const s = snap();
            if (s !== null) for (const [labels, value] of rows(s)) this.inc(labels, value);
          },
        });
      }
    };
    const perFrontend =
      (value: (f: FrontendStat, s: Snapshot) => number) =>
      (s: Snapshot): Row[] =>
        s.frontends.map((f) => [{ frontend: f.name }, value(f, s)]);
    /** Every backend once, with its pool: as the pool's first frontend shows it. */
    const backends = (s: Snapshot): Array<[{ pool: string; backend: string }, BackendStat]> => {
      const seen = new Set<string>();
      return s.frontends.flatMap((f) => {
        if (seen.has(f.pool)) return [];
        seen.add(f.pool);
        return f.backends.map((b): [{ pool: string; backend: string }, BackendStat] => [
          { pool: f.pool, backend: b.name },
          b,
        ]);
      });
    };
    const perBackend =
      (value: (b: BackendStat) => number) =>
      (s: Snapshot): Row[] =>
        backends(s).map(([labels, b]): Row => [labels, value(b)]);
    const ends = (f: FrontendStat, s: Snapshot, name: (typeof END_NAMES)[number]) =>
      s.ends.get(f.name)?.[END_BASE + END_NAMES.indexOf(name)] ?? 0;
    const FRONTEND = ['frontend'];
    const BACKEND = ['pool', 'backend'];

    series(
      'gauge',
      'fulcrum_connections_current',
      'Client connections open now.',
      FRONTEND,
      perFrontend((f) => f.live),
    );
    series(
      'counter',
      'fulcrum_connections_total',
      'Client connections accepted.',
      FRONTEND,
      perFrontend((f) => f.accepted),
    );
    series(
      'gauge',
      'fulcrum_connections_queued',
      'Clients waiting for a backend with room (every backend at its maxconn).',
      FRONTEND,
      perFrontend((f) => f.queued),
    );
    series(
      'counter',
      'fulcrum_connections_refused_total',
      'Clients closed before any backend was tried: over --max-connections (limit), no backend available, denied by --allow/--deny, over a per-source limit.',
      ['frontend', 'reason'],
      (s) =>
        s.frontends.flatMap((f) =>
          REFUSALS.map(([reason, end]): Row => [{ frontend: f.name, reason }, ends(f, s, end)]),
        ),
    );
    series(
      'counter',
      'fulcrum_connections_ended_total',
      'Finished client connections by how they ended (as in the access log).',
      ['frontend', 'end'],
      (s) =>
        s.frontends.flatMap((f) =>
          END_NAMES.map((end): Row => [{ frontend: f.name, end }, ends(f, s, end)]),
        ),
    );
    series(
      'counter',
      'fulcrum_connections_failed_total',
      'Clients closed because no backend could be connected (after retries).',
      FRONTEND,
      perFrontend((f, s) => ends(f, s, 'connect-failed')),
    );
    series(
      'counter',
      'fulcrum_retries_total',
      'Connect attempts made on another backend after one failed.',
      FRONTEND,
      perFrontend((f, s) => s.ends.get(f.name)?.[RETRIES] ?? 0),
    );
    const udpFrontends = (s: Snapshot) => s.frontends.filter((f) => f.udp !== null);
    const udpEachWay = (read: (u: UdpStat, way: 'in' | 'out') => number) => (s: Snapshot) =>
      udpFrontends(s).flatMap((f) =>
        (['in', 'out'] as const).map(
          (direction): Row => [{ frontend: f.name, direction }, read(f.udp as UdpStat, direction)],
        ),
      );
    series(
      'gauge',
      'fulcrum_udp_sessions_current',
      'UDP sessions (a client address:port pinned to a backend) open now.',
      FRONTEND,
      (s) => udpFrontends(s).map((f): Row => [{ frontend: f.name }, f.live]),
    );
    series('counter', 'fulcrum_udp_sessions_total', 'UDP sessions started.', FRONTEND, (s) =>
      udpFrontends(s).map((f): Row => [{ frontend: f.name }, f.accepted]),
    );
    series(
      'counter',
      'fulcrum_udp_datagrams_total',
      'UDP datagrams: in from clients (sent on to backends), out to clients (replies).',
      ['frontend', 'direction'],
      udpEachWay((u, way) => (way === 'in' ? u.datagramsIn : u.datagramsOut)),
    );
    series(
      'counter',
      'fulcrum_udp_bytes_total',
      'UDP payload bytes: in from clients, out to clients.',
      ['frontend', 'direction'],
      udpEachWay((u, way) => (way === 'in' ? u.bytesIn : u.bytesOut)),
    );
    series(
      'counter',
      'fulcrum_udp_dropped_total',
      "UDP datagrams dropped: no backend, over the session limit, larger than --udp-max-datagram, refused by the backend (ICMP port unreachable), denied by --allow/--deny, or fulcrum's own send failed.",
      ['frontend', 'reason'],
      (s) =>
        udpFrontends(s).flatMap((f) =>
          DROP_NAMES.map(
            (reason): Row => [{ frontend: f.name, reason }, (f.udp as UdpStat).dropped[reason]],
          ),
        ),
    );
    const tlsFrontends = (s: Snapshot) => s.frontends.filter((f) => f.tls !== null);
    const perTls = (read: (t: TlsStat) => number) => (s: Snapshot) =>
      tlsFrontends(s).map((f): Row => [{ frontend: f.name }, read(f.tls as TlsStat)]);
    series(
      'counter',
      'fulcrum_tls_handshakes_total',
      'TLS handshakes a terminating frontend finished (resumed ones included).',
      FRONTEND,
      perTls((t) => t.handshakes),
    );
    series(
      'counter',
      'fulcrum_tls_resumed_total',
      'Of those, the handshakes that resumed a session (a ticket).',
      FRONTEND,
      perTls((t) => t.resumed),
    );
    series(
      'counter',
      'fulcrum_tls_handshake_failures_total',
      'TLS handshakes that failed: no certificate for the name (strict SNI), client certificate missing or invalid, protocol (no version, cipher or ALPN in common, or not TLS), timeout, aborted (the client left).',
      ['frontend', 'reason'],
      (s) =>
        tlsFrontends(s).flatMap((f) =>
          TLS_FAIL_NAMES.map(
            (reason): Row => [{ frontend: f.name, reason }, (f.tls as TlsStat).failed[reason]],
          ),
        ),
    );
    series(
      'counter',
      'fulcrum_tls_backend_handshake_failures_total',
      "Connect attempts to TLS backends whose handshake failed: the backend's certificate not verified (another CA, not for its name, expired) or no TLS spoken.",
      FRONTEND,
      perFrontend((f) => f.backendTlsFailures),
    );
    series(
      'gauge',
      'fulcrum_tls_certificate_expiry_seconds',
      'When the certificate expires, in seconds since the Unix epoch (alert on it minus time()).',
      ['frontend', 'certificate', 'serial'],
      (s) =>
        tlsFrontends(s).flatMap((f) =>
          (f.tls as TlsStat).certificates.map(
            (c): Row => [
              { frontend: f.name, certificate: c.file, serial: c.serial },
              Math.round(Date.parse(c.notAfter) / 1000),
            ],
          ),
        ),
    );
    const udpBackends = (s: Snapshot) => {
      const pools = new Set(udpFrontends(s).map((f) => f.pool));
      return backends(s).filter(([labels]) => pools.has(labels.pool));
    };
    series(
      'counter',
      'fulcrum_backend_udp_datagrams_total',
      'UDP datagrams to the backend (in: from clients) and from it (out: replies to clients).',
      ['pool', 'backend', 'direction'],
      (s) =>
        udpBackends(s).flatMap(([labels, b]) => [
          [{ ...labels, direction: 'in' }, b.datagramsIn] as Row,
          [{ ...labels, direction: 'out' }, b.datagramsOut] as Row,
        ]),
    );
    series(
      'gauge',
      'fulcrum_backend_connections_current',
      'Connections open to the backend now.',
      BACKEND,
      perBackend((b) => b.active),
    );
    series(
      'counter',
      'fulcrum_backend_connections_total',
      'Connections established to the backend.',
      BACKEND,
      perBackend((b) => b.total),
    );
    series(
      'counter',
      'fulcrum_backend_connect_failures_total',
      'Connect attempts to the backend that failed (refused, unreachable, timed out).',
      BACKEND,
      perBackend((b) => b.failures),
    );
    series(
      'counter',
      'fulcrum_backend_bytes_total',
      'Bytes relayed: to_backend (from clients) and from_backend (to clients).',
      ['pool', 'backend', 'direction'],
      (s) =>
        backends(s).flatMap(([labels, b]): Row[] => [
          [{ ...labels, direction: 'to_backend' }, b.bytesIn],
          [{ ...labels, direction: 'from_backend' }, b.bytesOut],
        ]),
    );
    series(
      'gauge',
      'fulcrum_backend_up',
      '1 when the backend passes its health checks, whatever its admin state.',
      BACKEND,
      perBackend((b) => (b.up ? 1 : 0)),
    );
    series(
      'gauge',
      'fulcrum_backend_state',
      '1 for the state the backend is in: up, down, disabled or draining.',
      ['pool', 'backend', 'state'],
      (s) =>
        backends(s).flatMap(([labels, b]) =>
          STATES.map((state): Row => [{ ...labels, state }, b.state === state ? 1 : 0]),
        ),
    );
    series(
      'gauge',
      'fulcrum_backend_weight',
      'The backend weight (0..256).',
      BACKEND,
      perBackend((b) => b.weight),
    );
    series(
      'gauge',
      'fulcrum_backend_effective_weight',
      'The weight picks use now: configured, times what its agent set, ramped in slow start.',
      BACKEND,
      perBackend((b) => b.effectiveWeight),
    );
    series(
      'gauge',
      'fulcrum_backend_reported_load',
      'The load the backend last reported on its metrics page (--load-metric); absent while it has no fresh report.',
      BACKEND,
      (s) =>
        backends(s).flatMap(([labels, b]): Row[] => (b.load === null ? [] : [[labels, b.load]])),
    );
    series(
      'gauge',
      'fulcrum_backend_check_duration_seconds',
      "How long the backend's last health probe took.",
      BACKEND,
      (s) =>
        backends(s).flatMap(([labels, b]): Row[] =>
          b.check === null ? [] : [[labels, b.check.ms / 1000]],
        ),
    );
    series(
      'counter',
      'fulcrum_backend_health_transitions_total',
      'Health transitions of the backend (up to down, and back).',
      BACKEND,
      perBackend((b) => b.transitions),
    );
    series(
      'gauge',
      'fulcrum_backend_frontend_connections_current',
      "Connections open to the backend now that the frontend holds (its count against its share of the backend's maxconn).",
      ['pool', 'backend', 'frontend'],
      (s) =>
        s.frontends.flatMap((f) =>
          f.backends.map((b): Row => [{ pool: f.pool, backend: b.name, frontend: f.name }, b.held]),
        ),
    );
    series(
      'gauge',
      'fulcrum_pool_queued',
      "Clients waiting for a slot of the pool's backends now, by the priority of their frontend (over every frontend of that priority and every worker).",
      ['pool', 'priority'],
      (s) =>
        s.pools.flatMap((p) =>
          Object.entries(p.waiting).map(([priority, n]): Row => [{ pool: p.name, priority }, n]),
        ),
    );
    const summaries: Array<[string, string, MetricName]> = [
      ['fulcrum_backend_connect_seconds', 'Time to connect to the backend.', 'connectMs'],
      [
        'fulcrum_backend_first_byte_seconds',
        'Time from connected to the first byte from the backend.',
        'firstByteMs',
      ],
      ['fulcrum_backend_connection_duration_seconds', 'How long connections lasted.', 'durationMs'],
    ];
    for (const [name, help, metric] of summaries) {
      const windows = (s: Snapshot) =>
        s.latency.flatMap((f) =>
          f.backends.map((b): [Record<string, string>, Windows] => [
            { frontend: f.name, backend: b.name },
            b[metric],
          ]),
        );
      // Not one of prom-client's classes, but what its registry asks of a metric: get() and reset().
      registry.registerMetric(new HdrSummary(name, help, windows, snap) as unknown as Metric);
    }
    const handshakes = (s: Snapshot) =>
      s.latency.flatMap(
        (f): Array<[Record<string, string>, Windows]> =>
          f.handshakeMs === null ? [] : [[{ frontend: f.name }, f.handshakeMs]],
      );
    registry.registerMetric(
      new HdrSummary(
        'fulcrum_tls_handshake_seconds',
        "Time from a client's first TLS byte to its finished handshake (a terminating frontend's).",
        handshakes,
        snap,
      ) as unknown as Metric,
    );
  }
}
