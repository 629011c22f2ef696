// `fulcrum top` as a person meets it: in a terminal (tmux runs a shell, keys are typed, the pane
// is read), it shows every backend, quits on q or Ctrl-C and gives the terminal back as it was;
// piped, it prints plain frames.

import { execFileSync, spawnSync } from 'node:child_process';
import t, { type Test } from 'tap';
import { BIN, connect, readLine, startWithStats, waitFor } from '../helpers.ts';

function tmux(...args: string[]): string {
  return execFileSync('tmux', args, { encoding: 'utf8' });
}

async function withBalancer(t: Test) {
  const { backends, path, fulcrum } = await startWithStats(t, ['--workers', '1']);
  for (let k = 0; k < 4; k++) {
    const socket = await connect(fulcrum.port);
    await readLine(socket);
    socket.destroy();
  }
  return { backends, path };
}

for (const key of ['q', 'C-c']) {
  t.test(`in a terminal: shows the backends, quits on ${key}, restores the terminal`, async (t) => {
    const { backends, path } = await withBalancer(t);
    const session = `fulcrum-top-${process.pid}-${key}`;
    tmux('new-session', '-d', '-s', session, '-x', '180', '-y', '30', 'sh');
    t.teardown(() => {
      spawnSync('tmux', ['kill-session', '-t', session]);
    });
    const pane = () => tmux('capture-pane', '-p', '-t', session);
    tmux('send-keys', '-t', session, `${process.execPath} ${BIN} top --socket ${path}`, 'Enter');
    await waitFor(() => pane().includes('POOL/BACKEND'), 10_000, 'top to draw');
    const screen = pane();
    for (const b of backends) t.match(screen, new RegExp(`default/${b.address}\\s+up`));
    t.match(screen, /q: quit/);
    tmux('send-keys', '-t', session, key);
    await waitFor(() => !pane().includes('POOL/BACKEND'), 5000, 'top to leave the screen');
    tmux('send-keys', '-t', session, 'echo terminal-$((40+2))', 'Enter');
    await waitFor(() => pane().includes('terminal-42'), 5000, 'the shell to answer');
    t.pass('the shell is back and echoes normally');
  });
}

t.test('piped: plain frames, no escape codes', async (t) => {
  const { backends, path } = await withBalancer(t);
  const run = spawnSync(
    process.execPath,
    [BIN, 'top', '--socket', path, '-n', '2', '-d', '200ms'],
    {
      encoding: 'utf8',
      timeout: 20_000,
    },
  );
  t.equal(run.status, 0, run.stderr);
  t.notOk(run.stdout.includes('\u001b'), 'no escape codes');
  t.equal(run.stdout.match(/^fulcrum \d+\.\d+\.\d+ /gm)?.length, 2, 'two frames');
  t.match(run.stdout, new RegExp(`default/${backends[0].address}\\s+up`));
});

t.test('top on a socket that is not there: one line, exit 2', async (t) => {
  const run = spawnSync(
    process.execPath,
    [BIN, 'top', '--socket', '/nonexistent/stats.sock', '-n', '1'],
    {
      encoding: 'utf8',
    },
  );
  t.equal(run.status, 2);
  t.match(run.stderr, /^fulcrum: --socket \/nonexistent\/stats.sock: no such socket/);
  t.equal(run.stderr.trim().split('\n').length, 1);
});
