// Readiness, as a router, keepalived or a cloud health check sees it: GET /ready and /live on the
// metrics port, `fulcrum ready` (exit 0, 1 or 2) and the `ready` line of `show info`. Not ready
// when fewer backends are up than --ready-min-up, when stopping (at once, though a --grace period
// still accepts), and when it cannot be asked (a worker crash stops the process); ready again
// when a backend returns.

import { spawnSync } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import t from 'tap';
import { query } from '../../src/stats/client.ts';
import {
  type Backend,
  BIN,
  connect,
  eventually,
  greet,
  readLine,
  settled,
  socketPath,
  startBackend,
  startFulcrum,
  waitForLog,
} from '../helpers.ts';

/** GET `path` on the metrics port: status and body. */
function get(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          body += chunk;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}

/** `fulcrum ready --socket PATH`: exit status and what it printed. */
function ready(path: string) {
  const run = spawnSync(process.execPath, [BIN, 'ready', '--socket', path], { encoding: 'utf8' });
  return { status: run.status, out: run.stdout + run.stderr };
}

t.test(
  '/ready, fulcrum ready and show info follow the backends, and go not ready at once on SIGTERM while the grace period still accepts',
  async (t) => {
    const backends: Backend[] = [await startBackend(greet), await startBackend(greet)];
    t.teardown(() => Promise.all(backends.map((b) => b.close())));
    const stats = socketPath();
    const fulcrum = await startFulcrum([
      '--stats-socket',
      stats,
      '--metrics',
      '127.0.0.1:0',
      '--health-interval',
      '100ms',
      '--rise',
      '1',
      '--fall',
      '1',
      '--ready-min-up',
      '2',
      '--grace',
      '1500ms',
      '--backend',
      backends[0].address,
      '--backend',
      backends[1].address,
    ]);
    t.teardown(() => fulcrum.stop());
    const url = (await waitForLog(fulcrum, (l) => l.msg === 'metrics', 5000, 'the metrics url'))
      .url as string;
    const port = Number(new URL(url).port);

    t.same(await get(port, '/ready'), { status: 200, body: 'ready\n' });
    t.same(await get(port, '/live'), { status: 200, body: 'live\n' });
    t.same(ready(stats), { status: 0, out: 'ready\n' });
    t.match(await query(stats, 'show info'), /^ready: yes$/m);

    // One of two down, with --ready-min-up 2: not ready, and every answer says why.
    const gone = backends[1].port;
    await backends[1].close();
    const why = 'frontend default: 1 of 2 backends up (needs 2)';
    await eventually(
      async () => (await get(port, '/ready')).status === 503,
      5000,
      '/ready to say 503',
    );
    t.same(await get(port, '/ready'), { status: 503, body: `not ready: ${why}\n` });
    t.same(ready(stats), { status: 1, out: `not ready: ${why}\n` });
    t.ok((await query(stats, 'show info')).includes(`\nready: no: ${why}\n`), 'show info says so');
    t.same(await get(port, '/live'), { status: 200, body: 'live\n' }, 'still live');

    // It comes back: ready again.
    backends[1] = await startBackend(greet, gone);
    await eventually(
      async () => (await get(port, '/ready')).status === 200,
      5000,
      '/ready to say 200 again',
    );
    t.same(ready(stats), { status: 0, out: 'ready\n' });
    await settled(stats);

    // SIGTERM with a grace period: not ready at once, still accepting, then the drain.
    fulcrum.proc.kill('SIGTERM');
    await eventually(
      async () => (await get(port, '/ready')).status === 503,
      2000,
      'not ready once stopping',
    );
    t.same(await get(port, '/ready'), { status: 503, body: 'not ready: stopping\n' });
    t.same(ready(stats), { status: 1, out: 'not ready: stopping\n' });
    const during = await connect(fulcrum.port);
    t.ok((await readLine(during)).length > 0, 'a new client is still served during the grace');
    during.destroy();
    const code =
      fulcrum.proc.exitCode ?? (await new Promise((resolve) => fulcrum.proc.once('exit', resolve)));
    t.equal(code, 0, 'then it drains and exits 0');
    const refused = await new Promise<boolean>((resolve) => {
      const s = net.connect(fulcrum.port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(false);
      });
      s.once('error', () => resolve(true));
    });
    t.ok(refused, 'nothing listens once it has gone');
  },
);

t.test(
  'fulcrum ready exits 2 with one line when it cannot ask, as after a worker crash',
  async (t) => {
    const missing = ready(`${socketPath()}-none`);
    t.equal(missing.status, 2);
    t.match(missing.out, /^fulcrum: --socket .*: /);
    t.equal(missing.out.trim().split('\n').length, 1, 'one line');

    const backend = await startBackend(greet);
    t.teardown(() => backend.close());
    const stats = socketPath();
    const fulcrum = await startFulcrum(['--stats-socket', stats, '--backend', backend.address], {
      FULCRUM_FAULT_WORKER_THROW: '0',
    });
    t.teardown(() => fulcrum.stop());
    t.equal(ready(stats).status, 0);
    const exited = new Promise((resolve) => fulcrum.proc.once('exit', resolve));
    await query(stats, 'show stat').catch(() => '');
    t.equal(await exited, 1, 'the crash stops the process');
    const after = ready(stats);
    t.equal(after.status, 2, `not ready: ${after.out.trim()}`);
  },
);
