// Discovery: backends given by hostname (every address it has) or by DNS SRV name
// (`srv+_pg._tcp.example.internal`: each target's host, port and weight), resolved at start, at
// every reload and again every --resolve-interval (sooner when the records' TTL says so).
// Invariants: the data path never waits for DNS (resolution happens here, on the main thread,
// and reaches workers as an ordinary pool change); a name that stops resolving keeps its last
// good addresses, and that is logged once, not every round; a discovered backend is named
// `NAME@ADDRESS` (`NAME@ADDRESS:PORT` for SRV), stable for as long as the address stays.

import dns from 'node:dns/promises';
import { isIP } from 'node:net';
import { ConfigError } from '../config/parse.ts';
import type { BackendConfig, Config, FrontendConfig } from '../config/types.ts';
import type { Logger } from '../log.ts';
import { createLogger } from '../log.ts';
import { MAX_BACKENDS, MAX_WEIGHT } from '../shared/table.ts';
import type { RuntimeState } from './state.ts';

/** What a name resolved to: addresses (with the port, weight and tier SRV gives). */
interface Target {
  readonly address: string;
  readonly port: number;
  /** From SRV; null: the backend's own. */
  readonly weight: number | null;
  /** From SRV priority: a target of a worse priority than the best is a backup. */
  readonly backup: boolean;
}

interface Answer {
  readonly targets: Target[];
  /** Seconds until the records expire; null when the resolver does not say (getaddrinfo). */
  readonly ttl: number | null;
}

/** A resolution failure that does not stop a refresh: the caller keeps what it had. */
class ResolveError extends Error {}

/** An answer with more addresses than a frontend may have backends: refused like a failure. */
class TooManyAddresses extends Error {
  readonly count: number;
  constructor(count: number) {
    super(`${count} addresses; a frontend has at most ${MAX_BACKENDS} backends`);
    this.count = count;
  }
}

export class Discovery {
  private readonly resolver: dns.Resolver | null;
  private readonly log: Logger;
  /** The last good answer per query, kept while a name fails. */
  private readonly lastGood = new Map<string, Answer>();
  /** Queries failing now: logged once when they start failing, once when they recover. */
  private readonly failing = new Set<string>();
  /** The shortest TTL seen in the last expansion, in seconds; null when none was given. */
  shortestTtl: number | null = null;

  /** `servers`: `HOST:PORT` name servers to ask; empty: the system's (getaddrinfo, resolv.conf). */
  constructor(servers: readonly string[], log: Logger) {
    this.log = log;
    if (servers.length === 0) {
      this.resolver = null;
    } else {
      this.resolver = new dns.Resolver({ timeout: 2000, tries: 2 });
      this.resolver.setServers([...servers]);
    }
  }

  /**
   * The config in force for a loaded one: what operators added (before DNS, so an added hostname
   * expands like any other), then DNS, then what they deleted and the weights they set (which
   * may name backends DNS found). The one path for start, reload, refresh and `add backend`.
   */
  async resolve(loaded: Config, state: RuntimeState, strict: boolean): Promise<Config> {
    return state.settle(await this.expand(state.apply(loaded), strict));
  }

  /** True when a config has anything to resolve. */
  static needed(config: Config): boolean {
    return config.frontends.some((f) => f.backends.some((b) => isIP(b.host) === 0));
  }

  /**
   * The config with every hostname and SRV backend replaced by one backend per address.
   * `strict`: a name that never resolved is a ConfigError (start, reload); otherwise it
   * contributes nothing until it does (a refresh).
   */
  async expand(config: Config, strict: boolean): Promise<Config> {
    this.shortestTtl = null;
    const frontends: FrontendConfig[] = [];
    for (const frontend of config.frontends) {
      const backends: BackendConfig[] = [];
      for (const backend of frontend.backends) {
        const where = `frontend ${frontend.name}: backend ${backend.name}`;
        backends.push(...(await this.expandBackend(backend, where, strict)));
      }
      frontends.push({ ...frontend, backends });
    }
    return { ...config, frontends };
  }

  /** One backend as it stands now: itself (an address), or one backend per address its name
   *  has. `strict`: a name that never resolved is a ConfigError naming `where`. */
  async expandBackend(
    backend: BackendConfig,
    where: string,
    strict: boolean,
  ): Promise<BackendConfig[]> {
    if (isIP(backend.host) !== 0) return [backend];
    const answer = await this.answer(backend, where, strict);
    const seen = new Set<string>();
    const backends: BackendConfig[] = [];
    for (const target of answer.targets) {
      const port = backend.srv ? target.port : backend.port;
      const host = target.address.includes(':') ? `[${target.address}]` : target.address;
      const name = backend.srv ? `${backend.name}@${host}:${port}` : `${backend.name}@${host}`;
      if (seen.has(name)) continue;
      seen.add(name);
      backends.push({
        ...backend,
        host: target.address,
        port,
        name,
        weight: target.weight ?? backend.weight,
        backup: backend.backup || target.backup,
        srv: false,
      });
    }
    return backends;
  }

  private async answer(backend: BackendConfig, where: string, strict: boolean): Promise<Answer> {
    const key = `${backend.srv ? 'srv' : 'host'} ${backend.host}`;
    try {
      const answer = backend.srv
        ? await this.srv(backend.host)
        : await this.addresses(backend.host);
      if (answer.targets.length === 0) throw new ResolveError('no address');
      if (answer.targets.length > MAX_BACKENDS) throw new TooManyAddresses(answer.targets.length);
      this.lastGood.set(key, answer);
      if (this.failing.delete(key)) {
        this.log.info({ name: backend.host }, 'name resolves again');
      }
      if (answer.ttl !== null) {
        this.shortestTtl = Math.min(this.shortestTtl ?? answer.ttl, answer.ttl);
      }
      return answer;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      const last = this.lastGood.get(key);
      const tooMany = err instanceof TooManyAddresses;
      if (last === undefined && strict) {
        throw new ConfigError(
          where,
          tooMany
            ? `${backend.host} has ${err.message}`
            : `cannot resolve ${backend.host} (${code})`,
        );
      }
      if (!this.failing.has(key)) {
        this.failing.add(key);
        const kept = last?.targets.map((t) => t.address) ?? [];
        if (tooMany) {
          this.log.warn(
            { name: backend.host, addresses: err.count, limit: MAX_BACKENDS, kept },
            'discovery: too many addresses for one frontend: keeping the last good set',
          );
        } else {
          this.log.warn(
            { name: backend.host, reason: code, kept },
            'name does not resolve: keeping its last good addresses',
          );
        }
      }
      return last ?? { targets: [], ttl: null };
    }
  }

  /** Every address of `host`: A and AAAA from the configured servers, or getaddrinfo. */
  private async addresses(host: string): Promise<Answer> {
    if (this.resolver === null) {
      const found = await dns.lookup(host, { all: true });
      return {
        targets: found.map((f) => ({ address: f.address, port: 0, weight: null, backup: false })),
        ttl: null,
      };
    }
    const [four, six] = await Promise.allSettled([
      this.resolver.resolve4(host, { ttl: true }),
      this.resolver.resolve6(host, { ttl: true }),
    ]);
    const records = [
      ...(four.status === 'fulfilled' ? four.value : []),
      ...(six.status === 'fulfilled' ? six.value : []),
    ];
    if (records.length === 0) {
      throw four.status === 'rejected' ? four.reason : new ResolveError('no address');
    }
    return {
      targets: records.map((r) => ({ address: r.address, port: 0, weight: null, backup: false })),
      ttl: Math.min(...records.map((r) => r.ttl)),
    };
  }

  /** SRV targets, each resolved to its addresses; the best priority is normal, worse are backups. */
  private async srv(name: string): Promise<Answer> {
    const records = await (this.resolver ?? dns).resolveSrv(name);
    const best = Math.min(...records.map((r) => r.priority));
    const targets: Target[] = [];
    let ttl: number | null = null;
    for (const record of records) {
      const answer = await this.addresses(record.name);
      if (answer.ttl !== null) ttl = Math.min(ttl ?? answer.ttl, answer.ttl);
      for (const target of answer.targets) {
        targets.push({
          address: target.address,
          port: record.port,
          // SRV weights run 0..65535; 0 means "no preference": the least weight here.
          weight: Math.min(MAX_WEIGHT, Math.max(1, record.weight)),
          backup: record.priority > best,
        });
      }
    }
    return { targets, ttl };
  }
}

/** Resolves every hostname and SRV backend once (`fulcrum check`); a name that does not is a
 *  ConfigError. */
export function resolveConfig(config: Config): Promise<Config> {
  return new Discovery(config.resolvers, createLogger('silent', 'json')).expand(config, true);
}
