// A frontend as one worker thread runs it: its listeners, its scheduler over the shared backend
// table, and the lists the coarse timer sweeps. Invariant: per accepted connection, the work here
// is one limit check, one Connection, one client socket and one pick; nothing is logged.

import net from 'node:net';
import type { BackendConfig, FrontendConfig, ListenEndpoint } from '../config/types.ts';
import { fnv1a } from '../core/hash.ts';
import { createLatencyState } from '../core/peak-ewma.ts';
import type { Scheduler, SchedulerContext } from '../core/scheduler.ts';
import { createScheduler } from '../core/scheduler.ts';
import { anyFull } from '../core/table.ts';
import type { Logger } from '../log.ts';
import {
  ACCEPTED,
  END,
  END_BASE,
  LIVE,
  openSlot,
  QUEUED as QUEUED_GAUGE,
} from '../shared/counters.ts';
import type {
  ActivatedListener,
  EncodedLatency,
  ListenFailure,
  PoolUpdate,
} from '../shared/messages.ts';
import { releaseSource } from '../shared/sources.ts';
import type { BackendTable, SharedTable } from '../shared/table.ts';
import { MAX_BACKENDS, openTable } from '../shared/table.ts';
import { LatencyRecorder, METRIC_NAMES } from '../stats/latency.ts';
import { BUFFER_RELEASE_MS, LinkedList, now } from './clock.ts';
import {
  attachClient,
  CLIENT_ONREAD,
  ClientSocket,
  CONNECTING,
  Connection,
  closeClient,
  connectBackend,
  connectTo,
  cut,
  failConnect,
  kill,
  onClientData,
  PEER_HIGH_WATER_MARK,
  PROXY_HEADER,
  prepareClientRead,
  QUEUED,
  releaseIdleBuffers,
} from './connection.ts';
import { Guard, REFUSED, UNTRACKED } from './guard.ts';
import type { TcpHandle } from './internals.ts';
import { adoptHandle, hookAccept } from './internals.ts';
import type { ProxyAddresses } from './proxy-protocol.ts';

/** Most clients one worker holds in a frontend's queue; beyond, they are refused at once. */
export const QUEUE_LIMIT = 10_000;

export interface WorkerLimits {
  /** Global live connections over every worker (Atomics), for maxConnections. */
  readonly live: Int32Array;
  /** 0: no limit. A reload may change it. */
  maxConnections: number;
  readonly backlog: number;
}

function listenKey(endpoint: ListenEndpoint): string {
  return endpoint.acceptProxy ? `${endpoint.text},accept-proxy` : endpoint.text;
}

function activatedKey(socket: ActivatedListener): string {
  return `systemd ${socket.text}`;
}

export class Frontend {
  config: FrontendConfig;
  /** The table over the slots in use; rebuilt with the scheduler when the pool changes. */
  table: BackendTable;
  scheduler: Scheduler;
  readonly shared: SharedTable;
  /** This worker's counter slot for this frontend; the only writer is this thread. */
  readonly slot: Float64Array;
  /** By table slot: where the backend is, or null for a free slot. */
  backends: (BackendConfig | null)[] = [];
  /** By table slot: which member sits there, so a slot given to a new backend is noticed. */
  private memberIds: number[] = [];
  /** What the schedulers keep across rebuilds: backend name hashes, latency observations. */
  private readonly context: SchedulerContext = {
    keys: new Uint32Array(MAX_BACKENDS),
    latency: createLatencyState(MAX_BACKENDS),
  };
  readonly limits: WorkerLimits;
  readonly connecting = new LinkedList<Connection>();
  /** Clients waiting for a backend with room, oldest first (only when backends have maxconn). */
  readonly queue: Connection[] = [];
  readonly established = new LinkedList<Connection>();
  /** Open listeners by address. */
  readonly servers = new Map<string, net.Server>();
  /** This worker's timings: [metric (CONNECT, FIRST_BYTE, DURATION)][slot]. */
  readonly latency: LatencyRecorder[][] = METRIC_NAMES.map(() => []);
  /** Allow/deny lists and per-source limits; null when the frontend has none (no cost). */
  guard: Guard | null = null;
  /** The shared per-source counts, for releases (kept even if a reload drops the limits). */
  private sourceTable: Int32Array | null = null;
  /** Whether the scheduler hashes the client (Maglev), and whether the port is part of it. */
  private hashes = false;
  private hashPort = false;
  /** Whether the accept hook is in use (false: Node's public 'connection' path). */
  hooked = false;
  /** One line per finished connection when --access-log is on; null (no cost) otherwise. */
  accessLog: Logger | null = null;
  /** Called after every finished connection; the worker uses it to notice it has drained. */
  onIdle: (this: Frontend) => void = () => {};

  /** Sockets systemd passed for this frontend: opened once, never closed by a reload. */
  private readonly activated: readonly ActivatedListener[];

  constructor(
    update: PoolUpdate,
    worker: number,
    limits: WorkerLimits,
    activated: readonly ActivatedListener[] = [],
  ) {
    this.activated = activated;
    this.config = update.config;
    this.shared = update.table;
    this.slot = openSlot(update.counters, worker);
    this.limits = limits;
    this.table = openTable(this.shared, 0);
    this.scheduler = createScheduler(this.config.algorithm, this.table, this.context);
    this.apply(update);
  }

  /**
   * Takes a new state of the pool: the backends by slot, the settings, and a scheduler rebuilt
   * over the new size and swapped in. Connections in flight keep their slot; nothing else moves.
   */
  apply(update: PoolUpdate): void {
    this.config = update.config;
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
      this.context.keys[i] = member === null ? 0 : fnv1a(member.config.name) || 1;
    });
    this.backends = backends;
    if (update.sources !== null && this.sourceTable === null) {
      this.sourceTable = new Int32Array(update.sources);
    }
    this.guard = Guard.needed(this.config.guard)
      ? new Guard(this.config.guard, update.sources)
      : null;
    this.table = openTable(this.shared, backends.length);
    this.scheduler = createScheduler(this.config.algorithm, this.table, this.context);
    this.hashPort = this.config.hashKey === 'source-ip-port';
    this.hashes = this.config.algorithm === 'maglev';
  }

  /**
   * Opens the listeners the config names that are not open yet, and closes those it no longer
   * names; an unchanged listener keeps its socket. Returns the ones that could not be opened.
   */
  async syncListeners(): Promise<ListenFailure[]> {
    const wanted = new Set(this.config.listen.map(listenKey));
    for (const socket of this.activated) wanted.add(activatedKey(socket));
    for (const [text, server] of this.servers) {
      if (!wanted.has(text)) {
        server.close();
        this.servers.delete(text);
      }
    }
    const failures: ListenFailure[] = [];
    for (const socket of this.activated) {
      await this.openOnce(
        activatedKey(socket),
        socket.text,
        { fd: socket.fd },
        socket.acceptProxy === true,
        failures,
      );
    }
    for (const endpoint of this.config.listen) {
      const options = {
        host: endpoint.host,
        port: endpoint.port,
        reusePort: true,
        backlog: this.limits.backlog,
      };
      await this.openOnce(
        listenKey(endpoint),
        endpoint.text,
        options,
        endpoint.acceptProxy,
        failures,
      );
    }
    return failures;
  }

  /** Opens a listener under `key` unless it is open already; a failure is added to `failures`. */
  private async openOnce(
    key: string,
    text: string,
    options: net.ListenOptions | { fd: number },
    acceptProxy: boolean,
    failures: ListenFailure[],
  ): Promise<void> {
    if (this.servers.has(key)) return;
    try {
      this.servers.set(key, await this.open(options, acceptProxy));
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      failures.push({ endpoint: text, code: e.code ?? 'ERROR', message: e.message });
    }
  }

  private async open(
    options: net.ListenOptions | { fd: number },
    acceptProxy: boolean,
  ): Promise<net.Server> {
    const server = net.createServer({
      pauseOnConnect: true,
      allowHalfOpen: true,
      noDelay: true,
      // Only the public fallback path uses sockets built by the server: see PEER_HIGH_WATER_MARK.
      highWaterMark: PEER_HIGH_WATER_MARK,
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options, resolve);
    });
    // Runs before any connection is accepted: 'listening' comes before the next poll phase.
    // One closure per listener (not per connection) carries whether it takes PROXY headers.
    this.hooked = hookAccept(server, (status, handle) =>
      this.acceptHandle(status, handle, acceptProxy),
    );
    if (!this.hooked) server.on('connection', (socket) => this.acceptSocket(socket, acceptProxy));
    return server;
  }

  /** This worker's timings, encoded, for the main thread to merge: by slot, with its member. */
  encodeLatency(): EncodedLatency {
    return {
      ids: [...this.memberIds],
      metrics: this.latency.map((recorders) =>
        this.memberIds.map((id, i) => (id === 0 ? null : recorders[i].encode())),
      ),
    };
  }

  /** Stops accepting; live connections carry on. */
  close(): void {
    for (const server of this.servers.values()) server.close();
    this.servers.clear();
  }

  /** Counts a new client against the global limit; false if it must be refused. */
  admit(): boolean {
    this.slot[ACCEPTED]++;
    const live = Atomics.add(this.limits.live, 0, 1);
    if (this.limits.maxConnections > 0 && live >= this.limits.maxConnections) {
      Atomics.sub(this.limits.live, 0, 1);
      this.slot[END_BASE + END.REFUSED_LIMIT]++;
      return false;
    }
    this.slot[LIVE]++;
    return true;
  }

  acceptHandle(status: number, handle: TcpHandle, acceptProxy: boolean): void {
    if (status < 0) return; // accept() failed (EMFILE...): nothing was accepted.
    let source = UNTRACKED;
    // Behind a PROXY header the peer is the upstream balancer: check the client once it is known.
    if (this.guard !== null && !acceptProxy) {
      const peer: { address?: string; family?: string } = {};
      handle.getpeername(peer);
      source = this.guard.admit(peer.address ?? '', peer.family ?? 'IPv4');
      if (source === REFUSED) {
        this.refuse(this.guard.reason);
        handle.close();
        return;
      }
    }
    if (!this.admit()) {
      this.releaseSource(source);
      handle.close();
      return;
    }
    const conn = new Connection(this);
    conn.source = source;
    prepareClientRead(conn);
    const client = adoptHandle(ClientSocket, handle, CLIENT_ONREAD, PEER_HIGH_WATER_MARK);
    client.setNoDelay(true);
    this.start(conn, client, acceptProxy);
  }

  acceptSocket(socket: net.Socket, acceptProxy: boolean): void {
    let source = UNTRACKED;
    if (this.guard !== null && !acceptProxy) {
      source = this.guard.admit(socket.remoteAddress ?? '', socket.remoteFamily ?? 'IPv4');
      if (source === REFUSED) {
        this.refuse(this.guard.reason);
        socket.destroy();
        return;
      }
    }
    if (!this.admit()) {
      this.releaseSource(source);
      socket.destroy();
      return;
    }
    const client = socket as ClientSocket;
    client.conn = null;
    client.on('data', onClientData);
    const conn = new Connection(this);
    conn.source = source;
    this.start(conn, client, acceptProxy);
  }

  /** Counts a client closed at the door, before it became a connection. */
  private refuse(reason: number): void {
    this.slot[ACCEPTED]++;
    this.slot[END_BASE + reason]++;
  }

  /** Gives back the per-source live count a connection held. */
  releaseSource(entry: number): void {
    if (entry >= 0 && this.sourceTable !== null) releaseSource(this.sourceTable, entry);
  }

  start(conn: Connection, client: ClientSocket, acceptProxy: boolean): void {
    conn.client = client;
    client.conn = conn;
    attachClient(client);
    if (acceptProxy) {
      // Read the PROXY header first (onClientRead sees the PROXY_HEADER phase); no backend yet.
      conn.phase = PROXY_HEADER;
      conn.deadline = now + this.config.proxyTimeoutMs;
      this.connecting.add(conn);
      client.resume();
      return;
    }
    // The peer's address costs a getpeername() and a string: read it only for Maglev or the log.
    if (this.hashes || this.accessLog !== null) {
      this.pickFor(conn, client.remoteAddress ?? '', client.remotePort ?? 0);
    } else {
      connectBackend(conn);
    }
  }

  /**
   * The client is known (its own address, or the one its PROXY header gave): hash it for Maglev,
   * keep it for the access log, and pick a backend.
   */
  pickFor(conn: Connection, address: string, port: number): void {
    if (this.hashes) conn.key = this.hashPort ? fnv1a(`${address}:${port}`) : fnv1a(address);
    // The peer's address is gone once the socket closes: take it now, only if it will be logged.
    if (this.accessLog !== null) conn.clientAddress = `${address}:${port}`;
    connectBackend(conn);
  }

  /** A PROXY header arrived on an accept-proxy listener: admit the client it names, or not. */
  afterProxyHeader(conn: Connection, addresses: ProxyAddresses | null): void {
    this.connecting.remove(conn);
    conn.phase = CONNECTING;
    conn.proxied = addresses;
    const client = conn.client;
    const address = addresses?.sourceAddress ?? client.remoteAddress ?? '';
    const port = addresses?.sourcePort ?? client.remotePort ?? 0;
    if (this.guard !== null) {
      const source = this.guard.admit(address, address.includes(':') ? 'IPv6' : 'IPv4');
      if (source === REFUSED) {
        closeClient(conn, this.guard.reason);
        return;
      }
      conn.source = source;
    }
    this.pickFor(conn, address, port);
  }

  onFinish(conn: Connection): void {
    Atomics.sub(this.limits.live, 0, 1);
    this.releaseSource(conn.source);
    // A connection that ends may have made room on a full backend.
    if (this.queue.length > 0) this.serveQueue();
    this.onIdle();
  }

  /** Puts a client in the queue when every backend that could take it is full; false when the
   *  queue would not help (nothing full) or is full itself. */
  enqueue(conn: Connection): boolean {
    if (this.queue.length >= QUEUE_LIMIT || !anyFull(this.table)) return false;
    conn.phase = QUEUED;
    conn.deadline = now + this.config.queueTimeoutMs;
    this.queue.push(conn);
    this.slot[QUEUED_GAUGE] = this.queue.length;
    return true;
  }

  /** Takes a client out of the queue (it closed while waiting). */
  unqueue(conn: Connection): void {
    const at = this.queue.indexOf(conn);
    if (at >= 0) this.queue.splice(at, 1);
    this.slot[QUEUED_GAUGE] = this.queue.length;
  }

  /** Connects queued clients, oldest first, while a backend has room. */
  serveQueue(): void {
    while (this.queue.length > 0) {
      const conn = this.queue[0];
      const i = this.scheduler.pick(conn.avoid, conn.key);
      if (i < 0) break;
      this.queue.shift();
      conn.phase = CONNECTING;
      connectTo(conn, i);
    }
    this.slot[QUEUED_GAUGE] = this.queue.length;
  }

  /** Every tick: room made by other workers is taken, and waits past --queue-timeout end. */
  sweepQueue(): void {
    if (this.queue.length === 0) return;
    this.serveQueue();
    while (this.queue.length > 0 && now >= this.queue[0].deadline) {
      const conn = this.queue.shift() as Connection;
      conn.phase = CONNECTING;
      closeClient(conn, END.QUEUE_TIMEOUT);
    }
    this.slot[QUEUED_GAUGE] = this.queue.length;
  }

  /** Connect deadlines, and PROXY header deadlines: checked every tick. */
  sweepConnecting(): void {
    let conn = this.connecting.head;
    while (conn !== null) {
      const next = conn.next;
      if (now >= conn.deadline) {
        if (conn.phase === PROXY_HEADER) {
          this.connecting.remove(conn);
          closeClient(conn, END.TIMEOUT);
        } else {
          failConnect(conn, true);
        }
      }
      conn = next;
    }
  }

  /** Idle timeouts and idle buffers: checked every IDLE_SWEEP_TICKS ticks. */
  sweepIdle(): void {
    const limit = this.config.idleTimeoutMs;
    let conn = this.established.head;
    while (conn !== null) {
      const next = conn.next;
      const quiet = now - conn.lastActive;
      if (quiet >= limit) cut(conn, END.TIMEOUT);
      else if (quiet >= BUFFER_RELEASE_MS) releaseIdleBuffers(conn);
      conn = next;
    }
  }

  /** Resets every connection to the backend in `slot`; returns how many. */
  killBackend(slot: number): number {
    let killed = 0;
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
