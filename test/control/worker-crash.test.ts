// A worker thread that dies takes the process down with exit status 1 (systemd restarts it): it
// cannot be left half-running, with its share of the listeners gone and its live counts frozen
// in the shared table. The crash is injected with FULCRUM_FAULT_WORKER_THROW.

import { once } from 'node:events';
import t from 'tap';
import { query } from '../../src/stats/client.ts';
import {
  connect,
  greet,
  readLine,
  socketPath,
  startBackend,
  startFulcrum,
  waitForLog,
} from '../helpers.ts';

t.test('a worker thread that crashes stops the process with exit status 1, logged', async (t) => {
  const backend = await startBackend(greet);
  t.teardown(() => backend.close());
  const stats = socketPath();
  const fulcrum = await startFulcrum(
    ['--workers', '2', '--no-health-check', '--stats-socket', stats, '--backend', backend.address],
    { FULCRUM_FAULT_WORKER_THROW: '1' },
  );
  t.teardown(() => fulcrum.stop());
  const held = await connect(fulcrum.port);
  t.equal(await readLine(held), String(backend.port));
  // The client half-closes (allowHalfOpen): the end of the stream is what a dead balancer gives.
  const ended = once(held, 'end');
  const exited = once(fulcrum.proc, 'exit');
  // The stats request reaches every worker; worker 1 throws. The answer never comes.
  void query(stats, 'show stat').catch(() => '');
  const [code] = (await exited) as [number | null];
  t.equal(code, 1, 'exit status 1');
  await waitForLog(fulcrum, (l) => l.msg === 'worker thread failed', 5000, 'the failure logged');
  t.ok(
    fulcrum.logs.some((l) => l.msg === 'worker thread exited; stopping'),
    'and why the process stops',
  );
  await ended;
  t.pass('the held client connection is ended, not left hanging');
  held.destroy();
});
