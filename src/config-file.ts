// The config file: YAML (JSON is YAML too) -> the same inputs the flags give -> one Config.
// Invariant: the file is checked in two passes that both name the file and the key path
// (`frontends[1].backends[0].address`): the schema checks shapes and types, then config.ts's
// parsers check values exactly as they check flags. Loading never binds or connects anything.

import { readFile } from 'node:fs/promises';
import { parseDocument } from 'yaml';
import { z } from 'zod';
import type { BackendInput, Config, FrontendInput, RunFlags, TopInput } from './config.ts';
import { buildConfig, ConfigError, flagWhere, TOP_FLAGS, topFromFlags } from './config.ts';

// A duration or a count may be written as a YAML number or a string (`3s`); both reach the same
// parser as text, so a file and a flag accept exactly the same values.
const scalar = z
  .union([z.string(), z.number()], { error: 'expected a number or a string such as 3s' })
  .transform(String);

const health = z.strictObject({
  enabled: z.boolean().optional(),
  interval: scalar.optional(),
  timeout: scalar.optional(),
  rise: scalar.optional(),
  fall: scalar.optional(),
});

const backend = z.union([
  z.string(),
  z.strictObject({
    address: z.string(),
    name: z.string().optional(),
    weight: scalar.optional(),
    backup: z.boolean().optional(),
    maxconn: scalar.optional(),
    slowstart: scalar.optional(),
    sendProxy: z.string().optional(),
  }),
]);

const frontend = z.strictObject({
  name: z.string(),
  listen: z.union([z.string().transform((s) => [s]), z.array(z.string())]).default([]),
  algorithm: z.string().optional(),
  hashKey: z.string().optional(),
  sendProxy: z.string().optional(),
  proxyTimeout: scalar.optional(),
  connectTimeout: scalar.optional(),
  idleTimeout: scalar.optional(),
  queueTimeout: scalar.optional(),
  retries: scalar.optional(),
  allow: z.array(z.string()).optional(),
  deny: z.array(z.string()).optional(),
  maxConnsPerSource: scalar.optional(),
  connRatePerSource: scalar.optional(),
  health: z.union([z.literal(false).transform(() => ({ enabled: false })), health]).optional(),
  backends: z.array(backend),
});

const statsSocket = z.union([
  z.string().transform((path): { path: string; mode?: string; level?: string } => ({ path })),
  z.strictObject({
    path: z.string(),
    mode: scalar.optional(),
    level: z.string().optional(),
  }),
]);

const log = z.strictObject({
  level: z.string().optional(),
  format: z.string().optional(),
  access: z.boolean().optional(),
});

const schema = z.strictObject({
  workers: scalar.optional(),
  maxConnections: scalar.optional(),
  drainTimeout: scalar.optional(),
  backlog: scalar.optional(),
  statsSocket: statsSocket.optional(),
  metrics: z.string().optional(),
  stateFile: z.string().optional(),
  resolvers: z.array(z.string()).optional(),
  resolveInterval: scalar.optional(),
  log: log.optional(),
  frontends: z.array(frontend),
});

type FileShape = z.infer<typeof schema>;

/** The key path of a schema issue, as a user would write it: `frontends[1].backends[0]`. */
function keyPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`;
    else out += out === '' ? String(key) : `.${String(key)}`;
  }
  return out;
}

/**
 * A value that matches no branch of a union (a backend as a string or an object) gets zod's bare
 * "Invalid input"; the branch that got furthest names the real problem, e.g. `address` expected a
 * string. Its path is relative to the union's, so the two are joined.
 */
function deepest(issue: z.core.$ZodIssue): { path: PropertyKey[]; message: string } {
  if (issue.code !== 'invalid_union' || issue.errors.length === 0) {
    return { path: issue.path, message: issue.message };
  }
  let best: { path: PropertyKey[]; message: string } | null = null;
  for (const branch of issue.errors) {
    if (branch.length === 0) continue;
    const found = deepest(branch[0]);
    if (best === null || found.path.length > best.path.length) best = found;
  }
  if (best === null) return { path: issue.path, message: issue.message };
  return { path: [...issue.path, ...best.path], message: best.message };
}

/** Where a top-level value lives in the file, by its flag-shaped name. */
const FILE_KEY: Record<string, string> = {
  logLevel: 'log.level',
  logFormat: 'log.format',
  accessLog: 'log.access',
  statsSocket: 'statsSocket.path',
  statsSocketMode: 'statsSocket.mode',
  statsLevel: 'statsSocket.level',
};

/** Reads and checks a config file. `overrides` are the top-level flags given on the command line. */
export async function loadConfigFile(file: string, overrides: TopInput = {}): Promise<Config> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw new ConfigError(file, `cannot read the config file (${code})`);
  }
  const doc = parseDocument(text, { uniqueKeys: true });
  if (doc.errors.length > 0) {
    // The message reads "... at line 3, column 4:" followed by a code excerpt: keep one line.
    const message = doc.errors[0].message.split('\n')[0].replace(/:$/, '');
    throw new ConfigError(file, `not valid YAML: ${message}`);
  }
  const checked = schema.safeParse(doc.toJS());
  if (!checked.success) {
    const issue = deepest(checked.error.issues[0]);
    const path = keyPath(issue.path);
    throw new ConfigError(path === '' ? file : `${file}: ${path}`, issue.message);
  }
  const data: FileShape = checked.data;
  const top: TopInput = {
    workers: data.workers,
    maxConnections: data.maxConnections,
    drainTimeout: data.drainTimeout,
    backlog: data.backlog,
    logLevel: data.log?.level,
    logFormat: data.log?.format,
    accessLog: data.log?.access,
    statsSocket: data.statsSocket?.path,
    statsSocketMode: data.statsSocket?.mode,
    statsLevel: data.statsSocket?.level,
    metrics: data.metrics,
    stateFile: data.stateFile,
    resolvers: data.resolvers,
    resolveInterval: data.resolveInterval,
  };
  const merged: Record<string, unknown> = { ...top };
  const overridden = new Set<string>();
  for (const [key, value] of Object.entries(overrides)) {
    if (value !== undefined) {
      merged[key] = value;
      overridden.add(key);
    }
  }
  const frontends: FrontendInput[] = data.frontends.map((f) => ({
    ...f,
    backends: f.backends as (string | BackendInput)[],
  }));
  return buildConfig(
    merged as TopInput,
    frontends,
    // A value the command line overrode is that flag's fault, not the file's.
    (key) => (overridden.has(key) ? flagWhere(key) : `${file}: ${FILE_KEY[key] ?? key}`),
    (i) => (key) => `${file}: frontends[${i}].${key}`,
  );
}

function kebab(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** The flags (as RunFlags keys) that describe a frontend: with --config, frontends come from
 *  the file only. */
const FRONTEND_FLAGS = [
  'listen',
  'backend',
  'algorithm',
  'hashKey',
  'sendProxy',
  'proxyTimeout',
  'connectTimeout',
  'idleTimeout',
  'queueTimeout',
  'retries',
  'allow',
  'deny',
  'maxConnsPerSource',
  'connRatePerSource',
  'healthInterval',
  'healthTimeout',
  'rise',
  'fall',
  'healthCheck',
] as const;

/**
 * The top-level flags the user really typed (not commander's defaults), to override the file;
 * a frontend flag next to --config is an error, since it could not say which frontend it means.
 */
export function overridesFromFlags(flags: RunFlags, given: (key: string) => boolean): TopInput {
  for (const key of FRONTEND_FLAGS) {
    if (given(key)) {
      throw new ConfigError(
        key === 'healthCheck' ? '--no-health-check' : `--${kebab(key)}`,
        'cannot be used with --config (set it in the file, per frontend)',
      );
    }
  }
  const all = topFromFlags(flags) as Record<string, unknown>;
  const picked: Record<string, unknown> = {};
  for (const key of TOP_FLAGS) if (given(key)) picked[key] = all[key];
  return picked as TopInput;
}
