// The one place fulcrum reaches into Node internals, for two things the public API cannot do:
// 1. Accept: Node hands `net.Server` connections over as sockets it built itself, and those
//    ignore `onread`, so each read would allocate a fresh buffer. Replacing the listening handle's
//    `onconnection` lets us build the client socket ourselves, with `onread` and a reused buffer,
//    and saves a socket object per accept.
// 2. Re-pointing a socket's read buffer between reads (the call Node makes when it sets a socket
//    up), so a connection that went quiet gives its large buffer back without waiting for a read.
// If a Node release changes these, the functions return false and the callers fall back to the
// public API (slower, or more memory); test/data/internals.test.ts fails loudly on such a release.

import type net from 'node:net';

/** libuv's TCP handle as Node's TCP wrap exposes it; opaque to us but for these members. */
export interface TcpHandle {
  close(): void;
  setNoDelay(enable: boolean): number;
  /** Fills `out` with the peer's address, family and port; 0 on success. */
  getpeername(out: { address?: string; family?: string; port?: number }): number;
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

/** The socket's own copy of its `onread` buffer, which Node passes to the read callback. */
let kBuffer: symbol | null | undefined;

/**
 * Makes `socket` read into `buffer` from its next read on. Call it only between reads, and only
 * when no pending write uses the old buffer. False (nothing changed) if unsupported.
 */
export function repointReadBuffer(socket: net.Socket, buffer: Buffer): boolean {
  const handle = (socket as unknown as { _handle?: { useUserBuffer?: (b: Buffer) => void } })
    ._handle;
  if (handle == null || typeof handle.useUserBuffer !== 'function') return false;
  if (kBuffer === undefined) {
    kBuffer = Object.getOwnPropertySymbols(socket).find((s) => s.description === 'kBuffer') ?? null;
  }
  if (kBuffer === null) return false;
  handle.useUserBuffer(buffer);
  (socket as unknown as Record<symbol, unknown>)[kBuffer] = buffer;
  return true;
}
