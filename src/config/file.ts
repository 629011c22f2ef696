// The config file: YAML (JSON is YAML too) -> the same inputs the flags give -> one Config.
// Invariant: the file is checked in two passes that both name the file and the key path
// (`frontends[1].backends[0].address`): a schema derived from the settings table checks shapes
// and types, then the table's parsers check values exactly as they check flags. Loading never
// binds or connects anything.

import { dirname, resolve } from 'node:path';
import { parseDocument } from 'yaml';
import { z } from 'zod';
import { OPTIONS } from './backend.ts';
import type { Input, Inputs } from './build.ts';
import { buildConfig, withTls } from './build.ts';
import { ConfigError } from './parse.ts';
import { readTextFile } from './read.ts';

export { FileReadError, readBounded, readTextFile } from './read.ts';

import type { Scope, Setting } from './settings.ts';
import { FILE_SHORTHANDS, settingsOf } from './settings.ts';
import type { Config } from './types.ts';

// A duration or a count may be written as a YAML number or a string (`3s`); both reach the same
// parser as text, so a file and a flag accept exactly the same values.
const scalar = z.union([z.string(), z.number()], {
  error: 'expected a number or a string such as 3s',
});

const backendObject = z.strictObject({
  address: z.string(),
  ...Object.fromEntries(
    OPTIONS.map((o) => [o.fileKey, (o.arg === null ? z.boolean() : scalar).optional()]),
  ),
});

/** A certificate of `tls.certificates`: its files, and the names it is for if not its own. */
const certificateObject = z.strictObject({
  cert: z.string(),
  key: z.string(),
  names: z.union([z.string().transform((one) => [one]), z.array(z.string())]).optional(),
});

function valueSchema(setting: Setting): z.ZodType {
  if (setting.kind === 'switch') return z.boolean();
  if (setting.kind === 'value') {
    const bare = setting.bare;
    // A flag that may be given bare is `true` in the file.
    return bare === undefined ? scalar : z.union([scalar, z.literal(true).transform(() => bare)]);
  }
  const item =
    setting.key === 'backends'
      ? z.union([z.string(), backendObject])
      : setting.key === 'tlsCertificates'
        ? certificateObject
        : z.string();
  // A list of one may be written as that one item.
  return z.union([item.transform((one) => [one]), z.array(item)]);
}

/** A flag whose file form is a key of another setting's items (`tls.certificates[].key`). */
function insideItems(setting: Setting): boolean {
  return setting.file.includes('[]');
}

/** The schema of some scopes' settings at their file keys, groups nested, shorthands allowed. */
function scopeSchema(scopes: readonly Scope[], extra: Record<string, z.ZodType> = {}): z.ZodType {
  const top: Record<string, z.ZodType> = {};
  const groups = new Map<string, Record<string, z.ZodType>>();
  for (const setting of scopes.flatMap(settingsOf)) {
    if (insideItems(setting)) continue;
    let type = valueSchema(setting);
    if (setting.required !== true) type = type.optional();
    const [first, second] = setting.file.split('.');
    if (second === undefined) {
      top[first] = type;
    } else {
      if (!groups.has(first)) groups.set(first, {});
      (groups.get(first) as Record<string, z.ZodType>)[second] = type;
    }
  }
  for (const [group, shape] of groups) {
    let type: z.ZodType = z.strictObject(shape);
    const shorthand = FILE_SHORTHANDS.find((s) => scopes.includes(s.scope) && s.group === group);
    if (shorthand?.when === 'false') {
      type = z.union([z.literal(false).transform(() => ({ [shorthand.key]: false })), type]);
    } else if (shorthand?.when === 'string') {
      type = z.union([z.string().transform((text) => ({ [shorthand.key]: text })), type]);
    }
    top[group] = type.optional();
  }
  return z.strictObject({ ...top, ...extra });
}

// A frontend may give the settings of its own pool; an entry of `pools:` gives only those, and
// its name.
const schema = scopeSchema(['process'], {
  frontends: z.array(scopeSchema(['frontend', 'pool'])),
  pools: z.array(scopeSchema(['pool'], { name: z.string() })).optional(),
});

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

/** The settings of some scopes found in a checked file object, each with where it was written. */
function inputsOf(
  scopes: readonly Scope[],
  data: Record<string, unknown>,
  prefix: string,
): Map<string, Input> {
  const inputs = new Map<string, Input>();
  for (const setting of scopes.flatMap(settingsOf)) {
    if (insideItems(setting)) continue;
    let value: unknown = data;
    for (const key of setting.file.split('.')) {
      value = (value as Record<string, unknown> | undefined)?.[key];
    }
    if (value === undefined) continue;
    inputs.set(setting.key, {
      value: typeof value === 'number' ? String(value) : (value as Input['value']),
      where: `${prefix}${setting.file}`,
      indexed: true,
    });
  }
  return inputs;
}

/** The largest config file read; a bigger one is refused, not read into memory. */
export const MAX_CONFIG_BYTES = 4 * 1024 * 1024;
/** How long a config read may take before it is given up (a hung network filesystem). */
export const CONFIG_READ_TIMEOUT_MS = 5000;
/** Aliases a config file may expand: YAML's own default; a billion-laughs file needs millions. */
const MAX_ALIASES = 100;

/** Reads and checks a config file. `overrides` are the process-wide flags given with it. */
export async function loadConfigFile(file: string, overrides: Inputs = new Map()): Promise<Config> {
  const text = await readTextFile(file, 'config file', MAX_CONFIG_BYTES, CONFIG_READ_TIMEOUT_MS);
  const doc = parseDocument(text, { uniqueKeys: true });
  if (doc.errors.length > 0) {
    // The message reads "... at line 3, column 4:" followed by a code excerpt: keep one line.
    const message = doc.errors[0].message.split('\n')[0].replace(/:$/, '');
    throw new ConfigError(file, `not valid YAML: ${message}`);
  }
  let raw: unknown;
  try {
    raw = doc.toJS({ maxAliasCount: MAX_ALIASES });
  } catch (err) {
    // The library throws (a ReferenceError) on an alias bomb: bad input like any other.
    throw new ConfigError(file, `not valid YAML: ${(err as Error).message.split('\n')[0]}`);
  }
  const checked = schema.safeParse(raw);
  if (!checked.success) {
    const issue = deepest(checked.error.issues[0]);
    const path = keyPath(issue.path);
    throw new ConfigError(path === '' ? file : `${file}: ${path}`, issue.message);
  }
  const data = checked.data as Record<string, unknown> & {
    frontends: Record<string, unknown>[];
    pools?: Array<Record<string, unknown> & { name: string }>;
  };
  const top = inputsOf(['process'], data, `${file}: `);
  // A value the command line overrode is that flag's, and so is the blame for it.
  for (const [key, input] of overrides) top.set(key, input);
  const frontends = data.frontends.map((f, i) =>
    inputsOf(['frontend', 'pool'], f, `${file}: frontends[${i}].`),
  );
  const pools = (data.pools ?? []).map((p, i) => ({
    name: p.name,
    where: `${file}: pools[${i}].name`,
    inputs: inputsOf(['pool'], p, `${file}: pools[${i}].`),
  }));
  return withTls(buildConfig(top, frontends, `${file}: frontends`, pools), dirname(resolve(file)));
}
