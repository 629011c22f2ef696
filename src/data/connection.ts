// One proxied connection: accept -> pick -> connect (with retries) -> relay -> close.
// The relay runs on libuv's TCP handles (data/internals.ts) with no net.Socket, or on the public
// API's sockets where those handles are not available; both drive the same functions below,
// through a Side per socket. Invariants: one pre-shaped Connection (and two Sides) per client;
// every handler is a module-level function reading `this.side`, so no closure is made per
// connection or per chunk; a backend place taken with take() is released exactly once; a buffer
// is read into again only after its write finished; an idle connection holds no buffer.
//
// How a connection ends (the invariant every close order keeps): a connection finishes exactly
// once, in finish(), when both of its sockets have closed (or the client has and no backend is
// attached). Each side closes when both of its directions are done (its EOF read, our FIN sent),
// on an error (a reset is passed on to the other side as a reset), or when the connection is
// cut; when one side closes abruptly, the other follows (closed()). So every path that ends a
// connection only has to close one of its sockets.

import net from 'node:net';
import tls from 'node:tls';
import { getSystemErrorName } from 'node:util';
import type { BackendConfig, FrontendConfig } from '../config/types.ts';
import type { Scheduler } from '../core/scheduler.ts';
import { release, take } from '../core/scheduler.ts';
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
  TLS_BACKEND_FAILED,
} from '../shared/counters.ts';
import { isLocalError } from '../shared/errors.ts';
import type { BackendTable } from '../shared/table.ts';
import type { LatencyRecorder } from '../stats/latency.ts';
import { CONNECT, DURATION, FIRST_BYTE } from '../stats/latency.ts';
import {
  copyOut,
  giveLarge,
  giveSmall,
  IDLE,
  LARGE_SIZE,
  lendOut,
  SMALL_SIZE,
  takeLarge,
} from './buffers.ts';
import { deadline, now } from './clock.ts';
import type { RawHandle, RawRequest } from './internals.ts';
import { raw, UV_EOF } from './internals.ts';
import type { ProxyAddresses } from './proxy-protocol.ts';
import {
  buildV1,
  buildV2,
  PP2_CLIENT_CERT_CONN,
  PP2_CLIENT_CERT_SESS,
  parseProxyHeader,
  tlsTlvs,
} from './proxy-protocol.ts';
import type { Linked, LinkedList } from './queue.ts';
import type { Inspection, Route } from './routes.ts';
import type { TlsSession, TlsTerminator } from './tls.ts';

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
/** On a frontend that terminates TLS: the client's handshake, before any backend. */
export const HANDSHAKE = 7;

/** A socket of the public-API path (no raw handles): it knows its side; null once it no longer
 *  speaks for the connection. */
export class PublicSocket extends net.Socket {
  side: Side | null = null;
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
  /** This worker's slot of its pool's per-backend counters. */
  readonly poolSlot: Float64Array;
  /** Its live connections in this worker (see Frontend.open). */
  open: number;
  /** Timings by metric, then table slot. */
  readonly latency: readonly (readonly LatencyRecorder[])[];
  /** By table slot: where each backend is. */
  readonly backends: readonly (BackendConfig | null)[];
  readonly connecting: LinkedList<Connection>;
  readonly established: LinkedList<Connection>;
  /** null: no access log (no cost). */
  readonly accessLog: Logger | null;
  /** Its TLS termination; null: the bytes pass through as they are. */
  readonly tls: TlsTerminator | null;
  /** The secure context its pool's TLS backends are connected with; null: none speaks TLS. */
  readonly backendContext: tls.SecureContext | null;
  /** This worker's TLS handshake times (a terminating frontend's). */
  readonly handshakeTime: LatencyRecorder | null;
  /** The client's TLS handshake is done: pick and connect a backend. */
  afterHandshake(conn: Connection): void;
  /** Waits for a backend with room; false when waiting would not help. `yielding`: a frontend
   *  served first waits for the room there is. */
  enqueue(conn: Connection, yielding: boolean): boolean;
  /** Whether a frontend of its pool served first waits for the room there is. */
  yields(): boolean;
  /** Frontends of its pool served before it (empty: it yields to none). */
  readonly before: readonly ConnectionFrontend[];
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

/**
 * One socket of a connection, as the relay drives it: its raw handle (or public socket), what it
 * reads into, and where each of its directions is. A connection has two for its whole life; the
 * backend side is reused by each connect attempt.
 */
export class Side {
  readonly conn: Connection;
  readonly isClient: boolean;
  peer!: Side;
  /** The raw handle, or null (public path, or no backend socket now). */
  handle: RawHandle | null = null;
  /** The public path's socket, or null. */
  socket: PublicSocket | null = null;
  /** A large buffer while streaming; null: reads land in the thread's shared IDLE buffer. */
  buffer: Buffer | null = null;
  /** A small buffer holding bytes copied out of IDLE, while their write to the peer is pending. */
  inflight: Buffer | null = null;
  reading = false;
  /** Reading stopped because a write of its bytes to the peer is pending. */
  stalled = false;
  /** Writes to this side not yet complete. */
  pendingWrites = 0;
  /** Its FIN was read: it sends no more. */
  readEnded = false;
  /** Our FIN was asked for (shutdown), and done. */
  shutSent = false;
  shutDone = false;
  /** close() or reset() asked for, and the close done. */
  closing = false;
  closed = false;
  /** Times the idle sweep re-pointed it to IDLE (releaseIdleBuffers); bounded by MAX_RELEASES. */
  releases = 0;

  constructor(conn: Connection, isClient: boolean) {
    this.conn = conn;
    this.isClient = isClient;
  }
}

export class Connection implements Linked<Connection> {
  /** Its frontend: where the ClientHello is read, the route's door until the hello picks one. */
  frontend: ConnectionFrontend;
  /** Whose guard took `source` (the frontend it was accepted by). */
  readonly admittedBy: ConnectionFrontend;
  readonly client: Side;
  readonly backend: Side;
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
  /** Client bytes read before a backend was connected (what came with a PROXY header, or the
   *  ClientHello and what came with it): the bytes the backend is sent first. */
  pending: Buffer | null = null;
  /** The ClientHello being read, and the route that reads it; null once a frontend has it. */
  inspection: Inspection | null = null;
  /** Behind a PROXY header, a route that picks by source network (and reads no ClientHello):
   *  it picks once the header names the client; null otherwise. */
  sourceRoute: Route | null = null;
  /** The TLS server name the client asked for; '' if none (or not read). */
  serverName = '';
  /** The TLS a terminating frontend made with the client; null for every other connection. */
  tls: TlsSession | null = null;
  phase = CONNECTING;
  /** An END reason, -1 until known. The first cause wins. */
  end = -1;

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
    this.client = new Side(this, true);
    this.backend = new Side(this, false);
    this.client.peer = this.backend;
    this.backend.peer = this.client;
    this.startedAt = performance.now();
    this.lastActive = now;
  }
}

// ---------------------------------------------------------------------------------------------
// The client's socket.

/** The accepted raw handle becomes the client's side; it reads nothing until told to. */
export function adoptClientHandle(conn: Connection, handle: RawHandle): void {
  const side = conn.client;
  side.handle = handle;
  handle.side = side;
  handle.onread = onRawRead;
  handle.useUserBuffer(IDLE);
  handle.setNoDelay(true);
}

/** The public path: the server's socket (paused) becomes the client's side. */
export function adoptClientSocket(conn: Connection, socket: net.Socket): void {
  const s = socket as PublicSocket;
  s.side = conn.client;
  conn.client.socket = s;
  listen(s);
}

/** A terminating frontend's TLSSocket becomes the client's side (data/tls.ts made it). */
export function adoptTlsSocket(conn: Connection, socket: PublicSocket): void {
  conn.client.socket = socket;
  listen(socket);
}

function listen(socket: PublicSocket): void {
  socket.on('data', onSocketData);
  socket.on('end', onSocketEnd);
  socket.on('error', onSocketError);
  socket.on('close', onSocketClose);
  socket.on('drain', onSocketDrain);
  socket.on('finish', onSocketFinish);
}

/** Starts (or resumes) reading the client: its PROXY header, ClientHello, or relayed bytes. */
export function readClient(conn: Connection): void {
  resume(conn.client);
}

/**
 * The client's address and port: its real peer (not what a PROXY header said), or, with `local`,
 * where it connected to (for a PROXY header we send).
 */
export function clientEndpoint(conn: Connection, local = false): { address: string; port: number } {
  const socket = conn.client.socket;
  if (socket !== null) {
    return local
      ? { address: socket.localAddress ?? '', port: socket.localPort ?? 0 }
      : { address: socket.remoteAddress ?? '', port: socket.remotePort ?? 0 };
  }
  const out: { address?: string; port?: number } = {};
  if (local) conn.client.handle?.getsockname(out);
  else conn.client.handle?.getpeername(out);
  return { address: out.address ?? '', port: out.port ?? 0 };
}

// ---------------------------------------------------------------------------------------------
// Reading and relaying. On the raw path, Node calls onRawRead with the count in streamBaseState
// and reads next into the buffer it returns; the handle always reads into `side.buffer ?? IDLE`.

const WRITE_DONE = 0;
const WRITE_PENDING = 1;

const READ_BYTES = raw?.kReadBytesOrError ?? 0;
const LAST_WRITE_ASYNC = raw?.kLastWriteWasAsync ?? 0;
const state = raw?.state ?? new Int32Array(4);

function onRawRead(this: RawHandle): Buffer | undefined {
  const side = this.side as Side | null;
  if (side === null) return undefined;
  const nread = state[READ_BYTES];
  if (nread > 0) {
    received(side, side.buffer ?? IDLE, nread);
    return side.buffer ?? IDLE;
  }
  if (nread === UV_EOF) gotEnd(side);
  else if (nread < 0) gotError(side, getSystemErrorName(nread));
  return undefined;
}

/**
 * `nread` bytes of `data` came from `side`: relay them to its peer. While the write is pending
 * libuv still points into the bytes, so reading stops until the peer drains: memory per
 * direction stays at one buffer whatever the peers do. Bytes read into the shared IDLE buffer are
 * first copied out (the write may pend; then the copy is lent to this side until it completes).
 * A read that fills IDLE means a stream:
 * the side reads into a large buffer of its own until a read leaves it part empty.
 */
function received(side: Side, data: Buffer, nread: number): void {
  const conn = side.conn;
  if (conn.phase !== ESTABLISHED) {
    if (side.isClient) early(side, data.subarray(0, nread));
    return;
  }
  const peer = side.peer;
  if (peer.shutSent || peer.closing) return; // nothing more can go to it
  conn.lastActive = now;
  if (side.isClient) {
    conn.bytesIn += nread;
    conn.frontend.poolSlot[backendOffset(conn.backendIndex) + B_BYTES_IN] += nread;
  } else {
    if (conn.firstByteAt === 0) firstByte(conn);
    conn.bytesOut += nread;
    conn.frontend.poolSlot[backendOffset(conn.backendIndex) + B_BYTES_OUT] += nread;
  }
  const status = write(
    peer,
    data === IDLE ? copyOut(nread) : nread === data.length ? data : data.subarray(0, nread),
  );
  if (status === WRITE_PENDING) {
    if (data === IDLE) {
      side.inflight = lendOut();
      // A full read towards a public socket (TLS): its writes always pend, so the growth below
      // would never be reached, and a stream would go on in reads (and TLS records) of 1 KiB.
      if (nread === SMALL_SIZE && peer.handle === null && side.handle !== null) {
        side.buffer = takeLarge();
      }
    }
    side.stalled = true;
    pause(side);
    return;
  }
  if (status < 0) {
    gotError(peer, getSystemErrorName(status));
    return;
  }
  if (side.handle === null) return; // public path: Node chose the chunk
  if (data === IDLE) {
    if (nread === SMALL_SIZE) side.buffer = takeLarge();
  } else if (nread < LARGE_SIZE) {
    giveLarge(data);
    side.buffer = null;
  }
}

function firstByte(conn: Connection): void {
  conn.firstByteAt = performance.now();
  conn.frontend.latency[FIRST_BYTE][conn.backendIndex].record(
    (conn.firstByteAt - conn.connectedAt) * 1000,
  );
  // What the client waited for, from the connect to the answer: peak-EWMA's sample.
  conn.frontend.scheduler.observe(conn.backendIndex, conn.firstByteAt - conn.connectStartedAt);
}

/** Client bytes before a backend is connected: a PROXY header, a ClientHello, or (not reading
 *  then, but kept should they come) bytes for the backend. Their readers copy them. */
function early(side: Side, bytes: Buffer): void {
  const conn = side.conn;
  let more = false;
  if (conn.phase === PROXY_HEADER) more = readProxyHeader(conn, bytes);
  else if (conn.phase === INSPECT) more = readClientHello(conn, bytes);
  else
    conn.pending =
      conn.pending === null ? Buffer.from(bytes) : Buffer.concat([conn.pending, bytes]);
  if (!more) pause(side);
}

/** Writes `chunk` to `side`: WRITE_DONE, WRITE_PENDING (then it drains later), or an errno. */
function write(side: Side, chunk: Buffer): number {
  const handle = side.handle;
  if (handle !== null) {
    const req = spareWrite;
    const err = handle.writeBuffer(req, chunk);
    if (err !== 0) {
      spareWrite = newWrite();
      return err;
    }
    if (state[LAST_WRITE_ASYNC] === 0) return WRITE_DONE; // the request was not used: keep it
    req.buffer = chunk;
    spareWrite = newWrite();
  } else {
    const socket = side.socket as PublicSocket;
    socket.write(chunk);
    if (socket.writableLength === 0) return WRITE_DONE;
  }
  side.pendingWrites++;
  return WRITE_PENDING;
}

/** A write request for the next write; replaced only when a write keeps it (pends). */
let spareWrite: RawRequest = newWrite();

function newWrite(): RawRequest {
  if (raw === null) return { oncomplete: onRawWritten };
  const req = raw.newWrite();
  req.oncomplete = onRawWritten;
  return req;
}

function onRawWritten(this: RawRequest, status: number, handle: RawHandle): void {
  this.buffer = undefined;
  const side = handle.side as Side | null;
  if (side === null || side.closing) return;
  if (status < 0) {
    gotError(side, getSystemErrorName(status));
    return;
  }
  if (--side.pendingWrites === 0) drained(side);
}

/** Every write to `side` is out: its peer's bytes are free, and the peer reads on. */
function drained(side: Side): void {
  const reader = side.peer;
  if (reader.inflight !== null) {
    giveSmall(reader.inflight);
    reader.inflight = null;
  }
  if (reader.stalled) {
    reader.stalled = false;
    resume(reader);
  }
}

function resume(side: Side): void {
  if (side.reading || side.stalled || side.closing || side.readEnded) return;
  side.reading = true;
  if (side.handle !== null) {
    const err = side.handle.readStart();
    if (err !== 0) gotError(side, getSystemErrorName(err));
  } else {
    side.socket?.resume();
  }
}

function pause(side: Side): void {
  if (!side.reading) return;
  side.reading = false;
  if (side.handle !== null) side.handle.readStop();
  else side.socket?.pause();
}

/**
 * Re-pointing a handle from outside a read (useUserBuffer) leaves a small listener object (~50 B)
 * in Node for the rest of the socket's life. A socket that stops at a full read again and again
 * (bursts of whole 64 KiB reads, each followed by a quiet second) would grow by that each time:
 * after this many releases it keeps its large buffer instead. Bounded either way.
 */
export const MAX_RELEASES = 16;

/**
 * For the timer sweep, on a connection quiet for a while: a side still holding a large buffer
 * (its last read filled it, so it expected more, and nothing came) goes back to IDLE. Only when
 * not stalled: then no pending write uses the large buffer. This re-points the handle from
 * outside a read, which costs Node a small listener object per call: it happens only for a
 * stream that stopped exactly at a full read, and at most MAX_RELEASES times per socket.
 */
export function releaseIdleBuffers(conn: Connection): void {
  release1(conn.client);
  release1(conn.backend);
}

function release1(side: Side): void {
  const buffer = side.buffer;
  if (buffer === null || side.stalled || side.handle === null || side.closing) return;
  if (side.releases >= MAX_RELEASES) return;
  side.releases++;
  side.handle.useUserBuffer(IDLE);
  giveLarge(buffer);
  side.buffer = null;
}

// ---------------------------------------------------------------------------------------------
// PROXY header and ClientHello.

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
  conn.deadline = deadline(conn.frontend.config.inspectTimeoutMs);
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
// Backend: pick, connect, retry.

/** Picks a backend and connects to it; when every backend is full, waits in the queue; when
 *  none can take it at all, closes the client. */
export function connectBackend(conn: Connection): void {
  const frontend = conn.frontend;
  // A first attempt leaves the room there is to a waiting frontend served before it.
  const yielding = conn.attempts === 0 && frontend.before.length > 0 && frontend.yields();
  const i = yielding ? -1 : pickAndTake(frontend, conn);
  if (i < 0) {
    if (conn.attempts === 0 && frontend.enqueue(conn, yielding)) return;
    closeClient(conn, conn.attempts > 0 ? END.CONNECT_FAILED : END.NO_BACKEND);
    return;
  }
  connectTo(conn, i);
}

/** How often a pick is made again when another worker took the place first. */
const TAKE_TRIES = 4;

/**
 * Picks a backend for `conn` and takes a place on it (see take()); -1 when none has room. The
 * pick reads the live counts without a lock; a place another worker took first between the
 * pick and the take means picking again, now that the counts show it.
 */
export function pickAndTake(frontend: ConnectionFrontend, conn: Connection): number {
  for (let tries = 0; tries < TAKE_TRIES; tries++) {
    const i = frontend.scheduler.pick(conn.avoid, conn.key);
    if (i < 0 || take(frontend.table, i)) return i;
  }
  return -1;
}

/** What a failed TLS handshake with a backend says (OpenSSL's codes, Node's certificate checks). */
const TLS_FAILURE = /^(ERR_SSL|ERR_TLS|UNABLE_|CERT_|DEPTH_ZERO|SELF_SIGNED|HOSTNAME_MISMATCH)/;

/** `writableHighWaterMark` reaches the Duplex constructor; Node's types just omit it here. */
const BACKEND_OPTIONS: net.SocketConstructorOpts = {
  allowHalfOpen: true,
  noDelay: true,
  ...{ writableHighWaterMark: PEER_HIGH_WATER_MARK },
};

/** Connects to backend `i`, picked for this connection with a place taken on it (pickAndTake),
 *  on a raw handle wherever Node has them (whatever the client's side is). */
export function connectTo(conn: Connection, i: number): void {
  const frontend = conn.frontend;
  conn.acquired = true;
  conn.backendIndex = i;
  if (conn.attempts > 0) frontend.slot[RETRIES]++; // counted only when a retry is really made
  conn.attempts++;
  conn.phase = CONNECTING;
  conn.connectStartedAt = performance.now();
  conn.deadline = deadline(frontend.config.connectTimeoutMs);
  frontend.connecting.add(conn);

  const side = conn.backend;
  side.reading = side.stalled = side.readEnded = side.shutSent = side.shutDone = false;
  side.closing = side.closed = false;
  side.pendingWrites = 0;
  side.releases = 0;
  const address = frontend.backends[i] as BackendConfig;
  if (address.tls || frontend.config.backendTls.enabled) {
    connectTls(conn, address);
    return;
  }
  if (raw !== null) {
    const handle = raw.newSocket();
    handle.side = side;
    side.handle = handle;
    handle.onread = onRawRead;
    handle.setNoDelay(true); // kept by libuv until the socket exists
    const req = raw.newConnect();
    req.oncomplete = onRawConnect;
    const err = address.host.includes(':')
      ? handle.connect6(req, address.host, address.port)
      : handle.connect(req, address.host, address.port);
    if (err !== 0) connectError(conn, getSystemErrorName(err));
    return;
  }
  const socket = new PublicSocket(BACKEND_OPTIONS);
  socket.side = side;
  side.socket = socket;
  socket.on('connect', onSocketConnect);
  listen(socket);
  socket.connect({ host: address.host, port: address.port });
}

/** A backend that speaks TLS: the public path's TLSSocket, connected once its handshake is done
 *  and its certificate verified (as the pool's backendTls says). */
function connectTls(conn: Connection, address: BackendConfig): void {
  const frontend = conn.frontend;
  const settings = frontend.config.backendTls;
  const sni = address.sni ?? settings.sni;
  const name = sni === 'client' ? conn.serverName : (sni ?? address.host);
  const socket = tls.connect({
    host: address.host,
    port: address.port,
    // No SNI for an IP address (RFC 6066); its certificate is still checked against it.
    servername: name === '' || net.isIP(name) !== 0 ? undefined : name,
    // Verified: the certificate must be for the name sent, else for the address (Node's check).
    checkServerIdentity: settings.verify === 'none' ? skipIdentity : tls.checkServerIdentity,
    secureContext: frontend.backendContext ?? undefined,
    rejectUnauthorized: settings.verify === 'required',
    // These reach the socket; Node's types omit them here.
    ...{ allowHalfOpen: true, noDelay: true, highWaterMark: PEER_HIGH_WATER_MARK },
  }) as unknown as PublicSocket;
  socket.side = conn.backend;
  conn.backend.socket = socket;
  socket.on('secureConnect', onSocketConnect);
  listen(socket);
}

function skipIdentity(): undefined {
  return undefined;
}

function onRawConnect(this: RawRequest, status: number, handle: RawHandle): void {
  const side = handle.side as Side | null;
  if (side === null || side.closing) return; // let go of: timed out, or the client left
  if (status < 0) connectError(side.conn, getSystemErrorName(status));
  else connected(side.conn);
}

function connectError(conn: Connection, code: string): void {
  if (conn.backend.socket !== null && TLS_FAILURE.test(code)) {
    conn.frontend.slot[TLS_BACKEND_FAILED]++;
  }
  if (isLocalError(code)) {
    // Out of descriptors or local ports: our trouble, not the backend's. No failure is
    // counted against it, and no retry (another backend would meet the same shortage).
    conn.frontend.connecting.remove(conn);
    detachBackend(conn);
    closeClient(conn, END.LOCAL_ERROR);
    return;
  }
  failConnect(conn, false);
}

function connected(conn: Connection): void {
  const frontend = conn.frontend;
  conn.phase = ESTABLISHED;
  frontend.connecting.remove(conn);
  frontend.established.add(conn);
  conn.lastActive = now;
  frontend.poolSlot[backendOffset(conn.backendIndex) + B_CONNECTIONS]++;
  conn.connectedAt = performance.now();
  frontend.scheduler.observe(conn.backendIndex, conn.connectedAt - conn.connectStartedAt);
  frontend.latency[CONNECT][conn.backendIndex].record(
    (conn.connectedAt - conn.connectStartedAt) * 1000,
  );
  const backend = conn.backend;
  backend.handle?.useUserBuffer(IDLE);
  const target = frontend.backends[conn.backendIndex] as BackendConfig;
  const version = target.sendProxy >= 0 ? target.sendProxy : frontend.config.sendProxy;
  let status = WRITE_DONE;
  if (version !== 0) status = write(backend, proxyHeader(conn, version));
  if (conn.pending !== null && status >= 0) {
    // Client bytes read before: what came with its PROXY header, or its ClientHello.
    conn.bytesIn += conn.pending.length;
    frontend.poolSlot[backendOffset(conn.backendIndex) + B_BYTES_IN] += conn.pending.length;
    status = write(backend, conn.pending);
    conn.pending = null;
  }
  if (status < 0) {
    gotError(backend, getSystemErrorName(status));
    return;
  }
  resume(backend);
  if (conn.client.readEnded) forwardEnd(backend);
  else resume(conn.client);
}

/** The PROXY header for this connection's client: as its own PROXY header said, or as seen. */
function proxyHeader(conn: Connection, version: number): Buffer {
  let addresses = conn.proxied;
  if (addresses === null) {
    const peer = clientEndpoint(conn);
    const local = clientEndpoint(conn, true);
    addresses = {
      sourceAddress: peer.address || '0.0.0.0',
      sourcePort: peer.port,
      destinationAddress: local.address || '0.0.0.0',
      destinationPort: local.port,
    };
  }
  if (version === 1) return buildV1(addresses);
  return buildV2(addresses, conn.tls === null ? null : tlsTlvs(conn.tls));
}

/** The connect attempt failed (refused, unreachable, timed out): retry elsewhere or give up. */
export function failConnect(conn: Connection, timedOut: boolean): void {
  const frontend = conn.frontend;
  frontend.poolSlot[backendOffset(conn.backendIndex) + B_FAILURES]++;
  frontend.connecting.remove(conn);
  conn.avoid |= avoidBit(conn.backendIndex);
  detachBackend(conn);
  if (conn.client.closing) return; // its close finishes the connection
  if (conn.attempts <= frontend.config.retries) connectBackend(conn);
  else closeClient(conn, timedOut ? END.TIMEOUT : END.CONNECT_FAILED);
}

/** Lets go of the backend socket (not yet connected) and its slot; its late events are ignored. */
function detachBackend(conn: Connection): void {
  const side = conn.backend;
  const handle = side.handle;
  if (handle !== null) {
    handle.side = null;
    handle.close();
    side.handle = null;
  }
  const socket = side.socket;
  if (socket !== null) {
    socket.side = null;
    socket.destroy();
    side.socket = null;
  }
  if (conn.acquired) {
    release(conn.frontend.table, conn.backendIndex);
    conn.acquired = false;
  }
}

// ---------------------------------------------------------------------------------------------
// Ends of directions, errors, closes.

/** `side` sent its FIN. */
function gotEnd(side: Side): void {
  if (side.closing) return;
  side.readEnded = true;
  side.reading = false;
  const conn = side.conn;
  if (conn.end < 0) conn.end = side.isClient ? END.CLIENT_CLOSED : END.BACKEND_CLOSED;
  if (conn.phase === ESTABLISHED) {
    forwardEnd(side.peer);
    if (side.shutDone) close(side);
  } else if (conn.phase === PROXY_HEADER || conn.phase === INSPECT || conn.phase === HANDSHAKE) {
    close(side); // gone before saying where it goes
  }
  // Connecting or queued: the FIN goes to the backend once it is connected (connected()).
}

/**
 * Forwards a FIN to `peer`. When `peer` has sent its own FIN already and nothing is queued for
 * it, both directions are done: closing it sends the same FIN, and saves a shutdown() (with its
 * FIN processing, inline on loopback) per connection. Otherwise a shutdown: the half-close.
 */
function forwardEnd(peer: Side): void {
  if (peer.closing || peer.shutSent) return;
  if (peer.readEnded && peer.pendingWrites === 0) close(peer);
  else shutdown(peer);
}

function shutdown(side: Side): void {
  side.shutSent = true;
  const handle = side.handle;
  if (handle !== null) {
    const req = (raw as NonNullable<typeof raw>).newShutdown();
    req.oncomplete = onRawShutdown;
    if (handle.shutdown(req) !== 0) close(side);
  } else {
    side.socket?.end();
  }
}

function onRawShutdown(this: RawRequest, status: number, handle: RawHandle): void {
  const side = handle.side as Side | null;
  if (side !== null) shutDone(side, status < 0);
}

/** Our FIN to `side` is out (after everything queued before it). */
function shutDone(side: Side, failed: boolean): void {
  if (side.closing) return;
  side.shutDone = true;
  if (failed || side.readEnded || side.peer.closing) close(side);
}

/** `side` failed (a read or a write): a reset is passed on as a reset; it closes either way. */
function gotError(side: Side, code: string): void {
  if (side.closing) return;
  const conn = side.conn;
  if (code === 'ECONNRESET' || code === 'EPIPE') {
    if (conn.end < 0) conn.end = side.isClient ? END.CLIENT_RESET : END.BACKEND_RESET;
    if (conn.phase === ESTABLISHED) reset(side.peer);
  }
  close(side);
}

function close(side: Side): void {
  if (side.closing) return;
  side.closing = true;
  side.reading = false;
  if (side.handle !== null) side.handle.close(onRawClosed);
  else side.socket?.destroy();
}

/**
 * Resets `side` (an RST, so its peer sees the cut) where a reset is possible, and closes it
 * where it is not: libuv refuses a reset while a shutdown is pending (our FIN waiting behind
 * queued bytes), and Node then marks the handle closing without closing it, so its close
 * callback would never come. A backend not yet connected is closed.
 */
function reset(side: Side): void {
  if (side.closing) return;
  const connecting = !side.isClient && side.conn.phase !== ESTABLISHED;
  if (connecting || (side.shutSent && !side.shutDone)) {
    close(side);
    return;
  }
  side.closing = true;
  side.reading = false;
  const handle = side.handle;
  if (handle !== null) {
    // Refused anyway (not expected after the checks above): Node will not close the handle
    // now; the side is counted closed so that the connection still finishes.
    if (handle.reset(onRawClosed) !== 0) closed(side);
  } else if (side.isClient && side.conn.tls !== null) {
    // A TLSSocket cannot reset: its TCP socket does, and the TLSSocket closes with it.
    side.conn.tls.plain.resetAndDestroy();
  } else {
    side.socket?.resetAndDestroy();
  }
}

function onRawClosed(this: RawHandle): void {
  const side = this.side as Side | null;
  this.side = null;
  if (side !== null) closed(side);
}

/** `side` has closed. If the other is still open it follows: the client gone means nothing more
 *  can be delivered to it; the backend gone means the client gets what is queued, then a FIN. */
function closed(side: Side): void {
  if (side.closed) return;
  side.closed = true;
  side.closing = true;
  side.reading = false;
  const conn = side.conn;
  const peer = side.peer;
  if (side.isClient) {
    if (conn.phase !== ESTABLISHED) {
      detachBackend(conn);
    } else if (!peer.closing) {
      if (conn.end < 0) conn.end = END.CLIENT_CLOSED;
      close(peer);
    }
    if (peer.closed || (peer.handle === null && peer.socket === null)) finish(conn);
    return;
  }
  if (!peer.closing) {
    if (conn.end < 0) conn.end = END.BACKEND_CLOSED;
    if (peer.shutDone) close(peer);
    else if (!peer.shutSent) shutdown(peer);
  }
  if (peer.closed) finish(conn);
}

// ---------------------------------------------------------------------------------------------
// The public path's socket events, onto the same functions.

function onSocketData(this: PublicSocket, chunk: Buffer): void {
  if (this.side !== null) received(this.side, chunk, chunk.length);
}

function onSocketEnd(this: PublicSocket): void {
  if (this.side !== null) gotEnd(this.side);
}

function onSocketError(this: PublicSocket, err: NodeJS.ErrnoException): void {
  const side = this.side;
  if (side === null) return;
  if (!side.isClient && side.conn.phase === CONNECTING) connectError(side.conn, err.code ?? '');
  else gotError(side, err.code ?? '');
}

function onSocketClose(this: PublicSocket): void {
  const side = this.side;
  if (side === null) return;
  // Closed before connecting without an error event: a failed connect.
  if (!side.isClient && side.conn.phase === CONNECTING) failConnect(side.conn, false);
  else closed(side);
}

function onSocketDrain(this: PublicSocket): void {
  const side = this.side;
  if (side === null) return;
  side.pendingWrites = 0;
  drained(side);
}

function onSocketFinish(this: PublicSocket): void {
  if (this.side !== null) shutDone(this.side, false);
}

function onSocketConnect(this: PublicSocket): void {
  if (this.side !== null) connected(this.side.conn);
}

// ---------------------------------------------------------------------------------------------
// Ending.

/** Closes the client for `reason` before any byte flowed (limit, no backend, connect failed). */
export function closeClient(conn: Connection, reason: number): void {
  if (conn.end < 0) conn.end = reason;
  if (conn.phase !== ESTABLISHED) detachBackend(conn);
  close(conn.client);
}

/**
 * Cuts the connection now (idle timeout, drain deadline) with a reset on both sides, so neither
 * peer mistakes the cut for a finished transfer (a FIN after a cut download looks complete). An
 * idle timeout with no byte in flight either way closes politely instead: nothing was cut short.
 */
export function cut(conn: Connection, reason: number): void {
  const quiet = conn.client.pendingWrites === 0 && conn.backend.pendingWrites === 0;
  if (reason === END.TIMEOUT && quiet) {
    if (conn.end < 0) conn.end = reason;
    if (conn.phase === ESTABLISHED) close(conn.backend);
    else detachBackend(conn);
    close(conn.client);
  } else {
    kill(conn, reason);
  }
}

/** Resets both sides now (an operator's `del backend ... now`, a cut). */
export function kill(conn: Connection, reason: number = END.KILLED): void {
  if (conn.end < 0) conn.end = reason;
  if (conn.phase === ESTABLISHED) reset(conn.backend);
  else detachBackend(conn);
  reset(conn.client);
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
      ...(conn.tls === null ? null : tlsLog(conn.tls)),
    },
    'connection',
  );
}

/** What the access log says of a terminated TLS connection. */
function tlsLog(session: TlsSession): Record<string, unknown> {
  return {
    tls: {
      version: session.version || null,
      alpn: session.alpn || null,
      resumed: session.resumed,
      clientCert: session.commonName || null,
      clientVerified:
        (session.client & (PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS)) !== 0 &&
        session.verify === 0,
    },
  };
}

function giveBuffers(side: Side): void {
  if (side.buffer !== null) giveLarge(side.buffer);
  if (side.inflight !== null) giveSmall(side.inflight);
  side.buffer = null;
  side.inflight = null;
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
  giveBuffers(conn.client);
  giveBuffers(conn.backend);
  if (conn.client.socket !== null) conn.client.socket.side = null;
  if (conn.backend.socket !== null) conn.backend.socket.side = null;
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
