// The one place fulcrum reaches into Node internals. Node hands `net.Server` connections to us as
// sockets it built itself, and those ignore `onread`, so each read would allocate a fresh buffer.
// Replacing the listening handle's `onconnection` lets us build the client socket ourselves, with
// `onread` and a reused buffer, and saves a socket object per accept. If a Node release changes
// these internals, hookAccept returns false and the caller uses the public 'connection' event
// (test/data/accept.test.ts fails loudly on such a release, so nobody runs the slow path unknowingly).

import type net from 'node:net';

/** libuv's TCP handle as Node's TCP wrap exposes it; opaque to us but for these members. */
export interface TcpHandle {
  close(): void;
  setNoDelay(enable: boolean): number;
}

export type AcceptCallback = (status: number, handle: TcpHandle) => void;

interface ListeningHandle {
  onconnection: AcceptCallback;
}

/** Routes every accepted connection of a listening server to `accept`; false if unsupported. */
export function hookAccept(server: net.Server, accept: AcceptCallback): boolean {
  if (process.env.FULCRUM_NO_ACCEPT_HOOK === '1') return false;
  const handle = (server as unknown as { _handle?: Partial<ListeningHandle> })._handle;
  if (handle == null || typeof handle.onconnection !== 'function') return false;
  handle.onconnection = accept;
  return true;
}

/**
 * Builds a socket around an accepted handle, with `onread` honoured (Node's own accept path drops
 * it). `handle` and `pauseOnCreate` are constructor options Node uses internally and does not type.
 */
export function adoptHandle<S extends net.Socket>(
  SocketClass: new (options: net.SocketConstructorOpts) => S,
  handle: TcpHandle,
  onread: net.OnReadOpts,
  writableHighWaterMark: number,
): S {
  const options = {
    handle,
    pauseOnCreate: true,
    allowHalfOpen: true,
    readable: true,
    writable: true,
    onread,
    writableHighWaterMark,
  };
  return new SocketClass(options as unknown as net.SocketConstructorOpts);
}
