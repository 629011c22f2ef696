// Agent checks (HAProxy's agent protocol): each word an agent says changes what clients get —
// drain, maint and ready; down, stopped and fail with a reason, and up; a weight share; maxconn.
// An agent that stops answering changes nothing; a reload starts again from the config.

import { once } from 'node:events';
import net from 'node:net';
import t from 'tap';
import { applyAgentReply } from '../../src/control/agent.ts';
import { noAgentEffect } from '../../src/control/pool.ts';
import {
  connect,
  eventually,
  greet,
  readLine,
  settled,
  showStat,
  socketPath,
  startBackend,
  startFulcrum,
  waitForLog,
} from '../helpers.ts';

/** An agent that answers `reply.text` (plus a newline) to every question, and counts them. */
async function agentServer() {
  const reply = { text: 'ready', asked: 0 };
  const open = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    reply.asked++;
    open.add(socket);
    socket.on('close', () => open.delete(socket));
    socket.on('error', () => {});
    socket.end(`${reply.text}\n`);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    reply,
    port: (server.address() as net.AddressInfo).port,
    close: async () => {
      for (const s of open) s.destroy();
      server.close();
      await once(server, 'close');
    },
  };
}

/** Which backend answers each of `n` new clients (each closed after its greeting). */
async function whoAnswers(port: number, n: number): Promise<string[]> {
  const answers: string[] = [];
  for (let i = 0; i < n; i++) {
    const socket = await connect(port);
    answers.push(await readLine(socket));
    socket.destroy();
  }
  return answers;
}

t.test('every agent word changes what clients get', async (t) => {
  const a = await startBackend(greet);
  const b = await startBackend(greet);
  const agent = await agentServer();
  const stats = socketPath();
  const fulcrum = await startFulcrum([
    '--workers',
    '1',
    '--stats-socket',
    stats,
    '--algorithm',
    'weighted-round-robin',
    '--agent-interval',
    '100ms',
    '--backend',
    `${a.address},name=a,weight=2,agent=${agent.port}`,
    '--backend',
    `${b.address},name=b,weight=2`,
  ]);
  t.teardown(async () => {
    await fulcrum.stop();
    await a.close();
    await b.close();
    await agent.close();
  });
  const A = String(a.port);
  const B = String(b.port);
  const statOf = async () => (await showStat(stats))[0].backends[0];
  /** The agent says `text`; resolves once fulcrum has heard it. */
  const say = async (text: string) => {
    agent.reply.text = text;
    const asked = agent.reply.asked;
    await eventually(
      async () => agent.reply.asked > asked + 1 && (await statOf()).agent?.said === text,
      5000,
      `the agent heard saying "${text}"`,
    );
  };

  await say('ready');
  t.same(new Set(await whoAnswers(fulcrum.port, 4)), new Set([A, B]), 'both take clients');

  await say('drain');
  t.match(await statOf(), { agent: { admin: 'drain' } });
  t.same(new Set(await whoAnswers(fulcrum.port, 6)), new Set([B]), 'drain: no new client on a');
  await say('ready');
  t.same(new Set(await whoAnswers(fulcrum.port, 4)), new Set([A, B]), 'ready lifts the drain');

  await say('maint');
  t.match(await statOf(), { state: 'disabled', agent: { admin: 'maint' } });
  t.same(new Set(await whoAnswers(fulcrum.port, 6)), new Set([B]), 'maint: no client on a');
  await say('ready');
  t.same(new Set(await whoAnswers(fulcrum.port, 4)), new Set([A, B]), 'ready lifts the maint');

  for (const word of ['down', 'stopped', 'fail']) {
    await say(`${word} #out of memory`);
    t.match(await statOf(), { state: 'down', agent: { down: `${word} (out of memory)` } });
    t.same(new Set(await whoAnswers(fulcrum.port, 6)), new Set([B]), `${word}: no client on a`);
    await say('up');
    t.same(new Set(await whoAnswers(fulcrum.port, 4)), new Set([A, B]), `up after ${word}`);
  }

  await say('50%');
  t.match(await statOf(), { weight: 2, effectiveWeight: 1, agent: { weightPercent: 50 } });
  const shares = await whoAnswers(fulcrum.port, 30);
  const onA = shares.filter((p) => p === A).length;
  t.ok(onA >= 8 && onA <= 12, `a at half its weight: about 1 client in 3 (${onA} of 30)`);
  await say('0%');
  t.same(new Set(await whoAnswers(fulcrum.port, 6)), new Set([B]), '0%: no client on a');
  await say('100%');
  t.match(await statOf(), { effectiveWeight: 2 });

  await say('maxconn:1');
  t.match(await statOf(), { maxconn: 1, agent: { maxconn: 1 } });
  const held: net.Socket[] = [];
  for (let i = 0; i < 6; i++) held.push(await connect(fulcrum.port));
  const answers = await Promise.all(held.map(readLine));
  // Without the limit a would take 3 of the 6 (equal weights).
  t.ok(answers.filter((p) => p === A).length <= 1, 'maxconn:1: a holds one client at most');
  t.ok((await statOf()).active <= 1);
  for (const socket of held) socket.destroy();

  // The words stay when the agent is gone: it is not a health failure.
  await say('drain');
  await agent.close();
  await waitForLog(
    fulcrum,
    (l) => String(l.msg).startsWith('agent unreachable'),
    5000,
    'agent unreachable',
  );
  t.match(await statOf(), { up: true, agent: { admin: 'drain', said: /^\(unreachable/ } });
  t.same(new Set(await whoAnswers(fulcrum.port, 4)), new Set([B]), 'its drain stays');

  // A reload starts from the config.
  fulcrum.proc.kill('SIGHUP');
  await eventually(async () => (await statOf()).agent?.admin === null, 5000, 'agent effect gone');
  t.match(await statOf(), { effectiveWeight: 2, maxconn: 0 });
  t.same(new Set(await whoAnswers(fulcrum.port, 4)), new Set([A, B]), 'a takes clients again');
  await settled(stats, fulcrum);
});

t.test('an agent reply changes only what its words name', async (t) => {
  const start = noAgentEffect();
  t.match(applyAgentReply('75% drain\n', start), { weightPercent: 75, admin: 'drain' });
  const drained = applyAgentReply('drain', start);
  t.match(applyAgentReply('80%', drained), { weightPercent: 80, admin: 'drain' }, 'drain stays');
  t.match(applyAgentReply('maxconn:30,up', start), { maxconn: 30, down: null });
  t.match(applyAgentReply('DOWN#disk full', start), { down: 'down (disk full)' });
  t.match(applyAgentReply('down', start), { down: 'down' });
  t.match(applyAgentReply('hello there', start), { said: 'hello there', admin: null, down: null });
  t.match(applyAgentReply('up\r\nsecond line ignored', start), { said: 'up' });
  t.match(applyAgentReply('fail #a\u0007b', start), { down: 'fail (a\\x07b)' }, 'one line');
});

t.test(
  'regression: only a complete line is an answer; what it says is shown escaped',
  async (t) => {
    const a = await startBackend(greet);
    // Trickles its reply a byte every 150 ms; `line` may be cut short of its newline.
    const mode = { text: '30%\n' };
    const open = new Set<net.Socket>();
    const agent = net.createServer((socket) => {
      open.add(socket);
      socket.on('close', () => open.delete(socket));
      socket.on('error', () => {});
      const bytes = Buffer.from(mode.text, 'utf8');
      let at = 0;
      const timer = setInterval(() => {
        if (at < bytes.length && !socket.destroyed) socket.write(bytes.subarray(at, ++at));
        else clearInterval(timer);
      }, 150);
      socket.on('close', () => clearInterval(timer));
    });
    agent.listen(0, '127.0.0.1');
    await once(agent, 'listening');
    const agentPort = (agent.address() as net.AddressInfo).port;
    const stats = socketPath();
    const fulcrum = await startFulcrum([
      '--stats-socket',
      stats,
      '--no-health-check',
      '--health-timeout',
      '500ms',
      '--agent-interval',
      '100ms',
      '--backend',
      `${a.address},name=a,weight=4,agent=${agentPort}`,
    ]);
    t.teardown(async () => {
      await fulcrum.stop();
      await a.close();
      for (const s of open) s.destroy();
      agent.close();
    });
    const statOf = async () => (await showStat(stats))[0].backends[0];
    await eventually(
      async () => (await statOf()).agent?.said === '(unreachable: no complete line in time)',
      5000,
      'a cut line to be no answer',
    );
    t.equal((await statOf()).weight, 4, '`30%` cut to `30` by the timeout changes nothing');

    mode.text = 'up #h\u00e9llo \u009b[2J\x1b[31m';
    // Short enough to arrive whole within the timeout, then the agent closes: a complete line.
    for (const s of open) s.destroy();
    const fast = net.createServer((socket) => socket.end(mode.text));
    t.teardown(() => fast.close());
    agent.close();
    await once(agent, 'close');
    fast.listen(agentPort, '127.0.0.1');
    await once(fast, 'listening');
    await eventually(
      async () => (await statOf()).agent?.said?.startsWith('up') === true,
      5000,
      'the line, ended by the agent closing',
    );
    const said = String((await statOf()).agent?.said);
    t.equal(said, 'up #h\u00e9llo \\x9b[2J\\x1b[31m', 'UTF-8 text kept, C1 and C0 escaped');
    await settled(stats, fulcrum);
  },
);
