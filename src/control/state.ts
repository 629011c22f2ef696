// The runtime state: what operators changed over the stats socket (backends added or deleted,
// weights set, backends disabled or drained), kept in a file so it outlives reloads and restarts,
// like HAProxy's server-state-file. Invariants: the file is replaced atomically (a temporary file
// created exclusively under a random name, fsync, rename) after every change, one write at a
// time; it records only changes, so a config edit still takes effect for everything the operator
// did not touch; a file that cannot be read as a whole is ignored (and said so once), never
// fatal, and never overwritten: it is moved aside before the first save; it is read as the config
// file is (a regular file, bounded in size and time); an added backend joins only past the checks
// `add backend` makes (no loop into a listener, no address twice, the backend limit), and one that
// fails them is logged and left out; names are Map keys, never plain-object keys.

import { randomBytes } from 'node:crypto';
import { lstat, mkdir, open, rename, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { formatBackend, parseBackend } from '../config/backend.ts';
import { FileReadError, readTextFile } from '../config/read.ts';
import type { BackendConfig, Config, FrontendConfig } from '../config/types.ts';
import type { Logger } from '../log.ts';
import { MAX_BACKENDS } from '../shared/table.ts';
import { reaches, sameEndpoint } from './endpoints.ts';
import type { StateData } from './state-schema.ts';

/** The largest state file read: 256 pools of 256 added backends with every option fit. */
export const MAX_STATE_BYTES = 16 * 1024 * 1024;
/** How long reading it may take (a hung filesystem): start goes on without it after that. */
export const STATE_READ_TIMEOUT_MS = 5000;

/** An operator's admin state for a backend; absent means enabled. */
export type AdminState = 'disabled' | 'draining';

/** One pool's changes; every map is keyed by backend name. */
interface PoolState {
  added: string[];
  deleted: string[];
  weights: Map<string, number>;
  admin: Map<string, AdminState>;
}

/** The file as written: the maps as JSON objects (Object.fromEntries keeps every name own). */
export interface StateFile {
  version: 3;
  pools: Record<
    string,
    {
      added: string[];
      deleted: string[];
      weights: Record<string, number>;
      admin: Record<string, AdminState>;
    }
  >;
}

function emptyPool(): PoolState {
  return { added: [], deleted: [], weights: new Map(), admin: new Map() };
}

export class RuntimeState {
  /** Where the state is kept; null: in memory only (no --state-file). */
  readonly path: string | null;
  private readonly log: Logger;
  /** By pool name (a frontend with backends of its own: its name). */
  private pools = new Map<string, PoolState>();
  /** Saves run one after another, so the file always ends with the latest state. */
  private saving: Promise<void> = Promise.resolve();
  /** The file at `path` could not be read: it is moved aside before anything replaces it. */
  private unreadable = false;
  /** Added backends left out, as last logged (`FRONTEND SPEC: why`): each logged once. */
  private refused = new Set<string>();

  constructor(path: string | null, log: Logger) {
    this.path = path;
    this.log = log;
  }

  /** Reads the file: a missing one is an empty state; a corrupt one is logged and ignored. */
  async load(): Promise<void> {
    if (this.path === null) return;
    let text: string;
    try {
      text = await readTextFile(this.path, 'state file', MAX_STATE_BYTES, STATE_READ_TIMEOUT_MS);
    } catch (err) {
      if (!(err instanceof FileReadError)) throw err;
      if (err.reason === 'ENOENT') return;
      this.ignore(`cannot be read (${err.reason})`);
      return;
    }
    // The schema (and zod, ~100 ms to load) only when there is a file to read.
    const { fileSchema, schemaError } = await import('./state-schema.ts');
    let data: StateData;
    try {
      data = fileSchema.parse(JSON.parse(text));
      // Every added backend must still be a valid backend, as `add backend` checked it.
      for (const [pool, state] of data.pools) {
        for (const spec of state.added) parseBackend(spec, `${pool}: added`);
      }
    } catch (err) {
      const reason = schemaError(err) ?? (err as Error).message;
      this.ignore(`is not a valid state file (${reason.split('\n')[0]})`);
      return;
    }
    this.pools = data.pools;
    this.log.info({ stateFile: this.path }, 'runtime state loaded');
  }

  private ignore(reason: string): void {
    this.unreadable = true;
    this.log.warn(
      { stateFile: this.path },
      `state file ${reason}: starting with the config alone (it is moved aside before the first save)`,
    );
  }

  /**
   * The config with the backends operators added put in (unless the config names them itself:
   * then the config's address stands). Before DNS: an added hostname is expanded like any other.
   */
  apply(config: Config): Config {
    const listeners = config.frontends.flatMap((f) => f.listen);
    const refused = new Set<string>();
    const frontends = config.frontends.map((frontend) => {
      const state = this.pools.get(frontend.pool);
      if (state === undefined) return frontend;
      const backends = [...frontend.backends];
      // What the checks see: the backends that stay (settle() leaves out the deleted ones).
      const staying = backends.filter((b) => !state.deleted.some((name) => isNamed(b.name, name)));
      for (const spec of state.added) {
        const backend = parseBackend(spec, `${frontend.pool}: added`);
        if (backends.some((b) => b.name === backend.name)) continue;
        const why = refusal(frontend, staying, backend, listeners);
        if (why === null) {
          backends.push(backend);
          staying.push(backend);
        } else {
          refused.add(`${frontend.pool} ${spec}: ${why}`);
        }
      }
      return { ...frontend, backends };
    });
    for (const line of refused) {
      if (this.refused.has(line)) continue;
      const at = line.indexOf(' ');
      this.log.error(
        { stateFile: this.path, pool: line.slice(0, at) },
        `state file: added backend ${line.slice(at + 1)}; left out`,
      );
    }
    this.refused = refused;
    return { ...config, frontends };
  }

  /**
   * After DNS: deleted backends left out and set weights put over the config's, by name, so
   * they hold for backends DNS found too (`NAME@ADDRESS`). Admin states go to the pools (adminOf).
   */
  settle(config: Config): Config {
    return {
      ...config,
      frontends: config.frontends.map((frontend) => {
        const state = this.pools.get(frontend.pool);
        if (state === undefined) return frontend;
        return {
          ...frontend,
          backends: frontend.backends
            .filter((b) => !state.deleted.some((name) => isNamed(b.name, name)))
            .map((b) => {
              const weight = state.weights.get(b.name);
              return weight === undefined ? b : { ...b, weight };
            }),
        };
      }),
    };
  }

  adminOf(pool: string, backend: string): AdminState | undefined {
    return this.pools.get(pool)?.admin.get(backend);
  }

  added(pool: string, backend: BackendConfig): void {
    const state = this.pool(pool);
    state.deleted = state.deleted.filter((name) => name !== backend.name);
    state.added = state.added.filter((spec) => nameOf(spec) !== backend.name);
    state.added.push(formatBackend(backend));
    state.weights.delete(backend.name);
    state.admin.delete(backend.name);
  }

  /** A backend an operator deleted: forgotten if they had added it, else kept out from now on
   *  (whether the config or DNS brings it). */
  deleted(pool: string, name: string): void {
    const state = this.pool(pool);
    const added = state.added.some((spec) => nameOf(spec) === name);
    state.added = state.added.filter((spec) => nameOf(spec) !== name);
    if (!added && !state.deleted.includes(name)) state.deleted.push(name);
    state.weights.delete(name);
    state.admin.delete(name);
  }

  weight(pool: string, name: string, weight: number): void {
    const state = this.pool(pool);
    const at = state.added.findIndex((spec) => nameOf(spec) === name);
    if (at >= 0) {
      state.added[at] = formatBackend({ ...parseBackend(state.added[at], pool), weight });
    } else {
      state.weights.set(name, weight);
    }
  }

  admin(pool: string, name: string, admin: AdminState | null): void {
    const state = this.pool(pool);
    if (admin === null) state.admin.delete(name);
    else state.admin.set(name, admin);
  }

  private pool(name: string): PoolState {
    let state = this.pools.get(name);
    if (state === undefined) {
      state = emptyPool();
      this.pools.set(name, state);
    }
    return state;
  }

  /**
   * Moves the file this process could not read to `PATH.unreadable-TIMESTAMP`, so what it held is
   * kept for the operator (or the newer fulcrum that wrote it). Resolves with why it could not be
   * moved (then nothing is written over it), or null.
   */
  private async moveAside(path: string): Promise<string | null> {
    const aside = `${path}.unreadable-${new Date().toISOString().replace(/[:.]/g, '-')}`;
    try {
      // Only a file holds something to keep: a FIFO or a directory there is left as it is.
      if (!(await lstat(path)).isFile()) {
        this.unreadable = false;
        return null;
      }
      await rename(path, aside);
      this.log.warn(
        { stateFile: path, movedTo: aside },
        'state file it could not read moved aside',
      );
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      if (code !== 'ENOENT') {
        this.log.error(
          { stateFile: path, reason: code },
          'cannot move the unreadable state file aside: not saving over it',
        );
        return code;
      }
    }
    this.unreadable = false;
    return null;
  }

  toJSON(): StateFile {
    const pools = [...this.pools].map(([name, state]) => [
      name,
      {
        added: state.added,
        deleted: state.deleted,
        weights: Object.fromEntries(state.weights),
        admin: Object.fromEntries(state.admin),
      },
    ]);
    return { version: 3, pools: Object.fromEntries(pools) };
  }

  /**
   * Writes the state: a temporary file beside the real one (created exclusively, with a random
   * name, so nothing planted there in advance is followed or overwritten), fsynced, renamed over
   * it. Resolves with why it could not be saved (logged too), or null once it is.
   */
  save(): Promise<string | null> {
    const path = this.path;
    if (path === null) return Promise.resolve(null);
    const text = `${JSON.stringify(this.toJSON(), null, 2)}\n`;
    const saved = this.saving.then(async (): Promise<string | null> => {
      if (this.unreadable) {
        const aside = await this.moveAside(path);
        if (aside !== null) return aside;
      }
      const temporary = `${path}.${randomBytes(6).toString('hex')}.tmp`;
      let created = false;
      try {
        await mkdir(dirname(path), { recursive: true });
        const file = await open(temporary, 'wx', 0o600);
        created = true;
        try {
          await file.writeFile(text);
          await file.sync();
        } finally {
          await file.close();
        }
        await rename(temporary, path);
        created = false;
        // The rename itself is durable only once the directory is synced.
        const dir = await open(dirname(path), 'r');
        try {
          await dir.sync();
        } finally {
          await dir.close();
        }
        return null;
      } catch (err) {
        const reason = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
        this.log.error({ stateFile: path, reason }, 'cannot save the runtime state');
        if (created) await unlink(temporary).catch(() => {});
        return reason;
      }
    });
    this.saving = saved.then(() => {});
    return saved;
  }
}

/**
 * Why an added `backend` cannot join the pool of `frontend`, whose backends so far are `backends`, or null:
 * the checks `add backend` makes (admin.ts), on the config.
 */
function refusal(
  frontend: FrontendConfig,
  backends: readonly BackendConfig[],
  backend: BackendConfig,
  listeners: FrontendConfig['listen'],
): string | null {
  const listener = listeners.find((l) => reaches(backend, l));
  if (listener !== undefined) {
    return `${backend.text} is fulcrum's own listener ${listener.text}: a backend there would loop`;
  }
  const same = backends.find((b) => sameEndpoint(b, backend));
  if (same !== undefined) {
    return `${backend.text} is already in pool ${frontend.pool} (as ${same.name})`;
  }
  if (backends.length >= MAX_BACKENDS) {
    return `pool ${frontend.pool} has ${MAX_BACKENDS} backends already (the most it holds)`;
  }
  return null;
}

/** The name a spec gives its backend. */
function nameOf(spec: string): string {
  return parseBackend(spec, 'state').name;
}

/**
 * Whether a backend named `backend` is what `name` deletes: that very backend, or, for a name
 * DNS expands (`db.internal:5432`), every backend found under it (`db.internal:5432@10.0.0.1`).
 */
export function isNamed(backend: string, name: string): boolean {
  return backend === name || backend.startsWith(`${name}@`);
}
