// Inputs that used to crash a running balancer, or every later start: backend names that are
// also the names of Object's own properties, a YAML alias bomb, more backends than a table holds,
// a DNS answer that grows past it, and a SIGHUP before the config is loaded. Each is refused or
// handled with one clear line, and the balancer goes on serving.

import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { query } from '../../src/stats/client.ts';
import {
  connect,
  greet,
  readLine,
  showStat,
  startBackend,
  startFulcrum,
  waitForLog,
} from '../helpers.ts';

function workdir(): { dir: string; config: string; stats: string; stateFile: string } {
  const dir = mkdtempSync(join(tmpdir(), 'fulcrum-hostile-'));
  return {
    dir,
    config: join(dir, 'fulcrum.yaml'),
    stats: join(dir, 'stats.sock'),
    stateFile: join(dir, 'state.json'),
  };
}

const OBJECT_NAMES = ['constructor', 'toString', 'hasOwnProperty', '__proto__', 'valueOf'];

t.test(
  "backends named after Object's own properties survive runtime changes, a reload and a restart",
  async (t) => {
    const backends = await Promise.all(OBJECT_NAMES.map(() => startBackend(greet)));
    t.teardown(() => Promise.all(backends.map((b) => b.close())));
    const { config, stats, stateFile } = workdir();
    const specs = backends.map((b, i) => `"${b.address},name=${OBJECT_NAMES[i]}"`);
    writeFileSync(
      config,
      `workers: 2\nstatsSocket: ${stats}\nstateFile: ${stateFile}\nfrontends:\n  - name: default\n    listen: [127.0.0.1:0]\n    health: false\n    backends: [${specs.join(', ')}]\n  - name: constructor\n    listen: [127.0.0.1:0]\n    health: false\n    backends: ["${backends[0].address},name=__proto__"]\n`,
    );
    const first = await startFulcrum(['--config', config]);
    t.teardown(() => first.stop());
    t.equal(await query(stats, 'set weight default/constructor 5'), 'default/constructor weight 5');
    t.equal(await query(stats, 'disable default/__proto__'), 'default/__proto__ disabled');
    t.equal(await query(stats, 'drain default/toString'), 'default/toString draining');
    t.equal(
      await query(stats, 'set weight default/hasOwnProperty 0'),
      'default/hasOwnProperty weight 0',
    );
    const expected = [
      ['constructor', 5, 'up'],
      ['toString', 1, 'disabled'], // draining, with nothing left to drain
      ['hasOwnProperty', 0, 'up'],
      ['__proto__', 1, 'disabled'],
      ['valueOf', 1, 'up'],
    ];
    const rows = async () =>
      (await showStat(stats))[0].backends.map((b) => [b.name, b.weight, b.state]);
    t.same(await rows(), expected, 'the changes are live');
    const saved = JSON.parse(readFileSync(stateFile, 'utf8'));
    t.same(Object.keys(saved.frontends.default.weights).sort(), ['constructor', 'hasOwnProperty']);
    t.same(Object.keys(saved.frontends.default.admin).sort(), ['__proto__', 'toString']);

    first.proc.kill('SIGHUP');
    await waitForLog(first, (l) => l.msg === 'reloaded', 10_000, 'the reload');
    t.same(await rows(), expected, 'after a reload');
    t.equal(await first.stop(), 0);

    const second = await startFulcrum(['--config', config]);
    t.teardown(() => second.stop());
    t.same(await rows(), expected, 'after a restart with the state file');
    const other = await connect(second.ports.constructor[0]);
    t.equal(await readLine(other), String(backends[0].port), 'a frontend named constructor serves');
    other.destroy();
    const latency = JSON.parse(await query(stats, 'show latency json')) as {
      frontends: Array<{ name: string; backends: Array<{ name: string }> }>;
    };
    t.same(
      latency.frontends.map((f) => [f.name, f.backends.map((b) => b.name)]),
      [
        ['default', OBJECT_NAMES],
        ['constructor', ['__proto__']],
      ],
      'show latency names every frontend and backend',
    );
    const socket = await connect(second.ports.default[0]);
    t.ok(
      [backends[0], backends[4]].map((b) => String(b.port)).includes(await readLine(socket)),
      'served by a backend that takes new connections',
    );
    socket.destroy();
    t.equal(await second.stop(), 0);
  },
);
