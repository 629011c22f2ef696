// What crosses threads: the messages between the control plane and the data-plane workers, and
// the shapes they carry (a pool as a worker receives it, the histograms' shared buffers, listener
// failures).
// Invariant: a contract between threads, like HAProxy's *-t.h headers: plain data and shared
// memory only, and it imports nothing of control/, data/ or stats/.

import type { BackendConfig, FrontendConfig, LogFormat } from '../config/types.ts';
import type { SharedCounters } from './counters.ts';
import type { SharedTable } from './table.ts';

/** What a worker needs of one slot. */
export interface PoolMember {
  readonly id: number;
  readonly config: BackendConfig;
  /** Removed from the pool: it drains, and takes nothing new. */
  readonly leaving: boolean;
}

/** One frontend and its pool as they are sent to a worker: plain data and shared memory. */
export interface FrontendUpdate {
  readonly config: FrontendConfig;
  /** Its pool, unique over the process's life; frontends with the same one share its table. */
  readonly poolId: number;
  /** The pool's backend table. */
  readonly table: SharedTable;
  /** The frontend's own counters (accepted, live, ends), with no backend fields. */
  readonly counters: SharedCounters;
  /** The pool's per-backend counters, every frontend's together. */
  readonly poolCounters: SharedCounters;
  /** The frontend's live connections on each slot of the pool (Int32, Atomics). */
  readonly held: SharedArrayBuffer;
  /** How many of the frontend's clients wait, every worker's (one Int32, Atomics). */
  readonly waiting: SharedArrayBuffer;
  /** A UDP frontend's live sessions, every worker's (one Int32, Atomics). */
  readonly sessions: SharedArrayBuffer;
  /** The pool's members by slot; null for a free slot. Its length is the number of slots in use
   *  (the table size). */
  readonly members: readonly (PoolMember | null)[];
  /** The per-source table, once the frontend has a per-source limit (it is kept from then on). */
  readonly sources: SharedArrayBuffer | null;
  /** The process's TLS session ticket keys (48 bytes), for a frontend that terminates TLS. */
  readonly ticketKeys: Uint8Array;
}

/** One frontend's timings in one worker: [metric][slot] = the recorder's shared counts (read
 *  with stats/latency.ts LatencySum; posting shares them, nothing is copied). */
export interface WorkerLatency {
  /** The member in each slot (0: free), so timings of a slot's earlier occupant are not mixed in. */
  readonly ids: number[];
  readonly metrics: Array<Array<SharedArrayBuffer | null>>;
  /** Its TLS handshake times (a terminating frontend's; empty otherwise). */
  readonly handshakeTime: SharedArrayBuffer | null;
}

/** A socket systemd passed, as one worker holds it: its own descriptor. */
export interface ActivatedListener {
  readonly text: string;
  readonly fd: number;
  readonly acceptProxy?: boolean;
}

/** A listening socket handed over by the process this one replaces, as one worker holds it. */
export interface InheritedListener {
  readonly host: string;
  readonly port: number;
  readonly fd: number;
  /** A UDP socket (absent: TCP, as a process before UDP handed it). */
  readonly udp?: boolean;
}

/** One open listening socket of a worker, for an upgrade to hand over. */
export interface OpenListener {
  readonly host: string;
  readonly port: number;
  readonly fd: number;
  readonly udp?: boolean;
  /** A socket systemd passed: the frontend it was named after. */
  readonly systemd: string | null;
}

/** A listener that could not be opened. */
export interface ListenFailure {
  readonly endpoint: string;
  readonly code: string;
  readonly message: string;
}

/** Where one worker's histograms are, by frontend name. (Maps, not objects, wherever names are keys:
 *  a frontend may be called `constructor`, and Maps cross postMessage intact.) */
export type LatencyAnswer = Map<string, WorkerLatency>;

export interface WorkerInit {
  readonly index: number;
  readonly frontends: readonly FrontendUpdate[];
  /** Global live connections (Int32, Atomics), for maxConnections. */
  readonly live: SharedArrayBuffer;
  readonly maxConnections: number;
  readonly backlog: number;
  readonly accessLog: boolean;
  readonly logFormat: LogFormat;
  /** This worker's descriptors of the sockets systemd passed, by frontend name. */
  readonly activated: Map<string, ActivatedListener[]>;
  /** This worker's descriptors of the sockets a replaced process handed over. */
  readonly inherited: readonly InheritedListener[];
}

/** Messages from a worker to the main thread. */
export type WorkerMessage =
  | { type: 'ready'; hooked: boolean }
  | { type: 'listen-error'; endpoint: string; code: string; message: string }
  | { type: 'updated'; id: number; failures: ListenFailure[] }
  | { type: 'killed'; id: number; count: number }
  /** No live connection left since the drain of `generation` (a resume starts a new one). */
  | { type: 'drained'; generation: number }
  | { type: 'latency'; id: number; latency: LatencyAnswer }
  | { type: 'sockets'; id: number; sockets: OpenListener[] };

/** A new state of every frontend and pool: frontends absent from `frontends` are closed. */
export interface UpdateMessage {
  type: 'update';
  id: number;
  frontends: FrontendUpdate[];
  maxConnections: number;
  accessLog: boolean;
}

/** Messages from the main thread to a worker. */
export type ControlMessage =
  | { type: 'drain'; generation: number }
  /** Listen again after a drain, on `inherited` too (the process takes its listeners back). */
  | { type: 'resume'; id: number; inherited: InheritedListener[] }
  | { type: 'cut' }
  | { type: 'latency'; id: number }
  | { type: 'sockets'; id: number }
  /** Resets every connection to `slot` of pool `pool` (its id), whichever frontend has it. */
  | { type: 'kill'; id: number; pool: number; slot: number }
  | UpdateMessage;
