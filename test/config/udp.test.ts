// UDP in the config: `HOST:PORT,udp` makes a UDP frontend, its settings take their defaults, and
// what means nothing over UDP (or only over UDP) is refused with one line naming it; the CLI
// exits 2 on it.

import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { loaderFromArgs } from '../../src/config/flags.ts';
import { BIN } from '../helpers.ts';

const dir = mkdtempSync(join(tmpdir(), 'fulcrum-udp-config-'));
const load = (args: string[]) => loaderFromArgs(args)();

t.test('a UDP frontend and its defaults', async (t) => {
  const config = await load(['--listen', '[::1]:53,udp', '--backend', '127.0.0.1:5353']);
  const [frontend] = config.frontends;
  t.equal(frontend.protocol, 'udp');
  t.match(frontend.listen[0], { host: '::1', port: 53, udp: true });
  t.same(frontend.udp, {
    idleTimeoutMs: 30_000,
    responses: 0,
    requests: 0,
    maxSessions: 0,
    maxDatagram: 65507,
  });
  t.equal(frontend.health.udp, true, 'probed with datagrams');
  const tcpSide = await load([
    '--listen',
    '127.0.0.1:53,udp',
    '--health-port',
    '8053',
    '--backend',
    '127.0.0.1:5353',
  ]);
  t.equal(tcpSide.frontends[0].health.udp, false, 'a health port alone: its TCP side is probed');
  const tcp = await load(['--listen', '127.0.0.1:80', '--backend', '127.0.0.1:8080']);
  t.equal(tcp.frontends[0].protocol, 'tcp');
  t.equal(tcp.frontends[0].health.udp, false);
});

t.test('refused, in one line naming the setting', async (t) => {
  const cases: Array<[string[], RegExp]> = [
    [['--listen', '127.0.0.1:53,udp', '--udp-idle-timeout', '-1s'], /--udp-idle-timeout: "-1s"/],
    [['--listen', '127.0.0.1:53,udp', '--udp-idle-timeout', '0'], /must be more than 0/],
    [['--listen', '127.0.0.1:53,udp', '--udp-responses', '-1'], /--udp-responses/],
    [['--listen', '127.0.0.1:53,udp', '--listen', '127.0.0.1:54'], /never both/],
    [['--listen', '127.0.0.1:53', '--udp-responses', '1'], /is for UDP; default is a TCP/],
    [['--listen', '127.0.0.1:53,udp', '--send-proxy', 'v2'], /--send-proxy: is for TCP/],
    [['--listen', '127.0.0.1:53,udp', '--idle-timeout', '5s'], /--idle-timeout: is for TCP/],
    [['--listen', '127.0.0.1:53,udp,accept-proxy'], /accept-proxy is for TCP/],
    [['--listen', '127.0.0.1:53,tcp'], /unknown option "tcp"/],
    [['--listen', '127.0.0.1:53,udp', '--udp-max-datagram', '65508'], /out of range/],
    [['--listen', '127.0.0.1:53,udp', '--hash-key', 'sni', '--algorithm', 'maglev'], /sni is/],
  ];
  for (const [args, message] of cases) {
    await t.rejects(load([...args, '--backend', '127.0.0.1:5353']), message, args.join(' '));
  }
  const sendProxy = ['--listen', '127.0.0.1:53,udp', '--backend', '127.0.0.1:5353,send-proxy=v1'];
  await t.rejects(load(sendProxy), /--backend: send-proxy is for TCP/);
});

t.test('in a file: serverNames, a shared address, a pool of both kinds', async (t) => {
  const cases: Array<[string, RegExp]> = [
    [
      `frontends:
  - name: dns
    listen: ["127.0.0.1:53,udp"]
    serverNames: [a.example.com]
    backends: [127.0.0.1:5353]`,
      /frontends\[0\]\.serverNames: is for TCP; dns is a UDP frontend/,
    ],
    [
      `frontends:
  - { name: a, listen: ["127.0.0.1:53,udp"], backends: [127.0.0.1:5353] }
  - { name: b, listen: ["127.0.0.1:53,udp"], backends: [127.0.0.1:5354] }`,
      /UDP frontends cannot share an address/,
    ],
    [
      `pools:
  - { name: p, backends: [127.0.0.1:5353] }
frontends:
  - { name: a, listen: ["127.0.0.1:53,udp"], pool: p }
  - { name: b, listen: ["127.0.0.1:53"], pool: p }`,
      /a pool's backends speak one protocol/,
    ],
  ];
  for (const [k, [text, message]] of cases.entries()) {
    const file = join(dir, `case${k}.yaml`);
    writeFileSync(file, text);
    await t.rejects(load(['--config', file]), message);
  }
  // TCP and UDP on one port are two sockets: allowed (a DNS server takes both).
  const both = join(dir, 'both.yaml');
  writeFileSync(
    both,
    `frontends:
  - { name: dns-udp, listen: ["127.0.0.1:53,udp"], backends: [127.0.0.1:5353] }
  - { name: dns-tcp, listen: ["127.0.0.1:53"], backends: [127.0.0.1:5353] }`,
  );
  t.equal((await load(['--config', both])).frontends.length, 2);
});

t.test('the CLI: one line, exit 2, for a file and for flags', async (t) => {
  const file = join(dir, 'names.yaml');
  writeFileSync(
    file,
    'frontends:\n  - { name: dns, listen: ["127.0.0.1:0,udp"], serverNames: [a.example.com], backends: [127.0.0.1:5353] }\n',
  );
  for (const args of [
    ['check', '--config', file],
    ['--listen', '127.0.0.1:0,udp', '--udp-idle-timeout', '-5s', '--backend', '127.0.0.1:5353'],
  ]) {
    const run = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' });
    t.equal(run.status, 2, args.join(' '));
    t.equal(run.stderr.trim().split('\n').length, 1, `one line: ${run.stderr.trim()}`);
    t.notMatch(run.stderr, /\n\s+at /, 'no stack trace');
  }
});
