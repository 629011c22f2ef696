// Admission: what happens to a client between accept() and its first backend pick. The global
// connection limit, allow/deny and per-source limits, the PROXY header of an accept-proxy
// listener, the ClientHello where the route reads it, the frontend the route picks (by server
// name, by source network), and the client's hash for Maglev. Invariant: per accepted client,
// one limit check, one Connection, one client socket and one pick; nothing is logged, and a
// client refused here has given back everything it took (global live count, per-source count)
// before its socket closes.
// A client is counted as accepted once, by the frontend it lands in (on a route that reads the
// ClientHello: when it is handed over, or by the route's door if it ends before).

import type net from 'node:net';
import { fnv1a } from '../core/hash.ts';
import { ACCEPTED, END, END_BASE, LIVE } from '../shared/counters.ts';
import { deadline } from './clock.ts';
import {
  adoptClientHandle,
  adoptClientSocket,
  beginInspection,
  CONNECTING,
  Connection,
  clientEndpoint,
  closeClient,
  connectBackend,
  PROXY_HEADER,
  readClient,
  readClientHello,
} from './connection.ts';
import type { Frontend } from './frontend.ts';
import type { Guard } from './guard.ts';
import { REFUSED, UNTRACKED } from './guard.ts';
import type { RawHandle } from './internals.ts';
import type { ProxyAddresses } from './proxy-protocol.ts';
import type { Route } from './routes.ts';
import { Inspection } from './routes.ts';
import { startTls } from './tls.ts';

/** Counts a new client against the global limit; false if it must be refused. */
function admit(frontend: Frontend, route: Route<Frontend>): boolean {
  // Where the ClientHello is read, the frontend the client lands in counts it (see route()).
  if (!route.inspects) frontend.slot[ACCEPTED]++;
  const live = Atomics.add(frontend.limits.live, 0, 1);
  if (frontend.limits.maxConnections > 0 && live >= frontend.limits.maxConnections) {
    Atomics.sub(frontend.limits.live, 0, 1);
    if (route.inspects) frontend.slot[ACCEPTED]++;
    frontend.slot[END_BASE + END.REFUSED_LIMIT]++;
    return false;
  }
  frontend.slot[LIVE]++;
  frontend.open++;
  return true;
}

export function acceptHandle(route: Route<Frontend>, status: number, handle: RawHandle): void {
  if (status < 0) return; // accept() failed (EMFILE...): nothing was accepted.
  const frontend = route.door;
  let source = UNTRACKED;
  // Behind a PROXY header the peer is the upstream balancer: check the client once it is known.
  if (frontend.guard !== null && (!route.acceptProxy || frontend.guard.checksProxyPeers)) {
    const peer: { address?: string; family?: string } = {};
    handle.getpeername(peer);
    source = check(frontend.guard, peer.address ?? '', peer.family ?? 'IPv4', route.acceptProxy);
    if (source === REFUSED) {
      refuse(frontend, frontend.guard.reason);
      handle.close();
      return;
    }
  }
  if (!admit(frontend, route)) {
    frontend.releaseSource(source);
    handle.close();
    return;
  }
  const conn = new Connection(frontend);
  conn.source = source;
  adoptClientHandle(conn, handle);
  start(frontend, conn, route);
}

export function acceptSocket(route: Route<Frontend>, socket: net.Socket): void {
  const frontend = route.door;
  let source = UNTRACKED;
  if (frontend.guard !== null && (!route.acceptProxy || frontend.guard.checksProxyPeers)) {
    const address = socket.remoteAddress ?? '';
    source = check(frontend.guard, address, socket.remoteFamily ?? 'IPv4', route.acceptProxy);
    if (source === REFUSED) {
      refuse(frontend, frontend.guard.reason);
      socket.destroy();
      return;
    }
  }
  if (!admit(frontend, route)) {
    frontend.releaseSource(source);
    socket.destroy();
    return;
  }
  const conn = new Connection(frontend);
  conn.source = source;
  adoptClientSocket(conn, socket);
  start(frontend, conn, route);
}

/**
 * The guard's word on a new peer. On an accept-proxy listener the peer is an upstream balancer:
 * only whether it may send PROXY headers is checked now, the client once its header names it.
 */
function check(guard: Guard, address: string, family: string, acceptProxy: boolean): number {
  if (!acceptProxy) return guard.admit(address, family);
  if (guard.trustsProxy(address, family)) return UNTRACKED;
  guard.reason = END.UNTRUSTED_PROXY;
  return REFUSED;
}

/** Counts a client closed at the door, before it became a connection. */
function refuse(frontend: Frontend, reason: number): void {
  frontend.slot[ACCEPTED]++;
  frontend.slot[END_BASE + reason]++;
}

function start(frontend: Frontend, conn: Connection, route: Route<Frontend>): void {
  if (route.inspects) conn.inspection = new Inspection(route);
  // Behind a PROXY header the source is known only once the header has come.
  else if (route.bySource && route.acceptProxy) conn.sourceRoute = route;
  if (route.acceptProxy) {
    // Read the PROXY header first (onClientRead sees the PROXY_HEADER phase); no backend yet.
    conn.phase = PROXY_HEADER;
    conn.deadline = deadline(frontend.config.proxyTimeoutMs);
    frontend.connecting.add(conn);
    readClient(conn);
    return;
  }
  if (route.inspects) {
    beginInspection(conn);
    readClient(conn);
    return;
  }
  if (route.bySource) {
    const peer = clientEndpoint(conn);
    const target = handOver(frontend, conn, route.match(null, peer.address), true);
    if (target !== null) pickFor(target, conn, peer.address, peer.port);
    return;
  }
  if (frontend.tls !== null) {
    startTls(conn, frontend.tls);
    return;
  }
  // The peer's address costs a getpeername() and a string: read it only for Maglev or the log.
  if (frontend.hashes || frontend.accessLog !== null) {
    const peer = clientEndpoint(conn);
    pickFor(frontend, conn, peer.address, peer.port);
  } else {
    connectBackend(conn);
  }
}

/**
 * The client is known (its own address, or the one its PROXY header gave): hash it for Maglev,
 * keep it for the access log, and pick a backend; on a frontend that terminates TLS, once the
 * handshake is done (afterHandshake).
 */
function pickFor(frontend: Frontend, conn: Connection, address: string, port: number): void {
  if (frontend.tls !== null && conn.tls === null) {
    startTls(conn, frontend.tls);
    return;
  }
  if (frontend.hashes) {
    conn.key = frontend.hashSni
      ? fnv1a(conn.serverName)
      : frontend.hashPort
        ? fnv1a(`${address}:${port}`)
        : fnv1a(address);
  }
  // The peer's address is gone once the socket closes: take it now, only if it will be logged.
  if (frontend.accessLog !== null) conn.clientAddress = `${address}:${port}`;
  connectBackend(conn);
}

/**
 * A PROXY header arrived on an accept-proxy listener: admit the client it names, or not. Returns
 * whether to read on (the route reads the ClientHello next).
 */
export function admitProxied(
  frontend: Frontend,
  conn: Connection,
  addresses: ProxyAddresses | null,
): boolean {
  frontend.connecting.remove(conn);
  conn.phase = CONNECTING;
  conn.proxied = addresses;
  const peer = addresses === null ? clientEndpoint(conn) : null;
  const address = addresses?.sourceAddress ?? peer?.address ?? '';
  const port = addresses?.sourcePort ?? peer?.port ?? 0;
  if (frontend.guard !== null) {
    const source = frontend.guard.admit(address, address.includes(':') ? 'IPv6' : 'IPv4');
    if (source === REFUSED) {
      closeClient(conn, frontend.guard.reason);
      return false;
    }
    conn.source = source;
  }
  if (conn.inspection !== null) {
    beginInspection(conn);
    // Client bytes that came with the header are the hello's first.
    const rest = conn.pending;
    conn.pending = null;
    return rest === null || readClientHello(conn, rest);
  }
  const route = conn.sourceRoute;
  const target =
    route === null
      ? frontend
      : handOver(frontend, conn, route.match(null, address) as Frontend | null, true);
  if (target !== null) pickFor(target, conn, address, port);
  return false;
}

/**
 * Gives a client the door admitted to the frontend its route picked (`counted`: the door counted
 * it accepted, where the route reads no ClientHello), or closes it when none takes it (counted at
 * the door). Returns the frontend it is now in, or null.
 */
function handOver(
  door: Frontend,
  conn: Connection,
  target: Frontend | null,
  counted: boolean,
): Frontend | null {
  if (target === null) {
    closeClient(conn, END.NO_FRONTEND);
    return null;
  }
  conn.phase = CONNECTING;
  if (target !== door) {
    if (counted) door.slot[ACCEPTED]--;
    door.slot[LIVE]--;
    door.open--;
    target.slot[LIVE]++;
    target.open++;
    conn.frontend = target;
    door.onIdle();
  }
  if (!counted || target !== door) target.slot[ACCEPTED]++;
  return target;
}

/**
 * The ClientHello is read (`serverName`: what it asks for; null: nothing, or not TLS): hand the
 * client to the frontend the route picks for it, with the bytes read to go first, or close it
 * when none takes it.
 */
export function route(door: Frontend, conn: Connection, serverName: string | null): void {
  const inspection = conn.inspection as Inspection;
  const { route } = inspection;
  door.connecting.remove(conn);
  conn.pending = inspection.bytes();
  if (serverName !== null) conn.serverName = serverName;
  // The client's address is read where it may decide, or for Maglev or the log.
  const client = route.bySource ? clientOf(conn) : null;
  const picked = route.match(serverName, client?.address ?? null) as Frontend | null;
  // Still inspecting if none takes it: finish() counts it at the door.
  if (picked !== null) conn.inspection = null;
  const target = handOver(door, conn, picked, false);
  if (target === null) return;
  if (!target.hashes && target.accessLog === null && target.tls === null) {
    connectBackend(conn);
    return;
  }
  const { address, port } = client ?? clientOf(conn);
  pickFor(target, conn, address, port);
}

/** A terminating frontend's client has finished its handshake: on to a backend, as any client
 *  (Maglev may hash the server name it asked for). */
export function afterHandshake(frontend: Frontend, conn: Connection): void {
  if (!frontend.hashes && frontend.accessLog === null) {
    connectBackend(conn);
    return;
  }
  const { address, port } = clientOf(conn);
  pickFor(frontend, conn, address, port);
}

/** The client: as its PROXY header names it, else the peer. */
function clientOf(conn: Connection): { address: string; port: number } {
  const proxied = conn.proxied;
  if (proxied === null) return clientEndpoint(conn);
  return { address: proxied.sourceAddress, port: proxied.sourcePort };
}
