// The runtime state: what operators changed over the stats socket (backends added or deleted,
// weights set, backends disabled or drained), kept in a file so it outlives reloads and restarts,
// like HAProxy's server-state-file. Invariants: the file is replaced atomically (temporary file,
// fsync, rename) after every change, one write at a time; it records only changes, so a config
// edit still takes effect for everything the operator did not touch; a file that cannot be read
// as a whole is ignored (and said so once), never fatal.

import { mkdir, open, readFile, rename, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { z } from 'zod';
import type { BackendConfig, Config } from '../config.ts';
import { checkName, MAX_MAXCONN, parseBackend } from '../config.ts';
import { MAX_WEIGHT } from '../core/table.ts';
import type { Logger } from '../log.ts';

/** An operator's admin state for a backend; absent means enabled. */
export type AdminState = 'disabled' | 'draining';

const addedSchema = z.strictObject({
  address: z.string(),
  name: z.string(),
  weight: z.number().int().min(0).max(MAX_WEIGHT),
  backup: z.boolean(),
  maxconn: z.number().int().min(0).max(MAX_MAXCONN),
  slowstartMs: z.number().int().min(0).max(2_147_483_647).default(0),
  sendProxy: z.union([z.literal(-1), z.literal(0), z.literal(1), z.literal(2)]).default(-1),
});

const frontendSchema = z.strictObject({
  added: z.array(addedSchema),
  deleted: z.array(z.string()),
  weights: z.record(z.string(), z.number().int().min(0).max(MAX_WEIGHT)),
  admin: z.record(z.string(), z.enum(['disabled', 'draining'])),
});

const fileSchema = z.strictObject({
  version: z.literal(1),
  frontends: z.record(z.string(), frontendSchema),
});

type FrontendState = z.infer<typeof frontendSchema>;
export type StateFile = z.infer<typeof fileSchema>;

function emptyFrontend(): FrontendState {
  return { added: [], deleted: [], weights: {}, admin: {} };
}

export class RuntimeState {
  /** Where the state is kept; null: in memory only (no --state-file). */
  readonly path: string | null;
  private readonly log: Logger;
  private frontends = new Map<string, FrontendState>();
  /** Saves run one after another, so the file always ends with the latest state. */
  private saving: Promise<void> = Promise.resolve();

  constructor(path: string | null, log: Logger) {
    this.path = path;
    this.log = log;
  }

  /** Reads the file: a missing one is an empty state; a corrupt one is logged and ignored. */
  async load(): Promise<void> {
    if (this.path === null) return;
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return;
      this.ignore(`cannot be read (${code ?? 'error'})`);
      return;
    }
    let data: StateFile;
    try {
      data = fileSchema.parse(JSON.parse(text));
      // Every added backend must still be a valid backend, as `add backend` checked it.
      for (const [frontend, state] of Object.entries(data.frontends)) {
        for (const added of state.added) toBackend(added, `${frontend}: ${added.name}`);
      }
    } catch (err) {
      const reason =
        err instanceof z.ZodError
          ? (err.issues[0]?.message ?? 'not a state file')
          : (err as Error).message;
      this.ignore(`is not a valid state file (${reason.split('\n')[0]})`);
      return;
    }
    this.frontends = new Map(Object.entries(data.frontends));
    this.log.info({ stateFile: this.path }, 'runtime state loaded');
  }

  private ignore(reason: string): void {
    this.log.warn({ stateFile: this.path }, `state file ${reason}: starting with the config alone`);
  }

  /**
   * The config with the backends operators added put in (unless the config names them itself:
   * then the config's address stands). Before DNS: an added hostname is expanded like any other.
   */
  apply(config: Config): Config {
    return {
      ...config,
      frontends: config.frontends.map((frontend) => {
        const state = this.frontends.get(frontend.name);
        if (state === undefined) return frontend;
        const backends = [...frontend.backends];
        for (const added of state.added) {
          if (!backends.some((b) => b.name === added.name)) {
            backends.push(toBackend(added, `${frontend.name}: ${added.name}`));
          }
        }
        return { ...frontend, backends };
      }),
    };
  }

  /**
   * After DNS: deleted backends left out and set weights put over the config's, by name, so
   * they hold for backends DNS found too (`NAME@ADDRESS`). Admin states go to the pools (adminOf).
   */
  settle(config: Config): Config {
    return {
      ...config,
      frontends: config.frontends.map((frontend) => {
        const state = this.frontends.get(frontend.name);
        if (state === undefined) return frontend;
        return {
          ...frontend,
          backends: frontend.backends
            .filter((b) => !state.deleted.includes(b.name))
            .map((b) =>
              state.weights[b.name] === undefined ? b : { ...b, weight: state.weights[b.name] },
            ),
        };
      }),
    };
  }

  adminOf(frontend: string, backend: string): AdminState | undefined {
    return this.frontends.get(frontend)?.admin[backend];
  }

  added(frontend: string, backend: BackendConfig): void {
    const state = this.frontend(frontend);
    state.deleted = state.deleted.filter((name) => name !== backend.name);
    state.added = state.added.filter((b) => b.name !== backend.name);
    state.added.push({
      address: backend.text,
      name: backend.name,
      weight: backend.weight,
      backup: backend.backup,
      maxconn: backend.maxconn,
      slowstartMs: backend.slowstartMs,
      sendProxy: backend.sendProxy,
    });
    delete state.weights[backend.name];
    delete state.admin[backend.name];
  }

  /** A backend an operator deleted: forgotten if they had added it, else kept out from now on
   *  (whether the config or DNS brings it). */
  deleted(frontend: string, name: string): void {
    const state = this.frontend(frontend);
    const added = state.added.some((b) => b.name === name);
    state.added = state.added.filter((b) => b.name !== name);
    if (!added && !state.deleted.includes(name)) state.deleted.push(name);
    delete state.weights[name];
    delete state.admin[name];
  }

  weight(frontend: string, name: string, weight: number): void {
    const state = this.frontend(frontend);
    const added = state.added.find((b) => b.name === name);
    if (added !== undefined) added.weight = weight;
    else state.weights[name] = weight;
  }

  admin(frontend: string, name: string, admin: AdminState | null): void {
    const state = this.frontend(frontend);
    if (admin === null) delete state.admin[name];
    else state.admin[name] = admin;
  }

  private frontend(name: string): FrontendState {
    let state = this.frontends.get(name);
    if (state === undefined) {
      state = emptyFrontend();
      this.frontends.set(name, state);
    }
    return state;
  }

  toJSON(): StateFile {
    return { version: 1, frontends: Object.fromEntries(this.frontends) };
  }

  /** Writes the state: a temporary file beside the real one, fsynced, renamed over it. */
  save(): Promise<void> {
    const path = this.path;
    if (path === null) return Promise.resolve();
    const text = `${JSON.stringify(this.toJSON(), null, 2)}\n`;
    this.saving = this.saving.then(async () => {
      const temporary = `${path}.${process.pid}.tmp`;
      try {
        await mkdir(dirname(path), { recursive: true });
        const file = await open(temporary, 'w', 0o600);
        try {
          await file.writeFile(text);
          await file.sync();
        } finally {
          await file.close();
        }
        await rename(temporary, path);
        // The rename itself is durable only once the directory is synced.
        const dir = await open(dirname(path), 'r');
        try {
          await dir.sync();
        } finally {
          await dir.close();
        }
      } catch (err) {
        this.log.error(
          { stateFile: path, err: (err as Error).message },
          'cannot save the runtime state',
        );
        await unlink(temporary).catch(() => {});
      }
    });
    return this.saving;
  }
}

function toBackend(added: z.infer<typeof addedSchema>, where: string): BackendConfig {
  const backend = parseBackend(added.address, where);
  return {
    ...backend,
    name: checkName(added.name, where),
    weight: added.weight,
    backup: added.backup,
    maxconn: added.maxconn,
  };
}
