// The data-plane worker threads as the control plane runs them: started with their init, asked
// things all at once (update, latency, kill) with one answer awaited from each, and watched: a
// worker that dies after start stops the process (systemd restarts it). Invariant: a request
// resolves once every worker has answered it, and only then; messages are the shared contract.

import { extname } from 'node:path';
import { Worker } from 'node:worker_threads';
import type { ControlMessage, WorkerInit, WorkerMessage } from '../shared/messages.ts';
import { ListenError, listenReason } from './listeners.ts';

// The worker runs from the same tree as this file: worker.ts under type stripping, .js in dist.
const WORKER_URL = new URL(`../data/worker${extname(import.meta.url)}`, import.meta.url);

/**
 * The data plane's young generation, in MiB (V8 makes it three semi-spaces' worth: 2 MiB each).
 * A worker allocates little per request (a view per partial write), but when thousands of
 * connections open at once every object survives, and V8 then grows the young generation towards
 * its default maximum (tens of MiB per thread) and keeps it: measured by bench:memory, that is
 * 0.6 KB per idle connection at 10,000 connections. Capped, a scavenge comes every few hundred
 * milliseconds under load and takes about 0.3 ms.
 */
const YOUNG_GENERATION_MB = 6;

/** Messages that carry an id: a request's answers. */
type Answer = Extract<WorkerMessage, { id: number }>;

export interface WorkerEvents {
  /** A worker has no live connection left after a drain. */
  drained(generation: number): void;
  /** A worker failed or exited while it should be running. */
  died(code: number | null, err: Error | null): void;
}

export class WorkerGroup {
  readonly workers: Worker[] = [];
  private readonly requests = new Map<
    number,
    { answers: WorkerMessage[]; resolve: (answers: WorkerMessage[]) => void }
  >();
  private nextRequestId = 0;

  get size(): number {
    return this.workers.length;
  }

  /** Starts one worker per init; resolves once every one has opened its listeners, with whether
   *  each could use the accept hook. A listener that cannot open stops them all. */
  async start(inits: readonly WorkerInit[], events: WorkerEvents): Promise<boolean[]> {
    const ready = inits.map((init) => {
      const worker = new Worker(WORKER_URL, {
        workerData: init,
        resourceLimits: { maxYoungGenerationSizeMb: YOUNG_GENERATION_MB },
      });
      this.workers.push(worker);
      return awaitReady(worker);
    });
    let hooked: boolean[];
    try {
      hooked = await Promise.all(ready);
    } catch (err) {
      await Promise.all(this.workers.map((w) => w.terminate()));
      throw err;
    }
    for (const worker of this.workers) this.watch(worker, events);
    return hooked;
  }

  private watch(worker: Worker, events: WorkerEvents): void {
    worker.on('message', (message: WorkerMessage) => {
      if (message.type === 'drained') events.drained(message.generation);
      else if ('id' in message) this.onAnswer(message);
    });
    worker.on('error', (err) => events.died(null, err));
    worker.on('exit', (code) => events.died(code, null));
  }

  /** Sends `build(id, index)` to each worker; resolves with all their answers. */
  request(build: (id: number, index: number) => ControlMessage): Promise<WorkerMessage[]> {
    const id = this.nextRequestId++;
    return new Promise((resolve) => {
      this.requests.set(id, { answers: [], resolve });
      for (let index = 0; index < this.workers.length; index++) {
        this.workers[index].postMessage(build(id, index));
      }
    });
  }

  private onAnswer(answer: Answer): void {
    const request = this.requests.get(answer.id);
    if (request === undefined) return;
    request.answers.push(answer);
    if (request.answers.length === this.workers.length) {
      this.requests.delete(answer.id);
      request.resolve(request.answers);
    }
  }

  broadcast(message: ControlMessage): void {
    for (const worker of this.workers) worker.postMessage(message);
  }
}

function awaitReady(worker: Worker): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const onMessage = (message: WorkerMessage) => {
      if (message.type === 'ready') {
        cleanup();
        resolve(message.hooked);
      } else if (message.type === 'listen-error') {
        cleanup();
        reject(new ListenError(message.endpoint, listenReason(message.code, message.message)));
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
