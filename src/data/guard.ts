// Protection at the edge, before any backend is contacted: allow/deny lists (net.BlockList), the
// peers trusted to send PROXY headers, and per-source limits (live connections, and new
// connections per second, per client address).
// Invariants: the per-source table is shared by every worker (Atomics over a SharedArrayBuffer),
// fixed in size (SOURCE_SLOTS entries, 1 MiB), and needs no sweep: an entry with no live
// connection and no recent connect is free to be taken by another address. Sources are told
// apart by a 32-bit hash of their address; two addresses that collide share a limit. When a
// neighbourhood of the table is full the client is let through untracked (fail open), counted.

import net from 'node:net';
import { parseCidr } from '../config/parse.ts';
import type { GuardConfig } from '../config/types.ts';
import { fnv1a } from '../core/hash.ts';
import { END } from '../shared/counters.ts';
import {
  COUNT,
  FIELDS,
  KEY,
  LIVE,
  PREVIOUS,
  PROBES,
  releaseSource,
  SECOND,
  SOURCE_SLOTS,
} from '../shared/sources.ts';

/** admit() found no room to track the source: let through, not tracked. */
export const UNTRACKED = -1;
/** admit() refused the client; `reason` says why. */
export const REFUSED = -2;

export class Guard {
  private readonly allow: net.BlockList | null;
  private readonly deny: net.BlockList | null;
  private readonly proxyFrom: net.BlockList | null;
  /** Whether accept-proxy peers are checked at all: if not, their accept reads no address. */
  readonly checksProxyPeers: boolean;
  private readonly maxConns: number;
  private readonly rate: number;
  private readonly table: Int32Array;
  /** Why the last admit() refused: an END reason. */
  reason: number = END.DENIED;

  /** `sources` may be null only when there is no per-source limit. */
  constructor(config: GuardConfig, sources: SharedArrayBuffer | null) {
    this.allow = config.allow.length > 0 ? blockList(config.allow) : null;
    this.deny = config.deny.length > 0 ? blockList(config.deny) : null;
    this.proxyFrom = config.proxyFrom.length > 0 ? blockList(config.proxyFrom) : null;
    this.checksProxyPeers = this.proxyFrom !== null;
    this.maxConns = config.maxConnsPerSource;
    this.rate = config.connRatePerSource;
    this.table = sources === null ? new Int32Array(0) : new Int32Array(sources);
  }

  /** True when the frontend has anything for a guard to do. */
  static needed(config: GuardConfig): boolean {
    return (
      config.allow.length > 0 ||
      config.deny.length > 0 ||
      config.proxyFrom.length > 0 ||
      config.maxConnsPerSource > 0 ||
      config.connRatePerSource > 0
    );
  }

  /** Whether the real peer of an accept-proxy listener may speak for a client (a PROXY header). */
  trustsProxy(address: string, family: string): boolean {
    if (this.proxyFrom === null) return true;
    const [plain, type] = plainAddress(address, family);
    return this.proxyFrom.check(plain, type);
  }

  /**
   * Checks a new client. Returns REFUSED (see `reason`), UNTRACKED, or the table entry holding its
   * live count, to be given back with release() when the connection ends.
   */
  admit(address: string, family: string): number {
    const [plain, type] = plainAddress(address, family);
    if (this.deny?.check(plain, type) === true || this.allow?.check(plain, type) === false) {
      this.reason = END.DENIED;
      return REFUSED;
    }
    if ((this.maxConns === 0 && this.rate === 0) || this.table.length === 0) return UNTRACKED;
    const ms = Date.now();
    const second = Math.floor(ms / 1000) | 0;
    // The key as the table's signed cells hold it: fnv1a is unsigned, and half of all addresses
    // hash to 2^31 or more, which a cell reads back as negative (then the key never matched, and
    // those addresses had no limit at all). 0 marks a free entry.
    const entry = this.find(fnv1a(plain) | 0 || 1, second);
    if (entry < 0) return UNTRACKED;
    const t = this.table;
    const base = entry * FIELDS;
    if (this.rate > 0) {
      const seen = Atomics.load(t, base + SECOND);
      if (seen !== second && Atomics.compareExchange(t, base + SECOND, seen, second) === seen) {
        // A new second: last second's count weighs on this one as it slides out (below). Taken
        // and zeroed in one step, so a connection another worker counts meanwhile is not lost.
        const last = Atomics.exchange(t, base + COUNT, 0);
        Atomics.store(t, base + PREVIOUS, seen === second - 1 ? last : 0);
      }
      const previous = Atomics.load(t, base + PREVIOUS);
      const count = Atomics.add(t, base + COUNT, 1) + 1;
      // A sliding one-second window, estimated from two fixed ones.
      if (previous * (1 - (ms % 1000) / 1000) + count > this.rate) {
        this.reason = END.SOURCE_LIMIT;
        return REFUSED;
      }
    }
    if (this.maxConns > 0) {
      const live = Atomics.add(t, base + LIVE, 1) + 1;
      if (live > this.maxConns) {
        Atomics.sub(t, base + LIVE, 1);
        this.reason = END.SOURCE_LIMIT;
        return REFUSED;
      }
      return entry;
    }
    return UNTRACKED;
  }

  /** The connection admitted with this entry has ended. */
  release(entry: number): void {
    releaseSource(this.table, entry);
  }

  /** The entry for `key`: its own, a free one claimed for it (free: idle as of `second`), or -1
   *  when none is near. */
  private find(key: number, second: number): number {
    const t = this.table;
    let home = key & (SOURCE_SLOTS - 1);
    for (let k = 0; k < PROBES; k++) {
      const base = home * FIELDS;
      const current = Atomics.load(t, base + KEY);
      if (current === key) return home;
      // Free: never used, or idle (no live connection, no connect in the last two seconds).
      const idle =
        current === 0 ||
        (Atomics.load(t, base + LIVE) === 0 && second - Atomics.load(t, base + SECOND) > 1);
      if (idle) {
        const was = Atomics.compareExchange(t, base + KEY, current, key);
        // Nothing else is reset: another worker may count this address on the entry from the
        // moment the key is set, and a reset after that would wipe its counts (a burst across two
        // workers got twice the rate through). None is needed: an idle entry holds no live
        // connection, and its stale second makes the first admit start the rate window afresh.
        if (was === current) return home;
        // Another worker claimed it a moment ago, for this very address: share it, rather than
        // claim a second entry whose count would let the address past its limit.
        if (was === key) return home;
      }
      home = (home + 1) & (SOURCE_SLOTS - 1);
    }
    return -1;
  }
}

/** A dual-stack listener shows IPv4 clients as ::ffff:a.b.c.d: they are checked as IPv4. */
function plainAddress(address: string, family: string): [string, 'ipv4' | 'ipv6'] {
  if (family === 'IPv6' && address.startsWith('::ffff:') && address.includes('.')) {
    return [address.slice(7), 'ipv4'];
  }
  return [address, family === 'IPv6' ? 'ipv6' : 'ipv4'];
}

function blockList(cidrs: readonly string[]): net.BlockList {
  const list = new net.BlockList();
  for (const cidr of cidrs) {
    const { address, prefix, type } = parseCidr(cidr);
    list.addSubnet(address, prefix, type);
  }
  return list;
}
