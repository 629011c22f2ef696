// A frontend as one worker thread runs it: the scheduler over its pool's shared backend table
// (rebuilt and swapped on every update), its counters and timings, the wait queue, and the lists
// the coarse timer sweeps; a UDP frontend's sessions are in udp.ts. Listening is in
// listeners.ts (one socket per address, which frontends may share), admission in accept.ts. Frontends of one pool are siblings: a slot one frees is
// offered to the others' queues, and a frontend whose priority number is higher leaves a slot to
// a waiting sibling with a lower one (wherever that one's clients wait: the waiting counts are
// shared by every worker). Invariant: nothing here runs per chunk, and nothing is logged.

import type tls from 'node:tls';
import type { BackendConfig, FrontendConfig } from '../config/types.ts';
import { fnv1a } from '../core/hash.ts';
import { createLatencyState } from '../core/peak-ewma.ts';
import type { Scheduler, SchedulerContext } from '../core/scheduler.ts';
import { createScheduler } from '../core/scheduler.ts';
import { anyFull, hasRoom } from '../core/table.ts';
import type { Logger } from '../log.ts';
import { END, openSlot, QUEUED as QUEUED_GAUGE } from '../shared/counters.ts';
import type { ActivatedListener, FrontendUpdate, WorkerLatency } from '../shared/messages.ts';
import { releaseSource } from '../shared/sources.ts';
import type { BackendTable, SharedTable } from '../shared/table.ts';
import { openTable, TABLE_SLOTS } from '../shared/table.ts';
import { LatencyRecorder, METRIC_NAMES } from '../stats/latency.ts';
import { admitProxied, afterHandshake, route } from './accept.ts';
import { BUFFER_RELEASE_MS, deadline, now, TICK_MS } from './clock.ts';
import {
  CONNECTING,
  type Connection,
  closeClient,
  connectTo,
  cut,
  failConnect,
  HANDSHAKE,
  INSPECT,
  kill,
  PROXY_HEADER,
  pickAndTake,
  QUEUED,
  releaseIdleBuffers,
} from './connection.ts';
import { Guard } from './guard.ts';
import type { ProxyAddresses } from './proxy-protocol.ts';
import { LinkedList } from './queue.ts';
import { backendContextOf, fingerprintOf, handshakeTimedOut, TlsTerminator } from './tls.ts';
import { UdpSessions } from './udp.ts';

/** Most clients one worker holds in a frontend's queue; beyond, they are refused at once. */
export const QUEUE_LIMIT = 10_000;

export interface WorkerLimits {
  /** Global live connections over every worker (Atomics), for maxConnections. */
  readonly live: Int32Array;
  /** 0: no limit. A reload may change it. */
  maxConnections: number;
  readonly backlog: number;
}

export class Frontend {
  config: FrontendConfig;
  /** The table over the slots in use; rebuilt with the scheduler when the pool changes. */
  table: BackendTable;
  scheduler: Scheduler;
  readonly shared: SharedTable;
  /** The pool it picks from (an id unique over the process's life). */
  readonly poolId: number;
  /** This worker's counter slot for this frontend; the only writer is this thread. */
  readonly slot: Float64Array;
  /** This worker's slot of the pool's per-backend counters (shared with the pool's other
   *  frontends in this thread, so still one writer). */
  readonly poolSlot: Float64Array;
  /** Its clients waiting in every worker (Atomics): siblings read it to leave it a slot. */
  readonly waiting: Int32Array;
  /** What this object last added to `waiting` and to the gauge: its own queue's length. */
  private waitingHere = 0;
  /** Live connections of this object (the counters' LIVE is the frontend's, which a frontend
   *  moved to another pool shares with the object it replaced). */
  open = 0;
  /** The frontends of its pool in this worker, itself included, lowest priority number first:
   *  whose queues a freed slot is offered to. */
  siblings: Frontend[] = [this];
  /** The siblings with a lower priority number than its own: served before it. */
  before: Frontend[] = [];
  /** By table slot: where the backend is, or null for a free slot. */
  backends: (BackendConfig | null)[] = [];
  /** By table slot: which member sits there, so a slot given to a new backend is noticed. */
  readonly memberIds: number[] = [];
  /** By table slot: 1 when its backend was removed and only drains (a UDP session on it moves). */
  readonly leaving = new Uint8Array(TABLE_SLOTS);
  /** A UDP frontend's sessions in this worker; null for TCP. */
  udp: UdpSessions | null = null;
  /** What the schedulers keep across rebuilds: backend name hashes, latency observations. */
  private readonly context: SchedulerContext = {
    keys: new Uint32Array(TABLE_SLOTS),
    latency: createLatencyState(TABLE_SLOTS),
  };
  readonly limits: WorkerLimits;
  /** Its live connections per backend slot, every worker's: the table's `held`. */
  private readonly held: SharedArrayBuffer;
  readonly connecting = new LinkedList<Connection>();
  /** Clients waiting for a backend with room, oldest first (only when backends have maxconn). */
  readonly queue = new LinkedList<Connection>();
  readonly established = new LinkedList<Connection>();
  /** Sockets systemd passed for this frontend: opened once, never closed by a reload. */
  readonly activated: readonly ActivatedListener[];
  /** This worker's timings: [metric (CONNECT, FIRST_BYTE, DURATION)][slot]. */
  readonly latency: LatencyRecorder[][] = METRIC_NAMES.map(() => []);
  /** Allow/deny lists and per-source limits; null when the frontend has none (no cost). */
  guard: Guard | null = null;
  /** The shared per-source counts, for releases (kept even if a reload drops the limits). */
  private sourceTable: Int32Array | null = null;
  /** Whether the scheduler hashes the client (Maglev), and whether the port is part of it. */
  hashes = false;
  hashPort = false;
  /** Whether Maglev hashes the TLS server name instead. */
  hashSni = false;
  /** One line per finished connection when --access-log is on; null (no cost) otherwise. */
  accessLog: Logger | null = null;
  /** The context TLS backends are connected with (their CA, a client certificate), rebuilt
   *  when those change; null while no backend of its pool speaks TLS. */
  backendContext: tls.SecureContext | null = null;
  private backendTlsFingerprint = '';
  /** Its TLS termination (rebuilt when the certificates or settings change); null: none. */
  tls: TlsTerminator | null = null;
  /** The ticket keys its TLS seals sessions with now (the process's, from the update). */
  private ticketKeys: Uint8Array | null = null;
  /** This worker's TLS handshake times; made once the frontend first terminates TLS. */
  handshakeTime: LatencyRecorder | null = null;
  /** Called after every finished connection; the worker uses it to notice it has drained. */
  onIdle: (this: Frontend) => void = () => {};
  /** Called when a client starts waiting: the worker serves the queues often while any waits. */
  onQueued: () => void = () => {};

  constructor(
    update: FrontendUpdate,
    worker: number,
    limits: WorkerLimits,
    activated: readonly ActivatedListener[] = [],
  ) {
    this.activated = activated;
    this.config = update.config;
    this.shared = update.table;
    this.poolId = update.poolId;
    this.slot = openSlot(update.counters, worker);
    this.poolSlot = openSlot(update.poolCounters, worker);
    this.waiting = new Int32Array(update.waiting);
    this.held = update.held;
    this.limits = limits;
    this.table = openTable(this.shared, 0, this.held, this.config.share);
    this.scheduler = createScheduler(this.config.algorithm, this.table, this.context);
    this.apply(update);
  }

  /**
   * Takes a new state of the pool: the backends by slot, the settings, and a scheduler rebuilt
   * over the new size and swapped in. Connections in flight keep their slot; nothing else moves.
   */
  apply(update: FrontendUpdate): void {
    this.config = update.config;
    // A reload may make a TCP frontend of the same name and pool a UDP one.
    if (update.config.protocol === 'udp' && this.udp === null) {
      this.udp = new UdpSessions(this, update.sessions);
    }
    const backends: (BackendConfig | null)[] = [];
    update.members.forEach((member, i) => {
      backends.push(member === null ? null : member.config);
      const id = member === null ? 0 : member.id;
      if (id !== 0 && this.memberIds[i] !== id) {
        // A new occupant: its timings start empty, like its counters.
        for (const recorders of this.latency) recorders[i] = new LatencyRecorder();
        this.context.latency.cost[i] = 0;
        this.context.latency.stamp[i] = 0;
      }
      this.memberIds[i] = id;
      this.leaving[i] = member?.leaving === true ? 1 : 0;
      this.context.keys[i] = member === null ? 0 : fnv1a(member.config.name) || 1;
    });
    this.backends = backends;
    if (update.sources !== null && this.sourceTable === null) {
      this.sourceTable = new Int32Array(update.sources);
    }
    this.guard = Guard.needed(this.config.guard)
      ? new Guard(this.config.guard, update.sources)
      : null;
    this.table = openTable(this.shared, backends.length, this.held, this.config.share);
    this.scheduler = createScheduler(
      this.config.algorithm,
      this.table,
      this.context,
      this.config.hashBalanceFactor,
    );
    this.applyTls(update.ticketKeys);
    this.applyBackendTls();
    this.hashPort = this.config.hashKey === 'source-ip-port';
    this.hashSni = this.config.hashKey === 'sni';
    this.hashes = this.config.algorithm === 'maglev';
  }

  /** Builds the TLS contexts anew when the config changed them (a reload re-read the files);
   *  connections already made keep theirs. New ticket keys reach the contexts there are. */
  private applyTls(ticketKeys: Uint8Array): void {
    const config = this.config.tls;
    if (config.certificates.length === 0) {
      this.tls = null;
      return;
    }
    this.handshakeTime ??= new LatencyRecorder();
    if (this.tls === null || this.tls.fingerprint !== fingerprintOf(config)) {
      this.tls = new TlsTerminator(this.config.name, config, Buffer.from(ticketKeys));
    } else if (this.ticketKeys === null || !Buffer.from(ticketKeys).equals(this.ticketKeys)) {
      this.tls.setTicketKeys(Buffer.from(ticketKeys));
    }
    this.ticketKeys = ticketKeys;
  }

  /** The secure context for TLS backends, built once per change of the pool's settings. */
  private applyBackendTls(): void {
    const settings = this.config.backendTls;
    // Its backends by slot: those added at runtime too, which the config does not list.
    if (!settings.enabled && !this.backends.some((b) => b?.tls === true)) {
      this.backendContext = null;
      this.backendTlsFingerprint = '';
      return;
    }
    const fingerprint = JSON.stringify(settings);
    if (fingerprint === this.backendTlsFingerprint) return;
    this.backendTlsFingerprint = fingerprint;
    this.backendContext = backendContextOf(settings);
  }

  /** The client's TLS handshake is done: on to a backend. */
  afterHandshake(conn: Connection): void {
    afterHandshake(this, conn);
  }

  /** Where this worker's timings are, for the main thread to read: by slot, with its member. */
  latencyBuffers(): WorkerLatency {
    return {
      ids: [...this.memberIds],
      metrics: this.latency.map((recorders) =>
        this.memberIds.map((id, i) => (id === 0 ? null : recorders[i].buffer)),
      ),
      handshakeTime: this.handshakeTime?.buffer ?? null,
    };
  }

  /** Gives back the per-source live count a connection held. */
  releaseSource(entry: number): void {
    if (entry >= 0 && this.sourceTable !== null) releaseSource(this.sourceTable, entry);
  }

  /** A PROXY header arrived on an accept-proxy listener: admit the client it names, or not. */
  afterProxyHeader(conn: Connection, addresses: ProxyAddresses | null): boolean {
    return admitProxied(this, conn, addresses);
  }

  /** A client's ClientHello is read (this frontend is its route's door): hand it over. */
  afterClientHello(conn: Connection, serverName: string | null): void {
    route(this, conn, serverName);
  }

  onFinish(conn: Connection): void {
    Atomics.sub(this.limits.live, 0, 1);
    this.open--;
    conn.admittedBy.releaseSource(conn.source);
    // A connection that ends may have made room on a full backend: the pool's queues, lowest
    // priority number first.
    const siblings = this.siblings;
    for (let s = 0; s < siblings.length; s++) {
      if (siblings[s].queue.size > 0) siblings[s].serveQueue();
    }
    this.onIdle();
  }

  /**
   * True when a sibling with a lower priority number has clients waiting (in any worker) and a
   * backend with room for them: the slot is theirs, so this frontend does not take it. Their
   * worker takes it at once, or at its next queue poll (5 ms, data/worker.ts).
   */
  yields(): boolean {
    const before = this.before;
    for (let s = 0; s < before.length; s++) {
      const sibling = before[s];
      if (Atomics.load(sibling.waiting, 0) > 0 && hasRoom(sibling.table)) return true;
    }
    return false;
  }

  /** Puts a client in the queue when every backend that could take it is full, or a sibling
   *  served first waits for it (`yielding`); false when the queue would not help (nothing
   *  full) or is full itself. */
  enqueue(conn: Connection, yielding: boolean): boolean {
    if (this.queue.size >= QUEUE_LIMIT || !(yielding || anyFull(this.table))) return false;
    conn.phase = QUEUED;
    conn.deadline = deadline(this.config.queueTimeoutMs);
    this.queue.push(conn);
    this.countQueue();
    this.onQueued();
    return true;
  }

  /** Takes a client out of the queue (it closed while waiting): O(1), wherever it is. */
  unqueue(conn: Connection): void {
    this.queue.remove(conn);
    this.countQueue();
  }

  /** The queue's length into the gauge and the shared waiting count, as a change: an object a
   *  move to another pool retired shares the gauge with the one that replaced it. */
  private countQueue(): void {
    const change = this.queue.size - this.waitingHere;
    if (change === 0) return;
    this.slot[QUEUED_GAUGE] += change;
    Atomics.add(this.waiting, 0, change);
    this.waitingHere = this.queue.size;
  }

  /** Connects queued clients, oldest first, while a backend has room and no sibling served
   *  first waits for it. */
  serveQueue(): void {
    let conn = this.queue.head;
    while (conn !== null) {
      if (this.before.length > 0 && this.yields()) break;
      const i = pickAndTake(this, conn);
      if (i < 0) break;
      this.queue.remove(conn);
      conn.phase = CONNECTING;
      connectTo(conn, i);
      conn = this.queue.head;
    }
    this.countQueue();
  }

  /** Every tick: room made by other workers is taken, and waits past --queue-timeout end. */
  sweepQueue(): void {
    if (this.queue.size === 0) return;
    this.serveQueue();
    let conn = this.queue.head;
    while (conn !== null && now >= conn.deadline) {
      this.queue.remove(conn);
      conn.phase = CONNECTING;
      closeClient(conn, END.QUEUE_TIMEOUT);
      conn = this.queue.head;
    }
    this.countQueue();
  }

  /** Connect deadlines, PROXY header and ClientHello deadlines: checked every tick. */
  sweepConnecting(): void {
    let conn = this.connecting.head;
    while (conn !== null) {
      const next = conn.next;
      if (now >= conn.deadline) {
        if (conn.phase === PROXY_HEADER) {
          this.connecting.remove(conn);
          closeClient(conn, END.TIMEOUT);
        } else if (conn.phase === INSPECT) {
          this.connecting.remove(conn);
          closeClient(conn, END.INSPECT_TIMEOUT);
        } else if (conn.phase === HANDSHAKE) {
          this.connecting.remove(conn);
          handshakeTimedOut(conn);
        } else {
          failConnect(conn, true);
        }
      }
      conn = next;
    }
  }

  /** Idle timeouts and idle buffers: checked every idleSweepTicks(idleTimeoutMs) ticks. */
  sweepIdle(): void {
    // lastActive is `now` as the data path saw it, up to a tick behind the real moment.
    const limit = this.config.idleTimeoutMs + TICK_MS;
    let conn = this.established.head;
    while (conn !== null) {
      const next = conn.next;
      const quiet = now - conn.lastActive;
      if (quiet >= limit) cut(conn, END.TIMEOUT);
      else if (quiet >= BUFFER_RELEASE_MS) releaseIdleBuffers(conn);
      conn = next;
    }
  }

  /** Resets every connection (ends every session) to the backend in `slot`; returns how many. */
  killBackend(slot: number): number {
    let killed = this.udp?.killBackend(slot) ?? 0;
    for (const list of [this.connecting, this.established]) {
      let conn = list.head;
      while (conn !== null) {
        const next = conn.next;
        if (conn.backendIndex === slot) {
          kill(conn);
          killed++;
        }
        conn = next;
      }
    }
    return killed;
  }

  /** Cuts every live connection (the drain deadline has passed). */
  cutAll(reason: number): void {
    this.udp?.endAll(reason);
    for (const list of [this.connecting, this.established]) {
      let conn = list.head;
      while (conn !== null) {
        const next = conn.next;
        cut(conn, reason);
        conn = next;
      }
    }
  }
}
