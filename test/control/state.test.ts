// The runtime state file: what `add backend` recorded is what is read back, every field of it,
// from the current format and from version 1's.

import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { parseBackend } from '../../src/config/backend.ts';
import { loaderFromArgs } from '../../src/config/flags.ts';
import { RuntimeState } from '../../src/control/state.ts';
import { createLogger } from '../../src/log.ts';

const log = createLogger('silent', 'json');

async function base() {
  return loaderFromArgs(['--listen', '127.0.0.1:0', '--backend', '127.0.0.1:1'])();
}

t.test('an added backend comes back with every field, after a save and a load', async (t) => {
  const path = join(mkdtempSync(join(tmpdir(), 'fulcrum-state-')), 'state.json');
  const written = new RuntimeState(path, log);
  const added = parseBackend(
    '127.0.0.1:2,weight=7,backup,maxconn=40,slowstart=30s,send-proxy=v2,name=spare',
    'x',
  );
  written.added('default', added);
  await written.save();
  const read = new RuntimeState(path, log);
  await read.load();
  const backends = read.apply(await base()).frontends[0].backends;
  t.same(backends[1], added);
});

t.test('regression: a version 1 record keeps its slowstart and send-proxy', async (t) => {
  const path = join(mkdtempSync(join(tmpdir(), 'fulcrum-state-')), 'state.json');
  writeFileSync(
    path,
    JSON.stringify({
      version: 1,
      frontends: {
        default: {
          added: [
            {
              address: '127.0.0.1:2',
              name: 'spare',
              weight: 7,
              backup: false,
              maxconn: 0,
              slowstartMs: 30000,
              sendProxy: 2,
            },
          ],
          deleted: [],
          weights: {},
          admin: {},
        },
      },
    }),
  );
  const state = new RuntimeState(path, log);
  await state.load();
  const backend = state.apply(await base()).frontends[0].backends[1];
  t.match(backend, { name: 'spare', weight: 7, slowstartMs: 30_000, sendProxy: 2 });
});
