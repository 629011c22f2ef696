// The control plane's main loop: builds the pools (shared tables and counters), starts the worker
// threads, waits until every listener is open, reloads on SIGHUP, and stops gracefully on
// SIGTERM/SIGINT. Invariant: the main
// thread never touches a client connection; it only reads shared memory and messages workers.

import { once } from 'node:events';
import net from 'node:net';
import { extname } from 'node:path';
import { Worker } from 'node:worker_threads';
import { parseBackend } from '../config/backend.ts';
import { ConfigError } from '../config/parse.ts';
import type {
  BackendConfig,
  Config,
  Endpoint,
  FrontendConfig,
  ListenEndpoint,
} from '../config/types.ts';
import type { Logger } from '../log.ts';
import { addFrontendFields, summarize, sumSlots } from '../shared/counters.ts';
import type {
  ControlMessage,
  LatencyAnswer,
  ListenFailure,
  WorkerInit,
  WorkerMessage,
} from '../shared/messages.ts';
import { MetricsServer } from '../stats/metrics.ts';
import { StatsServer } from '../stats/server.ts';
import type { BackendRef } from '../stats/view.ts';
import { StatsView } from '../stats/view.ts';
import { Discovery } from './discovery.ts';
import { HealthChecker } from './health.ts';
import type { AdminChoice, Member, PoolChanges } from './pool.ts';
import { Pool } from './pool.ts';
import { isNamed, RuntimeState } from './state.ts';
import type { ActivatedSocket } from './systemd.ts';
import { ActivationError, notify, takeActivatedSockets } from './systemd.ts';

/** A listener could not be opened: the CLI reports it as bad input (exit status 2). */
export class ListenError extends Error {
  readonly code = 'FULCRUM_LISTEN';
  constructor(endpoint: string, reason: string, flag = '--listen') {
    super(`${flag} ${endpoint}: ${reason}`);
    this.name = 'ListenError';
  }
}

const LISTEN_REASONS: Record<string, string> = {
  EADDRINUSE: 'address already in use',
  EACCES: 'permission denied (ports below 1024 need CAP_NET_BIND_SERVICE)',
  EADDRNOTAVAIL: 'address not available on this host',
};

// The worker runs from the same tree as this file: worker.ts under type stripping, .js in dist.
const WORKER_URL = new URL(`../data/worker${extname(import.meta.url)}`, import.meta.url);

/** What a reload did, for the answer on the stats socket. */
export interface ReloadResult {
  ok: boolean;
  message: string;
}

export class Supervisor {
  /** The config in force, listen ports fixed. */
  config: Config;
  readonly log: Logger;
  readonly version: string;
  /** Reads the config (the file, or the flags), hostnames unresolved: at start, on reload. */
  private readonly load: () => Promise<Config>;
  /** The config as last loaded, before the runtime state was applied to it. */
  private loaded: Config;
  /** What operators changed at runtime, kept in the state file. */
  readonly state: RuntimeState;
  /** Resolves hostname and SRV backends: at start, on reload, and every resolveInterval. */
  private readonly discovery: Discovery;
  private resolveTimer: NodeJS.Timeout | null = null;
  /** Changes to the pools (reload, add, del) run one at a time, in order. */
  private changing: Promise<unknown> = Promise.resolve();
  pools: Pool[] = [];
  /** Frontends a reload removed: kept so process totals never go backwards. */
  private readonly retired: Pool[] = [];
  readonly live = new SharedArrayBuffer(4);
  readonly workers: Worker[] = [];
  private health: HealthChecker | null = null;
  private stats: StatsServer | null = null;
  private metrics: MetricsServer | null = null;
  private view: StatsView | null = null;
  private sweeper: NodeJS.Timeout | null = null;
  private stopping = false;
  private started = false;
  private reloading = false;
  /** Sockets systemd passed, by frontend: opened once at start, kept across reloads. */
  private activated = new Map<string, ActivatedSocket[]>();
  /** `FRONTEND ADDRESS` as written (port 0 included) -> as bound, so a reload keeps the port. */
  private bound = new Map<string, Endpoint>();
  /** Requests in flight to every worker (latency, update), by id: each waits for all answers. */
  private readonly requests = new Map<
    number,
    { answers: WorkerMessage[]; resolve: (answers: WorkerMessage[]) => void }
  >();
  private nextRequestId = 0;
  private drained = 0;

  /** `config` is as loaded (hostnames unresolved); `load` reads it again for a reload. */
  constructor(config: Config, log: Logger, version: string, load: () => Promise<Config>) {
    this.version = version;
    this.config = config;
    this.loaded = config;
    this.log = log;
    this.load = load;
    this.state = new RuntimeState(config.stateFile, log);
    this.discovery = new Discovery(config.resolvers, log);
  }

  /** Starts every worker and resolves once all listeners are open in all of them. */
  async start(): Promise<void> {
    await this.state.load();
    this.config = await this.effective(this.loaded, true);
    this.activated = assignActivated(
      await takeActivatedSockets(this.config.workers),
      this.config.frontends,
    );
    const config = await this.fixPorts(this.config);
    for (const frontend of config.frontends) {
      if (frontend.listen.length === 0 && !this.activated.has(frontend.name)) {
        throw new ConfigError(
          `frontend ${frontend.name}`,
          'nothing to listen on (no listen address, and no socket from systemd named after it)',
        );
      }
    }
    this.config = config;
    this.pools = config.frontends.map((f) => new Pool(f, config.workers, true));
    for (const pool of this.pools) this.applyAdminState(pool);
    // The stats socket first: if it cannot open, nothing has been bound or started yet.
    this.view = new StatsView({
      workers: () => this.config.workers,
      pools: () => this.pools,
      retiredTotals: () => addFrontendFields(this.retired.map((p) => sumSlots(p.counters))),
      collectLatency: () => this.collectLatency(),
      reload: () => this.reload('stats socket'),
      addBackend: (frontend, spec) => this.addBackend(frontend, spec),
      delBackend: (frontend, backend, now) => this.delBackend(frontend, backend, now),
      setAdmin: (ref, admin) => this.setAdmin(ref, admin),
      setWeight: (ref, weight) => this.setWeight(ref, weight),
      showState: () => this.state.toJSON(),
    });
    if (config.stats.socket !== null) {
      this.stats = new StatsServer(
        {
          path: config.stats.socket,
          mode: config.stats.mode,
          level: config.stats.level,
          version: this.version,
        },
        this.view,
        this.log,
      );
      await this.stats.start();
    }
    if (config.metrics !== null) {
      this.metrics = new MetricsServer(this.view, this.log);
      try {
        const port = await this.metrics.start(config.metrics);
        this.log.info(
          { url: `http://${hostText(config.metrics.host)}:${port}/metrics` },
          'metrics',
        );
      } catch (err) {
        this.stats?.close();
        const code = (err as NodeJS.ErrnoException).code ?? '';
        throw new ListenError(
          config.metrics.text,
          LISTEN_REASONS[code] ?? (err as Error).message,
          '--metrics',
        );
      }
    }
    const ready: Promise<boolean>[] = [];
    for (let index = 0; index < config.workers; index++) {
      const init: WorkerInit = {
        index,
        pools: this.pools.map((p) => p.update()),
        live: this.live,
        maxConnections: config.maxConnections,
        backlog: config.backlog,
        accessLog: config.accessLog,
        logFormat: config.logFormat,
        activated: Object.fromEntries(
          [...this.activated].map(([name, sockets]) => [
            name,
            sockets.map((s) => ({
              text: s.address,
              fd: s.fds[index],
              acceptProxy:
                this.loaded.frontends
                  .find((f) => f.name === name)
                  ?.listen.some((l) => l.host === s.host && l.port === s.port && l.acceptProxy) ??
                false,
            })),
          ]),
        ),
      };
      const worker = new Worker(WORKER_URL, { workerData: init });
      this.workers.push(worker);
      ready.push(this.awaitReady(worker));
    }
    let hooked: boolean[];
    try {
      hooked = await Promise.all(ready);
    } catch (err) {
      await Promise.all(this.workers.map((w) => w.terminate()));
      this.stats?.close();
      throw err;
    }
    for (const worker of this.workers) this.watch(worker);
    this.health = new HealthChecker(this.log);
    this.health.sync(this.pools);
    this.sweeper = setInterval(() => this.sweep(), SWEEP_MS);
    this.sweeper.unref();
    if (!hooked.every(Boolean)) {
      this.log.warn('accept hook unavailable on this Node: client reads allocate per chunk');
    }
    for (const frontend of config.frontends) this.logListening(frontend);
    this.started = true;
    this.log.info({ workers: config.workers, node: process.version }, 'ready');
    this.scheduleResolve();
    await notify(this.log, 'READY=1', `STATUS=${this.status()}`);
  }

  private logListening(frontend: FrontendConfig): void {
    this.log.info(
      {
        frontend: frontend.name,
        listen: frontend.listen.map((l) => l.text),
        systemd: (this.activated.get(frontend.name) ?? []).map((s) => s.address),
        algorithm: frontend.algorithm,
        backends: frontend.backends.map((b) => b.name),
      },
      'listening',
    );
  }

  private status(): string {
    const backends = this.pools.reduce((n, p) => n + p.members().length, 0);
    return `${this.pools.length} frontends, ${backends} backends`;
  }

  /**
   * Re-reads the config and applies it without dropping a connection: listeners that stay keep
   * their sockets, backends that stay keep their slot and counters, removed ones drain. A config
   * that does not load, or a new listener that cannot open, changes nothing.
   */
  async reload(source: string): Promise<ReloadResult> {
    if (!this.started || this.stopping) {
      this.log.warn({ source }, 'reload ignored: not running (starting or stopping)');
      return { ok: false, message: 'not running (starting or stopping)' };
    }
    if (this.reloading) return { ok: false, message: 'a reload is already running' };
    this.reloading = true;
    await notify(this.log, 'RELOADING=1', `MONOTONIC_USEC=${monotonicMicros()}`);
    try {
      return await this.serially(() => this.applyReload(source));
    } finally {
      this.reloading = false;
      await notify(this.log, 'READY=1', `STATUS=${this.status()}`);
    }
  }

  private async applyReload(source: string): Promise<ReloadResult> {
    let next: Config;
    try {
      const loaded = await this.load();
      next = await this.fixPorts(await this.effective(loaded, true));
      this.loaded = loaded;
      await this.checkNewListeners(next);
    } catch (err) {
      if (!(err instanceof ConfigError) && !(err instanceof ListenError)) throw err;
      this.log.error({ source, error: err.message }, 'reload failed: the running config stays');
      return { ok: false, message: err.message };
    }
    this.warnFixed(next);
    const previous = new Map(this.pools.map((p) => [p.name, p]));
    const changes: Record<string, PoolChanges> = {};
    const pools = next.frontends.map((frontend) => {
      const pool = previous.get(frontend.name);
      if (pool !== undefined) {
        const listenChanged =
          pool.config.listen.map((l) => l.text).join() !==
          frontend.listen.map((l) => l.text).join();
        changes[frontend.name] = pool.reconfigure(frontend);
        if (listenChanged) this.logListening(frontend);
        previous.delete(frontend.name);
        return pool;
      }
      const pool2 = new Pool(frontend, this.config.workers, false);
      changes[frontend.name] = {
        added: frontend.backends.map((b) => b.name),
        removed: [],
        changed: [],
      };
      this.logListening(frontend);
      return pool2;
    });
    for (const pool of previous.values()) this.retired.push(pool);
    this.pools = pools;
    this.config = {
      ...next,
      // Fixed for the life of the process (see warnFixed).
      workers: this.config.workers,
      backlog: this.config.backlog,
      stats: this.config.stats,
      metrics: this.config.metrics,
      logFormat: this.config.logFormat,
      stateFile: this.config.stateFile,
      resolvers: this.config.resolvers,
    };
    this.log.level = next.logLevel;
    for (const pool of this.pools) this.applyAdminState(pool);
    const failures = await this.publish();
    const seen = new Set<string>();
    for (const failure of failures) {
      if (seen.has(failure.endpoint)) continue;
      seen.add(failure.endpoint);
      this.log.error(
        { endpoint: failure.endpoint, reason: LISTEN_REASONS[failure.code] ?? failure.message },
        'reload: a new listener could not open',
      );
    }
    this.log.info(
      { source, removedFrontends: [...previous.keys()], frontends: changes },
      'reloaded',
    );
    this.scheduleResolve();
    const summary = Object.entries(changes)
      .map(([name, c]) => `${name}: +${c.added.length} -${c.removed.length} ~${c.changed.length}`)
      .join(', ');
    return failures.length === 0
      ? { ok: true, message: `reloaded (${summary})` }
      : { ok: false, message: `reloaded, but ${[...seen].join(', ')} could not open` };
  }

  /** The next round of DNS: every resolveInterval, or when the shortest TTL runs out if sooner
   *  (never more often than once a second). */
  private scheduleResolve(): void {
    if (this.resolveTimer !== null) clearTimeout(this.resolveTimer);
    this.resolveTimer = null;
    if (this.stopping || !Discovery.needed(this.state.apply(this.loaded))) return;
    const ttl = this.discovery.shortestTtl;
    const delay = Math.max(
      1000,
      Math.min(this.config.resolveIntervalMs, ttl === null ? Number.POSITIVE_INFINITY : ttl * 1000),
    );
    this.resolveTimer = setTimeout(() => void this.resolveAgain(), delay);
    this.resolveTimer.unref();
  }

  /** Resolves every name again; addresses that appeared join, those that vanished drain. */
  private async resolveAgain(): Promise<void> {
    await this.serially(async () => {
      if (this.stopping) return;
      const expanded = await this.effective(this.loaded, false);
      const changes: Record<string, PoolChanges> = {};
      for (const pool of this.pools) {
        const frontend = expanded.frontends.find((f) => f.name === pool.name);
        if (frontend === undefined) continue;
        const now = new Set(
          pool
            .members()
            .filter((m) => !m.leaving)
            .map((m) => m.config.name),
        );
        const next = new Set(frontend.backends.map((b) => b.name));
        if (now.size === next.size && [...next].every((n) => now.has(n))) continue;
        changes[pool.name] = pool.reconfigure({ ...pool.config, backends: frontend.backends });
      }
      if (Object.keys(changes).length === 0) return;
      for (const pool of this.pools) this.applyAdminState(pool);
      await this.publish();
      this.log.info({ frontends: changes }, 'discovery: backends changed');
    });
    this.scheduleResolve();
  }

  /** The config in force for a loaded one: runtime additions, then DNS, then runtime deletions
   *  and weights (which may name backends DNS found). */
  private async effective(loaded: Config, strict: boolean): Promise<Config> {
    return this.state.settle(await this.discovery.expand(this.state.apply(loaded), strict));
  }

  /** Runs pool changes one after another, so each sees the last one finished. */
  private serially<T>(change: () => Promise<T>): Promise<T> {
    const run = this.changing.then(change);
    this.changing = run.catch(() => {});
    return run;
  }

  /** The operators' disable/drain from the runtime state, on every backend that has one. */
  private applyAdminState(pool: Pool): void {
    for (const member of pool.members()) {
      if (member.leaving) continue;
      pool.setAdmin(member, this.state.adminOf(pool.name, member.config.name) ?? member.admin);
    }
  }

  /**
   * `add backend FRONTEND SPEC`: kept in the runtime state and brought in by the same path as a
   * configured backend (a hostname expands to its addresses and follows DNS, srv+NAME its SRV
   * targets), joining at once in every worker. A name that does not resolve changes nothing.
   */
  addBackend(frontendName: string, spec: string): Promise<ReloadResult> {
    return this.serially(async () => {
      if (this.stopping) return { ok: false, message: 'stopping' };
      const pool = this.pools.find((p) => p.name === frontendName);
      if (pool === undefined) return { ok: false, message: `no frontend "${frontendName}"` };
      let backend: BackendConfig;
      let found: BackendConfig[];
      try {
        backend = parseBackend(spec, 'add backend');
        found = await this.discovery.expandBackend(backend, 'add backend', true);
      } catch (err) {
        if (err instanceof ConfigError) return { ok: false, message: err.message };
        throw err;
      }
      for (const member of pool.members()) {
        if (member.leaving) continue;
        const same = found.find(
          (b) => b.host === member.config.host && b.port === member.config.port,
        );
        if (same !== undefined) {
          return {
            ok: false,
            message: `${same === backend ? backend.text : `${same.host}:${same.port}`} is already in frontend ${pool.name} (as ${member.config.name})`,
          };
        }
      }
      const configured = this.state.apply(this.loaded).frontends.find((f) => f.name === pool.name);
      if (configured?.backends.some((b) => b.name === backend.name) || pool.find(backend.name)) {
        return {
          ok: false,
          message: `name ${backend.name} is already in frontend ${pool.name}`,
        };
      }
      this.state.added(pool.name, backend);
      let changes: PoolChanges;
      try {
        const next = await this.effective(this.loaded, false);
        const frontend = next.frontends.find((f) => f.name === pool.name) ?? pool.config;
        changes = pool.reconfigure({ ...pool.config, backends: frontend.backends });
      } catch (err) {
        this.state.deleted(pool.name, backend.name);
        return { ok: false, message: (err as Error).message };
      }
      this.applyAdminState(pool);
      await this.publish();
      await this.state.save();
      // A name it brought in is followed from now on, like a configured one.
      this.scheduleResolve();
      this.log.info(
        {
          frontend: pool.name,
          backend: backend.name,
          address: backend.text,
          joined: changes.added,
        },
        'backend added',
      );
      const ref = `${pool.name}/${backend.name}`;
      return {
        ok: true,
        message: pool.config.health.enabled
          ? `added ${ref} (takes connections once its first probe succeeds)`
          : `added ${ref}`,
      };
    });
  }

  /**
   * `del backend FRONTEND/BACKEND [now]`: no new connection at once; leaves when its last one
   * ends (`now`: resets them). A name DNS expanded deletes every backend found under it.
   */
  delBackend(frontendName: string, name: string, now: boolean): Promise<ReloadResult> {
    return this.serially(async () => {
      const pool = this.pools.find((p) => p.name === frontendName);
      if (pool === undefined) return { ok: false, message: `no frontend "${frontendName}"` };
      const ref = `${pool.name}/${name}`;
      const members = pool.members().filter((m) => !m.leaving && isNamed(m.config.name, name));
      if (members.length === 0) {
        const leaving = pool.members().some((m) => isNamed(m.config.name, name));
        return {
          ok: false,
          message: leaving
            ? `${ref} is already leaving`
            : `no backend "${name}" in frontend "${pool.name}"`,
        };
      }
      for (const member of members) pool.remove(member);
      await this.publish();
      let killed = 0;
      if (now) {
        for (const member of members) {
          const id = this.nextRequestId++;
          const answers = await this.request(id, {
            type: 'kill',
            id,
            frontend: pool.name,
            slot: member.index,
          });
          for (const answer of answers) if (answer.type === 'killed') killed += answer.count;
        }
      }
      this.state.deleted(pool.name, name);
      await this.state.save();
      const live = members.reduce((n, m) => n + Atomics.load(pool.table.active, m.index), 0);
      this.log.info(
        {
          frontend: pool.name,
          backend: name,
          removed: members.map((m) => m.config.name),
          live,
          killed,
        },
        'backend deleted',
      );
      if (now) return { ok: true, message: `${ref} deleted (${killed} connections reset)` };
      return {
        ok: true,
        message: live > 0 ? `${ref} draining (${live} live), then deleted` : `${ref} deleted`,
      };
    });
  }

  /** `enable`, `disable`, `drain`: at once in every worker (a store to the shared table). */
  async setAdmin(ref: BackendRef, admin: AdminChoice): Promise<void> {
    ref.pool.setAdmin(ref.member, admin);
    this.state.admin(ref.pool.name, ref.member.config.name, admin === 'enabled' ? null : admin);
    await this.state.save();
  }

  async setWeight(ref: BackendRef, weight: number): Promise<void> {
    ref.pool.setWeight(ref.member, weight);
    this.state.weight(ref.pool.name, ref.member.config.name, weight);
    await this.state.save();
  }

  /** Settings a running process cannot change are logged, not silently ignored. */
  private warnFixed(next: Config): void {
    const fixed: string[] = [];
    if (next.workers !== this.config.workers) fixed.push('workers');
    if (next.backlog !== this.config.backlog) fixed.push('backlog');
    if (JSON.stringify(next.stats) !== JSON.stringify(this.config.stats)) fixed.push('statsSocket');
    if (next.metrics?.text !== this.config.metrics?.text) fixed.push('metrics');
    if (next.logFormat !== this.config.logFormat) fixed.push('log.format');
    if (next.stateFile !== this.config.stateFile) fixed.push('stateFile');
    if (next.resolvers.join() !== this.config.resolvers.join()) fixed.push('resolvers');
    if (fixed.length > 0) {
      this.log.warn({ settings: fixed }, 'reload: these take effect only after a restart');
    }
  }

  /**
   * Makes the pools' changes real: every worker applies them, then joining backends become
   * pickable, removals settle, and health checks follow the new members.
   */
  private async publish(): Promise<ListenFailure[]> {
    const failures = await this.sendUpdate();
    for (const pool of this.pools) pool.acknowledged();
    this.health?.sync(this.pools);
    return failures;
  }

  /** Sends every pool to every worker; resolves when all have applied it. */
  private async sendUpdate(): Promise<ListenFailure[]> {
    const id = this.nextRequestId++;
    const answers = await this.request(id, {
      type: 'update',
      id,
      pools: this.pools.map((p) => p.update()),
      maxConnections: this.config.maxConnections,
      accessLog: this.config.accessLog,
    });
    return answers.flatMap((a) => (a.type === 'updated' ? a.failures : []));
  }

  /** Binds each listener the new config adds, once, to find a taken port before changing anything. */
  private async checkNewListeners(next: Config): Promise<void> {
    const open = new Set(this.config.frontends.flatMap((f) => f.listen.map((l) => l.text)));
    for (const frontend of next.frontends) {
      for (const endpoint of frontend.listen) {
        if (open.has(endpoint.text)) continue;
        const probe = net.createServer();
        probe.listen({ host: endpoint.host, port: endpoint.port, exclusive: true });
        try {
          await once(probe, 'listening');
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code ?? '';
          throw new ListenError(endpoint.text, LISTEN_REASONS[code] ?? (err as Error).message);
        }
        probe.close();
        await once(probe, 'close');
      }
    }
  }

  /** Moves slow-start ramps along; frees the slots of removed backends whose last connection
   *  has finished. */
  private sweep(): void {
    const now = performance.now();
    for (const pool of this.pools) {
      pool.ramp(now);
      for (const name of pool.sweepLeaving()) {
        this.log.info({ frontend: pool.name, backend: name }, 'backend removed');
      }
    }
  }

  private awaitReady(worker: Worker): Promise<boolean> {
    return new Promise((resolve, reject) => {
      const onMessage = (message: WorkerMessage) => {
        if (message.type === 'ready') {
          cleanup();
          resolve(message.hooked);
        } else if (message.type === 'listen-error') {
          cleanup();
          reject(
            new ListenError(message.endpoint, LISTEN_REASONS[message.code] ?? message.message),
          );
        }
      };
      const onError = (err: Error) => {
        cleanup();
        reject(err);
      };
      const cleanup = () => {
        worker.off('message', onMessage);
        worker.off('error', onError);
      };
      worker.on('message', onMessage);
      worker.on('error', onError);
    });
  }

  /** After start: a worker that dies is logged, and the process stops (systemd restarts it). */
  private watch(worker: Worker): void {
    worker.on('message', (message: WorkerMessage) => {
      if (message.type === 'drained') this.onDrained();
      else if (
        message.type === 'latency' ||
        message.type === 'updated' ||
        message.type === 'killed'
      ) {
        this.onAnswer(message.id, message);
      }
    });
    worker.on('error', (err) => {
      this.log.fatal({ err }, 'worker thread failed');
    });
    worker.on('exit', (code) => {
      if (!this.stopping) {
        this.log.fatal({ code }, 'worker thread exited; stopping');
        this.stats?.close();
        process.exit(1);
      }
    });
  }

  /** SIGTERM/SIGINT: stop accepting, let connections finish up to the drain timeout, exit 0. */
  stop(signal: string): void {
    if (!this.started) {
      // Still starting: nothing has been accepted yet, so there is nothing to drain.
      this.log.info({ signal }, 'stopped before ready');
      this.stats?.close();
      process.exit(0);
    }
    if (this.stopping) {
      this.log.warn({ signal }, 'second signal: exiting now');
      this.stats?.close();
      process.exit(1);
    }
    this.stopping = true;
    this.health?.stop();
    void notify(this.log, 'STOPPING=1');
    this.log.info({ signal, drainTimeoutMs: this.config.drainTimeoutMs }, 'stopping: draining');
    this.broadcast({ type: 'drain' });
    const deadline = setTimeout(() => {
      this.log.warn('drain timeout: cutting the remaining connections');
      this.broadcast({ type: 'cut' });
      // Give the cut a moment to be counted, then go.
      setTimeout(() => this.exit(), 200).unref();
    }, this.config.drainTimeoutMs);
    deadline.unref();
  }

  /** Every worker's histograms, encoded, by frontend. */
  async collectLatency(): Promise<LatencyAnswer[]> {
    const id = this.nextRequestId++;
    const answers = await this.request(id, { type: 'latency', id });
    return answers.map((a) => (a.type === 'latency' ? a.latency : {}));
  }

  private request(id: number, message: ControlMessage): Promise<WorkerMessage[]> {
    return new Promise((resolve) => {
      this.requests.set(id, { answers: [], resolve });
      this.broadcast(message);
    });
  }

  private onAnswer(id: number, answer: WorkerMessage): void {
    const request = this.requests.get(id);
    if (request === undefined) return;
    request.answers.push(answer);
    if (request.answers.length === this.workers.length) {
      this.requests.delete(id);
      request.resolve(request.answers);
    }
  }

  private onDrained(): void {
    this.drained++;
    if (this.drained === this.workers.length) this.exit();
  }

  private broadcast(message: ControlMessage): void {
    for (const worker of this.workers) worker.postMessage(message);
  }

  private exit(): never {
    this.stats?.close();
    const totals = this.view?.totals() ?? new Float64Array(0);
    this.log.info(summarize(totals), 'stopped');
    process.exit(0);
  }

  /**
   * Port 0 means "any free port", but each worker binding port 0 would get a different one. Pick
   * the port here, once, and give every worker the same; a reload keeps the port picked before.
   * (Another process could take it between this check and the workers' bind; the workers' bind
   * then fails with a clear error.)
   */
  private async fixPorts(config: Config): Promise<Config> {
    const bound = new Map<string, Endpoint>();
    const frontends: FrontendConfig[] = [];
    for (const frontend of config.frontends) {
      const listen: ListenEndpoint[] = [];
      const activated = this.activated.get(frontend.name) ?? [];
      for (const endpoint of frontend.listen) {
        // The socket systemd passed for this address takes the place of binding it here.
        if (activated.some((s) => s.host === endpoint.host && s.port === endpoint.port)) continue;
        const key = `${frontend.name} ${endpoint.text}`;
        let fixed = this.bound.get(key) ?? endpoint;
        if (fixed.port === 0) fixed = await withFreePort(endpoint);
        bound.set(key, fixed);
        listen.push({ ...fixed, acceptProxy: endpoint.acceptProxy });
      }
      frontends.push({ ...frontend, listen });
    }
    this.bound = bound;
    return { ...config, frontends };
  }
}

/** How often removed backends are checked for their last connection. */
const SWEEP_MS = 100;

function monotonicMicros(): string {
  return String(process.hrtime.bigint() / 1000n);
}

async function withFreePort(endpoint: Endpoint): Promise<Endpoint> {
  const probe = net.createServer();
  probe.listen({ host: endpoint.host, port: 0 });
  try {
    await once(probe, 'listening');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? '';
    throw new ListenError(endpoint.text, LISTEN_REASONS[code] ?? (err as Error).message);
  }
  const port = (probe.address() as net.AddressInfo).port;
  probe.close();
  await once(probe, 'close');
  return { text: `${hostText(endpoint.host)}:${port}`, host: endpoint.host, port };
}

/** A host as it is written before `:PORT`: IPv6 in brackets. */
function hostText(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}

/**
 * Gives each socket systemd passed to the frontend named by its FileDescriptorName=; unnamed
 * sockets go to the only frontend, if there is only one.
 */
function assignActivated(
  sockets: readonly ActivatedSocket[],
  frontends: readonly FrontendConfig[],
): Map<string, ActivatedSocket[]> {
  const byFrontend = new Map<string, ActivatedSocket[]>();
  for (const socket of sockets) {
    let name = socket.name;
    if (name === '') {
      if (frontends.length !== 1) {
        throw new ActivationError(
          `${socket.address} has no FileDescriptorName= and there are ${frontends.length} frontends: name it after one`,
        );
      }
      name = frontends[0].name;
    } else if (!frontends.some((f) => f.name === name)) {
      throw new ActivationError(
        `${socket.address} is named "${name}" (FileDescriptorName=), but no frontend is`,
      );
    }
    byFrontend.set(name, [...(byFrontend.get(name) ?? []), socket]);
  }
  return byFrontend;
}
