// Stats socket clients that used to get wrong answers or none: a half-open client (the README's
// `echo CMD | socat - UNIX-CONNECT:SOCK`), a client that pipelines thousands of commands, a word
// that smuggles a second command through `fulcrum ctl`, and a crowd asking for every worker's
// timings at once.

import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import t from 'tap';
import { Coalesced } from '../../src/stats/view.ts';
import { BIN, startWithStats } from '../helpers.ts';

/** Writes `data`, then half-closes (as `echo ... | socat` does) and reads to the end. */
async function halfOpen(path: string, data: string): Promise<string> {
  const socket = net.connect({ path, allowHalfOpen: true });
  let text = '';
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => {
    text += chunk;
  });
  socket.on('error', () => {});
  await once(socket, 'connect');
  socket.end(data);
  await once(socket, 'close');
  return text;
}

t.test('a half-open client gets every answer before the server closes', async (t) => {
  const { path } = await startWithStats(t);
  t.match(await halfOpen(path, 'show stat\n'), /^NAME\s+STATE/, 'show stat');
  t.match(await halfOpen(path, 'show latency\n'), /connect/, 'show latency');
  t.match(await halfOpen(path, 'reload\n'), /^reloaded/, 'reload');
  const both = await halfOpen(path, 'show info\nshow stat json\n');
  t.match(both, /^version: /);
  t.match(both, /"frontends"/, 'both answers of two commands');
});

t.test('a client that pipelines 10,000 commands gets 10,000 answers, in order', async (t) => {
  const { path } = await startWithStats(t);
  const socket = net.connect({ path, allowHalfOpen: true });
  socket.on('error', () => {});
  let answers = 0;
  let text = '';
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => {
    text += chunk;
    const parts = text.split('\n\n');
    answers += parts.length - 1;
    text = parts[parts.length - 1];
  });
  await once(socket, 'connect');
  socket.end('show info json\n'.repeat(10_000));
  await once(socket, 'close');
  t.equal(answers, 10_000, 'every command answered; the client was slowed, not reset');
});

t.test('a word with a control character is refused: by ctl, and by the server', async (t) => {
  const { path, fulcrum } = await startWithStats(t);
  const backend = fulcrum.logs.find((l) => l.msg === 'listening')?.backends as string[];
  const ctl = spawnSync(
    process.execPath,
    [
      BIN,
      'ctl',
      '--socket',
      path,
      'disable',
      `default/${backend[0]}\ndisable default/${backend[1]}`,
    ],
    { encoding: 'utf8', timeout: 20_000 },
  );
  t.equal(ctl.status, 2, 'ctl exits 2');
  t.equal(ctl.stderr, 'fulcrum: ctl: a word contains a control character (newline)\n');
  const server = await halfOpen(path, `disable default/${backend[0]}\rdisable x\n`);
  t.equal(server, 'error: control character in the command (carriage return)\n\n');
  const nul = await halfOpen(path, 'show\u0000 stat\n');
  t.equal(nul, 'error: control character in the command (0x00)\n\n');
  const alone = await halfOpen(path, '\u0000\nshow info\n');
  t.match(alone, /^error: control character in the command \(0x00\)\n\nversion: /, 'and goes on');
  const stat = spawnSync(process.execPath, [BIN, 'stats', '--socket', path, '--json'], {
    encoding: 'utf8',
  });
  const states = (
    JSON.parse(stat.stdout) as { frontends: Array<{ backends: Array<{ state: string }> }> }
  ).frontends[0].backends.map((b) => b.state);
  t.same(states, ['up', 'up'], 'nothing was disabled');
});

t.test('answers that need every worker are shared by the askers of the moment', async (t) => {
  let fetched = 0;
  let release: (value: number) => void = () => {};
  let clock = 0;
  const coalesced = new Coalesced(
    () => {
      fetched++;
      return new Promise<number>((resolve) => {
        release = resolve;
      });
    },
    100,
    () => clock,
  );
  const asked = Array.from({ length: 50 }, () => coalesced.get());
  t.equal(fetched, 1, 'fifty askers at once: one collection');
  release(7);
  t.same(await Promise.all(asked), Array(50).fill(7));
  t.equal(await coalesced.get(), 7, 'within the minimum age: the same answer');
  t.equal(fetched, 1);
  clock += 99;
  t.equal(await coalesced.get(), 7, 'still within it');
  clock += 2;
  const again = coalesced.get();
  t.equal(fetched, 2, 'older than its minimum age: collected again');
  release(8);
  t.equal(await again, 8);
  // A failed collection is not kept: the next asker tries again.
  const failing = new Coalesced(() => {
    fetched++;
    return Promise.reject(new Error('worker gone'));
  }, 100_000);
  await t.rejects(failing.get(), /worker gone/);
  await t.rejects(failing.get(), /worker gone/);
  t.equal(fetched, 4);
});
