// The one place fulcrum reaches into Node internals. The relay runs on libuv's TCP handles as
// Node's own `tcp_wrap` and `stream_wrap` bindings expose them, without a net.Socket on either
// side: a net.Socket costs about 1.2 KB of heap and a pass through the stream machinery on every
// write, and a balancer holds two per connection. What is used:
// - accept: the listening handle's `onconnection`, replaced so each accepted handle comes to us
//   instead of becoming a net.Socket;
// - connect: `new TCP(SOCKET)`, `connect`/`connect6` with a `TCPConnectWrap` request;
// - read: `useUserBuffer` (once per handle: every call pushes a listener), `onread` (the bytes
//   read in `streamBaseState[kReadBytesOrError]`; its return value is the next read's buffer),
//   `readStart`/`readStop`;
// - write: `writeBuffer` with a `WriteWrap` request; `streamBaseState[kLastWriteWasAsync]` says
//   whether it is still pending (then `oncomplete(status, handle)` comes later);
// - end: `shutdown` with a `ShutdownWrap`, `close(callback)`, `reset(callback)`.
// If a Node release changes any of these, `raw` is null and the balancer runs the public API
// (net.Server's sockets, 'data' events): slower, more memory, same behaviour.
// test/data/internals.test.ts fails loudly on such a release. FULCRUM_NO_ACCEPT_HOOK=1 forces the
// public path for the listeners opened after it is set (for tests, and as an operator's escape
// hatch); a connection's backend side always takes the path its client came by.

import type dgram from 'node:dgram';
import type net from 'node:net';

/** libuv's TCP handle as Node's TCP wrap exposes it; `side` is ours (the relay's end). */
export interface RawHandle {
  side: unknown;
  onread: ((this: RawHandle, arrayBuffer: ArrayBuffer | undefined) => unknown) | null;
  readStart(): number;
  readStop(): number;
  useUserBuffer(buffer: Uint8Array): void;
  writeBuffer(req: RawRequest, buffer: Uint8Array): number;
  shutdown(req: RawRequest): number;
  close(callback?: (this: RawHandle) => void): void;
  /** An RST, then close. Never while a shutdown is pending: Node then marks the handle closing
   *  without closing it, so its close callback never comes. */
  reset(callback: (this: RawHandle) => void): number;
  connect(req: RawRequest, address: string, port: number): number;
  connect6(req: RawRequest, address: string, port: number): number;
  setNoDelay(enable: boolean): number;
  /** Fill `out` with the address, family and port; 0 on success. */
  getpeername(out: { address?: string; family?: string; port?: number }): number;
  getsockname(out: { address?: string; family?: string; port?: number }): number;
}

/** A connect, write or shutdown request; Node calls `oncomplete(status, handle)` when done. */
export interface RawRequest {
  oncomplete: (this: RawRequest, status: number, handle: RawHandle) => void;
  /** A pending write's bytes, kept reachable until it completes (Node does the same). */
  buffer?: Uint8Array;
}

export interface RawBindings {
  newSocket(): RawHandle;
  newConnect(): RawRequest;
  newWrite(): RawRequest;
  newShutdown(): RawRequest;
  /** streamBaseState: read results and write results of the last call. */
  readonly state: Int32Array;
  readonly kReadBytesOrError: number;
  readonly kLastWriteWasAsync: number;
}

/** libuv's end-of-stream status (the same on every Unix). */
export const UV_EOF = -4095;

const HANDLE_METHODS = [
  'readStart',
  'readStop',
  'useUserBuffer',
  'writeBuffer',
  'shutdown',
  'close',
  'reset',
  'connect',
  'connect6',
  'setNoDelay',
  'getpeername',
  'getsockname',
] as const;

interface TcpWrap {
  TCP: new (type: number) => RawHandle;
  TCPConnectWrap: new () => RawRequest;
  constants: { SOCKET: number };
}

interface StreamWrap {
  WriteWrap: new () => RawRequest;
  ShutdownWrap: new () => RawRequest;
  streamBaseState: Int32Array;
  kReadBytesOrError: number;
  kLastWriteWasAsync: number;
}

/** Node's bindings, or null where they are not what the relay needs. */
export function loadRaw(): RawBindings | null {
  try {
    const binding = (process as unknown as { binding(name: string): unknown }).binding;
    const tcp = binding('tcp_wrap') as Partial<TcpWrap>;
    const stream = binding('stream_wrap') as Partial<StreamWrap>;
    const { TCP, TCPConnectWrap, constants } = tcp;
    const { WriteWrap, ShutdownWrap, streamBaseState } = stream;
    if (
      typeof TCP !== 'function' ||
      typeof TCPConnectWrap !== 'function' ||
      typeof WriteWrap !== 'function' ||
      typeof ShutdownWrap !== 'function' ||
      !(streamBaseState instanceof Int32Array) ||
      typeof constants?.SOCKET !== 'number' ||
      typeof stream.kReadBytesOrError !== 'number' ||
      typeof stream.kLastWriteWasAsync !== 'number'
    ) {
      return null;
    }
    const proto = TCP.prototype as unknown as Record<string, unknown>;
    if (HANDLE_METHODS.some((m) => typeof proto[m] !== 'function') || !('onread' in proto)) {
      return null;
    }
    const socket = constants.SOCKET;
    return {
      newSocket: () => new TCP(socket),
      newConnect: () => new TCPConnectWrap(),
      newWrite: () => new WriteWrap(),
      newShutdown: () => new ShutdownWrap(),
      state: streamBaseState,
      kReadBytesOrError: stream.kReadBytesOrError,
      kLastWriteWasAsync: stream.kLastWriteWasAsync,
    };
  } catch {
    return null;
  }
}

/** What this thread relays with: Node's handles, or null for the public API. */
export const raw: RawBindings | null = loadRaw();

export type AcceptCallback = (status: number, handle: RawHandle) => void;

interface ListeningHandle {
  onconnection: AcceptCallback;
}

/** Routes every accepted connection of a listening server to `accept`; false if unsupported
 *  (then the server's 'connection' sockets are the public path). */
export function hookAccept(server: net.Server, accept: AcceptCallback): boolean {
  if (raw === null || process.env.FULCRUM_NO_ACCEPT_HOOK === '1') return false;
  const handle = (server as unknown as { _handle?: Partial<ListeningHandle> })._handle;
  if (handle == null || typeof handle.onconnection !== 'function') return false;
  handle.onconnection = accept;
  return true;
}

// ---- UDP (data/udp.ts): Node's `udp_wrap` binding, as dgram.Socket drives it.
// - receive: the handle's `onmessage(nread, handle, buffer, rinfo)` (nread < 0: a socket error,
//   such as ECONNREFUSED on a connected socket after an ICMP port unreachable), replaced on the
//   listening sockets once dgram has bound them and started receiving;
// - send: `send(req, buffers, count, hasCallback)` on a connected handle, `send`/`send6(req,
//   buffers, count, port, address, hasCallback)` on an unconnected one; the result is the size
//   + 1 when the datagram went out at once (the request object was not used), 0 when it is queued
//   (the request is then libuv's until done), < 0 on an error;
// - a session's socket: `new UDP()`, `connect`/`connect6(address, port)` (synchronous: it binds
//   an ephemeral port and sets the peer), `recvStart`, `close`.

/** libuv's UDP handle as Node's UDP wrap exposes it; `owner` is ours (a session or listener). */
export interface RawUdp {
  owner: unknown;
  onmessage:
    | ((
        this: RawUdp,
        nread: number,
        handle: RawUdp,
        buffer: Buffer | undefined,
        rinfo: { address: string; port: number } | undefined,
      ) => void)
    | null;
  readonly fd: number;
  connect(address: string, port: number): number;
  connect6(address: string, port: number): number;
  send(req: object, buffers: Uint8Array[], count: number, hasCallback: boolean): number;
  send(
    req: object,
    buffers: Uint8Array[],
    count: number,
    port: number,
    address: string,
    hasCallback: boolean,
  ): number;
  send6(
    req: object,
    buffers: Uint8Array[],
    count: number,
    port: number,
    address: string,
    hasCallback: boolean,
  ): number;
  recvStart(): number;
  recvStop(): number;
  close(callback?: () => void): void;
}

export interface UdpBindings {
  newUdp(): RawUdp;
  newSend(): object;
}

const UDP_METHODS = ['connect', 'connect6', 'send', 'send6', 'recvStart', 'recvStop', 'close'];

/** Node's UDP bindings, or null where they are not what the UDP path needs. */
export function loadUdp(): UdpBindings | null {
  try {
    const binding = (process as unknown as { binding(name: string): unknown }).binding;
    const udp = binding('udp_wrap') as {
      UDP?: new () => RawUdp;
      SendWrap?: new () => object;
    };
    const { UDP, SendWrap } = udp;
    if (typeof UDP !== 'function' || typeof SendWrap !== 'function') return null;
    const proto = UDP.prototype as unknown as Record<string, unknown>;
    if (UDP_METHODS.some((m) => typeof proto[m] !== 'function')) return null;
    return { newUdp: () => new UDP(), newSend: () => new SendWrap() };
  } catch {
    return null;
  }
}

export const rawUdp: UdpBindings | null = loadUdp();

/** The handle under a bound dgram socket (dgram keeps it under a symbol of its own), or null. */
export function udpHandleOf(socket: dgram.Socket): RawUdp | null {
  const symbol = Object.getOwnPropertySymbols(socket).find((s) => s.description === 'state symbol');
  if (symbol === undefined) return null;
  const state = (socket as unknown as Record<symbol, { handle?: RawUdp | null }>)[symbol];
  const handle = state?.handle ?? null;
  return handle !== null && typeof handle.send === 'function' ? handle : null;
}
