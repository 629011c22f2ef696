// The README's quick start: `npm run demo` must work on a fresh clone. Runs the same script.

import './children.ts';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import t from 'tap';

t.test('the demo balances, survives a dead backend and stops cleanly', async (t) => {
  const demo = fileURLToPath(new URL('../examples/demo.ts', import.meta.url));
  const run = spawnSync(process.execPath, [demo], { encoding: 'utf8', timeout: 60_000 });
  t.equal(run.status, 0, run.stderr);
  t.match(run.stdout, /backend A holds 5, backend B holds 5/);
  t.match(run.stdout, /errors seen by clients: 0/);
  t.match(run.stdout, /fulcrum exited with status 0/);
});
