// UDP frontends in one worker: the datagram sockets they listen on and the sessions behind them.
// A session is one client address:port on one listening socket, pinned to one backend: its
// first datagram picks the backend (the frontend's scheduler, its pool's table, a place taken
// with take() like a TCP connection's), and the session gets a socket of its own connected to
// that backend, so the backend's replies come back on it and go out to the client from the
// address it sent to. Sessions end at the idle timeout (the worker's coarse clock sweeps them:
// no timer per session), when every datagram has had its --udp-responses replies, when the
// backend refuses (ICMP port unreachable) or is gone, and when their listener closes.
// Invariants: a datagram's path (find the session, count, send) allocates nothing and logs
// nothing: sessions are found through a Map by address, then by port; the buffer list and the
// send request are reused (a request is replaced only when libuv queued the send); a session
// gives its place back exactly once (end()).

import dgram from 'node:dgram';
import os from 'node:os';
import { fnv1a, mix } from '../core/hash.ts';
import { release, take } from '../core/table.ts';
import {
  ACCEPTED,
  B_BYTES_IN,
  B_BYTES_OUT,
  B_CONNECTIONS,
  B_DGRAMS_IN,
  B_DGRAMS_OUT,
  B_FAILURES,
  BYTES_IN,
  BYTES_OUT,
  backendOffset,
  DGRAMS_IN,
  DGRAMS_OUT,
  DROP,
  DROP_BASE,
  END,
  END_BASE,
  END_NAMES,
  LIVE,
} from '../shared/counters.ts';
import { AGENT_DOWN, ENABLED, UP } from '../shared/table.ts';
import { DURATION } from '../stats/latency.ts';
import { now, TICK_MS } from './clock.ts';
import type { Frontend } from './frontend.ts';
import { REFUSED } from './guard.ts';
import type { RawUdp } from './internals.ts';
import { rawUdp, udpHandleOf } from './internals.ts';
import type { Linked } from './queue.ts';
import { LinkedList } from './queue.ts';

/** What a send on a connected socket returns after an ICMP port unreachable (libuv's code). */
const UV_ECONNREFUSED = -os.constants.errno.ECONNREFUSED;

/** Picks a session may try when another worker takes the picked backend's last place meanwhile. */
const TAKE_TRIES = 3;

/** Kernel receive buffer asked for each listening socket: a burst of datagrams waits there while
 *  the worker is busy (the kernel caps it at net.core.rmem_max). */
const RECEIVE_BUFFER = 4 * 1024 * 1024;

/** One listening UDP socket of a worker and the sessions of the clients that sent to it. */
export class UdpListener {
  readonly socket: dgram.Socket;
  readonly handle: RawUdp;
  readonly ipv6: boolean;
  /** The frontend its datagrams go to; a reload may give it another (its sessions stay). */
  frontend: Frontend;
  /** Sessions by client address, then port. */
  readonly byAddress = new Map<string, Map<number, Session>>();
  /** Closed: a session that still points here (one past --udp-requests, no longer in the table)
   *  ends at its backend's next reply. */
  closed = false;

  constructor(socket: dgram.Socket, handle: RawUdp, ipv6: boolean, frontend: Frontend) {
    this.socket = socket;
    this.handle = handle;
    this.ipv6 = ipv6;
    this.frontend = frontend;
    handle.owner = this;
    handle.onmessage = onClientMessage;
  }

  /** Closes the socket; its sessions end (no reply could reach their clients any more). */
  close(reason: number = END.DRAIN_CUT): void {
    this.closed = true;
    for (const ports of this.byAddress.values()) {
      for (const session of ports.values()) session.sessions.end(session, reason);
    }
    this.frontend.udp?.endOn(this, reason);
    this.handle.onmessage = null;
    this.socket.close();
  }
}

/** Binds a UDP socket every worker binds too (SO_REUSEPORT: the kernel hashes each client to one
 *  of them), or takes a bound descriptor handed over by an upgrade. */
export async function openUdp(
  host: string,
  port: number,
  fd: number | null,
  frontend: Frontend,
): Promise<UdpListener> {
  if (rawUdp === null) {
    throw Object.assign(new Error("this Node has no usable udp_wrap binding: UDP needs Node's"), {
      code: 'ENOTSUP',
    });
  }
  const ipv6 = host.includes(':');
  const socket = dgram.createSocket({ type: ipv6 ? 'udp6' : 'udp4', reusePort: fd === null });
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    const listening = () => {
      socket.off('error', reject);
      resolve();
    };
    if (fd === null) socket.bind({ address: host, port, exclusive: true }, listening);
    else socket.bind({ fd, exclusive: true }, listening);
  });
  try {
    socket.setRecvBufferSize(RECEIVE_BUFFER);
  } catch {
    // Kept at the system's default: not worth refusing to listen over.
  }
  const handle = udpHandleOf(socket);
  if (handle === null) {
    socket.close();
    throw Object.assign(new Error('no UDP handle under the dgram socket'), { code: 'ENOTSUP' });
  }
  // Errors of a listening socket (a reply the kernel could not send) are not the client's end.
  socket.on('error', () => {});
  return new UdpListener(socket, handle, ipv6, frontend);
}

/** One client address:port pinned to one backend, with a socket connected to it. */
export class Session implements Linked<Session> {
  prev: Session | null = null;
  next: Session | null = null;
  list: object | null = null;
  readonly sessions: UdpSessions;
  readonly listener: UdpListener;
  readonly address: string;
  readonly port: number;
  /** Its socket to the backend; null once ended. */
  handle: RawUdp | null = null;
  backendIndex = -1;
  /** The member it was pinned to: a slot given to another backend is not this one's. */
  memberId = 0;
  /** In its listener's table: a session past --udp-requests leaves it (the next datagram starts
   *  another) and lives on only for the replies still due. */
  attached = true;
  lastActive = 0;
  readonly startedAt = performance.now();
  /** Datagrams from the client, and replies still expected (--udp-responses). */
  requests = 0;
  pending = 0;
  bytesIn = 0;
  bytesOut = 0;
  datagramsOut = 0;

  constructor(sessions: UdpSessions, listener: UdpListener, address: string, port: number) {
    this.sessions = sessions;
    this.listener = listener;
    this.address = address;
    this.port = port;
  }
}

/** Reused by every send of this thread: the one-buffer list, and the request object (libuv
 *  keeps one only when it queues the datagram; then a new one is made). */
const one: Uint8Array[] = [new Uint8Array(0)];
const EMPTY = one[0];
let sendReq: { buffer?: Uint8Array } = rawUdp?.newSend() ?? {};

/** After a send that returned `rc`: keeps the buffer alive while libuv holds it. */
function sent(rc: number, buffer: Uint8Array): void {
  one[0] = EMPTY;
  if (rc === 0) {
    sendReq.buffer = buffer;
    sendReq = rawUdp?.newSend() ?? {};
  }
}

/** The client's datagram: `this` is the listening socket's handle. */
function onClientMessage(
  this: RawUdp,
  nread: number,
  _handle: RawUdp,
  buffer: Buffer | undefined,
  rinfo: { address: string; port: number } | undefined,
): void {
  if (nread < 0 || buffer === undefined || rinfo === undefined) return;
  const listener = this.owner as UdpListener;
  const udp = listener.frontend.udp;
  if (udp !== null) udp.fromClient(listener, buffer, nread, rinfo.address, rinfo.port);
}

/** The backend's reply (or its socket's error): `this` is the session's handle. */
function onBackendMessage(
  this: RawUdp,
  nread: number,
  _handle: RawUdp,
  buffer: Buffer | undefined,
): void {
  const session = this.owner as Session | null;
  if (session === null || session.handle === null) return;
  session.sessions.fromBackend(session, nread, buffer);
}

/** The sessions of one frontend in this worker. */
export class UdpSessions {
  readonly frontend: Frontend;
  /** Every live session (the idle sweep walks it). */
  readonly live = new LinkedList<Session>();
  /** The frontend's sessions over every worker (Atomics), for --udp-max-sessions. */
  private readonly count: Int32Array;

  constructor(frontend: Frontend, count: SharedArrayBuffer) {
    this.frontend = frontend;
    this.count = new Int32Array(count);
  }

  fromClient(
    listener: UdpListener,
    buffer: Uint8Array,
    size: number,
    address: string,
    port: number,
  ): void {
    const frontend = this.frontend;
    if (size > frontend.config.udp.maxDatagram) {
      frontend.slot[DROP_BASE + DROP.TOO_LARGE]++;
      return;
    }
    let session = listener.byAddress.get(address)?.get(port) ?? null;
    if (session !== null && !session.sessions.usable(session)) {
      session.sessions.end(session, END.BACKEND_GONE);
      session = null;
    }
    if (session === null) {
      session = this.start(listener, address, port);
      if (session === null) return;
    }
    session.sessions.forward(session, buffer, size);
  }

  /** Whether its backend may still carry the session: up, enabled, its agent not down, and
   *  still the member it was pinned to (draining is fine: it runs to its idle timeout). */
  usable(session: Session): boolean {
    const frontend = this.frontend;
    const i = session.backendIndex;
    const state = frontend.table.state[i];
    return (
      (state & (UP | ENABLED | AGENT_DOWN)) === (UP | ENABLED) &&
      frontend.memberIds[i] === session.memberId &&
      frontend.leaving[i] === 0
    );
  }

  /** Sends a client datagram to the session's backend. */
  forward(session: Session, buffer: Uint8Array, size: number): void {
    const frontend = this.frontend;
    const handle = session.handle as RawUdp;
    one[0] = size === buffer.length ? buffer : buffer.subarray(0, size);
    const rc = handle.send(sendReq, one, 1, false);
    sent(rc, buffer);
    if (rc < 0) {
      if (rc !== UV_ECONNREFUSED) {
        // fulcrum's own trouble (no buffer space): the datagram is lost, the backend not judged.
        frontend.slot[DROP_BASE + DROP.SEND_FAILED]++;
        return;
      }
      // A refusal the kernel kept for this socket (an ICMP port unreachable after an earlier
      // datagram): the backend is not there. Counted against it; the next datagram re-pins.
      frontend.slot[DROP_BASE + DROP.BACKEND_REFUSED]++;
      frontend.poolSlot[backendOffset(session.backendIndex) + B_FAILURES]++;
      this.end(session, END.BACKEND_REFUSED);
      return;
    }
    session.lastActive = now;
    session.requests++;
    session.bytesIn += size;
    const slot = frontend.slot;
    slot[DGRAMS_IN]++;
    slot[BYTES_IN] += size;
    const offset = backendOffset(session.backendIndex);
    frontend.poolSlot[offset + B_DGRAMS_IN]++;
    frontend.poolSlot[offset + B_BYTES_IN] += size;
    const udp = frontend.config.udp;
    session.pending += udp.responses;
    if (udp.requests > 0 && session.requests >= udp.requests) this.detach(session);
  }

  /** A datagram (or an error) on the session's socket. */
  fromBackend(session: Session, nread: number, buffer: Uint8Array | undefined): void {
    const frontend = this.frontend;
    if (nread < 0 || buffer === undefined) {
      // ECONNREFUSED: the backend's host said no one listens there. Any other error ends the
      // session the same way; the client's next datagram picks again.
      frontend.slot[DROP_BASE + DROP.BACKEND_REFUSED]++;
      frontend.poolSlot[backendOffset(session.backendIndex) + B_FAILURES]++;
      this.end(session, END.BACKEND_REFUSED);
      return;
    }
    const listener = session.listener;
    if (listener.closed) {
      this.end(session, END.DRAIN_CUT);
      return;
    }
    one[0] = buffer;
    const rc = listener.ipv6
      ? listener.handle.send6(sendReq, one, 1, session.port, session.address, false)
      : listener.handle.send(sendReq, one, 1, session.port, session.address, false);
    sent(rc, buffer);
    session.lastActive = now;
    if (rc < 0) {
      frontend.slot[DROP_BASE + DROP.SEND_FAILED]++;
      return;
    }
    session.bytesOut += nread;
    session.datagramsOut++;
    const slot = frontend.slot;
    slot[DGRAMS_OUT]++;
    slot[BYTES_OUT] += nread;
    const offset = backendOffset(session.backendIndex);
    frontend.poolSlot[offset + B_DGRAMS_OUT]++;
    frontend.poolSlot[offset + B_BYTES_OUT] += nread;
    if (frontend.config.udp.responses > 0 && --session.pending <= 0) {
      this.end(session, END.RESPONDED);
    }
  }

  /** A new client address:port: admits it, picks a backend and connects a socket to it; null
   *  when the datagram is dropped (counted by reason). */
  private start(listener: UdpListener, address: string, port: number): Session | null {
    const frontend = this.frontend;
    const slot = frontend.slot;
    if (
      frontend.guard !== null &&
      frontend.guard.admit(address, listener.ipv6 ? 'IPv6' : 'IPv4') === REFUSED
    ) {
      slot[DROP_BASE + DROP.DENIED]++;
      return null;
    }
    const limits = frontend.limits;
    const max = frontend.config.udp.maxSessions;
    const overProcess =
      Atomics.add(limits.live, 0, 1) >= limits.maxConnections && limits.maxConnections > 0;
    const overFrontend = Atomics.add(this.count, 0, 1) >= max && max > 0;
    if (overProcess || overFrontend) {
      Atomics.sub(limits.live, 0, 1);
      Atomics.sub(this.count, 0, 1);
      slot[DROP_BASE + DROP.SESSION_LIMIT]++;
      return null;
    }
    let key = 0;
    if (frontend.hashes) {
      key = fnv1a(address);
      if (frontend.hashPort) key = mix(key ^ port) >>> 0;
    }
    let i = -1;
    for (let tries = 0; tries < TAKE_TRIES; tries++) {
      i = frontend.scheduler.pick(0, key);
      if (i < 0 || take(frontend.table, i)) break;
      i = -1;
    }
    const handle = i < 0 || rawUdp === null ? null : rawUdp.newUdp();
    const backend = i < 0 ? null : frontend.backends[i];
    if (handle === null || backend === null) {
      this.unlimit();
      if (i >= 0) release(frontend.table, i);
      slot[DROP_BASE + DROP.NO_BACKEND]++;
      return null;
    }
    const rc = backend.host.includes(':')
      ? handle.connect6(backend.host, backend.port)
      : handle.connect(backend.host, backend.port);
    if (rc < 0) {
      handle.close();
      this.unlimit();
      release(frontend.table, i);
      slot[DROP_BASE + DROP.NO_BACKEND]++;
      return null;
    }
    const session = new Session(this, listener, address, port);
    session.handle = handle;
    session.backendIndex = i;
    session.memberId = frontend.memberIds[i];
    session.lastActive = now;
    handle.owner = session;
    handle.onmessage = onBackendMessage;
    handle.recvStart();
    let ports = listener.byAddress.get(address);
    if (ports === undefined) {
      ports = new Map();
      listener.byAddress.set(address, ports);
    }
    ports.set(port, session);
    this.live.add(session);
    frontend.open++;
    slot[ACCEPTED]++;
    slot[LIVE]++;
    frontend.poolSlot[backendOffset(i) + B_CONNECTIONS]++;
    return session;
  }

  /** Gives back the session's place in the process's and the frontend's counts. */
  private unlimit(): void {
    Atomics.sub(this.frontend.limits.live, 0, 1);
    Atomics.sub(this.count, 0, 1);
  }

  /** Takes a session out of its listener's table: the client's next datagram starts another. */
  private detach(session: Session): void {
    if (!session.attached) return;
    session.attached = false;
    const ports = session.listener.byAddress.get(session.address);
    if (ports === undefined || ports.get(session.port) !== session) return;
    ports.delete(session.port);
    if (ports.size === 0) session.listener.byAddress.delete(session.address);
  }

  /** Ends a session, once: its socket closes, its place and counts are given back. */
  end(session: Session, reason: number): void {
    const handle = session.handle;
    if (handle === null) return;
    session.handle = null;
    this.detach(session);
    this.live.remove(session);
    handle.owner = null;
    handle.onmessage = null;
    handle.close();
    const frontend = this.frontend;
    const i = session.backendIndex;
    release(frontend.table, i);
    this.unlimit();
    const endedAt = performance.now();
    frontend.latency[DURATION][i]?.record((endedAt - session.startedAt) * 1000);
    const slot = frontend.slot;
    slot[LIVE]--;
    slot[END_BASE + reason]++;
    frontend.open--;
    if (frontend.accessLog !== null) {
      frontend.accessLog.info(
        {
          client: `${session.address}:${session.port}`,
          frontend: frontend.config.name,
          protocol: 'udp',
          backend: frontend.backends[i]?.name ?? null,
          datagramsIn: session.requests,
          datagramsOut: session.datagramsOut,
          bytesIn: session.bytesIn,
          bytesOut: session.bytesOut,
          durationMs: Math.round((endedAt - session.startedAt) * 1000) / 1000,
          end: END_NAMES[reason],
        },
        'session',
      );
    }
    frontend.onIdle();
  }

  /** Sessions quiet for the idle timeout end (lastActive is up to a tick behind). */
  sweep(): void {
    const limit = this.frontend.config.udp.idleTimeoutMs + TICK_MS;
    let session = this.live.head;
    while (session !== null) {
      const next = session.next;
      if (now - session.lastActive >= limit) this.end(session, END.TIMEOUT);
      session = next;
    }
  }

  /** Ends every session on backend slot `i`; returns how many. */
  killBackend(i: number): number {
    let killed = 0;
    let session = this.live.head;
    while (session !== null) {
      const next = session.next;
      if (session.backendIndex === i) {
        this.end(session, END.KILLED);
        killed++;
      }
      session = next;
    }
    return killed;
  }

  /** Ends every session of `listener` (it closes). */
  endOn(listener: UdpListener, reason: number): void {
    let session = this.live.head;
    while (session !== null) {
      const next = session.next;
      if (session.listener === listener) this.end(session, reason);
      session = next;
    }
  }

  /** Ends every session (a drain past its deadline). */
  endAll(reason: number): void {
    let session = this.live.head;
    while (session !== null) {
      const next = session.next;
      this.end(session, reason);
      session = next;
    }
  }
}
