// Whether two endpoints are one destination, and whether a backend would loop back into one of
// fulcrum's own listeners: the checks `add backend` and the state file share. Pure functions of
// their arguments (and of this host's interface addresses, for a wildcard listener).

import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import { canonicalHost } from '../config/parse.ts';
import type { Endpoint, ListenEndpoint } from '../config/types.ts';

/** Whether two endpoints are one destination, however each address is spelled. */
export function sameEndpoint(a: Endpoint, b: Endpoint): boolean {
  return a.port === b.port && canonicalHost(a.host) === canonicalHost(b.host);
}

/**
 * Whether a connection to `backend` would reach `listener`: the same endpoint, or the listener
 * takes every address of this host (0.0.0.0, ::) and the backend is one of them.
 */
export function reaches(backend: Endpoint, listener: ListenEndpoint): boolean {
  if (sameEndpoint(backend, listener)) return true;
  if (backend.port !== listener.port || (listener.host !== '0.0.0.0' && listener.host !== '::')) {
    return false;
  }
  const host = canonicalHost(backend.host);
  if (host === '::1' || (isIP(host) === 4 && host.startsWith('127.'))) return true;
  return Object.values(networkInterfaces()).some((addresses) =>
    (addresses ?? []).some((a) => canonicalHost(a.address) === host),
  );
}
