// One health probe of one backend, of the kind its frontend asks for: a TCP connect, an HTTP
// GET, a send/expect exchange, gRPC's standard health check, or a datagram to a UDP backend;
// over TLS for a backend that speaks it. Each ends in a verdict and a few words a person can act
// on (`HTTP 503`, `expect timeout`, `connect refused`, `tls CERT_HAS_EXPIRED`).
// Invariants: `done` is called exactly once; the whole probe (connect, request, reply) is over by
// the health timeout, whatever the backend trickles; no more than MAX_PROBE_REPLY bytes of a
// reply are ever kept; every socket and session is destroyed when the verdict is in.

import dgram from 'node:dgram';
import { createRequire } from 'node:module';
import net from 'node:net';
import tls from 'node:tls';
import { printableText } from '../config/parse.ts';
import type { HealthConfig } from '../config/types.ts';
import { isLocalError } from '../shared/errors.ts';

// node:http and node:http2 load at the first probe that needs them (~10 and ~25 ms at every
// start otherwise, for frontends that mostly probe with a TCP connect).
const require = createRequire(import.meta.url);
let httpModule: typeof import('node:http') | null = null;
let httpsModule: typeof import('node:https') | null = null;
let http2Module: typeof import('node:http2') | null = null;
const http = () => (httpModule ??= require('node:http') as typeof import('node:http'));
const https = () => (httpsModule ??= require('node:https') as typeof import('node:https'));
const http2 = () => (http2Module ??= require('node:http2') as typeof import('node:http2'));

/** The most of a reply a probe reads: a readiness answer is a few bytes, not a memory sink. */
export const MAX_PROBE_REPLY = 8192;

/** Which probe a frontend's health settings ask for. */
export type ProbeKind = 'tcp' | 'http' | 'expect' | 'grpc' | 'udp';

export function probeKind(health: HealthConfig): ProbeKind {
  if (health.udp) return 'udp';
  if (health.http !== null) return 'http';
  if (health.grpc !== null) return 'grpc';
  if (health.expect !== null) return 'expect';
  return 'tcp';
}

/**
 * A probe's verdict: `ok` true or false, or null when fulcrum could not even try (out of a local
 * resource: the probe says nothing of the backend). `result` says what happened, in words.
 */
export type ProbeDone = (ok: boolean | null, result: string) => void;

export interface ProbeTarget {
  readonly host: string;
  readonly port: number;
  /** A backend that speaks TLS: every probe runs over TLS, its certificate verified as clients'
   *  connections verify it (a TCP probe is the handshake alone); null: plain TCP. */
  readonly tls?: tls.ConnectionOptions | null;
}

/**
 * Why a probe over TLS failed before its handshake was done: a refused or unreachable connect in
 * the usual words, anything else is the handshake's (`tls UNABLE_TO_VERIFY_LEAF_SIGNATURE`).
 */
function handshakeFailure(err: NodeJS.ErrnoException): string {
  const words = connectFailure(err);
  return words.startsWith('connect error ') ? `tls ${err.code ?? err.message}` : words;
}

/** Starts a probe of `target`; `done` gets its verdict, once. */
export function probe(target: ProbeTarget, health: HealthConfig, done: ProbeDone): void {
  PROBES[probeKind(health)](target, health, done);
}

/** A failed connect in words: `connect refused`, `connect unreachable`, ... */
export function connectFailure(err: NodeJS.ErrnoException): string {
  switch (err.code) {
    case 'ECONNREFUSED':
      return 'connect refused';
    case 'ECONNRESET':
      return 'connect reset';
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return 'connect unreachable';
    case 'ETIMEDOUT':
      return 'connect timeout';
    default:
      return `connect error ${err.code ?? err.message}`;
  }
}

/**
 * The probe's clock and its single exit: `finish` runs the cleanup, then `done`, once; the timer
 * ends a probe the backend keeps waiting, with `connect timeout` or, once connected, `late`.
 */
function verdict(timeoutMs: number, done: ProbeDone, cleanup: () => void) {
  let over = false;
  let late = 'timeout';
  // secured: the TLS handshake is done (at once for a plain probe: it has none).
  const state = { connected: false, secured: true };
  const timer = setTimeout(
    () =>
      finish(
        false,
        !state.connected ? 'connect timeout' : state.secured ? late : 'tls handshake timeout',
      ),
    timeoutMs,
  );
  timer.unref();
  const finish = (ok: boolean | null, result: string) => {
    if (over) return;
    over = true;
    clearTimeout(timer);
    cleanup();
    done(ok, result);
  };
  const failed = (err: NodeJS.ErrnoException, after: string) => {
    if (isLocalError(err.code)) finish(null, `probe failed: ${err.code}`);
    else if (!state.connected) finish(false, connectFailure(err));
    else if (!state.secured) finish(false, handshakeFailure(err));
    else finish(false, after);
  };
  return {
    state,
    finish,
    failed,
    /** What the timeout says once connected (`HTTP timeout`). */
    lateIs(words: string) {
      late = words;
    },
  };
}

function probeTcp(target: ProbeTarget, health: HealthConfig, done: ProbeDone): void {
  if (target.tls !== undefined && target.tls !== null) {
    probeTls(target, target.tls, health, done);
    return;
  }
  const socket = net.connect({ host: target.host, port: target.port });
  const v = verdict(health.timeoutMs, done, () => socket.destroy());
  socket.once('connect', () => v.finish(true, 'connect ok'));
  socket.once('error', (err: NodeJS.ErrnoException) => v.failed(err, 'connect reset'));
}

/** A TLS backend's probe: connect and finish the handshake (`tls ok`), or say why not. */
function probeTls(
  target: ProbeTarget,
  options: tls.ConnectionOptions,
  health: HealthConfig,
  done: ProbeDone,
): void {
  const socket = tls.connect({ ...options, host: target.host, port: target.port });
  const v = verdict(health.timeoutMs, done, () => socket.destroy());
  socket.once('connect', () => {
    v.state.connected = true;
    v.lateIs('tls handshake timeout');
  });
  socket.once('secureConnect', () => v.finish(true, 'tls ok'));
  socket.once('error', (err: NodeJS.ErrnoException) =>
    v.failed(err, `tls ${err.code ?? err.message}`),
  );
}

/** `[::1]` for an IPv6 address in a URL or a Host header. */
function hostText(host: string, port: number): string {
  return `${host.includes(':') ? `[${host}]` : host}:${port}`;
}

function inRanges(status: number, ranges: HealthConfig['expectStatus']): boolean {
  for (const [low, high] of ranges) if (status >= low && status <= high) return true;
  return false;
}

/** What an HTTP GET came to: a status and the whole body, or why not, in words. */
export type HttpOutcome =
  | { readonly status: number; readonly body: Buffer }
  | { readonly failed: string; readonly local: boolean };

/**
 * `GET path` over HTTP/1.1 with `Connection: close`, bounded: the whole exchange within
 * `timeoutMs`, at most `limit` bytes of headers and again of body. `done` is called once. With
 * `onBody`, the body goes to it as it arrives and is not kept (the answer's body is empty); when
 * it answers false the read stops there, a failure (`HTTP read stopped`).
 */
export function httpGet(
  target: ProbeTarget,
  path: string,
  host: string | null,
  timeoutMs: number,
  limit: number,
  done: (outcome: HttpOutcome) => void,
  onBody: ((chunk: Buffer) => boolean) | null = null,
): void {
  const secure = target.tls ?? null;
  const request = (secure === null ? http() : https()).request({
    ...secure,
    // No server name unless one was set: https would take it from the Host header.
    ...(secure === null ? {} : { servername: secure.servername ?? '' }),
    host: target.host,
    port: target.port,
    method: 'GET',
    path,
    agent: false,
    setHost: false,
    maxHeaderSize: Math.min(limit, MAX_PROBE_REPLY),
    headers: {
      host: host ?? hostText(target.host, target.port),
      connection: 'close',
      'user-agent': 'fulcrum',
      accept: '*/*',
    },
  });
  let answer: HttpOutcome | null = null;
  const v = verdict(
    timeoutMs,
    (ok, words) =>
      done(ok === true && answer !== null ? answer : { failed: words, local: ok === null }),
    () => request.destroy(),
  );
  v.lateIs('HTTP timeout');
  v.state.secured = secure === null;
  request.on('socket', (socket) => {
    socket.once('connect', () => {
      v.state.connected = true;
    });
    socket.once('secureConnect', () => {
      v.state.secured = true;
    });
  });
  request.on('error', (err: NodeJS.ErrnoException) =>
    v.failed(
      err,
      err.code === 'HPE_HEADER_OVERFLOW'
        ? 'HTTP response too large'
        : err.code?.startsWith('HPE_')
          ? 'HTTP bad response'
          : 'HTTP closed before a response',
    ),
  );
  request.on('response', (response) => {
    const status = response.statusCode ?? 0;
    const chunks: Buffer[] = [];
    let size = 0;
    response.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) v.finish(false, 'HTTP response too large');
      else if (onBody === null) chunks.push(chunk);
      else if (!onBody(chunk)) v.finish(false, 'HTTP read stopped');
    });
    response.on('end', () => {
      answer = { status, body: Buffer.concat(chunks) };
      v.finish(true, `HTTP ${status}`);
    });
    response.on('error', () => v.finish(false, 'HTTP closed mid-response'));
  });
  request.end();
}

function probeHttp(target: ProbeTarget, health: HealthConfig, done: ProbeDone): void {
  httpGet(target, health.http as string, health.host, health.timeoutMs, MAX_PROBE_REPLY, (out) => {
    if ('failed' in out) done(out.local ? null : false, out.failed);
    else done(inRanges(out.status, health.expectStatus), `HTTP ${out.status}`);
  });
}

/** What a reply (bytes, held as latin1 text) began with, for the words of a mismatch: decoded
 *  as UTF-8, short, on one line, every control character escaped. */
function excerpt(bytes: string): string {
  const chars = [...Buffer.from(bytes.slice(0, 128), 'latin1').toString('utf8')];
  const head = printableText(chars.slice(0, 32).join(''));
  return chars.length > 32 || bytes.length > 128 ? `${head}...` : head;
}

function probeExpect(target: ProbeTarget, health: HealthConfig, done: ProbeDone): void {
  const expect = health.expect as string;
  const secure = target.tls ?? null;
  const socket =
    secure === null
      ? net.connect({ host: target.host, port: target.port })
      : tls.connect({ ...secure, host: target.host, port: target.port });
  const v = verdict(health.timeoutMs, done, () => socket.destroy());
  v.lateIs('expect timeout');
  v.state.secured = secure === null;
  let reply = '';
  const send = () => {
    v.state.secured = true;
    if (health.send !== null) socket.write(Buffer.from(health.send, 'latin1'));
  };
  socket.once('connect', () => {
    v.state.connected = true;
    if (secure === null) send();
  });
  if (secure !== null) socket.once('secureConnect', send);
  socket.on('data', (chunk: Buffer) => {
    // The first MAX_PROBE_REPLY bytes are searched, however the reply is split into reads.
    reply += chunk.toString('latin1', 0, MAX_PROBE_REPLY - reply.length);
    v.lateIs(`expect timeout, got "${excerpt(reply)}"`);
    if (reply.includes(expect)) v.finish(true, 'expect ok');
    else if (reply.length >= MAX_PROBE_REPLY) {
      v.finish(false, `expect not found in ${MAX_PROBE_REPLY} bytes`);
    }
  });
  socket.once('end', () =>
    v.finish(
      false,
      reply === '' ? 'expect: closed, no reply' : `expect mismatch: "${excerpt(reply)}"`,
    ),
  );
  socket.once('error', (err: NodeJS.ErrnoException) => v.failed(err, 'expect: connection reset'));
}

/**
 * A UDP backend's probe: `send` (or an empty datagram) from a socket connected to it. With
 * `expect`, healthy when a reply contains it; without, healthy when the timeout passes with no
 * ICMP refusal (a datagram service need not answer what it does not understand). A refusal
 * (ECONNREFUSED on the connected socket) is down at once.
 */
function probeUdp(target: ProbeTarget, health: HealthConfig, done: ProbeDone): void {
  const socket = dgram.createSocket(target.host.includes(':') ? 'udp6' : 'udp4');
  const expect = health.expect;
  let finished = false;
  const finish = (ok: boolean | null, result: string) => {
    if (finished) return;
    finished = true;
    clearTimeout(timer);
    socket.close();
    done(ok, result);
  };
  let last = '';
  const timer = setTimeout(() => {
    if (expect === null) finish(true, 'udp: no refusal');
    else finish(false, last === '' ? 'udp timeout' : `udp mismatch: "${excerpt(last)}"`);
  }, health.timeoutMs);
  timer.unref();
  socket.on('error', (err: NodeJS.ErrnoException) => {
    if (isLocalError(err.code)) finish(null, `probe failed: ${err.code}`);
    else finish(false, err.code === 'ECONNREFUSED' ? 'udp refused' : `udp error ${err.code}`);
  });
  socket.on('message', (reply: Buffer) => {
    if (expect === null) return;
    last = reply.toString('latin1', 0, MAX_PROBE_REPLY);
    if (last.includes(expect)) finish(true, 'expect ok');
  });
  socket.connect(target.port, target.host, () => {
    socket.send(Buffer.from(health.send ?? '', 'latin1'));
  });
}

/** grpc.health.v1.HealthCheckResponse.ServingStatus, by number. */
const SERVING_STATUS = ['UNKNOWN', 'SERVING', 'NOT_SERVING', 'SERVICE_UNKNOWN'];

/** gRPC status codes a health check meets, by number, in words. */
const GRPC_CODES = new Map([
  [4, 'deadline exceeded'],
  [5, 'SERVICE_UNKNOWN'],
  [12, 'unimplemented'],
  [14, 'unavailable'],
]);

/** A HealthCheckRequest for `service`, framed as one gRPC message. */
export function healthRequest(service: string): Buffer {
  const name = Buffer.from(service, 'utf8');
  // proto3 leaves an empty string out; field 1, wire type 2 (length-delimited) is tag 0x0a.
  const body =
    name.length === 0 ? Buffer.alloc(0) : Buffer.concat([Buffer.from([0x0a, name.length]), name]);
  const frame = Buffer.alloc(5 + body.length);
  frame.writeUInt32BE(body.length, 1);
  body.copy(frame, 5);
  return frame;
}

/**
 * The `status` of a framed HealthCheckResponse, or null when it is not one. Field 1 is a varint
 * (tag 0x08); a message without it holds the default, UNKNOWN (0).
 */
export function servingStatus(frame: Buffer): number | null {
  if (frame.length < 5 || frame[0] !== 0) return null;
  const length = frame.readUInt32BE(1);
  if (frame.length !== 5 + length) return null;
  let status = 0;
  for (let at = 5; at < frame.length; ) {
    const tag = frame[at++];
    const wire = tag & 7;
    if (wire === 0) {
      let value = 0;
      let shift = 0;
      for (;;) {
        if (at >= frame.length || shift > 28) return null;
        const byte = frame[at++];
        value |= (byte & 0x7f) << shift;
        shift += 7;
        if ((byte & 0x80) === 0) break;
      }
      if (tag >> 3 === 1) status = value;
    } else if (wire === 2) {
      if (at >= frame.length) return null;
      at += 1 + frame[at]; // short fields only: a health response has none longer than 127
    } else {
      return null;
    }
  }
  return status;
}

const PROBES: Record<ProbeKind, typeof probe> = {
  tcp: probeTcp,
  http: probeHttp,
  expect: probeExpect,
  grpc: probeGrpc,
  udp: probeUdp,
};

function probeGrpc(target: ProbeTarget, health: HealthConfig, done: ProbeDone): void {
  const secure = target.tls ?? null;
  const authority = hostText(target.host, target.port);
  const session = http2().connect(`${secure === null ? 'http' : 'https'}://${authority}`, {
    ...secure,
    // No server name unless one was set: http2 would take the address from the authority.
    ...(secure === null ? {} : { servername: secure.servername ?? '' }),
    maxSessionMemory: 1,
    maxHeaderListPairs: 64,
    settings: { maxHeaderListSize: MAX_PROBE_REPLY, enablePush: false },
  });
  const v = verdict(health.timeoutMs, done, () => session.destroy());
  v.lateIs('gRPC timeout');
  v.state.secured = secure === null;
  session.on('error', (err: NodeJS.ErrnoException) => v.failed(err, 'gRPC connection error'));
  // Over TLS, the session connects once its handshake is done; the TCP connect comes before.
  if (secure !== null) {
    session.socket?.once('connect', () => {
      v.state.connected = true;
    });
  }
  session.once('connect', () => {
    v.state.connected = true;
    v.state.secured = true;
  });
  const stream = session.request({
    ':method': 'POST',
    ':path': '/grpc.health.v1.Health/Check',
    'content-type': 'application/grpc',
    te: 'trailers',
  });
  // A stream cancelled because its session failed carries the session's error (a refused
  // connect) as its cause: that is the one worth naming.
  stream.on('error', (err: NodeJS.ErrnoException) =>
    v.failed((err.cause as NodeJS.ErrnoException | undefined) ?? err, 'gRPC stream error'),
  );
  let httpStatus = 0;
  let contentType = '';
  let grpcStatus: string | undefined;
  const chunks: Buffer[] = [];
  let size = 0;
  stream.on('response', (headers) => {
    httpStatus = Number(headers[':status']);
    contentType = String(headers['content-type'] ?? '');
    // A trailers-only answer (an error) carries grpc-status with the headers.
    if (headers['grpc-status'] !== undefined) grpcStatus = String(headers['grpc-status']);
  });
  stream.on('trailers', (trailers) => {
    if (trailers['grpc-status'] !== undefined) grpcStatus = String(trailers['grpc-status']);
  });
  stream.on('data', (chunk: Buffer) => {
    size += chunk.length;
    if (size > MAX_PROBE_REPLY) v.finish(false, 'gRPC response too large');
    else chunks.push(chunk);
  });
  stream.on('end', () => {
    if (httpStatus !== 200) return v.finish(false, `gRPC: HTTP ${httpStatus}`);
    // What a gRPC client would reject is not an answer: another content type, or no status.
    if (!/^application\/grpc(?:$|[+;])/.test(contentType)) {
      return v.finish(false, `gRPC: content-type "${printableText(contentType.slice(0, 40))}"`);
    }
    if (grpcStatus === undefined) return v.finish(false, 'gRPC: no grpc-status');
    if (grpcStatus !== '0') {
      const code = Number(grpcStatus);
      return v.finish(false, `gRPC ${GRPC_CODES.get(code) ?? `status ${code}`}`);
    }
    const status = servingStatus(Buffer.concat(chunks));
    if (status === null) return v.finish(false, 'gRPC bad response');
    v.finish(status === 1, `gRPC ${SERVING_STATUS[status] ?? `status ${status}`}`);
  });
  stream.end(healthRequest(health.grpc as string));
}
