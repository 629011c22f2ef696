// A config file run for real: two frontends on two ports, each with its own pool, route each port
// only to its own backends; `fulcrum check` accepts a good file and refuses a broken one with the
// path of the bad key, binding nothing either way.

import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import {
  BIN,
  connect,
  greet,
  readLine,
  settled,
  showStat,
  socketPath,
  startBackend,
  startFulcrum,
  waitForLog,
} from '../helpers.ts';

const dir = mkdtempSync(join(tmpdir(), 'fulcrum-cfg-'));

function write(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

async function answers(port: number, count: number): Promise<Set<string>> {
  const seen = new Set<string>();
  for (let i = 0; i < count; i++) {
    const socket = await connect(port);
    seen.add(await readLine(socket));
    socket.end();
  }
  return seen;
}

t.test('two frontends route each port only to its own pool (one listed, one named)', async (t) => {
  const pool = await Promise.all([0, 1, 2, 3].map(() => startBackend(greet)));
  t.teardown(() => Promise.all(pool.map((b) => b.close())));
  const stats = socketPath();
  const path = write(
    'two.yaml',
    `workers: 2
statsSocket: ${stats}
pools:
  - name: batch-replicas
    algorithm: round-robin
    health: false
    backends: [${pool[2].address}, ${pool[3].address}]
frontends:
  - name: interactive
    listen: [127.0.0.1:0]
    health: false
    backends: [${pool[0].address}, ${pool[1].address}]
  - name: batch
    listen: [127.0.0.1:0]
    pool: batch-replicas
`,
  );
  const fulcrum = await startFulcrum(['--config', path]);
  t.teardown(() => fulcrum.stop());
  t.same(
    (await showStat(stats)).map((f) => [f.name, f.pool]),
    [
      ['interactive', 'interactive'],
      ['batch', 'batch-replicas'],
    ],
    "show stat names each frontend's pool: its own, or the one it names",
  );
  const [interactive] = fulcrum.ports.interactive;
  const [batch] = fulcrum.ports.batch;
  t.not(interactive, batch);
  t.same(
    [...(await answers(interactive, 12))].sort(),
    [String(pool[0].port), String(pool[1].port)].sort(),
    'the interactive port reaches both of its backends and nothing else',
  );
  t.same(
    [...(await answers(batch, 12))].sort(),
    [String(pool[2].port), String(pool[3].port)].sort(),
    'the batch port reaches both of its backends and nothing else',
  );
  await settled(stats, fulcrum);
});

t.test('flags override the file', async (t) => {
  const backend = await startBackend(greet);
  t.teardown(() => backend.close());
  const path = write(
    'override.yaml',
    `workers: 2\nfrontends:\n  - { name: a, listen: [127.0.0.1:0], health: false, backends: [${backend.address}] }\n`,
  );
  const fulcrum = await startFulcrum(['--config', path, '--workers', '1']);
  t.teardown(() => fulcrum.stop());
  const ready = fulcrum.logs.find((l) => l.msg === 'ready');
  t.equal(ready?.workers, 1, "--workers 1 beat the file's 2");
});

function check(path: string) {
  return spawnSync(process.execPath, [BIN, 'check', '--config', path], {
    encoding: 'utf8',
    timeout: 20_000,
  });
}

t.test('fulcrum check: a good file exits 0 and binds nothing', async (t) => {
  // A port that is taken: check must not try to bind it.
  const taken = net.createServer().listen(0, '127.0.0.1');
  await new Promise((resolve) => taken.once('listening', resolve));
  t.teardown(() => taken.close());
  const port = (taken.address() as net.AddressInfo).port;
  const path = write(
    'good.yaml',
    `frontends:\n  - { name: a, listen: [127.0.0.1:${port}], backends: [localhost:5432] }\n`,
  );
  const result = check(path);
  t.equal(result.status, 0, result.stderr);
  t.match(result.stdout, /good\.yaml: ok \(1 frontends, 1 backends\)/);
});

t.test(
  'pools: check warns of an unused one; a reload naming a missing one fails whole',
  async (t) => {
    const backend = await startBackend(greet);
    t.teardown(() => backend.close());
    const good = `pools:
  - { name: used, health: false, backends: [${backend.address}] }
  - { name: spare, backends: [127.0.0.1:1] }
frontends:
  - { name: a, listen: [127.0.0.1:0], pool: used }
`;
    const path = write('pools.yaml', good);
    const checked = check(path);
    t.equal(checked.status, 0, 'a warning is no error');
    t.equal(
      checked.stderr,
      `fulcrum: warning: ${path}: pools[1].name: pool spare is used by no frontend\n`,
    );
    t.match(checked.stdout, /pools\.yaml: ok \(1 frontends, 1 backends\)/);

    const fulcrum = await startFulcrum(['--config', path]);
    t.teardown(() => fulcrum.stop());
    t.ok(
      fulcrum.logs.some(
        (l) => l.level === 40 && String(l.msg).endsWith('pool spare is used by no frontend'),
      ),
      'logged at start',
    );
    const socket = await connect(fulcrum.port);
    t.equal(await readLine(socket), String(backend.port), 'served by the pool');
    socket.destroy();

    writeFileSync(path, good.replace('pool: used', 'pool: gone'));
    fulcrum.proc.kill('SIGHUP');
    const failed = await waitForLog(
      fulcrum,
      (l) => l.msg === 'reload failed: the running config stays',
      10_000,
      'the reload to fail',
    );
    t.match(failed.error, /frontends\[0\]\.pool: "gone" names no pool \(pools: used, spare\)/);
    const again = await connect(fulcrum.port);
    t.equal(await readLine(again), String(backend.port), 'still served by the pool');
    again.destroy();

    // A class out of range fails the same way.
    const before = fulcrum.logs.length;
    writeFileSync(path, good.replace('pool: used', 'pool: used, share: 150'));
    fulcrum.proc.kill('SIGHUP');
    const share = await waitForLog(
      fulcrum,
      (l) =>
        l.msg === 'reload failed: the running config stays' && fulcrum.logs.indexOf(l) >= before,
      10_000,
      'the second reload to fail',
    );
    t.match(share.error, /frontends\[0\]\.share: 150 is out of range \(1\.\.100\)$/);
    const still = await connect(fulcrum.port);
    t.equal(await readLine(still), String(backend.port), 'still served by the pool');
    still.destroy();
  },
);

// The examples the README points to: batch and interactive on one pool; two balancers, one
// address.
for (const [file, summary] of [
  ['classes.yaml', '2 frontends, 1 pools, 3 backends'],
  ['ha/fulcrum.yaml', '1 frontends, 3 backends'],
]) {
  t.test(`fulcrum check passes on examples/${file}`, async (t) => {
    const path = fileURLToPath(new URL(`../../examples/${file}`, import.meta.url));
    const result = check(path);
    t.equal(result.status, 0, result.stderr);
    t.equal(result.stderr, '', 'no warning');
    t.ok(result.stdout.endsWith(`: ok (${summary})\n`), result.stdout);
  });
}

t.test(
  "the README's batch and interactive section shows examples/classes.yaml as it is",
  async (t) => {
    const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
    const text = readFileSync(new URL('../../examples/classes.yaml', import.meta.url), 'utf8');
    t.ok(readme.includes(text.slice(text.indexOf('pools:'))), 'its pools and frontends');
  },
);

t.test('fulcrum check: a broken file exits 2 naming the bad key', async (t) => {
  const path = write(
    'broken.yaml',
    `frontends:\n  - { name: a, listen: [127.0.0.1:0], backends: [127.0.0.1:1] }\n  - name: b\n    listen: [127.0.0.1:0]\n    backends:\n      - { address: "10.0.0.1:99999" }\n`,
  );
  const result = check(path);
  t.equal(result.status, 2);
  t.equal(result.stdout, '');
  t.equal(
    result.stderr,
    `fulcrum: ${path}: frontends[1].backends[0].address: "10.0.0.1:99999": port 99999 is out of range (1..65535)\n`,
  );
  const unresolvable = write(
    'unresolvable.yaml',
    `frontends:\n  - { name: a, listen: [127.0.0.1:0], backends: [no-such-host.invalid:5432] }\n`,
  );
  const second = check(unresolvable);
  t.equal(second.status, 2);
  t.match(
    second.stderr,
    /^fulcrum: frontend a: backend no-such-host\.invalid:5432: cannot resolve/,
  );
});

t.test('fulcrum check: frontends sharing an address by server name', async (t) => {
  const good = write(
    'shared.yaml',
    `frontends:\n  - { name: api, listen: [127.0.0.1:8443], serverNames: [api.example.com], backends: [127.0.0.1:1] }\n  - { name: web, listen: [127.0.0.1:8443], serverNames: ["*.example.com"], backends: [127.0.0.1:2] }\n  - { name: rest, listen: [127.0.0.1:8443], backends: [127.0.0.1:3] }\n`,
  );
  const ok = check(good);
  t.equal(ok.status, 0, ok.stderr);
  const overlapping = write(
    'overlapping.yaml',
    `frontends:\n  - { name: api, listen: [127.0.0.1:8443], serverNames: [api.example.com], backends: [127.0.0.1:1] }\n  - { name: web, listen: [127.0.0.1:8443], serverNames: [Api.Example.com], backends: [127.0.0.1:2] }\n`,
  );
  const result = check(overlapping);
  t.equal(result.status, 2);
  t.equal(
    result.stderr,
    `fulcrum: ${overlapping}: frontends[1].serverNames[0]: "api.example.com" is a server name of both api and web, which share 127.0.0.1:8443\n`,
    'one line naming the key, the name and both frontends',
  );
  const twoDefaults = write(
    'two-defaults.yaml',
    `frontends:\n  - { name: one, listen: [127.0.0.1:8443], backends: [127.0.0.1:1] }\n  - { name: two, listen: [127.0.0.1:8443], backends: [127.0.0.1:2] }\n`,
  );
  const second = check(twoDefaults);
  t.equal(second.status, 2);
  t.match(
    second.stderr,
    /^fulcrum: .*frontends\[1\]\.listen\[0\]: 127\.0\.0\.1:8443 is already a listener of one, and neither one nor two has serverNames or sources;/,
  );
  t.equal(second.stderr.split('\n').length, 2, 'one line');
  const spaced = write(
    'spaced.yaml',
    `frontends:\n  - { name: api, listen: [127.0.0.1:8443], serverNames: ["api .example.com"], backends: [127.0.0.1:1] }\n`,
  );
  const third = check(spaced);
  t.equal(third.status, 2);
  t.equal(
    third.stderr,
    `fulcrum: ${spaced}: frontends[0].serverNames[0]: "api .example.com" is not a server name (a host name like api.example.com, or *.example.com)\n`,
  );
});

t.test('running with a broken file exits 2 with the same line', async (t) => {
  const path = write('bad-run.yaml', 'frontends: 5\n');
  const result = spawnSync(process.execPath, [BIN, '--config', path], {
    encoding: 'utf8',
    timeout: 20_000,
  });
  t.equal(result.status, 2);
  t.match(result.stderr, /^fulcrum: .*bad-run\.yaml: frontends: Invalid input: expected array/);
});
