// Which frontend takes a client on a listen address, in one worker. Most addresses belong to one
// frontend and nothing is read before the pick. Where frontends choose clients by TLS server
// name (serverNames), or one hashes by it (hashKey sni), the address's Route reads the client's
// ClientHello first (data/client-hello.ts) and hands the client to the frontend its name picks.
// Invariants: a Route is immutable (a reload builds new ones; a client mid-inspection keeps the
// one it arrived on); an exact name beats a wildcard; every byte read here goes to the backend.

import type { FrontendConfig } from '../config/types.ts';
import type { HelloParse } from './client-hello.ts';
import { MAX_HELLO_BYTES, parseClientHello } from './client-hello.ts';

/** What a Route needs of a frontend: its settings (the data path's Frontend). */
export interface Routed {
  readonly config: FrontendConfig;
}

export class Route<F extends Routed = Routed> {
  /** Frontends by exact server name, and by what a `*.` wildcard stands over (`example.com`). */
  private readonly exact = new Map<string, F>();
  private readonly wildcard = new Map<string, F>();
  /** The frontend without serverNames: no name, no match, not TLS. null: such clients close. */
  private readonly fallback: F | null = null;
  /** Who admits clients here (limits, allow/deny, PROXY header, timeouts: the build makes every
   *  frontend on the address agree on them) and counts the ones no frontend takes: the
   *  fallback, else the first frontend listing the address. */
  readonly door: F;
  /** Whether clients' ClientHellos are read here. */
  readonly inspects: boolean;
  readonly acceptProxy: boolean;

  /** `frontends`: every frontend listing the address, in config order (at least one). */
  constructor(frontends: readonly F[], acceptProxy: boolean) {
    for (const frontend of frontends) {
      const names = frontend.config.serverNames;
      if (names.length === 0) this.fallback ??= frontend;
      for (const name of names) {
        if (name.startsWith('*.')) this.wildcard.set(name.slice(2), frontend);
        else this.exact.set(name, frontend);
      }
    }
    this.door = this.fallback ?? frontends[0];
    this.inspects = frontends.some(
      (f) =>
        f.config.serverNames.length > 0 ||
        (f.config.hashKey === 'sni' && f.config.algorithm === 'maglev'),
    );
    this.acceptProxy = acceptProxy;
  }

  /** The frontend for a client asking for `name` (lowercased; null: none, or not TLS). */
  match(name: string | null): F | null {
    if (name !== null) {
      const exact = this.exact.get(name);
      if (exact !== undefined) return exact;
      const dot = name.indexOf('.');
      const wildcard = dot > 0 ? this.wildcard.get(name.slice(dot + 1)) : undefined;
      if (wildcard !== undefined) return wildcard;
    }
    return this.fallback;
  }
}

/** One client's ClientHello as it arrives: the bytes so far (copied: read buffers are reused),
 *  parsed again only once enough have come. */
export class Inspection {
  readonly route: Route;
  private buffer: Buffer;
  private length = 0;
  private need = 1;

  constructor(route: Route) {
    this.route = route;
    this.buffer = Buffer.allocUnsafe(0);
  }

  /** Takes the next bytes; the parse once the hello is read (or is none), else null. */
  add(bytes: Buffer): Extract<HelloParse, { status: 'done' }> | null {
    const end = this.length + bytes.length;
    if (end > this.buffer.length) {
      // Grow by doubling: a client that dribbles bytes costs a copy per doubling, not per byte.
      const grown = Buffer.allocUnsafe(
        Math.max(end, Math.min(this.buffer.length * 2, MAX_HELLO_BYTES), 512),
      );
      this.buffer.copy(grown, 0, 0, this.length);
      this.buffer = grown;
    }
    bytes.copy(this.buffer, this.length);
    this.length = end;
    if (this.length < this.need) return null;
    const parsed = parseClientHello(this.buffer, this.length);
    if (parsed.status === 'incomplete') {
      this.need = parsed.need;
      return null;
    }
    return parsed;
  }

  /** Every byte read: they go to the backend first. */
  bytes(): Buffer {
    return this.buffer.subarray(0, this.length);
  }
}
