// Admission: what happens to a client between accept() and its first backend pick. The global
// connection limit, allow/deny and per-source limits, the PROXY header of an accept-proxy
// listener, and the client's hash for Maglev. Invariant: per accepted client, one limit check, one
// Connection, one client socket and one pick; nothing is logged, and a client refused here has
// given back everything it took (global live count, per-source count) before its socket closes.

import type net from 'node:net';
import { fnv1a } from '../core/hash.ts';
import { ACCEPTED, END, END_BASE, LIVE } from '../shared/counters.ts';
import { now } from './clock.ts';
import {
  attachClient,
  CLIENT_ONREAD,
  ClientSocket,
  CONNECTING,
  Connection,
  closeClient,
  connectBackend,
  onClientData,
  PEER_HIGH_WATER_MARK,
  PROXY_HEADER,
  prepareClientRead,
} from './connection.ts';
import type { Frontend } from './frontend.ts';
import type { Guard } from './guard.ts';
import { REFUSED, UNTRACKED } from './guard.ts';
import type { TcpHandle } from './internals.ts';
import { adoptHandle } from './internals.ts';
import type { ProxyAddresses } from './proxy-protocol.ts';

/** Counts a new client against the global limit; false if it must be refused. */
function admit(frontend: Frontend): boolean {
  frontend.slot[ACCEPTED]++;
  const live = Atomics.add(frontend.limits.live, 0, 1);
  if (frontend.limits.maxConnections > 0 && live >= frontend.limits.maxConnections) {
    Atomics.sub(frontend.limits.live, 0, 1);
    frontend.slot[END_BASE + END.REFUSED_LIMIT]++;
    return false;
  }
  frontend.slot[LIVE]++;
  return true;
}

export function acceptHandle(
  frontend: Frontend,
  status: number,
  handle: TcpHandle,
  acceptProxy: boolean,
): void {
  if (status < 0) return; // accept() failed (EMFILE...): nothing was accepted.
  let source = UNTRACKED;
  // Behind a PROXY header the peer is the upstream balancer: check the client once it is known.
  if (frontend.guard !== null && (!acceptProxy || frontend.guard.checksProxyPeers)) {
    const peer: { address?: string; family?: string } = {};
    handle.getpeername(peer);
    source = check(frontend.guard, peer.address ?? '', peer.family ?? 'IPv4', acceptProxy);
    if (source === REFUSED) {
      refuse(frontend, frontend.guard.reason);
      handle.close();
      return;
    }
  }
  if (!admit(frontend)) {
    frontend.releaseSource(source);
    handle.close();
    return;
  }
  const conn = new Connection(frontend);
  conn.source = source;
  prepareClientRead(conn);
  const client = adoptHandle(ClientSocket, handle, CLIENT_ONREAD, PEER_HIGH_WATER_MARK);
  client.setNoDelay(true);
  start(frontend, conn, client, acceptProxy);
}

export function acceptSocket(frontend: Frontend, socket: net.Socket, acceptProxy: boolean): void {
  let source = UNTRACKED;
  if (frontend.guard !== null && (!acceptProxy || frontend.guard.checksProxyPeers)) {
    const address = socket.remoteAddress ?? '';
    source = check(frontend.guard, address, socket.remoteFamily ?? 'IPv4', acceptProxy);
    if (source === REFUSED) {
      refuse(frontend, frontend.guard.reason);
      socket.destroy();
      return;
    }
  }
  if (!admit(frontend)) {
    frontend.releaseSource(source);
    socket.destroy();
    return;
  }
  const client = socket as ClientSocket;
  client.conn = null;
  client.on('data', onClientData);
  const conn = new Connection(frontend);
  conn.source = source;
  start(frontend, conn, client, acceptProxy);
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

function start(
  frontend: Frontend,
  conn: Connection,
  client: ClientSocket,
  acceptProxy: boolean,
): void {
  conn.client = client;
  client.conn = conn;
  attachClient(client);
  if (acceptProxy) {
    // Read the PROXY header first (onClientRead sees the PROXY_HEADER phase); no backend yet.
    conn.phase = PROXY_HEADER;
    conn.deadline = now + frontend.config.proxyTimeoutMs;
    frontend.connecting.add(conn);
    client.resume();
    return;
  }
  // The peer's address costs a getpeername() and a string: read it only for Maglev or the log.
  if (frontend.hashes || frontend.accessLog !== null) {
    pickFor(frontend, conn, client.remoteAddress ?? '', client.remotePort ?? 0);
  } else {
    connectBackend(conn);
  }
}

/**
 * The client is known (its own address, or the one its PROXY header gave): hash it for Maglev,
 * keep it for the access log, and pick a backend.
 */
function pickFor(frontend: Frontend, conn: Connection, address: string, port: number): void {
  if (frontend.hashes) conn.key = frontend.hashPort ? fnv1a(`${address}:${port}`) : fnv1a(address);
  // The peer's address is gone once the socket closes: take it now, only if it will be logged.
  if (frontend.accessLog !== null) conn.clientAddress = `${address}:${port}`;
  connectBackend(conn);
}

/** A PROXY header arrived on an accept-proxy listener: admit the client it names, or not. */
export function admitProxied(
  frontend: Frontend,
  conn: Connection,
  addresses: ProxyAddresses | null,
): void {
  frontend.connecting.remove(conn);
  conn.phase = CONNECTING;
  conn.proxied = addresses;
  const client = conn.client;
  const address = addresses?.sourceAddress ?? client.remoteAddress ?? '';
  const port = addresses?.sourcePort ?? client.remotePort ?? 0;
  if (frontend.guard !== null) {
    const source = frontend.guard.admit(address, address.includes(':') ? 'IPv6' : 'IPv4');
    if (source === REFUSED) {
      closeClient(conn, frontend.guard.reason);
      return;
    }
    conn.source = source;
  }
  pickFor(frontend, conn, address, port);
}
