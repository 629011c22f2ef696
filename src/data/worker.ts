// A data-plane worker thread: runs every frontend's listeners (reusePort, so the kernel spreads
// connections and UDP clients over workers), pipes connections and carries UDP sessions. Invariant: it never asks another thread
// anything per connection; the main thread talks to it only to start, update, drain and cut.

import { parentPort, workerData } from 'node:worker_threads';
import type { Logger } from '../log.ts';
import { createAccessLogger } from '../log.ts';
import { END } from '../shared/counters.ts';
import type {
  ControlMessage,
  FrontendUpdate,
  LatencyAnswer,
  ListenFailure,
  WorkerInit,
  WorkerMessage,
} from '../shared/messages.ts';
import { SLOT_MS } from '../stats/latency.ts';
import { idleSweepTicks, TICK_MS, updateNow } from './clock.ts';
import { Frontend } from './frontend.ts';
import { Listeners } from './listeners.ts';

const init = workerData as WorkerInit;
const port = parentPort;
if (port === null) throw new Error('worker.ts runs only as a worker thread');

const limits = {
  live: new Int32Array(init.live),
  maxConnections: init.maxConnections,
  backlog: init.backlog,
};
/** Current frontends by name. */
const frontends = new Map<string, Frontend>();
/** Every listening socket, whichever frontends share it. */
const listeners = new Listeners(init.backlog, init.inherited);
/** The frontends in config order, as the listeners were last synced to them (a resume after a
 *  drain syncs them again: the order decides which frontend a shared address prefers). */
let inOrder: Frontend[] = [];
/** Frontends a reload removed: listeners closed, connections running to their end. */
const retired = new Set<Frontend>();
let accessLog: Logger | null = null;

let draining = false;
let drainedSent = false;
/** The drain this worker is in, echoed in its 'drained' message (a resume makes it stale). */
let drainGeneration = 0;

function live(): number {
  let total = 0;
  for (const frontend of frontends.values()) total += frontend.open;
  for (const frontend of retired) total += frontend.open;
  return total;
}

function onIdle(this: Frontend): void {
  if (retired.has(this) && this.open === 0) retired.delete(this);
  checkDrained();
}

function checkDrained(): void {
  if (draining && !drainedSent && live() === 0) {
    drainedSent = true;
    port?.postMessage({ type: 'drained', generation: drainGeneration } satisfies WorkerMessage);
  }
}

function setAccessLog(on: boolean): void {
  // The worker's index rides on every line for free: pino serializes a child's bindings once.
  if (on && accessLog === null) {
    accessLog = createAccessLogger(init.logFormat).child({ worker: init.index });
  }
  if (!on) accessLog = null;
  for (const frontend of frontends.values()) frontend.accessLog = accessLog;
}

/**
 * Brings the frontends to `updates`: new ones open, kept ones take the update, absent ones close.
 * A frontend moved to another pool is a new object (its table is another one): the old one, like
 * a removed frontend, keeps its connections, counted on the old pool, until they end.
 */
async function update(updates: readonly FrontendUpdate[]): Promise<ListenFailure[]> {
  const failures: ListenFailure[] = [];
  const wanted = new Map(updates.map((u) => [u.config.name, u]));
  for (const [name, frontend] of frontends) {
    if (wanted.get(name)?.poolId === frontend.poolId) continue;
    frontends.delete(name);
    retire(frontend);
  }
  for (const next of updates) {
    let frontend = frontends.get(next.config.name);
    if (frontend === undefined) {
      frontend = new Frontend(next, init.index, limits, init.activated.get(next.config.name) ?? []);
      frontend.onIdle = onIdle;
      frontend.onQueued = onQueued;
      frontend.accessLog = accessLog;
      frontends.set(next.config.name, frontend);
    } else {
      frontend.apply(next);
    }
  }
  // Every frontend is up to date before any route points at it; a removed one no longer listens.
  inOrder = updates.map((u) => frontends.get(u.config.name) as Frontend);
  groupSiblings(inOrder);
  if (!draining) failures.push(...(await listeners.sync(inOrder)));
  return failures;
}

/** A frontend leaves the config (or its pool): its live connections run to their end, and its
 *  clients still waiting wait for the pool they came for. */
function retire(frontend: Frontend): void {
  frontend.siblings = [frontend];
  frontend.before = [];
  if (frontend.open > 0) retired.add(frontend);
}

/** Frontends of one pool become each other's siblings, lowest priority number first. */
function groupSiblings(all: readonly Frontend[]): void {
  const byPool = new Map<number, Frontend[]>();
  for (const frontend of all) {
    const group = byPool.get(frontend.poolId);
    if (group === undefined) byPool.set(frontend.poolId, [frontend]);
    else group.push(frontend);
  }
  for (const group of byPool.values()) {
    group.sort((a, b) => a.config.priority - b.config.priority);
    for (const frontend of group) {
      frontend.siblings = group;
      frontend.before = group.filter((f) => f.config.priority < frontend.config.priority);
    }
  }
}

/**
 * While clients wait, the queues are served this often, besides at every finish in this worker:
 * a slot freed in another worker, or left by a frontend that yields to a waiting one, is taken
 * within this instead of a whole tick.
 */
const QUEUE_POLL_MS = 5;
let queuePoll: NodeJS.Timeout | null = null;

function onQueued(): void {
  if (queuePoll !== null) return;
  queuePoll = setInterval(pollQueues, QUEUE_POLL_MS);
  queuePoll.unref();
}

/** Serves every queue; stops polling once none has a client left. */
function pollQueues(): void {
  let waiting = false;
  for (const frontend of frontends.values()) waiting = serveWaiting(frontend) || waiting;
  for (const frontend of retired) waiting = serveWaiting(frontend) || waiting;
  if (!waiting && queuePoll !== null) {
    clearInterval(queuePoll);
    queuePoll = null;
  }
}

/** Serves a frontend's queue if it has one; whether clients still wait in it. */
function serveWaiting(frontend: Frontend): boolean {
  if (frontend.queue.size === 0) return false;
  frontend.serveQueue();
  return frontend.queue.size > 0;
}

let ticks = 0;
const timer = setInterval(() => {
  updateNow();
  ticks++;
  const rotate = ticks % (SLOT_MS / TICK_MS) === 0;
  for (const set of [frontends.values(), retired.values()]) {
    for (const frontend of set) {
      frontend.sweepConnecting();
      frontend.sweepQueue();
      if (ticks % idleSweepTicks(frontend.config.idleTimeoutMs) === 0) frontend.sweepIdle();
      const udp = frontend.udp;
      if (udp !== null && ticks % idleSweepTicks(frontend.config.udp.idleTimeoutMs) === 0) {
        udp.sweep();
      }
      if (rotate) for (const metric of frontend.latency) for (const r of metric) r?.rotate();
    }
  }
}, TICK_MS);
timer.unref();

/**
 * Fault injection for the crash test: the worker whose index this names throws, uncaught, when
 * it is first asked for its timings (a `show stat`). Read once; costs nothing on the data path.
 */
const THROW_ON_STATS = process.env.FULCRUM_FAULT_WORKER_THROW;

// Updates run one at a time, in the order sent, even though opening listeners is asynchronous.
let updating: Promise<void> = Promise.resolve();

port.on('message', (message: ControlMessage) => {
  if (message.type === 'drain') {
    draining = true;
    drainedSent = false;
    drainGeneration = message.generation;
    listeners.close();
    checkDrained();
  } else if (message.type === 'resume') {
    updating = updating.then(async () => {
      draining = false;
      listeners.adopt(message.inherited);
      const failures = await listeners.sync(inOrder);
      port.postMessage({ type: 'updated', id: message.id, failures } satisfies WorkerMessage);
    });
  } else if (message.type === 'cut') {
    for (const frontend of frontends.values()) frontend.cutAll(END.DRAIN_CUT);
    for (const frontend of retired) frontend.cutAll(END.DRAIN_CUT);
  } else if (message.type === 'latency') {
    if (THROW_ON_STATS === String(init.index)) {
      throw new Error('injected fault (FULCRUM_FAULT_WORKER_THROW)');
    }
    const latency: LatencyAnswer = new Map();
    for (const [name, frontend] of frontends) latency.set(name, frontend.latencyBuffers());
    port.postMessage({ type: 'latency', id: message.id, latency } satisfies WorkerMessage);
  } else if (message.type === 'sockets') {
    port.postMessage({
      type: 'sockets',
      id: message.id,
      sockets: listeners.sockets(),
    } satisfies WorkerMessage);
  } else if (message.type === 'kill') {
    let count = 0;
    for (const set of [frontends.values(), retired.values()]) {
      for (const frontend of set) {
        if (frontend.poolId === message.pool) count += frontend.killBackend(message.slot);
      }
    }
    port.postMessage({ type: 'killed', id: message.id, count } satisfies WorkerMessage);
  } else if (message.type === 'update') {
    updating = updating.then(async () => {
      limits.maxConnections = message.maxConnections;
      setAccessLog(message.accessLog);
      const failures = await update(message.frontends);
      port.postMessage({ type: 'updated', id: message.id, failures } satisfies WorkerMessage);
    });
  }
});

updateNow();
setAccessLog(init.accessLog);
const failures = await update(init.frontends);
if (failures.length > 0) {
  port.postMessage({ type: 'listen-error', ...failures[0] } satisfies WorkerMessage);
} else {
  port.postMessage({
    type: 'ready',
    hooked: listeners.hooked,
  } satisfies WorkerMessage);
}
