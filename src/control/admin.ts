// What operators change at runtime (the stats socket's admin commands): backends added and
// deleted, weights, enable/disable/drain, counters reset. Invariants: every change that touches
// pool membership runs through the supervisor's one change queue and reaches the workers by the
// same publish() as a reload; an added backend comes in by the discovery path, exactly as a
// configured one would; a command that cannot be done changes nothing and says why; what must
// outlive a restart is recorded in the runtime state and saved.

import { parseBackend } from '../config/backend.ts';
import { ConfigError } from '../config/parse.ts';
import type { BackendConfig, Config, ListenEndpoint } from '../config/types.ts';
import type { Logger } from '../log.ts';
import { resetCounters } from '../shared/counters.ts';
import { MAX_BACKENDS } from '../shared/table.ts';
import type { AdminInterface, Outcome } from '../stats/commands.ts';
import type { Discovery } from './discovery.ts';
import { reaches, sameEndpoint } from './endpoints.ts';
import type { Frontend } from './frontend.ts';
import type { AdminChoice, Member, Pool, PoolChanges } from './pool.ts';
import type { RuntimeState } from './state.ts';
import { isNamed } from './state.ts';

/** What the admin commands need of the supervisor. */
export interface AdminContext {
  readonly log: Logger;
  readonly state: RuntimeState;
  readonly discovery: Discovery;
  pools(): readonly Pool[];
  frontends(): readonly Frontend[];
  /** The config as last loaded, before the runtime state and DNS. */
  loaded(): Config;
  stopping(): boolean;
  /** Runs a pool change after the ones before it. */
  serially<T>(change: () => Promise<T>): Promise<T>;
  /** Makes the pools' changes real in every worker. */
  publish(): Promise<unknown>;
  /** The config in force for a loaded one: runtime state, then DNS. */
  effective(loaded: Config, strict: boolean): Promise<Config>;
  /** The operators' admin states onto a pool's members. */
  applyAdminState(pool: Pool): void;
  /** Names to follow may have changed: schedule the next DNS round. */
  scheduleResolve(): void;
  /** Resets every connection to `slot` of `pool` in every worker; how many. */
  kill(pool: Pool, slot: number): Promise<number>;
  reload(source: string): Promise<Outcome>;
  upgrade(source: string): Promise<Outcome>;
  rotateTicketKeys(): Promise<Outcome>;
}

export class Admin implements AdminInterface {
  private readonly control: AdminContext;

  constructor(control: AdminContext) {
    this.control = control;
  }

  reload(): Promise<Outcome> {
    return this.control.reload('stats socket');
  }

  upgrade(): Promise<Outcome> {
    return this.control.upgrade('stats socket');
  }

  rotateTicketKeys(): Promise<Outcome> {
    return this.control.rotateTicketKeys();
  }

  showState(): unknown {
    return this.control.state.toJSON();
  }

  /** Zeroes every frontend's and every pool's cumulative counters. */
  resetCounters(): Outcome {
    for (const frontend of this.control.frontends()) resetCounters(frontend.counters);
    for (const pool of this.control.pools()) resetCounters(pool.counters);
    return { ok: true, message: 'counters reset' };
  }

  /** Resolves `POOL/BACKEND`; a string is the error to answer. */
  private find(ref: string): { pool: Pool; member: Member } | string {
    const slash = ref.indexOf('/');
    if (slash < 0) return `"${ref}" is not POOL/BACKEND`;
    const pool = this.pool(ref.slice(0, slash));
    if (typeof pool === 'string') return pool;
    const backendName = ref.slice(slash + 1);
    const member = pool.find(backendName);
    if (member === null) return `no backend "${backendName}" in pool "${pool.name}"`;
    return { pool, member };
  }

  /** The pool named `name` (a frontend with backends of its own has a pool of its name); a
   *  string is the error to answer. */
  private pool(name: string): Pool | string {
    const pool = this.control.pools().find((p) => p.name === name);
    if (pool !== undefined) return pool;
    const frontend = this.control.frontends().find((f) => f.name === name);
    return frontend === undefined
      ? `no pool "${name}"`
      : `frontend ${name} uses pool ${frontend.pool.name}: name the pool`;
  }

  /** `enable`, `disable`, `drain`: at once in every worker (a store to the shared table). */
  async setAdmin(ref: string, admin: AdminChoice): Promise<Outcome> {
    const found = this.find(ref);
    if (typeof found === 'string') return { ok: false, message: found };
    found.pool.setAdmin(found.member, admin);
    const state = this.control.state;
    state.admin(found.pool.name, found.member.config.name, admin === 'enabled' ? null : admin);
    return saved({ ok: true, message: `${ref} ${admin}` }, await state.save());
  }

  async setWeight(ref: string, weight: number): Promise<Outcome> {
    const found = this.find(ref);
    if (typeof found === 'string') return { ok: false, message: found };
    found.pool.setWeight(found.member, weight);
    // Maglev's table is built from the weights: every worker rebuilds it.
    if (found.pool.config.algorithm === 'maglev') {
      await this.control.serially(() => this.control.publish());
    }
    this.control.state.weight(found.pool.name, found.member.config.name, weight);
    return saved({ ok: true, message: `${ref} weight ${weight}` }, await this.control.state.save());
  }

  /**
   * `add backend POOL SPEC`: kept in the runtime state and brought in by the same path as a
   * configured backend (a hostname expands to its addresses and follows DNS, srv+NAME its SRV
   * targets), joining at once in every worker. A name that does not resolve changes nothing.
   */
  addBackend(poolName: string, spec: string): Promise<Outcome> {
    const control = this.control;
    return control.serially(async () => {
      if (control.stopping()) return { ok: false, message: 'stopping' };
      const pool = this.pool(poolName);
      if (typeof pool === 'string') return { ok: false, message: pool };
      let backend: BackendConfig;
      let found: BackendConfig[];
      try {
        backend = parseBackend(spec, 'add backend');
        found = await control.discovery.expandBackend(backend, 'add backend', true);
      } catch (err) {
        if (err instanceof ConfigError) return { ok: false, message: err.message };
        throw err;
      }
      const configured = control.state.apply(control.loaded());
      // Counted as the state file's backends are (state.ts): those an operator deleted are not.
      const staying =
        control.state.settle(configured).frontends.find((f) => f.pool === pool.name)?.backends
          .length ?? 0;
      const listeners = control.frontends().flatMap((f) => f.config.listen);
      const clash = clashOf(pool, listeners, backend, found, configured, staying);
      if (clash !== null) return { ok: false, message: clash };
      control.state.added(pool.name, backend);
      let changes: PoolChanges;
      try {
        const next = await control.effective(control.loaded(), false);
        const frontend = next.frontends.find((f) => f.pool === pool.name) ?? pool.config;
        const refused = pool.roomFor(frontend);
        if (refused !== null) throw new ConfigError('add backend', refused);
        changes = pool.reconfigure({ ...pool.config, backends: frontend.backends });
      } catch (err) {
        control.state.deleted(pool.name, backend.name);
        return { ok: false, message: (err as Error).message };
      }
      control.applyAdminState(pool);
      await control.publish();
      const unsaved = await control.state.save();
      // A name it brought in is followed from now on, like a configured one.
      control.scheduleResolve();
      control.log.info(
        {
          pool: pool.name,
          backend: backend.name,
          address: backend.text,
          joined: changes.added,
        },
        'backend added',
      );
      const ref = `${pool.name}/${backend.name}`;
      const message = pool.config.health.enabled
        ? `added ${ref} (takes connections once its first probe succeeds)`
        : `added ${ref}`;
      return saved({ ok: true, message }, unsaved);
    });
  }

  /**
   * `del backend POOL/BACKEND [now]`: no new connection at once; leaves when its last one
   * ends (`now`: resets them). A name DNS expanded deletes every backend found under it.
   */
  delBackend(poolName: string, name: string, now: boolean): Promise<Outcome> {
    const control = this.control;
    return control.serially(async () => {
      const pool = this.pool(poolName);
      if (typeof pool === 'string') return { ok: false, message: pool };
      const ref = `${pool.name}/${name}`;
      const members = pool.members().filter((m) => !m.leaving && isNamed(m.config.name, name));
      if (members.length === 0) {
        const leaving = pool.members().some((m) => isNamed(m.config.name, name));
        return {
          ok: false,
          message: leaving
            ? `${ref} is already leaving`
            : `no backend "${name}" in pool "${pool.name}"`,
        };
      }
      for (const member of members) pool.remove(member);
      await control.publish();
      let killed = 0;
      if (now) for (const member of members) killed += await control.kill(pool, member.index);
      control.state.deleted(pool.name, name);
      const unsaved = await control.state.save();
      const live = members.reduce((n, m) => n + Atomics.load(pool.table.active, m.index), 0);
      control.log.info(
        {
          pool: pool.name,
          backend: name,
          removed: members.map((m) => m.config.name),
          live,
          killed,
        },
        'backend deleted',
      );
      let message = live > 0 ? `${ref} draining (${live} live), then deleted` : `${ref} deleted`;
      if (now) message = `${ref} deleted (${killed} connections reset)`;
      return saved({ ok: true, message }, unsaved);
    });
  }
}

/** Why `backend` (resolving to `found`) cannot join `pool`, or null: an address or a name it
 *  already has. `configured` is the config with the runtime additions, before DNS. */
function clashOf(
  pool: Pool,
  listeners: readonly ListenEndpoint[],
  backend: BackendConfig,
  found: readonly BackendConfig[],
  configured: Config,
  staying: number,
): string | null {
  for (const b of found) {
    const listener = listeners.find((l) => reaches(b, l));
    if (listener !== undefined) {
      const address = b === backend ? backend.text : `${b.host}:${b.port}`;
      return `${address} is fulcrum's own listener ${listener.text}: a backend there would loop`;
    }
  }
  for (const member of pool.members()) {
    if (member.leaving) continue;
    const same = found.find((b) => sameEndpoint(b, member.config));
    if (same !== undefined) {
      const address = same === backend ? backend.text : `${same.host}:${same.port}`;
      return `${address} is already in pool ${pool.name} (as ${member.config.name})`;
    }
  }
  const frontend = configured.frontends.find((f) => f.pool === pool.name);
  if (frontend?.backends.some((b) => b.name === backend.name) || pool.find(backend.name)) {
    return `name ${backend.name} is already in pool ${pool.name}`;
  }
  // The limit as the state file's backends meet it (state.ts), before DNS; roomFor checks after.
  if (staying >= MAX_BACKENDS) {
    return `pool ${pool.name} has ${MAX_BACKENDS} backends already (the most it holds)`;
  }
  return null;
}

/**
 * A change that is live; when the state file could not be written (`unsaved`: why), the answer
 * is an error the caller can see: the change holds until a restart, which will not have it.
 */
function saved(outcome: Outcome, unsaved: string | null): Outcome {
  if (unsaved === null) return outcome;
  return {
    ok: false,
    message: `${outcome.message}: live, but not saved to the state file (${unsaved})`,
  };
}
