// The control plane's main loop: builds the pools (shared tables and counters) from the config,
// starts the workers once every listener can open, reloads on SIGHUP, refreshes DNS, and stops
// on SIGTERM/SIGINT. Its helpers each keep one job: listeners.ts (ports, systemd's sockets),
// workers.ts (threads, requests), discovery.ts (names), admin.ts (runtime changes), state.ts.
// Invariants: the main thread never touches a client connection; every change to the pools
// (reload, DNS, admin) runs one at a time (serially) and reaches the workers by publish(); a
// reload, a DNS refresh or an admin command that fails is a logged error with nothing changed,
// never a rejection nobody handles.
//
// How fulcrum upgrades (upgrade.ts): SIGUSR2 or `upgrade` starts a successor with every listening
// socket; once it is ready this process frees the metrics port, the successor takes it and the
// stats socket path, and this process drains as on SIGTERM (without telling systemd it stops).
//
// How fulcrum stops (the stop path's invariant): SIGTERM/SIGINT makes fulcrum not ready at once;
// after --grace (0 by default), during which it still accepts, it closes the listeners and asks
// every worker to drain; the process exits 0 as soon as every worker says it holds no live
// connection (at once when nothing is live), and in any case at the drain timeout, when what is
// left is cut and the exit follows 200 ms later; a second signal exits 1 at once. Nothing on
// the way out waits for a reload, a config read, DNS or a state save.

import type { ChildProcess } from 'node:child_process';
import { ConfigError } from '../config/parse.ts';
import type { Config, FrontendConfig } from '../config/types.ts';
import { TICKET_ROTATE_MS } from '../data/tls.ts';
import type { Logger } from '../log.ts';
import { addFrontendFields, END, END_BASE, summarize, sumSlots } from '../shared/counters.ts';
import type { LatencyAnswer, ListenFailure, WorkerInit } from '../shared/messages.ts';
import type { Outcome } from '../stats/commands.ts';
import type { MetricsServer } from '../stats/metrics.ts';
import { StatsServer } from '../stats/server.ts';
import { StatsView } from '../stats/view.ts';
import { Admin } from './admin.ts';
import { AgentChecker } from './agent.ts';
import { connectionBudget, descriptorLimit } from './descriptors.ts';
import { Discovery } from './discovery.ts';
import { adoptTicketKeys, currentTicketKeys, Frontend, rotateTicketKeys } from './frontend.ts';
import { HealthChecker } from './health.ts';
import {
  checkFree,
  checkNewListeners,
  hostText,
  ListenError,
  Listeners,
  listenReason,
  spread,
} from './listeners.ts';
import { LoadScraper } from './load.ts';
import type { PoolChanges } from './pool.ts';
import { Pool } from './pool.ts';
import { RuntimeState } from './state.ts';
import { notify } from './systemd.ts';
import type { Handover, Reserve, UpgradeMessage } from './upgrade.ts';
import {
  handoverFromEnv,
  nextMessage,
  reserveSockets,
  startSuccessor,
  takeTicketKeys,
  tell,
  uniqueSockets,
} from './upgrade.ts';
import { WorkerGroup } from './workers.ts';

export { ListenError };

/** How often removed backends are checked for their last connection. */
const SWEEP_MS = 100;
/** How often the age of the TLS ticket keys is looked at (they are rotated at TICKET_ROTATE_MS). */
const TICKET_CHECK_MS = 60_000;

/** Local resource errors are logged at most this often (they come in floods). */
const LOCAL_ERROR_LOG_MS = 10_000;

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
  /** Resolves hostname and SRV backends: at start, on reload, on add, and every resolveInterval. */
  private readonly discovery: Discovery;
  private readonly listeners = new Listeners();
  private readonly group = new WorkerGroup();
  private resolveTimer: NodeJS.Timeout | null = null;
  /** Changes to the pools (reload, add, del, DNS) run one at a time, in order. */
  private changing: Promise<unknown> = Promise.resolve();
  /** Every pool in use, once each, whatever the number of frontends on it. */
  pools: Pool[] = [];
  frontends: Frontend[] = [];
  /** Frontends a reload removed: kept so process totals never go backwards. */
  private readonly retired: Frontend[] = [];
  /** Pools a reload dropped that still hold connections: shown until the last one ends. */
  private leavingPools: Pool[] = [];
  readonly live = new SharedArrayBuffer(4);
  /** What watches the backends from the main thread: health probes, agents, load reports. Each
   *  follows the pools on every change (sync) and ends with stop. */
  private watchers: Array<HealthChecker | AgentChecker | LoadScraper> = [];
  private stats: StatsServer | null = null;
  /** The stats server given up at a handover to a successor serving the same path: it answers
   *  no one (the path is the successor's), and is closed if this process takes back (else its
   *  descriptor would stay open, one per take-back). */
  private givenUpStats: StatsServer | null = null;
  private metrics: MetricsServer | null = null;
  private view: StatsView | null = null;
  private sweeper: NodeJS.Timeout | null = null;
  private stopping = false;
  /** SIGTERM/SIGINT came with a grace period: not ready, still accepting until it ends. */
  private graceTimer: NodeJS.Timeout | null = null;
  /** Listen addresses the last change could not open (not ready while any is missing). */
  private unbound: string[] = [];
  /** A worker thread died (the process is on its way out: not ready meanwhile). */
  private workerLost = false;
  /** Frontends whose discovered backends would not fit: logged once until they fit again. */
  private readonly overfull = new Set<string>();
  private started = false;
  /** The reload running now, and the one more that follows it for every request made meanwhile. */
  private reloadRunning: Promise<Outcome> | null = null;
  private reloadNext: Promise<Outcome> | null = null;
  /** A reload asked for while starting: it runs once ready (the config may have changed since). */
  private reloadWhenReady: string | null = null;
  private drained = 0;
  /** Counts drains: a worker's 'drained' from before a take-back is not counted. */
  private drainGeneration = 0;
  private drainTimer: NodeJS.Timeout | null = null;
  private exitTimer: NodeJS.Timeout | null = null;
  /** Tells the successor how many connections this process still drains. */
  private reportTimer: NodeJS.Timeout | null = null;
  /** The last note about the connection budget, so it is logged once, not at every change. */
  private budgetSaid = '';
  /** Clients closed by local resource errors, as last logged, and when (at most every 10 s). */
  private localErrors = 0;
  private localErrorsAt = Number.NEGATIVE_INFINITY;
  /** When this process started serving (for `show info`). */
  private readonly startedAt = new Date();
  /** Set when this process is a successor: what it inherited from the process it replaces. */
  private readonly handover: Handover | null = handoverFromEnv();
  /** An upgrade runs (from the request to its handover or failure). */
  private upgradeBusy = false;
  /** The successor of an upgrade in progress; null when none is. */
  private upgrading: ChildProcess | null = null;
  /** After a handover: a descriptor of every listening socket handed over, to take back if the
   *  successor dies while this process drains. */
  private reserve: Reserve | null = null;
  /** This process handed everything to a successor and only drains now. */
  private handedOver = false;
  /** The process this one replaced, while it still drains: its pid and live connections. */
  private older: { pid: number; live: number } | null = null;

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
    if (this.handover !== null) {
      const handed = takeTicketKeys(this.handover);
      if (handed !== null) adoptTicketKeys(handed.keys, handed.madeAt);
      else this.log.warn('upgrade: no TLS ticket keys came from the old process; new ones made');
    }
    await this.state.load();
    this.config = await this.effective(this.loaded, true);
    await this.listeners.activate(this.config.workers, this.config.frontends, this.handover);
    const config = await this.listeners.fixPorts(this.config);
    this.listeners.checkEveryFrontendListens(config);
    // Every address not handed over (systemd's are not in `listen`) must be free of others.
    const kind = (udp: boolean | undefined) => (udp === true ? 'udp' : 'tcp');
    const handed = new Set(this.handover?.sockets.map((s) => `${kind(s.udp)} ${s.host} ${s.port}`));
    await checkFree(
      config,
      (e) => handed.has(`${kind(e.udp)} ${e.host} ${e.port}`) || this.listeners.reserved(e),
    );
    this.config = config;
    this.arrange(config.frontends, true);
    for (const pool of this.pools) this.applyAdminState(pool);
    for (const warning of config.warnings) this.log.warn(warning);
    this.view = new StatsView({
      workers: () => this.config.workers,
      frontends: () => this.frontends,
      pools: () => [...this.pools, ...this.leavingPools],
      retiredTotals: () => addFrontendFields(this.retired.map((f) => sumSlots(f.counters))),
      collectLatency: () => this.collectLatency(),
      processInfo: () => this.processInfo(),
      readiness: () => this.readiness(),
    });
    // The stats socket first: if it cannot open, nothing has been bound or started yet. A
    // successor opens them when the process it replaces hands them over.
    if (this.handover === null) await this.openSideChannels(false);
    const inits: WorkerInit[] = [];
    for (let index = 0; index < config.workers; index++) {
      inits.push({
        index,
        frontends: this.frontends.map((f) => f.update()),
        live: this.live,
        maxConnections: this.maxConnections(),
        backlog: config.backlog,
        accessLog: config.accessLog,
        logFormat: config.logFormat,
        activated: this.listeners.forWorker(index, this.loaded),
        inherited: this.listeners.inheritedFor(index, config.workers),
      });
    }
    let hooked: boolean[];
    try {
      hooked = await this.group.start(inits, {
        drained: (generation) => this.onDrained(generation),
        died: (code, err) => this.onWorkerDied(code, err),
      });
    } catch (err) {
      this.stats?.close();
      throw err;
    } finally {
      await this.listeners.release();
    }
    this.startWatchers();
    this.sweeper = setInterval(() => this.sweep(), SWEEP_MS);
    this.sweeper.unref();
    // Keys are rotated once they are TICKET_ROTATE_MS old, however they came: made here,
    // inherited from the process this one upgrades, or rotated by an operator.
    setInterval(() => {
      if (Date.now() - currentTicketKeys().madeAt < TICKET_ROTATE_MS) return;
      this.rotateTicketKeys().catch((err) =>
        this.log.error({ err }, 'TLS ticket keys: rotation failed'),
      );
    }, TICKET_CHECK_MS).unref();
    if (!hooked.every(Boolean)) {
      this.log.warn(
        'accept hook unavailable on this Node: the relay runs on the public API (more memory and CPU per connection)',
      );
    }
    for (const frontend of config.frontends) this.logListening(frontend);
    if (this.handover !== null) await this.takeOver();
    this.started = true;
    this.log.info({ workers: config.workers, node: process.version }, 'ready');
    this.scheduleResolve();
    // From a successor, --pid makes this process the service's main one (MAINPID=).
    await notify(this.log, 'READY=1', `STATUS=${this.status()}`);
    if (this.reloadWhenReady !== null) {
      const source = this.reloadWhenReady;
      this.reloadWhenReady = null;
      void this.reload(source);
    }
  }

  /** Health probes, agents and load reports, each following the pools from now on. */
  private startWatchers(): void {
    this.watchers = [
      new HealthChecker(this.log),
      new AgentChecker(this.log),
      new LoadScraper(this.log),
    ];
    for (const watcher of this.watchers) watcher.sync(this.pools);
  }

  /** Opens the stats socket and the metrics port; `replace`: taking them over from the process
   *  this one upgrades (the stats socket is renamed over the path it serves). */
  private async openSideChannels(replace: boolean): Promise<void> {
    const config = this.config;
    if (config.stats.socket !== null && this.view !== null) {
      this.stats = new StatsServer(
        {
          path: config.stats.socket,
          mode: config.stats.mode,
          level: config.stats.level,
          version: this.version,
        },
        this.view,
        this.admin(),
        this.log,
      );
      await this.stats.start(replace);
    }
    if (config.metrics !== null && this.view !== null) {
      // prom-client (~75 ms to load) only for a balancer that has a metrics port.
      const { MetricsServer } = await import('../stats/metrics.ts');
      this.metrics = new MetricsServer(this.view, this.log);
      try {
        const port = await this.metrics.start(config.metrics);
        this.log.info(
          { url: `http://${hostText(config.metrics.host)}:${port}/metrics` },
          'metrics',
        );
      } catch (err) {
        this.metrics = null;
        if (!replace) this.stats?.close();
        const e = err as NodeJS.ErrnoException;
        throw new ListenError(config.metrics.text, listenReason(e.code, e.message), '--metrics');
      }
    }
  }

  /**
   * A successor, listening: waits for the first health checks, says it is ready, and takes the
   * metrics port and the stats socket once the process it replaces lets go of them (or is gone).
   */
  private async takeOver(): Promise<void> {
    const deadline = Date.now() + this.firstChecksMs();
    const health = this.watchers.find((w) => w instanceof HealthChecker);
    while (health !== undefined && !health.allProbed() && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    // The old process may be gone already (the channel closed before anything here listened for
    // it): then there is nobody to wait for, and everything is this process's to take.
    await new Promise<void>((resolve) => {
      if (!process.connected) {
        resolve();
        return;
      }
      const onMessage = (message: UpgradeMessage) => {
        if (message.type !== 'takeover') return;
        process.off('message', onMessage);
        process.off('disconnect', resolve);
        resolve();
      };
      process.on('message', onMessage);
      process.once('disconnect', resolve);
      tell(process, { type: 'ready' });
    });
    if (!process.connected) this.log.warn('upgrade: the old process is gone; taking over');
    await this.openSideChannels(true);
    if (process.connected) {
      process.on('message', (message: UpgradeMessage) => {
        if (message.type === 'draining') this.older = { pid: message.pid, live: message.live };
      });
      process.once('disconnect', () => {
        if (this.older !== null)
          this.log.info({ oldPid: this.older.pid }, 'upgrade: the old process has exited');
        this.older = null;
      });
      // The channel must not keep this process alive, nor the old one's exit stop it.
      process.channel?.unref();
      tell(process, { type: 'took-over', statsSocket: this.config.stats.socket });
    }
    this.log.info('upgrade: took over');
  }

  /** How long a successor waits for every backend's first probe: a round, and its timeout. */
  private firstChecksMs(): number {
    const health = this.config.frontends.map((f) => f.health).filter((h) => h.enabled);
    return Math.min(30_000, Math.max(0, ...health.map((h) => h.intervalMs + h.timeoutMs)));
  }

  /**
   * SIGUSR2 or `upgrade`: starts a successor with this command line and every listening socket,
   * and once it is ready hands it the metrics port and the stats socket, then drains. A failure
   * changes nothing here; a second request while one runs is logged and refused.
   */
  async upgrade(source: string): Promise<Outcome> {
    if (this.upgradeBusy || this.handedOver) {
      this.log.warn({ source }, 'upgrade already in progress: ignored');
      return { ok: false, message: 'an upgrade is already in progress' };
    }
    if (!this.started || this.stopping || this.graceTimer !== null) {
      return { ok: false, message: 'not serving: nothing to upgrade' };
    }
    this.upgradeBusy = true;
    try {
      return await this.runUpgrade(source);
    } finally {
      this.upgradeBusy = false;
    }
  }

  private async runUpgrade(source: string): Promise<Outcome> {
    this.log.info({ source }, 'upgrade: starting a new process');
    const answers = await this.group.request((id) => ({ type: 'sockets', id }));
    const sockets = uniqueSockets(answers.flatMap((a) => (a.type === 'sockets' ? a.sockets : [])));
    const handover: Handover = {
      sockets: sockets.map(({ host, port, systemd, udp }) => ({ host, port, systemd, udp })),
      bound: this.listeners.boundEntries(),
    };
    let reserve: Reserve;
    let successorStats: string | null = null;
    let child: ChildProcess;
    let ready: Promise<void>;
    try {
      // UDP sockets are not reserved: the descriptor helper passes listening TCP sockets only,
      // and a UDP socket's queue is not a backlog of clients to keep. If the successor dies,
      // this process binds them anew (SO_REUSEPORT) when it resumes.
      reserve = await reserveSockets(sockets.filter((s) => s.systemd === null && s.udp !== true));
      try {
        ({ child, ready } = startSuccessor(
          handover,
          sockets.map((s) => s.fd),
          currentTicketKeys(),
          this.log,
        ));
      } catch (err) {
        reserve.release();
        throw err;
      }
    } catch (err) {
      const message = `cannot start the new process: ${(err as Error).message}`;
      this.log.error({ source, error: message }, 'upgrade failed: this process keeps serving');
      return { ok: false, message: `upgrade failed: ${message}` };
    }
    this.upgrading = child;
    try {
      await ready;
      this.log.info({ newPid: child.pid }, 'upgrade: the new process is ready; handing over');
      if (this.metrics !== null) {
        await this.metrics.stop();
        this.metrics = null;
      }
      tell(child, { type: 'takeover' });
      successorStats = (await nextMessage(child, 'took-over')).statsSocket;
    } catch (err) {
      const message = (err as Error).message;
      this.upgrading = null;
      reserve.release();
      if (child.exitCode === null) child.kill('SIGKILL');
      this.log.error({ source, error: message }, 'upgrade failed: this process keeps serving');
      if (this.metrics === null && this.config.metrics !== null) {
        await this.openSideChannels(false).catch((e: Error) =>
          this.log.error({ error: e.message }, 'upgrade: cannot reopen the metrics port'),
        );
      }
      return { ok: false, message: `upgrade failed: ${message}` };
    }
    this.reserve = reserve;
    // After this answer is written: the stats socket that carries it closes next.
    setImmediate(() => this.drainAfterHandover(child, successorStats));
    return {
      ok: true,
      message: `upgraded: pid ${child.pid} serves now; pid ${process.pid} drains`,
    };
  }

  /**
   * The successor serves everything: stop accepting and drain, telling it how many are left. If
   * it dies before this process has drained, this process takes its listeners back and serves.
   */
  private drainAfterHandover(child: ChildProcess, successorStats: string | null): void {
    this.handedOver = true;
    // Closing a unix socket server unlinks its path (libuv does): only when the successor serves
    // another path is ours stale. Otherwise the path is the successor's socket now; ours answers
    // no one and goes at exit.
    if (this.stats !== null && successorStats !== this.config.stats.socket) this.stats.close();
    else this.givenUpStats = this.stats;
    this.stats = null;
    child.on('exit', (code, signal) => {
      if (code === 0) {
        this.log.info({ newPid: child.pid }, 'upgrade: the new process exited');
        return;
      }
      this.log.error({ newPid: child.pid, code, signal }, 'upgrade: the new process died');
      if (this.handedOver && this.reserve !== null) void this.takeBack(child.pid ?? 0);
    });
    const report = () =>
      tell(child, {
        type: 'draining',
        pid: process.pid,
        live: Number(this.view?.info(this.version).connections_now ?? 0),
      });
    report();
    this.reportTimer = setInterval(report, 500);
    this.reportTimer.unref();
    this.drain({ reason: 'upgrade' });
  }

  /**
   * The successor died after the handover while this process drains: the listening sockets it
   * had are still open here (the reserve), so this process listens on them again, takes back the
   * stats socket and the metrics port, restarts its checks and serves as before. HAProxy's old
   * process cannot; a connection queued meanwhile in a socket of the dead successor is lost with
   * it, but no port ever closes.
   */
  private async takeBack(deadPid: number): Promise<void> {
    const reserve = this.reserve;
    if (reserve === null) return;
    this.reserve = null;
    this.log.warn({ newPid: deadPid }, 'upgrade: taking the listeners back and serving');
    if (this.drainTimer !== null) clearTimeout(this.drainTimer);
    if (this.exitTimer !== null) clearTimeout(this.exitTimer);
    if (this.reportTimer !== null) clearInterval(this.reportTimer);
    this.drainTimer = this.exitTimer = this.reportTimer = null;
    this.drainGeneration++;
    this.drained = 0;
    this.stopping = false;
    this.handedOver = false;
    this.upgrading = null;
    const workers = this.group.size;
    const answers = await this.group.request((id, index) => ({
      type: 'resume',
      id,
      inherited: spread(reserve.sockets, index, workers),
    }));
    for (const answer of answers) {
      for (const failure of answer.type === 'updated' ? answer.failures : []) {
        this.log.error(
          { endpoint: failure.endpoint, reason: listenReason(failure.code, failure.message) },
          'upgrade: a listener could not be taken back',
        );
      }
    }
    // systemd's sockets went with the drain (each worker's descriptor is closed): the service
    // manager, whose main process died, restarts the service to serve them again.
    const systemd = this.config.frontends.flatMap((f) => this.listeners.activatedFor(f.name));
    if (systemd.length > 0) {
      this.log.warn({ systemd }, 'upgrade: the sockets systemd passed are not taken back');
    }
    this.startWatchers();
    // The path is the dead successor's socket now: closing ours unlinks it, and ours takes its place.
    this.givenUpStats?.close();
    this.givenUpStats = null;
    try {
      await this.openSideChannels(true);
    } catch (err) {
      this.log.error({ error: (err as Error).message }, 'upgrade: cannot reopen a side channel');
    }
    this.log.info({ workers }, 'upgrade: took the listeners back; serving');
    await notify(this.log, 'READY=1', `STATUS=${this.status()}`);
    // What operators changed on the successor (and it saved) is this process's to keep: the state
    // file is read again and applied by the one path a reload takes.
    await this.state.load();
    await this.reload('upgrade take-back');
  }

  /** `show info`: which process answers, and the upgrade it is in. */
  private processInfo(): Record<string, string | number> {
    const info: Record<string, string | number> = { started: this.startedAt.toISOString() };
    if (this.upgrading !== null && !this.handedOver) info.upgrading_pid = this.upgrading.pid ?? 0;
    if (this.older !== null) {
      info.older_pid = this.older.pid;
      info.older_connections = this.older.live;
    }
    return info;
  }

  /** The admin commands' access to the pools, the state and the change queue. */
  private admin(): Admin {
    return new Admin({
      log: this.log,
      state: this.state,
      discovery: this.discovery,
      pools: () => this.pools,
      frontends: () => this.frontends,
      loaded: () => this.loaded,
      stopping: () => this.stopping,
      serially: (change) => this.serially(change),
      publish: () => this.publish(),
      effective: (loaded, strict) => this.effective(loaded, strict),
      applyAdminState: (pool) => this.applyAdminState(pool),
      scheduleResolve: () => this.scheduleResolve(),
      kill: (pool, slot) => this.kill(pool, slot),
      reload: (source) => this.reload(source),
      upgrade: (source) => this.upgrade(source),
      rotateTicketKeys: () => this.rotateTicketKeys(),
    });
  }

  /** Resets every connection to `slot` of `pool` in every worker, whichever frontend holds it;
   *  resolves with how many. */
  private async kill(pool: Pool, slot: number): Promise<number> {
    const answers = await this.group.request((id) => ({ type: 'kill', id, pool: pool.id, slot }));
    let killed = 0;
    for (const answer of answers) if (answer.type === 'killed') killed += answer.count;
    return killed;
  }

  /** After start: a worker that dies is logged, and the process stops (systemd restarts it). */
  private onWorkerDied(code: number | null, err: Error | null): void {
    this.workerLost = true;
    if (err !== null) {
      this.log.fatal({ err }, 'worker thread failed');
      return;
    }
    if (this.stopping) return;
    this.log.fatal({ code }, 'worker thread exited; stopping');
    this.stats?.close();
    process.exit(1);
  }

  private logListening(frontend: FrontendConfig): void {
    if (frontend.listen.some((l) => l.acceptProxy) && frontend.guard.proxyFrom.length === 0) {
      this.log.warn(
        { frontend: frontend.name },
        'accept-proxy trusts every peer to name its client: set acceptProxyFrom (--accept-proxy-from)',
      );
    }
    this.log.info(
      {
        frontend: frontend.name,
        listen: frontend.listen.map((l) => (l.udp ? `${l.text},udp` : l.text)),
        systemd: this.listeners.activatedFor(frontend.name),
        algorithm: frontend.algorithm,
        backends: frontend.backends.map((b) => b.name),
      },
      'listening',
    );
  }

  private status(): string {
    const backends = this.pools.reduce((n, p) => n + p.members().length, 0);
    return `${this.frontends.length} frontends, ${this.pools.length} pools, ${backends} backends`;
  }

  /**
   * Re-reads the config and applies it without dropping a connection: listeners that stay keep
   * their sockets, backends that stay keep their slot and counters, removed ones drain. A config
   * that does not load, or a new listener that cannot open, changes nothing.
   */
  reload(source: string): Promise<Outcome> {
    if (this.stopping || this.graceTimer !== null) {
      this.log.warn({ source }, 'reload ignored: stopping');
      return Promise.resolve({ ok: false, message: 'stopping' });
    }
    if (!this.started) {
      this.reloadWhenReady = source;
      this.log.info({ source }, 'reload requested while starting: it runs once ready');
      return Promise.resolve({ ok: false, message: 'starting: the reload runs once ready' });
    }
    if (this.reloadRunning === null) return this.startReload(source);
    // One running already: every request until it ends shares one more reload after it, which
    // reads the file as it is then (so an edit made during the first is never missed).
    this.reloadNext ??= this.reloadRunning.then(() => {
      this.reloadNext = null;
      return this.startReload(source);
    });
    return this.reloadNext;
  }

  private startReload(source: string): Promise<Outcome> {
    const run = this.runReload(source).finally(() => {
      if (this.reloadRunning === run) this.reloadRunning = null;
    });
    this.reloadRunning = run;
    return run;
  }

  /** One reload, start to end. Never rejects: whatever goes wrong is a logged, failed reload. */
  private async runReload(source: string): Promise<Outcome> {
    await notify(this.log, 'RELOADING=1', `MONOTONIC_USEC=${monotonicMicros()}`);
    try {
      return await this.serially(() => this.applyReload(source));
    } catch (err) {
      this.log.error({ source, err }, 'reload failed: internal error');
      return { ok: false, message: `reload failed: ${(err as Error).message}` };
    } finally {
      // Ports picked for new `:0` addresses are bound by the workers now, or never will be.
      await this.listeners.release();
      await notify(this.log, 'READY=1', `STATUS=${this.status()}`);
    }
  }

  private async applyReload(source: string): Promise<Outcome> {
    let next: Config;
    try {
      const loaded = await this.load();
      next = await this.listeners.fixPorts(await this.effective(loaded, true));
      for (const warning of next.warnings) this.log.warn({ source }, warning);
      // Every pool must have room before any changes: a reload is whole or nothing.
      for (const [name, frontend] of poolConfigs(next.frontends)) {
        const pool = this.pools.find((p) => p.name === name);
        const refused = pool?.roomFor(frontend) ?? null;
        if (refused !== null) throw new ConfigError('reload', refused);
      }
      this.loaded = loaded;
      await checkNewListeners(this.config, next, (e) => this.listeners.reserved(e));
    } catch (err) {
      if (!(err instanceof ConfigError) && !(err instanceof ListenError)) throw err;
      this.log.error({ source, error: err.message }, 'reload failed: the running config stays');
      return { ok: false, message: err.message };
    }
    this.warnFixed(next);
    const listening = new Map(this.frontends.map((f) => [f.name, f.config.listen]));
    const { changes, removed } = this.arrange(next.frontends, false);
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
    // The workers have bound the new addresses: the ports picked for them are theirs alone, and
    // only now are they said (a client that came before would have found nothing, or the hold).
    await this.listeners.release();
    for (const frontend of next.frontends) {
      const before = listening.get(frontend.name);
      if (before?.map((l) => l.text).join() !== frontend.listen.map((l) => l.text).join()) {
        this.logListening(frontend);
      }
    }
    const seen = new Set<string>();
    for (const failure of failures) {
      if (seen.has(failure.endpoint)) continue;
      seen.add(failure.endpoint);
      this.log.error(
        { endpoint: failure.endpoint, reason: listenReason(failure.code, failure.message) },
        'reload: a new listener could not open',
      );
    }
    this.unbound = [...seen];
    this.log.info(
      { source, removedFrontends: removed, pools: Object.fromEntries(changes) },
      'reloaded',
    );
    this.scheduleResolve();
    const summary = [...changes]
      .map(([name, c]) => `${name}: +${c.added.length} -${c.removed.length} ~${c.changed.length}`)
      .join(', ');
    return failures.length === 0
      ? { ok: true, message: `reloaded (${summary})` }
      : { ok: false, message: `reloaded, but ${[...seen].join(', ')} could not open` };
  }

  /**
   * Brings the pools and frontends to `configs`: a pool is kept (reconfigured, `roomFor` having
   * said it fits) while some frontend still names it, and a frontend while its name stays, even
   * when it moves to another pool. A pool no frontend names any more is dropped: the connections
   * it holds run to their end in the workers. `startUp`: the first start (backends count as up).
   */
  private arrange(
    configs: readonly FrontendConfig[],
    startUp: boolean,
  ): { changes: Map<string, PoolChanges>; removed: string[] } {
    const changes = new Map<string, PoolChanges>();
    const previous = new Map(this.pools.map((p) => [p.name, p]));
    const pools = new Map<string, Pool>();
    for (const [name, config] of poolConfigs(configs)) {
      let pool = previous.get(name);
      if (pool === undefined) {
        pool = new Pool(config, this.config.workers, startUp);
        changes.set(name, { added: config.backends.map((b) => b.name), removed: [], changed: [] });
      } else {
        changes.set(name, pool.reconfigure(config));
      }
      pools.set(name, pool);
    }
    const before = new Map(this.frontends.map((f) => [f.name, f]));
    this.frontends = configs.map((config) => {
      const pool = pools.get(config.pool) as Pool;
      const frontend = before.get(config.name);
      before.delete(config.name);
      if (frontend === undefined) return new Frontend(config, pool, this.config.workers);
      frontend.reconfigure(config, pool);
      return frontend;
    });
    this.retired.push(...before.values());
    for (const pool of this.pools) {
      if (!pools.has(pool.name) && pool.active() > 0) this.leavingPools.push(pool);
    }
    this.pools = [...pools.values()];
    return { changes, removed: [...before.keys()] };
  }

  /** The next round of DNS: every resolveInterval, or when the shortest TTL runs out if sooner
   *  (never more often than once a second). */
  scheduleResolve(): void {
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

  /** Resolves every name again; addresses that appeared join, those that vanished drain.
   *  Never rejects: a refresh that fails is logged and the pools stay as they were. */
  private async resolveAgain(): Promise<void> {
    await this.serially(() => this.refresh()).catch((err: Error) => {
      this.log.error({ err }, 'discovery: refresh failed: the backends stay as they were');
    });
    this.scheduleResolve();
  }

  /** One round of DNS: the pools follow what the names resolve to now. */
  private async refresh(): Promise<void> {
    if (this.stopping) return;
    const expanded = await this.effective(this.loaded, false);
    const changes = new Map<string, PoolChanges>();
    const configs = poolConfigs(expanded.frontends);
    for (const pool of this.pools) {
      const frontend = configs.get(pool.name);
      if (frontend === undefined) continue;
      const now = new Set(
        pool
          .members()
          .filter((m) => !m.leaving)
          .map((m) => m.config.name),
      );
      const next = new Set(frontend.backends.map((b) => b.name));
      if (now.size === next.size && [...next].every((n) => now.has(n))) continue;
      const refused = pool.roomFor(frontend);
      if (refused !== null) {
        // Only a sum of several names gets here (one name's answer is checked on its own).
        if (!this.overfull.has(pool.name)) {
          this.overfull.add(pool.name);
          this.log.warn(
            { reason: refused },
            'discovery: too many backends: keeping the last good set',
          );
        }
        continue;
      }
      this.overfull.delete(pool.name);
      changes.set(pool.name, pool.reconfigure({ ...pool.config, backends: frontend.backends }));
    }
    if (changes.size === 0) return;
    for (const pool of this.pools) this.applyAdminState(pool);
    await this.publish();
    this.log.info({ pools: Object.fromEntries(changes) }, 'discovery: backends changed');
  }

  /** The config in force for a loaded one (see Discovery.resolve). */
  private effective(loaded: Config, strict: boolean): Promise<Config> {
    return this.discovery.resolve(loaded, this.state, strict);
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
   * pickable, removals settle, and health checks, agents and load reports follow the new members.
   */
  private async publish(): Promise<ListenFailure[]> {
    const failures = await this.sendUpdate();
    for (const pool of this.pools) pool.acknowledged();
    for (const watcher of this.watchers) watcher.sync(this.pools);
    return failures;
  }

  /** Sends every pool to every worker; resolves when all have applied it. */
  private async sendUpdate(): Promise<ListenFailure[]> {
    const answers = await this.group.request((id) => ({
      type: 'update',
      id,
      frontends: this.frontends.map((f) => f.update()),
      maxConnections: this.maxConnections(),
      accessLog: this.config.accessLog,
    }));
    return answers.flatMap((a) => (a.type === 'updated' ? a.failures : []));
  }

  /** Moves slow-start ramps along; frees the slots of removed backends whose last connection
   *  has finished. */
  private sweep(): void {
    const now = performance.now();
    for (const pool of this.pools) {
      pool.ramp(now);
      for (const name of pool.sweepLeaving()) {
        this.log.info({ pool: pool.name, backend: name }, 'backend removed');
      }
    }
    if (this.leavingPools.length > 0) {
      this.leavingPools = this.leavingPools.filter((p) => p.active() > 0);
    }
    if (now - this.localErrorsAt >= LOCAL_ERROR_LOG_MS && this.view !== null) {
      const total = this.view.totals()[END_BASE + END.LOCAL_ERROR];
      if (total > this.localErrors) {
        this.localErrorsAt = now;
        this.log.error(
          { connections: total - this.localErrors },
          'clients closed for want of a local resource (descriptors, ports): not counted against any backend',
        );
      }
      this.localErrors = total;
    }
  }

  /** New session ticket keys for every terminating frontend without a key file of its own: a
   *  ticket sealed with the old ones gets a full handshake from now on. */
  private async rotateTicketKeys(): Promise<Outcome> {
    const tls = this.frontends.filter((f) => f.config.tls.certificates.length > 0);
    const own = tls.filter((f) => f.config.tls.ticketKeys === null);
    if (this.stopping) return { ok: false, message: 'stopping' };
    if (own.length === 0) {
      return {
        ok: false,
        message:
          tls.length === 0
            ? 'no frontend terminates TLS'
            : 'every terminating frontend has tls.ticketKeys: rotate by writing the file, then reload',
      };
    }
    rotateTicketKeys();
    await this.serially(() => this.publish());
    this.log.info({ frontends: own.map((f) => f.name) }, 'TLS ticket keys rotated');
    return { ok: true, message: `rotated (${own.map((f) => f.name).join(', ')})` };
  }

  /** SIGTERM/SIGINT: stop accepting, let connections finish up to the drain timeout, exit 0. */
  stop(signal: string): void {
    if (!this.started) {
      // Still starting: nothing has been accepted yet, so there is nothing to drain.
      this.log.info({ signal }, 'stopped before ready');
      this.stats?.close();
      process.exit(0);
    }
    if (this.handedOver && this.reserve !== null) {
      // Already draining after an upgrade (drain() set `stopping`, so this is checked first):
      // the drain deadline stands (systemd stopping the service signals every process of it),
      // and nothing is taken back from here on. A signal after this one exits at once.
      this.log.info({ signal }, 'already draining after an upgrade');
      this.reserve.release();
      this.reserve = null;
      return;
    }
    if (this.stopping || this.graceTimer !== null) {
      this.log.warn({ signal }, 'second signal: exiting now');
      this.stats?.close();
      process.exit(1);
    }
    void notify(this.log, 'STOPPING=1');
    const graceMs = this.config.graceMs;
    if (graceMs <= 0) {
      this.drain({ signal });
      return;
    }
    // Not ready from now on, so keepalived or a router moves traffic away while this process
    // still takes what comes; then the drain, as without a grace period.
    this.log.info({ signal, graceMs }, 'stopping: not ready; accepting during the grace period');
    this.graceTimer = setTimeout(() => this.drain({ signal }), graceMs);
  }

  /**
   * Whether a router, keepalived or a cloud health check should send this process traffic, and
   * if not, why (one line): it serves (started, not stopping, every worker alive, every listener
   * open) and every frontend has at least its readyMinUp backends up.
   */
  readiness(): { ready: boolean; reason: string } {
    const no = (reason: string) => ({ ready: false, reason });
    if (!this.started) return no('starting');
    if (this.stopping || this.graceTimer !== null) return no('stopping');
    if (this.workerLost) return no('a worker thread died');
    if (this.unbound.length > 0) return no(`not listening on ${this.unbound.join(', ')}`);
    for (const frontend of this.frontends) {
      const needed = frontend.config.readyMinUp;
      if (needed === 0) continue;
      const pool = frontend.pool;
      const members = pool.members().filter((m) => !m.leaving);
      const up = members.filter(
        (m) => !m.joining && StatsView.state(pool.table, m.index) === 'up',
      ).length;
      if (up < needed) {
        return no(
          `frontend ${frontend.name}: ${up} of ${members.length} backends up (needs ${needed})`,
        );
      }
    }
    return { ready: true, reason: 'ready' };
  }

  /** Stops accepting and lets live connections finish, up to the drain timeout. */
  private drain(cause: { signal: string } | { reason: string }): void {
    if (this.graceTimer !== null) clearTimeout(this.graceTimer);
    this.graceTimer = null;
    this.stopping = true;
    for (const watcher of this.watchers) watcher.stop();
    this.log.info({ ...cause, drainTimeoutMs: this.config.drainTimeoutMs }, 'stopping: draining');
    this.group.broadcast({ type: 'drain', generation: this.drainGeneration });
    this.drainTimer = setTimeout(() => {
      this.log.warn('drain timeout: cutting the remaining connections');
      this.group.broadcast({ type: 'cut' });
      // Give the cut a moment to be counted, then go.
      this.exitTimer = setTimeout(() => this.exit(), 200);
      this.exitTimer.unref();
    }, this.config.drainTimeoutMs);
    this.drainTimer.unref();
  }

  /** The live-connection limit the workers enforce: the configured one, or the one the
   *  descriptor limit allows (see descriptors.ts); said once per distinct answer. */
  private maxConnections(): number {
    const budget = connectionBudget(this.config, descriptorLimit());
    const said = JSON.stringify(budget.note);
    if (budget.note !== null && said !== this.budgetSaid) {
      this.log[budget.note.level](budget.note.fields, budget.note.message);
    }
    this.budgetSaid = said;
    return budget.maxConnections;
  }

  /** Every worker's histograms, encoded, by frontend. */
  async collectLatency(): Promise<LatencyAnswer[]> {
    const answers = await this.group.request((id) => ({ type: 'latency', id }));
    return answers.map((a) => (a.type === 'latency' ? a.latency : new Map()));
  }

  private onDrained(generation: number): void {
    if (generation !== this.drainGeneration) return;
    this.drained++;
    if (this.drained === this.group.size) this.exit();
  }

  private exit(): never {
    this.stats?.close();
    const totals = this.view?.totals() ?? new Float64Array(0);
    this.log.info(summarize(totals), 'stopped');
    process.exit(0);
  }
}

function monotonicMicros(): string {
  return String(process.hrtime.bigint() / 1000n);
}

/** Each pool's config (its first frontend's: the pool-side settings are the same in each), by
 *  pool name, in the order frontends name them. */
function poolConfigs(frontends: readonly FrontendConfig[]): Map<string, FrontendConfig> {
  const configs = new Map<string, FrontendConfig>();
  for (const frontend of frontends)
    if (!configs.has(frontend.pool)) configs.set(frontend.pool, frontend);
  return configs;
}
