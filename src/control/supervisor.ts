// The control plane's main loop: builds the shared tables and counters, starts the worker threads,
// waits until every listener is open, and stops gracefully on SIGTERM/SIGINT. Invariant: the main
// thread never touches a client connection; it only reads shared memory and messages workers.

import { once } from 'node:events';
import net from 'node:net';
import { extname } from 'node:path';
import { Worker } from 'node:worker_threads';
import type { Config, Endpoint, FrontendConfig } from '../config.ts';
import type { SharedTable } from '../core/table.ts';
import { buildTable } from '../core/table.ts';
import type { FrontendShared } from '../data/frontend.ts';
import type { ControlMessage, WorkerInit, WorkerMessage } from '../data/worker.ts';
import type { Logger } from '../log.ts';
import type { SharedCounters } from '../stats/counters.ts';
import { allocateCounters, backendOffset, summarize, sumSlots } from '../stats/counters.ts';
import { StatsServer } from '../stats/server.ts';
import type { LatencyAnswer } from '../stats/view.ts';
import { StatsView } from '../stats/view.ts';
import { HealthChecker } from './health.ts';

/** A listener could not be opened: the CLI reports it as bad input (exit status 2). */
export class ListenError extends Error {
  readonly code = 'FULCRUM_LISTEN';
  constructor(endpoint: string, reason: string) {
    super(`--listen ${endpoint}: ${reason}`);
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

export class Supervisor {
  readonly config: Config;
  readonly log: Logger;
  readonly tables: SharedTable[];
  readonly counters: SharedCounters;
  readonly workers: Worker[] = [];
  private health: HealthChecker | null = null;
  private stats: StatsServer | null = null;
  private stopping = false;
  private started = false;
  /** Latency requests in flight: each waits for every worker's answer. */
  private readonly latencyRequests = new Map<
    number,
    { answers: LatencyAnswer[]; resolve: (answers: LatencyAnswer[]) => void }
  >();
  private nextLatencyId = 0;
  private drained = 0;

  readonly version: string;

  constructor(config: Config, log: Logger, version: string) {
    this.version = version;
    this.config = config;
    this.log = log;
    this.tables = config.frontends.map((f) => buildTable(f.backends));
    const backends = config.frontends.reduce((n, f) => n + f.backends.length, 0);
    this.counters = allocateCounters(config.workers, backends);
  }

  /** Starts every worker and resolves once all listeners are open in all of them. */
  async start(): Promise<void> {
    const config = await fixEphemeralPorts(this.config);
    let offset = 0;
    const shared: FrontendShared[] = config.frontends.map((frontend, i) => {
      const offsets = frontend.backends.map((_, b) => backendOffset(offset + b));
      offset += frontend.backends.length;
      return { table: this.tables[i], backendOffset: offsets };
    });
    // The stats socket first: if it cannot open, nothing has been bound or started yet.
    if (config.stats.socket !== null) {
      const view = new StatsView(
        config,
        this.tables,
        shared.map((s) => s.backendOffset),
        this.counters,
        () => this.collectLatency(),
      );
      this.stats = new StatsServer(
        {
          path: config.stats.socket,
          mode: config.stats.mode,
          level: config.stats.level,
          version: this.version,
        },
        view,
        this.log,
      );
      await this.stats.start();
    }
    const ready: Promise<boolean>[] = [];
    for (let index = 0; index < config.workers; index++) {
      const init: WorkerInit = { index, config, frontends: shared, counters: this.counters };
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
    this.health = new HealthChecker(
      config.frontends,
      this.tables,
      shared.map((s) => s.backendOffset),
      this.counters,
      this.log,
    );
    this.health.start();
    if (!hooked.every(Boolean)) {
      this.log.warn('accept hook unavailable on this Node: client reads allocate per chunk');
    }
    for (const frontend of config.frontends) {
      this.log.info(
        {
          frontend: frontend.name,
          listen: frontend.listen.map((l) => l.text),
          algorithm: frontend.algorithm,
          backends: frontend.backends.map((b) => b.name),
        },
        'listening',
      );
    }
    this.started = true;
    this.log.info({ workers: config.workers, node: process.version }, 'ready');
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
      else if (message.type === 'latency') this.onLatency(message.id, message.latency);
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

  /** Every worker's connect-time histograms, encoded: [worker][frontend][backend]. */
  collectLatency(): Promise<LatencyAnswer[]> {
    const id = this.nextLatencyId++;
    return new Promise((resolve) => {
      this.latencyRequests.set(id, { answers: [], resolve });
      this.broadcast({ type: 'latency', id });
    });
  }

  private onLatency(id: number, answer: LatencyAnswer): void {
    const request = this.latencyRequests.get(id);
    if (request === undefined) return;
    request.answers.push(answer);
    if (request.answers.length === this.workers.length) {
      this.latencyRequests.delete(id);
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
    this.log.info(summarize(sumSlots(this.counters)), 'stopped');
    process.exit(0);
  }
}

/**
 * Port 0 means "any free port", but each worker binding port 0 would get a different one. Pick
 * the port here, once, and give every worker the same. (Another process could take it between
 * this check and the workers' bind; the workers' bind then fails with a clear error.)
 */
async function fixEphemeralPorts(config: Config): Promise<Config> {
  const frontends: FrontendConfig[] = [];
  for (const frontend of config.frontends) {
    const listen: Endpoint[] = [];
    for (const endpoint of frontend.listen) {
      listen.push(endpoint.port === 0 ? await withFreePort(endpoint) : endpoint);
    }
    frontends.push({ ...frontend, listen });
  }
  return { ...config, frontends };
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
  const host = endpoint.host.includes(':') ? `[${endpoint.host}]` : endpoint.host;
  return { text: `${host}:${port}`, host: endpoint.host, port };
}
