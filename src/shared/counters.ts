// Counters shared between the data plane and the control plane, one set per frontend. In it each
// worker owns one slot (a Float64Array over a SharedArrayBuffer) and is its only writer; the main
// thread sums the slots when asked. Invariant: no Atomics and no allocation on update, just `slot[i] += n`.

/** How a connection ended; one counter per reason. The names are what stats and logs print. */
export const END = {
  CLIENT_CLOSED: 0,
  BACKEND_CLOSED: 1,
  CONNECT_FAILED: 2,
  NO_BACKEND: 3,
  TIMEOUT: 4,
  CLIENT_RESET: 5,
  BACKEND_RESET: 6,
  REFUSED_LIMIT: 7,
  DRAIN_CUT: 8,
  KILLED: 9,
  QUEUE_TIMEOUT: 10,
  DENIED: 11,
  SOURCE_LIMIT: 12,
  BAD_PROXY: 13,
  UNTRUSTED_PROXY: 14,
  LOCAL_ERROR: 15,
  INSPECT_TIMEOUT: 16,
  NO_FRONTEND: 17,
  /** UDP: every datagram the session forwarded had its --udp-responses replies. */
  RESPONDED: 18,
  /** UDP: the backend answered with ICMP port unreachable. */
  BACKEND_REFUSED: 19,
  /** UDP: its backend went down, was disabled or removed; the next datagram picks anew. */
  BACKEND_GONE: 20,
  /** TLS termination: the client's handshake failed or timed out (why: TLS_FAIL). */
  TLS_FAILED: 21,
} as const;

export const END_NAMES = [
  'client-closed',
  'backend-closed',
  'connect-failed',
  'no-backend',
  'timeout',
  'client-reset',
  'backend-reset',
  'refused-limit',
  'drain-cut',
  'killed',
  'queue-timeout',
  'denied',
  'source-limit',
  'bad-proxy-header',
  'untrusted-proxy',
  'local-error',
  'inspect-timeout',
  'no-frontend',
  'responded',
  'backend-refused',
  'backend-gone',
  'tls-failed',
] as const;

/** Why a client's TLS handshake failed, one counter each (a terminating frontend's). */
export const TLS_FAIL_NAMES = [
  'no-certificate',
  'client-cert-missing',
  'client-cert-invalid',
  'protocol',
  'timeout',
  'aborted',
] as const;
export const TLS_FAIL = {
  /** --tls-strict-sni: no certificate covers the name the client asked for (or it sent none). */
  NO_CERTIFICATE: 0,
  /** verify required: the client sent no certificate. */
  CLIENT_CERT_MISSING: 1,
  /** verify required: its certificate is not one the CA vouches for (or is revoked, expired). */
  CLIENT_CERT_INVALID: 2,
  /** No version, cipher or ALPN in common, or not TLS at all. */
  PROTOCOL: 3,
  TIMEOUT: 4,
  /** The client closed or reset before the handshake finished. */
  ABORTED: 5,
} as const;

/** UDP datagrams a frontend dropped, by reason (counted per datagram, not per session). */
export const DROP_NAMES = [
  'no-backend',
  'session-limit',
  'too-large',
  'backend-refused',
  'denied',
  'send-failed',
] as const;
export const DROP = {
  NO_BACKEND: 0,
  SESSION_LIMIT: 1,
  TOO_LARGE: 2,
  BACKEND_REFUSED: 3,
  DENIED: 4,
  /** fulcrum's own send failed (no buffer space, an unreachable client): not the backend's. */
  SEND_FAILED: 5,
} as const;

/** Per-frontend fields, then one block per end reason, then BACKEND_STRIDE fields per backend. */
export const ACCEPTED = 0;
export const LIVE = 1;
export const RETRIES = 2;
/** Clients waiting in this worker's queue for a backend with room (a gauge, like LIVE). */
export const QUEUED = 3;
export const END_BASE = 4;
/** UDP: datagrams and bytes from clients (forwarded to backends) and to them (replies). */
export const DGRAMS_IN = END_BASE + END_NAMES.length;
export const DGRAMS_OUT = DGRAMS_IN + 1;
export const BYTES_IN = DGRAMS_IN + 2;
export const BYTES_OUT = DGRAMS_IN + 3;
/** UDP: then one counter per drop reason (DROP). */
export const DROP_BASE = DGRAMS_IN + 4;
/** TLS termination: handshakes done, and of those the resumed ones (a session ticket). */
export const TLS_HANDSHAKES = DROP_BASE + DROP_NAMES.length;
export const TLS_RESUMED = TLS_HANDSHAKES + 1;
/** TLS termination: then one counter per failure reason (TLS_FAIL). */
export const TLS_FAIL_BASE = TLS_HANDSHAKES + 2;
/** TLS to backends: connect attempts whose handshake failed (a certificate not verified, a
 *  backend that speaks no TLS), each also a failed connect of its backend. */
export const TLS_BACKEND_FAILED = TLS_FAIL_BASE + TLS_FAIL_NAMES.length;
const FRONTEND_FIELDS = TLS_BACKEND_FAILED + 1;

export const B_CONNECTIONS = 0;
export const B_FAILURES = 1;
export const B_BYTES_IN = 2;
export const B_BYTES_OUT = 3;
/** UDP: datagrams from clients sent to the backend, and its replies sent out to them (as the
 *  bytes: IN is the client's way, OUT the backend's). */
export const B_DGRAMS_IN = 4;
export const B_DGRAMS_OUT = 5;
export const BACKEND_STRIDE = 6;

/** One frontend's counters: a slot per worker, each with room for `capacity` backends. */
export interface SharedCounters {
  readonly workers: number;
  readonly capacity: number;
  readonly buffer: SharedArrayBuffer;
}

export function slotLength(capacity: number): number {
  return FRONTEND_FIELDS + capacity * BACKEND_STRIDE;
}

/** Offset of backend slot `i` in a counter slot. */
export function backendOffset(i: number): number {
  return FRONTEND_FIELDS + i * BACKEND_STRIDE;
}

export function allocateCounters(workers: number, capacity: number): SharedCounters {
  return {
    workers,
    capacity,
    buffer: new SharedArrayBuffer(workers * slotLength(capacity) * 8),
  };
}

/** Worker `w`'s slot: the only view a worker writes through. */
export function openSlot(counters: SharedCounters, w: number): Float64Array {
  const length = slotLength(counters.capacity);
  return new Float64Array(counters.buffer, w * length * 8, length);
}

/** Every slot added up: a snapshot for the control plane (allocates; never on the data path). */
export function sumSlots(counters: SharedCounters): Float64Array {
  const length = slotLength(counters.capacity);
  const all = new Float64Array(counters.buffer);
  const total = new Float64Array(length);
  for (let w = 0; w < counters.workers; w++) {
    for (let i = 0; i < length; i++) total[i] += all[w * length + i];
  }
  return total;
}

/** Zeroes every cumulative counter of every worker; LIVE, a gauge, is kept. Racy by design: an
 *  increment a worker makes at that very moment may survive or be lost, as with HAProxy's
 *  "clear counters". QUEUED, also a gauge, is kept too. */
export function resetCounters(counters: SharedCounters): void {
  const length = slotLength(counters.capacity);
  const all = new Float64Array(counters.buffer);
  for (let w = 0; w < counters.workers; w++) {
    for (let i = 0; i < length; i++) if (i !== LIVE && i !== QUEUED) all[w * length + i] = 0;
  }
}

/** Zeroes backend slot `i` in every worker, before the slot is given to a new backend. No worker
 *  writes there then: the slot's last connection has finished and no pick can reach it. */
export function clearBackend(counters: SharedCounters, i: number): void {
  const length = slotLength(counters.capacity);
  const all = new Float64Array(counters.buffer);
  for (let w = 0; w < counters.workers; w++) {
    all.fill(0, w * length + backendOffset(i), w * length + backendOffset(i + 1));
  }
}

/** The frontend-level fields of several sums added up (process totals over every frontend). */
export function addFrontendFields(sums: readonly Float64Array[]): Float64Array {
  const total = new Float64Array(FRONTEND_FIELDS);
  for (const sum of sums) for (let i = 0; i < FRONTEND_FIELDS; i++) total[i] += sum[i];
  return total;
}

/** A readable summary of a sum, for the log line written at exit. */
export function summarize(total: Float64Array): Record<string, number> {
  const summary: Record<string, number> = {
    accepted: total[ACCEPTED],
    retries: total[RETRIES],
  };
  for (let r = 0; r < END_NAMES.length; r++) {
    if (total[END_BASE + r] > 0) summary[END_NAMES[r]] = total[END_BASE + r];
  }
  return summary;
}
