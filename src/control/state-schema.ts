// The state file's schema (see state.ts): versions 1 to 3 as read, with names kept as Map keys.
// Versions 1 and 2 keyed changes by frontend, when every frontend had a pool of its own named
// after it: read as keys of pools, they name the same backends.
// Its own module so that zod loads only when a state file is read, not at every start.

import { z } from 'zod';
import { MAX_MAXCONN } from '../config/backend.ts';
import { PROXY_VERSIONS } from '../config/types.ts';
import { MAX_WEIGHT } from '../shared/table.ts';

/** A backend as version 1 wrote it, field by field; version 2 writes its spec (formatBackend). */
const addedV1 = z
  .strictObject({
    address: z.string(),
    name: z.string(),
    weight: z.number().int().min(0).max(MAX_WEIGHT),
    backup: z.boolean(),
    maxconn: z.number().int().min(0).max(MAX_MAXCONN),
    slowstartMs: z.number().int().min(0).max(2_147_483_647).default(0),
    sendProxy: z.union([z.literal(-1), z.literal(0), z.literal(1), z.literal(2)]).default(-1),
  })
  .transform((b) =>
    [
      b.address,
      `name=${b.name}`,
      `weight=${b.weight}`,
      `maxconn=${b.maxconn}`,
      `slowstart=${b.slowstartMs}ms`,
      ...(b.backup ? ['backup'] : []),
      ...(b.sendProxy === -1 ? [] : [`send-proxy=${PROXY_VERSIONS[b.sendProxy]}`]),
    ].join(','),
  );

/** A backend added at runtime: its spec, as `add backend` takes it. */
const added = z.union([z.string(), addedV1]);

/**
 * A JSON object keyed by names, read into a Map. Not z.record: names are operators' words, and
 * `__proto__` or `constructor` are valid names, which a plain object drops or reads as Object's
 * own (z.record silently loses `__proto__`). JSON.parse gives every key as an own property.
 */
function byName<T>(value: z.ZodType<T>) {
  return z
    .custom<object>((v) => typeof v === 'object' && v !== null && !Array.isArray(v), {
      message: 'expected an object keyed by name',
    })
    .transform((raw, ctx) => {
      const map = new Map<string, T>();
      for (const [name, item] of Object.entries(raw)) {
        const checked = value.safeParse(item);
        if (!checked.success) {
          ctx.addIssue({ code: 'custom', message: `${name}: ${checked.error.issues[0]?.message}` });
          return z.NEVER;
        }
        map.set(name, checked.data);
      }
      return map;
    });
}

const poolSchema = z.strictObject({
  added: z.array(added),
  deleted: z.array(z.string()),
  weights: byName(z.number().int().min(0).max(MAX_WEIGHT)),
  admin: byName(z.enum(['disabled', 'draining'])),
});

export const fileSchema = z.union([
  z
    .strictObject({
      version: z.union([z.literal(1), z.literal(2)]),
      frontends: byName(poolSchema),
    })
    .transform((file) => ({ pools: file.frontends })),
  z.strictObject({ version: z.literal(3), pools: byName(poolSchema) }),
]);

/** The file as read: every map keyed by name. */
export type StateData = z.infer<typeof fileSchema>;

/** The first problem the schema found, or null when `err` is not the schema's. */
export function schemaError(err: unknown): string | null {
  return err instanceof z.ZodError ? (err.issues[0]?.message ?? 'not a state file') : null;
}
