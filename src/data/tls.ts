// TLS termination in a worker: a frontend with certificates wraps each client in a TLSSocket
// (Node's TLSWrap over the client's TCP handle: OpenSSL works in C++, JavaScript sees cleartext),
// picks the certificate by the client's server name, checks client certificates, and only once
// the handshake is done does the connection pick and connect a backend, as any other. The relay
// then runs the client side on the public path (data/connection.ts), the backend side raw.
// Invariants: secure contexts are built once per config (per certificate, for every worker),
// never per client; every handshake either finishes (counted, timed) or fails with exactly one
// reason counted; session tickets are sealed with the process's keys (or the shared file's), the
// same in every worker, so a client resumes whichever worker takes it.

import { createHash } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import type { BackendTlsConfig, TlsConfig } from '../config/types.ts';
import { END, TLS_FAIL, TLS_FAIL_BASE, TLS_HANDSHAKES, TLS_RESUMED } from '../shared/counters.ts';
import { deadline } from './clock.ts';
import type { Connection, PublicSocket, Side } from './connection.ts';
import {
  adoptTlsSocket,
  CONNECTING,
  clientEndpoint,
  closeClient,
  HANDSHAKE,
  PEER_HIGH_WATER_MARK,
} from './connection.ts';
import type { TlsFacts } from './proxy-protocol.ts';
import { PP2_CLIENT_CERT_CONN, PP2_CLIENT_CERT_SESS, PP2_CLIENT_SSL } from './proxy-protocol.ts';

/** How long tickets are good for, seconds: a client resumes within this of its last handshake. */
export const TICKET_LIFETIME_S = 300;
/** How often the process makes new ticket keys (without tls.ticketKeys): a ticket sealed with
 *  the old keys then gets a full handshake instead, so at most TICKET_LIFETIME_S of tickets are
 *  lost at each change. */
export const TICKET_ROTATE_MS = 60 * 60 * 1000;

/** A connection's TLS once its handshake is done (or while it is being done). */
export class TlsSession implements TlsFacts {
  /** The TCP socket under the TLSSocket: a reset goes to it (a TLSSocket cannot reset). */
  readonly plain: net.Socket;
  readonly startedAt: number;
  /** A certificate covered the server name asked for (strict SNI counts the rest). */
  named = false;
  serverName = '';
  alpn = '';
  version = '';
  cipher = '';
  client = PP2_CLIENT_SSL;
  verify = 0;
  commonName = '';
  resumed = false;
  /** Its handshake failed and that is counted (once). */
  failed = false;

  constructor(plain: net.Socket) {
    this.plain = plain;
    this.startedAt = performance.now();
  }
}

/** A certificate's context, and the names it serves. */
interface Served {
  readonly context: tls.SecureContext;
  readonly names: readonly string[];
}

/** One frontend's TLS in one worker: its contexts, and the options every client's socket gets. */
export class TlsTerminator {
  readonly config: TlsConfig;
  /** What the config said, to tell whether a new one changes anything (PEMs included). */
  readonly fingerprint: string;
  /** The first certificate's context; with strict SNI, one without a certificate (every
   *  handshake then needs a name a certificate covers). */
  private readonly base: tls.SecureContext;
  private readonly contexts: tls.SecureContext[] = [];
  private readonly exact = new Map<string, tls.SecureContext>();
  /** By the name under the wildcard: `*.example.com` is here as `example.com`. */
  private readonly wildcard = new Map<string, tls.SecureContext>();
  readonly options: tls.TLSSocketOptions;

  constructor(frontend: string, config: TlsConfig, ticketKeys: Buffer) {
    this.config = config;
    this.fingerprint = fingerprintOf(config);
    const common = {
      minVersion: config.minVersion,
      ca: config.caPem ?? undefined,
      crl: config.crlPem ?? undefined,
      sessionTimeout: TICKET_LIFETIME_S,
      sessionIdContext: sessionContext(frontend, config),
    };
    const served: Served[] = config.certificates.map((c) => ({
      context: tls.createSecureContext({ ...common, cert: c.cert, key: c.key }),
      names: c.serverNames,
    }));
    // The first certificate to claim a name keeps it.
    for (const { context, names } of served) {
      this.contexts.push(context);
      for (const name of names) {
        const map = name.startsWith('*.') ? this.wildcard : this.exact;
        const key = name.startsWith('*.') ? name.slice(2) : name;
        if (!map.has(key)) map.set(key, context);
      }
    }
    this.base = config.strictSni ? tls.createSecureContext(common) : served[0].context;
    if (config.strictSni) this.contexts.push(this.base);
    this.setTicketKeys(ticketKeys);
    const verify = config.verify !== 'none';
    // One certificate and no strict SNI: there is nothing to choose, so no SNI callback (each
    // costs a call into JavaScript in the middle of every handshake); the name is read after.
    const choose = config.strictSni || served.length > 1;
    this.options = {
      isServer: true,
      secureContext: this.base,
      SNICallback: choose ? selectContext : undefined,
      requestCert: verify,
      rejectUnauthorized: config.verify === 'required',
      // In ALPN's wire form once, not converted again for every client.
      ALPNProtocols: config.alpn.length > 0 ? alpnWire(config.alpn) : undefined,
      // A relay stops reading on any pending write: 'drain' must follow every one. Node passes
      // it to the socket; its types omit it.
      ...{ highWaterMark: PEER_HIGH_WATER_MARK },
    };
  }

  /** The context for a server name, or null when no certificate covers it. */
  contextFor(name: string): tls.SecureContext | null {
    const lower = name.toLowerCase();
    const exact = this.exact.get(lower);
    if (exact !== undefined) return exact;
    const dot = lower.indexOf('.');
    return dot < 0 ? null : (this.wildcard.get(lower.slice(dot + 1)) ?? null);
  }

  /** Seals new tickets with `keys` (48 bytes), in every context. Without the shared file, the
   *  process's keys (the same in every worker); with it, the file's. */
  setTicketKeys(keys: Buffer): void {
    const own = this.config.ticketKeyBytes;
    const use = own === null ? keys : Buffer.from(own, 'base64');
    for (const context of this.contexts) context.context.setTicketKeys(use);
  }
}

/**
 * The session ID context: a session resumes only where it was made with the same one. Every
 * frontend seals tickets with the same keys, so this is what keeps a ticket from a frontend that
 * asks for no client certificate from resuming, without one, on one that requires it; and
 * OpenSSL refuses to resume any session of a context that verifies clients without it. Derived
 * from what a client was trusted with, so instances sharing ticket keys derive the same.
 */
function sessionContext(frontend: string, config: TlsConfig): string {
  return createHash('sha256')
    .update(`${frontend}\n${config.verify}\n${config.caPem ?? ''}\n${config.crlPem ?? ''}`)
    .digest('hex')
    .slice(0, 32);
}

/** ALPN protocol names as the protocol lists them: each a length byte, then its bytes. */
function alpnWire(protocols: readonly string[]): Buffer {
  return Buffer.concat(
    protocols.map((p) => {
      const name = Buffer.from(p, 'latin1');
      return Buffer.concat([Buffer.of(name.length), name]);
    }),
  );
}

/** The context TLS backends are reached with, by connections and probes alike: the pool's CA
 *  (Node's bundled roots without one) and its client certificate, if any. */
export function backendContextOf(settings: BackendTlsConfig): tls.SecureContext {
  return tls.createSecureContext({
    ca: settings.caPem ?? undefined,
    cert: settings.certPem ?? undefined,
    key: settings.keyPem ?? undefined,
  });
}

/** What makes two configs build the same contexts. */
export function fingerprintOf(config: TlsConfig): string {
  return JSON.stringify(config);
}

/** A client socket of a terminating frontend: its side (null once it no longer speaks for the
 *  connection). */
type TlsClientSocket = tls.TLSSocket & { side: Side | null };

/**
 * SNI: the context of the certificate that covers the name. Node calls it as a method of the
 * client's socket, so it reads the connection from there; no closure per client.
 */
function selectContext(
  this: TlsClientSocket,
  name: string,
  done: (err: Error | null, context?: tls.SecureContext) => void,
): void {
  const conn = this.side?.conn;
  const terminator = conn?.frontend.tls;
  if (conn === undefined || terminator === null || terminator === undefined) {
    done(null);
    return;
  }
  const session = conn.tls as TlsSession;
  session.serverName = name.toLowerCase();
  const context = terminator.contextFor(name);
  session.named = context !== null;
  // Unknown to strict SNI: the base context has no certificate, and the handshake fails.
  done(null, context ?? undefined);
}

/**
 * Starts terminating TLS on a client its frontend has admitted (its PROXY header and ClientHello
 * read where the route reads them): the bytes read so far are the handshake's first.
 */
export function startTls(conn: Connection, terminator: TlsTerminator): void {
  const side = conn.client;
  // The peer's address is gone once the socket closes: a failed handshake is logged with it.
  if (conn.frontend.accessLog !== null && conn.clientAddress === '') {
    const peer = clientEndpoint(conn);
    conn.clientAddress = `${peer.address}:${peer.port}`;
  }
  let plain: net.Socket;
  const handle = side.handle;
  if (handle !== null) {
    handle.side = null;
    side.handle = null;
    // As net.Server makes a socket of an accepted handle (its options beside the typed ones).
    plain = new net.Socket({
      allowHalfOpen: true,
      readable: true,
      writable: true,
      ...({ handle, pauseOnCreate: true, manualStart: true } as object),
    });
  } else {
    plain = side.socket as PublicSocket;
    plain.removeAllListeners();
    (plain as PublicSocket).side = null;
    side.socket = null;
  }
  plain.on('error', ignore);
  if (conn.pending !== null) {
    plain.unshift(conn.pending);
    conn.pending = null;
  }
  side.reading = false;
  conn.tls = new TlsSession(plain);
  conn.phase = HANDSHAKE;
  conn.deadline = deadline(terminator.config.handshakeTimeoutMs);
  conn.frontend.connecting.add(conn);
  const socket = new tls.TLSSocket(plain, terminator.options) as TlsClientSocket;
  socket.side = side;
  socket.on('secure', onSecure);
  socket.on('error', onTlsError);
  socket.on('close', onTlsClose);
  adoptTlsSocket(conn, socket as unknown as PublicSocket);
}

function ignore(): void {}

/** The handshake is done: check the client's certificate, count and time it, then on to a
 *  backend. */
function onSecure(this: TlsClientSocket): void {
  const side = this.side;
  if (side === null) return;
  const conn = side.conn;
  const session = conn.tls as TlsSession;
  const frontend = conn.frontend;
  const terminator = frontend.tls as TlsTerminator;
  frontend.connecting.remove(conn);
  session.resumed = this.isSessionReused();
  // Where SNI was not asked (one certificate; or a resumed handshake, which chooses none), the
  // name is the one the client sent, or the session was made for (under strict SNI, a name a
  // certificate covers).
  if (session.serverName === '') {
    session.serverName = typeof this.servername === 'string' ? this.servername.toLowerCase() : '';
  }
  if (terminator.config.strictSni && !session.named && !session.resumed) {
    fail(conn, TLS_FAIL.NO_CERTIFICATE);
    return;
  }
  if (terminator.config.verify !== 'none') {
    const peer = this.getPeerX509Certificate();
    // Node's own check of the chain (the CA, the CRL, the dates), kept on the handle.
    const error = (this as unknown as { ssl: { verifyError(): Error | null } }).ssl.verifyError();
    if (peer === undefined) {
      session.verify = 1;
      if (terminator.config.verify === 'required') {
        fail(conn, TLS_FAIL.CLIENT_CERT_MISSING);
        return;
      }
    } else {
      session.client |= session.resumed ? PP2_CLIENT_CERT_SESS : PP2_CLIENT_CERT_CONN;
      if (error !== null) {
        session.verify = 1;
        if (terminator.config.verify === 'required') {
          fail(conn, TLS_FAIL.CLIENT_CERT_INVALID);
          return;
        }
      } else {
        session.commonName = /^CN=(.*)$/m.exec(peer.subject)?.[1] ?? '';
      }
    }
  }
  session.alpn = this.alpnProtocol === false ? '' : (this.alpnProtocol ?? '');
  session.version = this.getProtocol() ?? '';
  session.cipher = this.getCipher()?.standardName ?? '';
  const slot = frontend.slot;
  slot[TLS_HANDSHAKES]++;
  if (session.resumed) slot[TLS_RESUMED]++;
  frontend.handshakeTime?.record((performance.now() - session.startedAt) * 1000);
  conn.serverName = session.serverName;
  conn.phase = CONNECTING; // from here on, as any connection
  frontend.afterHandshake(conn);
}

/** Counts why the handshake failed and closes the client. */
function fail(conn: Connection, reason: number): void {
  (conn.tls as TlsSession).failed = true;
  conn.frontend.slot[TLS_FAIL_BASE + reason]++;
  closeClient(conn, END.TLS_FAILED);
}

/** What OpenSSL says when the context it was left with has no certificate. */
const NO_CERTIFICATE_CODES = new Set([
  'ERR_SSL_NO_SUITABLE_SIGNATURE_ALGORITHM',
  'ERR_SSL_NO_SHARED_CIPHER',
  'ERR_SSL_NO_CERTIFICATE_ASSIGNED',
]);

/** Why OpenSSL (or Node) failed a handshake, as one of TLS_FAIL. */
function failureOf(err: NodeJS.ErrnoException, session: TlsSession, strict: boolean): number {
  const code = err.code ?? '';
  if (code === 'ECONNRESET' || code === 'EPIPE') return TLS_FAIL.ABORTED;
  if (code === 'ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE') return TLS_FAIL.CLIENT_CERT_MISSING;
  if (/CERTIFICATE|CERT_/.test(code) && code !== 'ERR_SSL_NO_CERTIFICATE_ASSIGNED') {
    return TLS_FAIL.CLIENT_CERT_INVALID;
  }
  // Strict SNI left the handshake without a certificate: OpenSSL finds nothing to sign with.
  if (strict && !session.named && NO_CERTIFICATE_CODES.has(code)) return TLS_FAIL.NO_CERTIFICATE;
  return TLS_FAIL.PROTOCOL;
}

/** Before the relay's own error handler: a failure during the handshake is counted here. */
function onTlsError(this: TlsClientSocket, err: NodeJS.ErrnoException): void {
  const conn = this.side?.conn;
  if (conn === undefined || conn.phase !== HANDSHAKE || (conn.tls as TlsSession).failed) return;
  const strict = conn.frontend.tls?.config.strictSni === true;
  conn.frontend.connecting.remove(conn);
  fail(conn, failureOf(err, conn.tls as TlsSession, strict));
}

/** Closed during the handshake with no failure counted: the client went away (its FIN or a
 *  reset); the relay's own close handler, after this one, finishes the connection. */
function onTlsClose(this: TlsClientSocket): void {
  const conn = this.side?.conn;
  const session = conn?.tls;
  if (conn === undefined || !session || conn.phase !== HANDSHAKE || session.failed) return;
  session.failed = true;
  conn.frontend.connecting.remove(conn);
  conn.frontend.slot[TLS_FAIL_BASE + TLS_FAIL.ABORTED]++;
  conn.end = END.TLS_FAILED;
}

/** The handshake timed out (the coarse timer's sweep). */
export function handshakeTimedOut(conn: Connection): void {
  fail(conn, TLS_FAIL.TIMEOUT);
}
