// A data-plane worker thread: runs every frontend's listeners (reusePort, so the kernel spreads
// connections over workers) and pipes connections. Invariant: it never asks another thread
// anything per connection; the main thread talks to it only to start, drain and cut.

import { parentPort, workerData } from 'node:worker_threads';
import type { Config } from '../config.ts';
import { createAccessLogger } from '../log.ts';
import type { SharedCounters } from '../stats/counters.ts';
import { END, LIVE, openSlot } from '../stats/counters.ts';
import { SLOT_MS } from '../stats/latency.ts';
import type { LatencyAnswer } from '../stats/view.ts';
import { IDLE_SWEEP_TICKS, TICK_MS, updateNow } from './clock.ts';
import type { FrontendShared } from './frontend.ts';
import { Frontend } from './frontend.ts';

export interface WorkerInit {
  readonly index: number;
  readonly config: Config;
  readonly frontends: readonly FrontendShared[];
  readonly counters: SharedCounters;
}

/** Messages from a worker to the main thread. */
export type WorkerMessage =
  | { type: 'ready'; hooked: boolean }
  | { type: 'listen-error'; endpoint: string; code: string; message: string }
  | { type: 'drained' }
  | { type: 'latency'; id: number; latency: LatencyAnswer };

/** Messages from the main thread to a worker. */
export type ControlMessage = { type: 'drain' } | { type: 'cut' } | { type: 'latency'; id: number };

const init = workerData as WorkerInit;
const port = parentPort;
if (port === null) throw new Error('worker.ts runs only as a worker thread');

const slot = openSlot(init.counters, init.index);
const limits = {
  live: new Int32Array(init.counters.live),
  maxConnections: init.config.maxConnections,
  backlog: init.config.backlog,
};
const frontends = init.config.frontends.map(
  (config, i) => new Frontend(config, init.frontends[i], slot, limits),
);
if (init.config.accessLog) {
  const accessLog = createAccessLogger(init.config.logFormat);
  for (const frontend of frontends) frontend.accessLog = accessLog;
}

let draining = false;
let drainedSent = false;

function checkDrained(): void {
  if (draining && !drainedSent && slot[LIVE] === 0) {
    drainedSent = true;
    port?.postMessage({ type: 'drained' } satisfies WorkerMessage);
  }
}

let ticks = 0;
const timer = setInterval(() => {
  updateNow();
  ticks++;
  const idle = ticks % IDLE_SWEEP_TICKS === 0;
  const rotate = ticks % (SLOT_MS / TICK_MS) === 0;
  for (const frontend of frontends) {
    frontend.sweepConnecting();
    if (idle) frontend.sweepIdle();
    if (rotate) for (const metric of frontend.latency) for (const r of metric) r.rotate();
  }
}, TICK_MS);
timer.unref();

port.on('message', (message: ControlMessage) => {
  if (message.type === 'drain') {
    draining = true;
    for (const frontend of frontends) frontend.close();
    checkDrained();
  } else if (message.type === 'cut') {
    for (const frontend of frontends) frontend.cutAll(END.DRAIN_CUT);
  } else if (message.type === 'latency') {
    port.postMessage({
      type: 'latency',
      id: message.id,
      latency: frontends.map((f) => f.latency.map((metric) => metric.map((r) => r.encode()))),
    } satisfies WorkerMessage);
  }
});

try {
  updateNow();
  for (const frontend of frontends) {
    frontend.onIdle = checkDrained;
    await frontend.listen();
  }
  port.postMessage({
    type: 'ready',
    hooked: frontends.every((f) => f.hooked),
  } satisfies WorkerMessage);
} catch (err) {
  const e = err as NodeJS.ErrnoException & { endpoint?: string };
  port.postMessage({
    type: 'listen-error',
    endpoint: e.endpoint ?? '?',
    code: e.code ?? 'ERROR',
    message: e.message,
  } satisfies WorkerMessage);
}
