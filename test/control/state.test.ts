// The runtime state file: what `add backend` recorded is what is read back, every field of it,
// from the current format and from version 1's; it is written safely (a fresh temporary file),
// and a change that cannot be saved says so. A FIFO in its place never holds up start or stop; an
// added backend meets the checks `add backend` makes; a file it cannot read is moved aside, never
// overwritten.

import { spawnSync } from 'node:child_process';
import {
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { parseBackend } from '../../src/config/backend.ts';
import { loaderFromArgs } from '../../src/config/flags.ts';
import { RuntimeState } from '../../src/control/state.ts';
import { createLogger } from '../../src/log.ts';
import { query } from '../../src/stats/client.ts';
import { BIN, closedPort, greet, showStat, startBackend, startFulcrum } from '../helpers.ts';

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

t.test(
  'the temporary file is created afresh: a file planted at a guessable name is not followed',
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'fulcrum-state-'));
    const path = join(dir, 'state.json');
    const victim = join(dir, 'victim');
    writeFileSync(victim, 'precious\n');
    // Every name the old scheme could use (path.PID.tmp) and a few more, as links to the victim.
    for (const name of [`${path}.${process.pid}.tmp`, `${path}.tmp`]) symlinkSync(victim, name);
    const state = new RuntimeState(path, log);
    state.weight('default', 'a', 3);
    t.equal(await state.save(), null, 'saved');
    t.equal(readFileSync(victim, 'utf8'), 'precious\n', 'the victim is untouched');
    t.equal(JSON.parse(readFileSync(path, 'utf8')).pools.default.weights.a, 3);
    t.same(
      readdirSync(dir).filter(
        (f) => f.endsWith('.tmp') && !lstatSync(join(dir, f)).isSymbolicLink(),
      ),
      [],
      'no temporary file is left behind',
    );
  },
);

t.test('an admin change that cannot be saved answers an error: live, but not saved', async (t) => {
  const backend = await startBackend(greet);
  t.teardown(() => backend.close());
  const dir = mkdtempSync(join(tmpdir(), 'fulcrum-state-'));
  const stateFile = join(dir, 'state.json');
  mkdirSync(stateFile); // a directory where the file should be: every save fails (EISDIR)
  const stats = join(dir, 'stats.sock');
  const fulcrum = await startFulcrum([
    '--no-health-check',
    '--stats-socket',
    stats,
    '--state-file',
    stateFile,
    '--backend',
    backend.address,
  ]);
  t.teardown(() => fulcrum.stop());
  const ref = `default/${backend.address}`;
  const ctl = spawnSync(process.execPath, [BIN, 'ctl', '--socket', stats, 'disable', ref], {
    encoding: 'utf8',
    timeout: 20_000,
  });
  t.equal(ctl.status, 1, 'ctl exits 1, as for any error answer');
  t.match(
    ctl.stdout,
    new RegExp(`^error: ${ref} disabled: live, but not saved to the state file \\(E[A-Z]+\\)`),
  );
  t.equal((await showStat(stats))[0].backends[0].state, 'disabled', 'the change is live');
  t.match(await query(stats, `set weight ${ref} 4`), /^error: .* weight 4: live, but not saved/);
  t.ok(
    fulcrum.logs.some((l) => l.msg === 'cannot save the runtime state'),
    'and logged',
  );
  t.equal(await fulcrum.stop(), 0);
});

t.test('a state file that is a FIFO: start goes on without it, and SIGTERM exits', async (t) => {
  const backend = await startBackend(greet);
  t.teardown(() => backend.close());
  const stateFile = join(mkdtempSync(join(tmpdir(), 'fulcrum-state-')), 'state.json');
  t.equal(spawnSync('mkfifo', [stateFile]).status, 0, 'mkfifo');
  const fulcrum = await startFulcrum([
    '--no-health-check',
    '--state-file',
    stateFile,
    '--backend',
    backend.address,
  ]);
  t.teardown(() => fulcrum.stop('SIGKILL'));
  t.ok(
    fulcrum.logs.some(
      (l) =>
        typeof l.msg === 'string' &&
        l.msg.startsWith('state file cannot be read (not a regular file)'),
    ),
    'the reason is logged',
  );
  t.equal(await fulcrum.stop('SIGTERM'), 0, 'SIGTERM exits 0');
});

t.test(
  'added backends pass the checks `add backend` makes; what fails is logged and left out',
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'fulcrum-state-'));
    const stateFile = join(dir, 'state.json');
    const stats = join(dir, 'stats.sock');
    const listen = await closedPort();
    const added = [
      '127.0.0.1:1,name=same-as-configured',
      '127.0.0.2:2000,name=first',
      '127.0.0.2:2000,name=second',
      `127.0.0.1:${listen},name=loop`,
    ];
    for (let i = 0; i < 300; i++) added.push(`127.0.0.3:${3000 + i}`);
    writeFileSync(
      stateFile,
      JSON.stringify({
        version: 2,
        frontends: { default: { added, deleted: [], weights: {}, admin: {} } },
      }),
    );
    const fulcrum = await startFulcrum([
      '--listen',
      `127.0.0.1:${listen}`,
      '--workers',
      '1',
      '--no-health-check',
      '--stats-socket',
      stats,
      '--state-file',
      stateFile,
      '--backend',
      '127.0.0.1:1',
    ]);
    t.teardown(() => fulcrum.stop());
    const names = (await showStat(stats))[0].backends.map((b) => b.name);
    t.equal(names.length, 256, 'the frontend holds the most it may: 256');
    t.ok(names.includes('first') && !names.includes('second'), 'one address once');
    t.notOk(names.includes('same-as-configured'), "not the configured backend's address again");
    t.notOk(names.includes('loop'), "not fulcrum's own listener");
    const lines = fulcrum.logs.filter(
      (l) => typeof l.msg === 'string' && l.msg.startsWith('state file: added backend'),
    );
    // The configured backend and `first` leave room for 254 of the 300.
    t.equal(lines.length, 3 + (300 - 254), 'one line for each backend left out');
    t.match(
      lines.map((l) => l.msg).join('\n'),
      /127\.0\.0\.2:2000 is already in pool default \(as first\)/,
    );
    t.match(lines.map((l) => l.msg).join('\n'), /has 256 backends already/);
    t.match(await query(stats, 'set weight default/first 3'), /weight 3$/);
    const saved = JSON.parse(readFileSync(stateFile, 'utf8'));
    t.equal(saved.pools.default.added.length, added.length, 'nothing is lost from the file');
  },
);

t.test(
  'a state file it cannot read is moved aside before the first save, never overwritten',
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'fulcrum-state-'));
    const path = join(dir, 'state.json');
    for (const text of [
      JSON.stringify({
        version: 99,
        frontends: { default: { everything: 'a newer fulcrum knew' } },
      }),
      '{"version": 2, "frontends": {"default": {"added": ["127.0.0.1:2"',
    ]) {
      writeFileSync(path, text);
      const state = new RuntimeState(path, log);
      await state.load();
      state.weight('default', 'a', 3);
      t.equal(await state.save(), null, 'saved');
      const aside = readdirSync(dir).filter((f) => f.startsWith('state.json.unreadable-'));
      t.equal(aside.length, 1, 'moved aside once');
      t.equal(readFileSync(join(dir, aside[0]), 'utf8'), text, 'with all it held');
      t.equal(JSON.parse(readFileSync(path, 'utf8')).pools.default.weights.a, 3, 'the change');
      state.weight('default', 'a', 4);
      t.equal(await state.save(), null, 'saved again');
      t.equal(
        readdirSync(dir).filter((f) => f.startsWith('state.json.unreadable-')).length,
        1,
        'a readable file is replaced as before',
      );
      for (const f of aside) unlinkSync(join(dir, f));
    }
  },
);
