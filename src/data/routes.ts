// Which frontend takes a client on a listen address, in one worker. Most addresses belong to one
// frontend and nothing is read before the pick. Frontends that share an address choose clients by
// TLS server name (serverNames), by source network (sources), or both: where a name is involved
// (or one frontend hashes by it, hashKey sni) the address's Route reads the client's ClientHello
// first (data/client-hello.ts); where only sources are, the client's address decides at accept.
// Invariants: a Route is immutable (a reload builds new ones; a client mid-inspection keeps the
// one it arrived on); an exact name beats a wildcard, and a name beats no name; among frontends
// equal on the name, the most specific source network wins, and a frontend without sources takes
// the rest; every byte read here goes to the backend.

import type { FrontendConfig } from '../config/types.ts';
import type { HelloParse } from './client-hello.ts';
import { MAX_HELLO_BYTES, parseClientHello } from './client-hello.ts';
import type { Network } from './networks.ts';
import { inNetwork, parseAddress, parseNetwork } from './networks.ts';

/** What a Route needs of a frontend: its settings (the data path's Frontend). */
export interface Routed {
  readonly config: FrontendConfig;
}

/** A frontend a name (or no name) may lead to, with its networks, most specific first (none: it
 *  takes any client the others do not). */
interface Candidate<F> {
  readonly frontend: F;
  readonly networks: readonly Network[];
}

export class Route<F extends Routed = Routed> {
  /** Frontends by exact server name, and by what a `*.` wildcard stands over (`example.com`). */
  private readonly exact = new Map<string, Candidate<F>[]>();
  private readonly wildcard = new Map<string, Candidate<F>[]>();
  /** Frontends without serverNames: they take clients no name leads elsewhere. */
  private readonly nameless: Candidate<F>[] = [];
  /** Who admits clients here (limits, allow/deny, PROXY header, timeouts: the build makes every
   *  frontend on the address agree on them) and counts the ones no frontend takes: the frontend
   *  with neither serverNames nor sources, else the first frontend listing the address. */
  readonly door: F;
  /** Whether clients' ClientHellos are read here. */
  readonly inspects: boolean;
  /** Whether a client's address may decide which frontend takes it. */
  readonly bySource: boolean;
  readonly acceptProxy: boolean;

  /** `frontends`: every frontend listing the address, in config order (at least one). */
  constructor(frontends: readonly F[], acceptProxy: boolean) {
    let fallback: F | null = null;
    for (const frontend of frontends) {
      const { serverNames, sources } = frontend.config;
      const candidate = { frontend, networks: networksOf(sources) };
      if (serverNames.length === 0) {
        this.nameless.push(candidate);
        if (sources.length === 0) fallback ??= frontend;
      }
      for (const name of serverNames) {
        const [map, key] = name.startsWith('*.')
          ? [this.wildcard, name.slice(2)]
          : [this.exact, name];
        const list = map.get(key) ?? [];
        list.push(candidate);
        map.set(key, list);
      }
    }
    this.door = fallback ?? frontends[0];
    this.inspects = frontends.some(
      (f) =>
        f.config.serverNames.length > 0 ||
        (f.config.hashKey === 'sni' && f.config.algorithm === 'maglev'),
    );
    this.bySource = frontends.some((f) => f.config.sources.length > 0);
    this.acceptProxy = acceptProxy;
  }

  /**
   * The frontend for a client asking for `name` (lowercased; null: none, or not TLS) from
   * `address` (null: not read, where no frontend has sources), or null when none takes it.
   */
  match(name: string | null, address: string | null): F | null {
    const known = address !== null && parseAddress(address);
    if (name !== null) {
      const exact = this.exact.get(name);
      const byExact = exact === undefined ? null : choose(exact, known);
      if (byExact !== null) return byExact;
      const dot = name.indexOf('.');
      const wildcard = dot > 0 ? this.wildcard.get(name.slice(dot + 1)) : undefined;
      const byWildcard = wildcard === undefined ? null : choose(wildcard, known);
      if (byWildcard !== null) return byWildcard;
    }
    return choose(this.nameless, known);
  }
}

/** Of frontends equal on the name, the one with the most specific network holding the client
 *  (`known`: its address is the one parseAddress() last read), else the one without networks;
 *  null when neither. */
function choose<F>(candidates: readonly Candidate<F>[], known: boolean): F | null {
  let best: F | null = null;
  let bestPrefix = -1;
  for (const { frontend, networks } of candidates) {
    if (networks.length === 0) {
      if (best === null) best = frontend;
      continue;
    }
    if (!known) continue;
    for (const network of networks) {
      if (network.prefix <= bestPrefix) break;
      if (inNetwork(network)) {
        best = frontend;
        bestPrefix = network.prefix;
        break;
      }
    }
  }
  return best;
}

/** A frontend's source networks, most specific first. */
function networksOf(sources: readonly string[]): Network[] {
  return sources.map(parseNetwork).sort((a, b) => b.prefix - a.prefix);
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
