// Errors that are fulcrum's own trouble, not a backend's: this process or this host ran out of a
// resource (descriptors, buffers, local ports). Invariant: such an error never counts against a
// backend (no failed connect, no failed probe, no passive-health strike): blaming healthy
// backends for our own shortage would take them all down just when load is highest.

/** errno codes of local resource exhaustion. */
const LOCAL = new Set(['EMFILE', 'ENFILE', 'ENOBUFS', 'ENOMEM', 'EADDRNOTAVAIL']);

export function isLocalError(code: string | undefined): boolean {
  return code !== undefined && LOCAL.has(code);
}
