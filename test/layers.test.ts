// The import rule (shared/DESIGN.md): shared/ and config/ import nothing of control/, data/ or
// stats/; core/ imports only core/ and shared/; data/ never imports control/. Read from the
// sources themselves, so a forbidden arrow fails here before it spreads.

import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';

const SRC = fileURLToPath(new URL('../src', import.meta.url));

/** The layers a layer may not import; `only` lists what it may. */
const RULES: Record<string, { forbidden?: string[]; only?: string[] }> = {
  shared: { forbidden: ['control', 'data', 'stats'] },
  config: { forbidden: ['control', 'data', 'stats'] },
  core: { only: ['core', 'shared'] },
  data: { forbidden: ['control'] },
};

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory()
      ? sources(join(dir, entry.name))
      : entry.name.endsWith('.ts')
        ? [join(dir, entry.name)]
        : [],
  );
}

/** `src/data/frontend.ts` -> `data`; a file at the top of src/ -> `.`. */
function layerOf(path: string): string {
  const parts = relative(SRC, path).split('/');
  return parts.length === 1 ? '.' : parts[0];
}

/** Every relative import of a file (static, dynamic and `export ... from`), resolved. */
function importsOf(path: string): string[] {
  const text = readFileSync(path, 'utf8');
  const found: string[] = [];
  for (const match of text.matchAll(/(?:from|import)\s*\(?\s*'(\.{1,2}\/[^']+)'/g)) {
    found.push(resolve(dirname(path), match[1]));
  }
  return found;
}

t.test('no import crosses the layers the wrong way', async (t) => {
  const wrong: string[] = [];
  let arrows = 0;
  for (const file of sources(SRC)) {
    const rule = RULES[layerOf(file)];
    for (const target of importsOf(file)) {
      arrows++;
      if (rule === undefined) continue;
      const to = layerOf(target);
      const bad =
        (rule.forbidden?.includes(to) ?? false) ||
        (rule.only !== undefined && !rule.only.includes(to));
      if (bad) wrong.push(`${relative(SRC, file)} -> ${relative(SRC, target)}`);
    }
  }
  t.ok(arrows > 100, `the imports were read (${arrows})`);
  t.same(wrong, [], 'forbidden arrows');
});

t.test('the rule test sees a forbidden arrow when there is one', async (t) => {
  // The reader itself: a data/ file importing control/ must be caught.
  const probe = join(SRC, 'data', 'probe.ts');
  t.equal(layerOf(probe), 'data');
  t.equal(layerOf(resolve(dirname(probe), '../control/pool.ts')), 'control');
  t.ok(RULES.data.forbidden?.includes('control'));
});
