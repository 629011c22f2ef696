// One proxied connection: accept -> pick -> connect (with retries) -> pipe -> close.
// Invariants: one pre-shaped Connection object per client; every socket handler is a module-level
// function reading `this.conn`, so no closure is made per connection or per chunk; bytes are
// written from the buffer they were read into and never copied; a backend slot taken with
// acquire() is released exactly once; a buffer is read into again only after its write finished.
//
// How a connection ends (the invariant every close order keeps): a connection finishes exactly
// once, in finish(), when both of its sockets have emitted 'close' (or the client has and no
// backend was connected); finish() gives back the live count, the backend's active slot, the
// per-source count and the buffers, and is a no-op the second time. So every path that ends a
// connection only has to make both sockets close: end() (a FIN, then close once both ways are
// done), destroy() (close now), or reset() (an RST) -- and reset() falls back to destroy() where
// libuv cannot reset (a shutdown pending), since a failed reset never emits 'close'.

import net from 'node:net';
import type { BackendConfig, FrontendConfig } from '../config/types.ts';
import type { Scheduler } from '../core/scheduler.ts';
import { acquire, release } from '../core/scheduler.ts';
import { avoidBit } from '../core/table.ts';
import type { Logger } from '../log.ts';
import {
  ACCEPTED,
  B_BYTES_IN,
  B_BYTES_OUT,
  B_CONNECTIONS,
  B_FAILURES,
  backendOffset,
  END,
  END_BASE,
  END_NAMES,
  LIVE,
  RETRIES,
} from '../shared/counters.ts';
import { isLocalError } from '../shared/errors.ts';
import type { BackendTable } from '../shared/table.ts';
import type { LatencyRecorder } from '../stats/latency.ts';
import { CONNECT, DURATION, FIRST_BYTE } from '../stats/latency.ts';
import { giveLarge, giveSmall, LARGE_SIZE, SMALL_SIZE, takeLarge, takeSmall } from './buffers.ts';
import { now } from './clock.ts';
import { repointReadBuffer } from './internals.ts';
import type { ProxyAddresses } from './proxy-protocol.ts';
import { buildV1, buildV2, parseProxyHeader } from './proxy-protocol.ts';
import type { Linked, LinkedList } from './queue.ts';
import type { Inspection } from './routes.ts';

/**
 * Node emits 'drain' only after a write() that reached the high-water mark. A relay stops reading
 * on *any* pending write, so the mark must be one byte: then every pending write ends in 'drain'.
 */
export const PEER_HIGH_WATER_MARK = 1;

/** Where a connection is in its life. */
export const CONNECTING = 1;
export const ESTABLISHED = 2;
export const CLOSED = 3;
/** Waiting in the frontend's queue for a backend with room (every one is at its maxconn). */
export const QUEUED = 4;
/** On an accept-proxy listener: reading the client's PROXY header, before any backend. */
export const PROXY_HEADER = 5;
/** On a route that reads the ClientHello: reading it, before any frontend is chosen. */
export const INSPECT = 6;

/** A socket that knows its connection; null once it no longer speaks for it. */
export class ClientSocket extends net.Socket {
  conn: Connection | null = null;
}

export class BackendSocket extends net.Socket {
  conn: Connection | null = null;
}

/**
 * What a connection sees of its frontend (data/frontend.ts): settings, the table and scheduler
 * it picks with, counters and timings it writes, the lists it sits in, and the steps only the
 * frontend can take (queueing, admitting a PROXY header's client, the end of a connection).
 */
export interface ConnectionFrontend {
  readonly config: FrontendConfig;
  readonly table: BackendTable;
  readonly scheduler: Scheduler;
  /** This worker's counter slot for the frontend. */
  readonly slot: Float64Array;
  /** Timings by metric, then table slot. */
  readonly latency: readonly (readonly LatencyRecorder[])[];
  /** By table slot: where each backend is. */
  readonly backends: readonly (BackendConfig | null)[];
  readonly connecting: LinkedList<Connection>;
  readonly established: LinkedList<Connection>;
  /** null: no access log (no cost). */
  readonly accessLog: Logger | null;
  /** Waits for a backend with room; false when waiting would not help. */
  enqueue(conn: Connection): boolean;
  /** Leaves the queue (the client closed while waiting). */
  unqueue(conn: Connection): void;
  /** Returns whether to read on (for the ClientHello). */
  afterProxyHeader(conn: Connection, addresses: ProxyAddresses | null): boolean;
  /** The ClientHello is read: hand the client to the frontend its server name picks. */
  afterClientHello(conn: Connection, serverName: string | null): void;
  /** Gives back a per-source live count taken by this frontend's guard. */
  releaseSource(entry: number): void;
  /** The connection has finished: give back what the frontend counted for it. */
  onFinish(conn: Connection): void;
}

export class Connection implements Linked<Connection> {
  /** Its frontend: where the ClientHello is read, the route's door until the hello picks one. */
  frontend: ConnectionFrontend;
  /** Whose guard took `source` (the frontend it was accepted by). */
  readonly admittedBy: ConnectionFrontend;
  /** Set right after construction, by the accept path. */
  client!: ClientSocket;
  backend: BackendSocket | null = null;
  /** Index of the backend in the frontend's table, -1 before a pick. */
  backendIndex = -1;
  /** Whether this connection holds a slot in the table's active count. */
  acquired = false;
  /** Backends already tried, as an avoid mask for the next pick. */
  avoid = 0;
  attempts = 0;
  /** The client's hash for hashing schedulers (Maglev); 0 when the frontend hashes nothing. */
  key = 0;
  /** Its entry in the per-source table (a live count to give back), or -1. */
  source = -1;
  /** What a PROXY header said (accept-proxy listeners only); null: the real peer. */
  proxied: ProxyAddresses | null = null;
  /** The PROXY header read so far, then the client's bytes that came with it, or the ClientHello
   *  and what came with it: the bytes the backend is sent first. */
  pending: Buffer | null = null;
  /** The ClientHello being read, and the route that reads it; null once a frontend has it. */
  inspection: Inspection | null = null;
  /** The TLS server name the client asked for; '' if none (or not read). */
  serverName = '';
  phase = CONNECTING;
  /** An END reason, -1 until known. The first cause wins. */
  end = -1;

  /** The buffers each socket owns for its life, and the ones it reads into now. */
  clientSmall: Buffer;
  backendSmall: Buffer;
  clientBuffer: Buffer;
  backendBuffer: Buffer;
  /** Reading stopped because the peer's write is pending; resumed on the peer's 'drain'. */
  clientStalled = false;
  backendStalled = false;
  clientClosed = false;
  backendClosed = false;

  /** `address:port` of the client, taken only when the access log is on. */
  clientAddress = '';
  /** Client to backend, and backend to client: for the access log. */
  bytesIn = 0;
  bytesOut = 0;
  /** performance.now() (precise, unlike `now`) at accept, at the start of the current connect
   *  attempt, once connected, and at the backend's first byte; 0 until it happens. */
  readonly startedAt: number;
  connectStartedAt = 0;
  connectedAt = 0;
  firstByteAt = 0;
  /** When the current connect attempt times out. */
  deadline = 0;
  /** When a byte last moved either way: the idle timeout counts from here. */
  lastActive: number;

  prev: Connection | null = null;
  next: Connection | null = null;
  list: object | null = null;

  constructor(frontend: ConnectionFrontend) {
    this.frontend = frontend;
    this.admittedBy = frontend;
    this.clientSmall = takeSmall();
    this.backendSmall = takeSmall();
    this.clientBuffer = this.clientSmall;
    this.backendBuffer = this.backendSmall;
    this.startedAt = performance.now();
    this.lastActive = now;
  }
}

// ---------------------------------------------------------------------------------------------
// Read buffers. Node calls readBuffer() right after every read callback (and once when a socket
// is set up) and reads into what it returns next time; the callback leaves its choice here.

let nextReadBuffer: Buffer = Buffer.alloc(0);

function readBuffer(): Buffer {
  return nextReadBuffer;
}

/** Call right before building `conn`'s client socket: it will read into the small buffer first. */
export function prepareClientRead(conn: Connection): void {
  nextReadBuffer = conn.clientBuffer;
}

export const CLIENT_ONREAD: net.OnReadOpts = { buffer: readBuffer, callback: onClientRead };
const BACKEND_ONREAD: net.OnReadOpts = { buffer: readBuffer, callback: onBackendRead };

/** `writableHighWaterMark` reaches the Duplex constructor; Node's types just omit it here. */
const BACKEND_OPTIONS: net.SocketConstructorOpts = {
  allowHalfOpen: true,
  noDelay: true,
  onread: BACKEND_ONREAD,
  ...{ writableHighWaterMark: PEER_HIGH_WATER_MARK },
};

/**
 * Writes `nread` bytes of `buffer` to `peer` and chooses the buffer for the next read. While the
 * write is pending Node still reads from `buffer`, so reading stops (returns false) until the
 * peer drains: memory per direction stays at one buffer whatever the peers do. A socket whose
 * read filled its small buffer is streaming and moves to a large one; one whose read left a large
 * buffer part empty has caught up and moves back. (One that goes quiet right after a full read
 * keeps its large buffer until the idle sweep's releaseIdleBuffers().)
 */
function relay(peer: net.Socket, buffer: Buffer, nread: number, small: Buffer): boolean {
  peer.write(nread === buffer.length ? buffer : buffer.subarray(0, nread));
  if (peer.writableLength !== 0) {
    nextReadBuffer = buffer;
    return false;
  }
  if (buffer === small) {
    nextReadBuffer = nread === SMALL_SIZE ? takeLarge() : small;
  } else if (nread < LARGE_SIZE) {
    giveLarge(buffer);
    nextReadBuffer = small;
  } else {
    nextReadBuffer = buffer;
  }
  return true;
}

function onClientRead(this: ClientSocket, nread: number, buffer: Buffer): boolean {
  const conn = this.conn;
  const backend = conn?.backend;
  if (conn == null || backend == null || !backend.writable) {
    // No backend yet: a PROXY header's bytes, or a ClientHello's.
    let more = true;
    if (conn?.phase === PROXY_HEADER) more = readProxyHeader(conn, buffer.subarray(0, nread));
    else if (conn?.phase === INSPECT) more = readClientHello(conn, buffer.subarray(0, nread));
    // Set after reading: the read that completes a header picks and connects a backend, which
    // points nextReadBuffer at the backend's own buffer; the client must go on with its own.
    nextReadBuffer = buffer;
    return more;
  }
  conn.bytesIn += nread;
  conn.lastActive = now;
  conn.frontend.slot[backendOffset(conn.backendIndex) + B_BYTES_IN] += nread;
  const more = relay(backend, buffer, nread, conn.clientSmall);
  conn.clientBuffer = nextReadBuffer;
  conn.clientStalled = !more;
  return more;
}

function onBackendRead(this: BackendSocket, nread: number, buffer: Buffer): boolean {
  const conn = this.conn;
  if (conn === null || !conn.client.writable) {
    nextReadBuffer = buffer;
    return true;
  }
  if (conn.firstByteAt === 0) {
    conn.firstByteAt = performance.now();
    conn.frontend.latency[FIRST_BYTE][conn.backendIndex].record(
      (conn.firstByteAt - conn.connectedAt) * 1000,
    );
    // What the client waited for, from the connect to the answer: peak-EWMA's sample.
    conn.frontend.scheduler.observe(conn.backendIndex, conn.firstByteAt - conn.connectStartedAt);
  }
  conn.bytesOut += nread;
  conn.lastActive = now;
  conn.frontend.slot[backendOffset(conn.backendIndex) + B_BYTES_OUT] += nread;
  const more = relay(conn.client, buffer, nread, conn.backendSmall);
  conn.backendBuffer = nextReadBuffer;
  conn.backendStalled = !more;
  return more;
}

/** The public-API read path, used when hookAccept is unavailable: Node allocates each chunk. */
export function onClientData(this: ClientSocket, chunk: Buffer): void {
  const conn = this.conn;
  const backend = conn?.backend;
  if (conn == null || backend == null || !backend.writable) {
    if (conn?.phase === PROXY_HEADER && !readProxyHeader(conn, chunk)) this.pause();
    else if (conn?.phase === INSPECT && !readClientHello(conn, chunk)) this.pause();
    return;
  }
  conn.bytesIn += chunk.length;
  conn.lastActive = now;
  conn.frontend.slot[backendOffset(conn.backendIndex) + B_BYTES_IN] += chunk.length;
  backend.write(chunk);
  if (backend.writableLength !== 0) {
    conn.clientStalled = true;
    this.pause();
  }
}

/**
 * Takes bytes of a PROXY header (copied: the read buffer is reused). Returns whether to go on
 * reading: false once the header is complete (reading waits for the backend) or refused.
 */
function readProxyHeader(conn: Connection, bytes: Buffer): boolean {
  conn.pending = conn.pending === null ? Buffer.from(bytes) : Buffer.concat([conn.pending, bytes]);
  const parsed = parseProxyHeader(conn.pending);
  if (parsed.status === 'incomplete') return true;
  if (parsed.status === 'invalid') {
    conn.pending = null;
    conn.frontend.connecting.remove(conn);
    closeClient(conn, END.BAD_PROXY);
    return false;
  }
  const rest = conn.pending.subarray(parsed.length);
  conn.pending = rest.length > 0 ? rest : null;
  return conn.frontend.afterProxyHeader(conn, parsed.addresses);
}

/** Starts reading the client's ClientHello, within --inspect-timeout. */
export function beginInspection(conn: Connection): void {
  conn.phase = INSPECT;
  conn.deadline = now + conn.frontend.config.inspectTimeoutMs;
  conn.frontend.connecting.add(conn);
}

/** Takes bytes of a ClientHello. Returns whether to go on reading: false once it is read (reading
 *  waits for the backend, which is sent every byte read so far). */
export function readClientHello(conn: Connection, bytes: Buffer): boolean {
  const parsed = (conn.inspection as Inspection).add(bytes);
  if (parsed === null) return true;
  conn.frontend.afterClientHello(conn, parsed.serverName);
  return false;
}

// ---------------------------------------------------------------------------------------------
// Client socket events.

export function attachClient(client: ClientSocket): void {
  client.on('end', onClientEnd);
  client.on('error', onClientError);
  client.on('close', onClientClose);
  client.on('drain', onClientDrain);
  client.on('finish', onClientFinish);
}

function onClientEnd(this: ClientSocket): void {
  // Half-close: the client will send no more; tell the backend, keep the other direction open.
  const conn = this.conn;
  if (conn === null) return;
  if (conn.end < 0) conn.end = END.CLIENT_CLOSED;
  if (conn.backend !== null) forwardEnd(conn.backend);
}

function onClientError(this: ClientSocket, err: NodeJS.ErrnoException): void {
  const conn = this.conn;
  if (conn === null) return;
  if (err.code === 'ECONNRESET' || err.code === 'EPIPE') {
    if (conn.end < 0) conn.end = END.CLIENT_RESET;
    if (conn.backend !== null && conn.phase === ESTABLISHED) reset(conn.backend);
  }
}

function onClientClose(this: ClientSocket): void {
  const conn = this.conn;
  if (conn === null) return;
  conn.clientClosed = true;
  const backend = conn.backend;
  if (backend !== null && !backend.destroyed) {
    // The client is gone for good: nothing more can be delivered to it.
    if (conn.end < 0) conn.end = END.CLIENT_CLOSED;
    backend.destroy();
  }
  if (conn.backendClosed || backend === null || conn.phase === CONNECTING) {
    if (backend !== null && conn.phase === CONNECTING) detachBackend(conn);
    finish(conn);
  }
}

function onClientFinish(this: ClientSocket): void {
  // Everything for the client is out; with the backend gone nothing more can come: close.
  const conn = this.conn;
  if (conn?.backendClosed) this.destroy();
}

function onClientDrain(this: ClientSocket): void {
  const conn = this.conn;
  if (conn?.backendStalled) {
    conn.backendStalled = false;
    conn.backend?.resume();
  }
}

// ---------------------------------------------------------------------------------------------
// Backend: pick, connect, retry.

/** Picks a backend and connects to it; when every backend is full, waits in the queue; when
 *  none can take it at all, closes the client. */
export function connectBackend(conn: Connection): void {
  const frontend = conn.frontend;
  const i = frontend.scheduler.pick(conn.avoid, conn.key);
  if (i < 0) {
    if (conn.attempts === 0 && frontend.enqueue(conn)) return;
    closeClient(conn, conn.attempts > 0 ? END.CONNECT_FAILED : END.NO_BACKEND);
    return;
  }
  connectTo(conn, i);
}

/** Connects to backend `i`, picked for this connection. */
export function connectTo(conn: Connection, i: number): void {
  const frontend = conn.frontend;
  acquire(frontend.table, i);
  conn.acquired = true;
  conn.backendIndex = i;
  if (conn.attempts > 0) frontend.slot[RETRIES]++; // counted only when a retry is really made
  conn.attempts++;
  conn.phase = CONNECTING;
  conn.connectStartedAt = performance.now();
  conn.deadline = now + frontend.config.connectTimeoutMs;
  frontend.connecting.add(conn);

  const backend = new BackendSocket(BACKEND_OPTIONS);
  backend.conn = conn;
  conn.backend = backend;
  backend.on('connect', onBackendConnect);
  backend.on('end', onBackendEnd);
  backend.on('error', onBackendError);
  backend.on('close', onBackendClose);
  backend.on('drain', onBackendDrain);
  nextReadBuffer = conn.backendSmall;
  const address = frontend.backends[i] as BackendConfig;
  backend.connect({ host: address.host, port: address.port });
}

function onBackendConnect(this: BackendSocket): void {
  const conn = this.conn;
  if (conn === null) return;
  const frontend = conn.frontend;
  conn.phase = ESTABLISHED;
  frontend.connecting.remove(conn);
  frontend.established.add(conn);
  conn.lastActive = now;
  frontend.slot[backendOffset(conn.backendIndex) + B_CONNECTIONS]++;
  conn.connectedAt = performance.now();
  frontend.scheduler.observe(conn.backendIndex, conn.connectedAt - conn.connectStartedAt);
  frontend.latency[CONNECT][conn.backendIndex].record(
    (conn.connectedAt - conn.connectStartedAt) * 1000,
  );
  const target = frontend.backends[conn.backendIndex] as BackendConfig;
  const version = target.sendProxy >= 0 ? target.sendProxy : frontend.config.sendProxy;
  if (version !== 0) this.write(proxyHeader(conn, version));
  if (conn.pending !== null) {
    // Client bytes that came in with its PROXY header.
    conn.bytesIn += conn.pending.length;
    frontend.slot[backendOffset(conn.backendIndex) + B_BYTES_IN] += conn.pending.length;
    this.write(conn.pending);
    conn.pending = null;
  }
  conn.client.resume();
}

/** The PROXY header for this connection's client: as its own PROXY header said, or as seen. */
function proxyHeader(conn: Connection, version: number): Buffer {
  const client = conn.client;
  const addresses = conn.proxied ?? {
    sourceAddress: client.remoteAddress ?? '0.0.0.0',
    sourcePort: client.remotePort ?? 0,
    destinationAddress: client.localAddress ?? '0.0.0.0',
    destinationPort: client.localPort ?? 0,
  };
  return version === 1 ? buildV1(addresses) : buildV2(addresses);
}

/** The connect attempt failed (refused, unreachable, timed out): retry elsewhere or give up. */
export function failConnect(conn: Connection, timedOut: boolean): void {
  const frontend = conn.frontend;
  frontend.slot[backendOffset(conn.backendIndex) + B_FAILURES]++;
  frontend.connecting.remove(conn);
  conn.avoid |= avoidBit(conn.backendIndex);
  detachBackend(conn);
  if (conn.clientClosed) {
    finish(conn);
  } else if (conn.attempts <= frontend.config.retries) {
    connectBackend(conn);
  } else {
    closeClient(conn, timedOut ? END.TIMEOUT : END.CONNECT_FAILED);
  }
}

/** Lets go of the current backend socket and its slot; its late events are ignored. */
function detachBackend(conn: Connection): void {
  const backend = conn.backend;
  if (backend !== null) {
    backend.conn = null;
    backend.destroy();
    conn.backend = null;
  }
  if (conn.acquired) {
    release(conn.frontend.table, conn.backendIndex);
    conn.acquired = false;
  }
}

function onBackendEnd(this: BackendSocket): void {
  const conn = this.conn;
  if (conn === null) return;
  if (conn.end < 0) conn.end = END.BACKEND_CLOSED;
  forwardEnd(conn.client);
}

/**
 * Forwards a FIN to `peer`. When `peer` has sent its own FIN already and nothing is queued for
 * it, both directions are done: closing it sends the same FIN, and saves a shutdown() (with its
 * FIN processing, inline on loopback) per connection. Otherwise end(): the half-close.
 */
function forwardEnd(peer: net.Socket): void {
  if (peer.readableEnded && peer.writableLength === 0) peer.destroy();
  else peer.end();
}

function onBackendError(this: BackendSocket, err: NodeJS.ErrnoException): void {
  const conn = this.conn;
  if (conn === null) return;
  if (conn.phase === CONNECTING) {
    if (isLocalError(err.code)) {
      // Out of descriptors or local ports: our trouble, not the backend's. No failure is
      // counted against it, and no retry (another backend would meet the same shortage).
      conn.frontend.connecting.remove(conn);
      detachBackend(conn);
      if (conn.clientClosed) finish(conn);
      else closeClient(conn, END.LOCAL_ERROR);
      return;
    }
    failConnect(conn, false);
    return;
  }
  if (err.code === 'ECONNRESET' || err.code === 'EPIPE') {
    if (conn.end < 0) conn.end = END.BACKEND_RESET;
    if (!conn.client.destroyed) reset(conn.client);
  }
}

function onBackendClose(this: BackendSocket): void {
  const conn = this.conn;
  if (conn === null) return;
  if (conn.phase === CONNECTING) {
    // Closed before connecting without an error event: treat as a failed connect.
    failConnect(conn, false);
    return;
  }
  conn.backendClosed = true;
  if (!conn.client.destroyed) {
    if (conn.end < 0) conn.end = END.BACKEND_CLOSED;
    // Let what is queued for the client go out, then close (onClientFinish): not destroy().
    if (conn.client.writableFinished) conn.client.destroy();
    else conn.client.end();
  }
  if (conn.clientClosed) finish(conn);
}

function onBackendDrain(this: BackendSocket): void {
  const conn = this.conn;
  if (conn?.clientStalled) {
    conn.clientStalled = false;
    conn.client.resume();
  }
}

/**
 * For the timer sweep, on a connection quiet for a while: a socket still holding a large buffer
 * (its last read filled it, so it expected more, and nothing came) goes back to its small one.
 * Only when not stalled: then no pending write uses the large buffer.
 */
export function releaseIdleBuffers(conn: Connection): void {
  if (
    conn.backendBuffer !== conn.backendSmall &&
    !conn.backendStalled &&
    conn.backend !== null &&
    repointReadBuffer(conn.backend, conn.backendSmall)
  ) {
    giveLarge(conn.backendBuffer);
    conn.backendBuffer = conn.backendSmall;
  }
  if (
    conn.clientBuffer !== conn.clientSmall &&
    !conn.clientStalled &&
    repointReadBuffer(conn.client, conn.clientSmall)
  ) {
    giveLarge(conn.clientBuffer);
    conn.clientBuffer = conn.clientSmall;
  }
}

// ---------------------------------------------------------------------------------------------
// Ending.

/** Closes the client for `reason` before any byte flowed (limit, no backend, connect failed). */
export function closeClient(conn: Connection, reason: number): void {
  if (conn.end < 0) conn.end = reason;
  conn.client.destroy();
}

/** Cuts the connection now (idle timeout, drain deadline). */
export function cut(conn: Connection, reason: number): void {
  if (conn.end < 0) conn.end = reason;
  conn.backend?.destroy();
  conn.client.destroy();
}

/** Resets both sides now (an operator's `del backend ... now`). */
export function kill(conn: Connection): void {
  if (conn.end < 0) conn.end = END.KILLED;
  if (conn.backend !== null) reset(conn.backend);
  reset(conn.client);
}

/**
 * Resets `socket` (an RST, so its peer sees the cut) where a reset is possible, and closes it
 * where it is not: libuv refuses a reset while a shutdown is pending (after end(), our FIN
 * waiting behind queued bytes) and Node then drops the handle without closing it, so 'close'
 * never fires and the connection never finishes. A connecting socket would reset only after
 * connecting; it is closed now instead.
 */
function reset(socket: net.Socket): void {
  if (socket.destroyed) return;
  if (socket.writableEnded || socket.connecting) socket.destroy();
  else socket.resetAndDestroy();
}

/** The access log line, HAProxy's log line and termination state in JSON. */
function logConnection(log: Logger, conn: Connection, reason: number, endedAt: number): void {
  const connected = conn.connectedAt !== 0;
  const backend = conn.backendIndex >= 0 ? conn.frontend.backends[conn.backendIndex] : null;
  log.info(
    {
      client: conn.clientAddress,
      frontend: conn.frontend.config.name,
      serverName: conn.serverName === '' ? null : conn.serverName,
      backend: connected && backend !== null ? backend.name : null,
      bytesIn: conn.bytesIn,
      bytesOut: conn.bytesOut,
      connectMs: connected
        ? Math.round((conn.connectedAt - conn.connectStartedAt) * 1000) / 1000
        : null,
      durationMs: Math.round((endedAt - conn.startedAt) * 1000) / 1000,
      attempts: conn.attempts,
      end: END_NAMES[reason],
    },
    'connection',
  );
}

/** Both sockets are closed: give everything back exactly once. */
function finish(conn: Connection): void {
  if (conn.phase === CLOSED) return;
  if (conn.phase === QUEUED) conn.frontend.unqueue(conn);
  conn.phase = CLOSED;
  const frontend = conn.frontend;
  frontend.connecting.remove(conn);
  frontend.established.remove(conn);
  if (conn.acquired) {
    release(frontend.table, conn.backendIndex);
    conn.acquired = false;
  }
  if (conn.clientBuffer !== conn.clientSmall) giveLarge(conn.clientBuffer);
  if (conn.backendBuffer !== conn.backendSmall) giveLarge(conn.backendBuffer);
  giveSmall(conn.clientSmall);
  giveSmall(conn.backendSmall);
  conn.client.conn = null;
  if (conn.backend !== null) conn.backend.conn = null;
  const endedAt = performance.now();
  if (conn.connectedAt !== 0) {
    frontend.latency[DURATION][conn.backendIndex].record((endedAt - conn.startedAt) * 1000);
  }
  const reason = conn.end < 0 ? END.CLIENT_CLOSED : conn.end;
  const slot = frontend.slot;
  if (conn.inspection !== null) {
    // It ended before its ClientHello picked a frontend: the door counts it.
    slot[ACCEPTED]++;
    conn.inspection = null;
  }
  slot[END_BASE + reason]++;
  if (frontend.accessLog !== null) logConnection(frontend.accessLog, conn, reason, endedAt);
  slot[LIVE]--;
  frontend.onFinish(conn);
}
