// A frontend as one worker thread runs it: its listeners, its scheduler over the shared backend
// table, and the lists the coarse timer sweeps. Invariant: per accepted connection, the work here
// is one limit check, one Connection, one client socket and one pick; nothing is logged.

import net from 'node:net';
import type { FrontendConfig } from '../config.ts';
import type { Scheduler } from '../core/scheduler.ts';
import { createScheduler } from '../core/scheduler.ts';
import type { BackendTable, SharedTable } from '../core/table.ts';
import { openTable } from '../core/table.ts';
import type { Logger } from '../log.ts';
import { ACCEPTED, END, END_BASE, LIVE } from '../stats/counters.ts';
import { LatencyRecorder, METRIC_NAMES } from '../stats/latency.ts';
import { BUFFER_RELEASE_MS, LinkedList, now } from './clock.ts';
import {
  attachClient,
  CLIENT_ONREAD,
  ClientSocket,
  Connection,
  connectBackend,
  cut,
  failConnect,
  onClientData,
  PEER_HIGH_WATER_MARK,
  prepareClientRead,
  releaseIdleBuffers,
} from './connection.ts';
import type { TcpHandle } from './internals.ts';
import { adoptHandle, hookAccept } from './internals.ts';

export interface FrontendShared {
  readonly table: SharedTable;
  /** Offset in a counter slot of each backend of this frontend. */
  readonly backendOffset: readonly number[];
}

export interface WorkerLimits {
  /** Global live connections over every worker (Atomics), for maxConnections. */
  readonly live: Int32Array;
  readonly maxConnections: number;
  readonly backlog: number;
}

export class Frontend {
  readonly config: FrontendConfig;
  readonly table: BackendTable;
  readonly scheduler: Scheduler;
  /** This worker's counter slot; the only writer is this thread. */
  readonly slot: Float64Array;
  readonly backendOffset: Int32Array;
  readonly limits: WorkerLimits;
  readonly connecting = new LinkedList<Connection>();
  readonly established = new LinkedList<Connection>();
  readonly servers: net.Server[] = [];
  /** This worker's timings: [metric (CONNECT, FIRST_BYTE, DURATION)][backend]. */
  readonly latency: LatencyRecorder[][];
  /** Whether the accept hook is in use (false: Node's public 'connection' path). */
  hooked = false;
  /** One line per finished connection when --access-log is on; null (no cost) otherwise. */
  accessLog: Logger | null = null;
  /** Called after every finished connection; the worker uses it to notice it has drained. */
  onIdle: () => void = () => {};

  constructor(
    config: FrontendConfig,
    shared: FrontendShared,
    slot: Float64Array,
    limits: WorkerLimits,
  ) {
    this.config = config;
    this.table = openTable(shared.table);
    this.scheduler = createScheduler(config.algorithm, this.table);
    this.slot = slot;
    this.backendOffset = Int32Array.from(shared.backendOffset);
    this.limits = limits;
    this.latency = METRIC_NAMES.map(() => config.backends.map(() => new LatencyRecorder()));
  }

  /** Opens every listener of this frontend; rejects with the address that failed. */
  async listen(): Promise<void> {
    for (const endpoint of this.config.listen) {
      const server = net.createServer({
        pauseOnConnect: true,
        allowHalfOpen: true,
        noDelay: true,
        // Only the public fallback path uses sockets built by the server: see PEER_HIGH_WATER_MARK.
        highWaterMark: PEER_HIGH_WATER_MARK,
      });
      this.servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once('error', (err: NodeJS.ErrnoException) =>
          reject(Object.assign(err, { endpoint: endpoint.text })),
        );
        server.listen(
          {
            host: endpoint.host,
            port: endpoint.port,
            reusePort: true,
            backlog: this.limits.backlog,
          },
          resolve,
        );
      });
      // Runs before any connection is accepted: 'listening' comes before the next poll phase.
      this.hooked = hookAccept(server, (status, handle) => this.acceptHandle(status, handle));
      if (!this.hooked) server.on('connection', (socket) => this.acceptSocket(socket));
    }
  }

  /** Stops accepting; live connections carry on. */
  close(): void {
    for (const server of this.servers) server.close();
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

  acceptHandle(status: number, handle: TcpHandle): void {
    if (status < 0) return; // accept() failed (EMFILE...): nothing was accepted.
    if (!this.admit()) {
      handle.close();
      return;
    }
    const conn = new Connection(this);
    prepareClientRead(conn);
    const client = adoptHandle(ClientSocket, handle, CLIENT_ONREAD, PEER_HIGH_WATER_MARK);
    client.setNoDelay(true);
    this.start(conn, client);
  }

  acceptSocket(socket: net.Socket): void {
    if (!this.admit()) {
      socket.destroy();
      return;
    }
    const client = socket as ClientSocket;
    client.conn = null;
    client.on('data', onClientData);
    this.start(new Connection(this), client);
  }

  start(conn: Connection, client: ClientSocket): void {
    conn.client = client;
    // The peer's address is gone once the socket closes: take it now, only if it will be logged.
    if (this.accessLog !== null)
      conn.clientAddress = `${client.remoteAddress}:${client.remotePort}`;
    client.conn = conn;
    attachClient(client);
    connectBackend(conn);
  }

  onFinish(_conn: Connection): void {
    Atomics.sub(this.limits.live, 0, 1);
    this.onIdle();
  }

  /** Connect deadlines: checked every tick. */
  sweepConnecting(): void {
    let conn = this.connecting.head;
    while (conn !== null) {
      const next = conn.next;
      if (now >= conn.deadline) failConnect(conn, true);
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
