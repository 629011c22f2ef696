// The command line as users meet it: bad input gets one line naming the flag and exit status 2
// (no stack trace); --help and --version exit 0.

import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import t from 'tap';
import { loaderFromArgs } from '../../src/config/flags.ts';
import { ConfigError } from '../../src/config/parse.ts';
import { query } from '../../src/stats/client.ts';
import {
  BIN,
  connect,
  greet,
  readLine,
  startBackend,
  startFulcrum,
  startWithStats,
} from '../helpers.ts';

function fulcrum(args: string[]) {
  return spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 20_000 });
}

const OK_BACKEND = ['--backend', '127.0.0.1:9'];
const OK_LISTEN = ['--listen', '127.0.0.1:0'];

const cases: Array<[string, string[], string]> = [
  ['no --listen', [...OK_BACKEND], '--listen'],
  ['no --backend', [...OK_LISTEN], '--backend'],
  ['an unparsable listen address', ['--listen', 'localhost', ...OK_BACKEND], '--listen'],
  ['a bad IPv6 listen address', ['--listen', '[zz::1]:80', ...OK_BACKEND], '--listen'],
  ['a backend port out of range', [...OK_LISTEN, '--backend', '127.0.0.1:99999'], '--backend'],
  ['a backend with port 0', [...OK_LISTEN, '--backend', '127.0.0.1:0'], '--backend'],
  ['a weight out of range', [...OK_LISTEN, '--backend', '127.0.0.1:80,weight=300'], 'weight'],
  ['an unknown backend option', [...OK_LISTEN, '--backend', '127.0.0.1:80,heavy'], '--backend'],
  ['a backend given twice', [...OK_LISTEN, ...OK_BACKEND, ...OK_BACKEND], '--backend'],
  ['an unknown algorithm', [...OK_LISTEN, ...OK_BACKEND, '--algorithm', 'random'], '--algorithm'],
  ['negative retries', [...OK_LISTEN, ...OK_BACKEND, '--retries=-1'], '--retries'],
  ['zero workers', [...OK_LISTEN, ...OK_BACKEND, '--workers', '0'], '--workers'],
  ['a non-numeric worker count', [...OK_LISTEN, ...OK_BACKEND, '--workers', 'many'], '--workers'],
  [
    'a bad duration',
    [...OK_LISTEN, ...OK_BACKEND, '--connect-timeout', 'soon'],
    '--connect-timeout',
  ],
  ['a zero idle timeout', [...OK_LISTEN, ...OK_BACKEND, '--idle-timeout', '0s'], '--idle-timeout'],
  ['a negative limit', [...OK_LISTEN, ...OK_BACKEND, '--max-connections=-5'], '--max-connections'],
  ['an unknown log level', [...OK_LISTEN, ...OK_BACKEND, '--log-level', 'loud'], '--log-level'],
  ['an unknown log format', [...OK_LISTEN, ...OK_BACKEND, '--log-format', 'xml'], '--log-format'],
  ['an unknown flag', [...OK_LISTEN, ...OK_BACKEND, '--turbo'], '--turbo'],
  [
    'a bad health interval',
    [...OK_LISTEN, ...OK_BACKEND, '--health-interval', 'often'],
    '--health-interval',
  ],
  [
    'a health interval under the floor (a probe every millisecond)',
    [...OK_LISTEN, ...OK_BACKEND, '--health-interval', '1ms'],
    '--health-interval',
  ],
  [
    'a zero health timeout',
    [...OK_LISTEN, ...OK_BACKEND, '--health-timeout', '0'],
    '--health-timeout',
  ],
  ['rise 0', [...OK_LISTEN, ...OK_BACKEND, '--rise', '0'], '--rise'],
  ['a non-numeric fall', [...OK_LISTEN, ...OK_BACKEND, '--fall', 'x'], '--fall'],
  [
    'a socket mode open to all',
    [...OK_LISTEN, ...OK_BACKEND, '--stats-socket-mode', '0666'],
    '--stats-socket-mode',
  ],
  [
    'a socket mode that is not octal',
    [...OK_LISTEN, ...OK_BACKEND, '--stats-socket-mode', 'rw'],
    '--stats-socket-mode',
  ],
  [
    'an unknown stats level',
    [...OK_LISTEN, ...OK_BACKEND, '--stats-level', 'root'],
    '--stats-level',
  ],
  ['a bad CIDR in --allow', [...OK_LISTEN, ...OK_BACKEND, '--allow', '10.0.0.0/33'], '--allow'],
  ['a bad address in --deny', [...OK_LISTEN, ...OK_BACKEND, '--deny', 'example.com'], '--deny'],
  [
    'a rate that is not N/s',
    [...OK_LISTEN, ...OK_BACKEND, '--conn-rate-per-source', 'fast'],
    '--conn-rate-per-source',
  ],
  [
    'a negative per-source limit',
    [...OK_LISTEN, ...OK_BACKEND, '--max-conns-per-source=-1'],
    '--max-conns-per-source',
  ],
  ['an unknown PROXY version', [...OK_LISTEN, ...OK_BACKEND, '--send-proxy', 'v3'], '--send-proxy'],
  [
    'an unknown backend send-proxy',
    [...OK_LISTEN, '--backend', '127.0.0.1:80,send-proxy=v9'],
    'send-proxy',
  ],
  ['an unknown listen option', ['--listen', '127.0.0.1:0,tls', ...OK_BACKEND], '--listen'],
  ['a bad SRV name', [...OK_LISTEN, '--backend', 'srv+nodots'], '--backend'],
  ['a bad slowstart', [...OK_LISTEN, '--backend', '127.0.0.1:80,slowstart=soon'], 'slowstart'],
  ['a maxconn out of range', [...OK_LISTEN, '--backend', '127.0.0.1:80,maxconn=-2'], 'maxconn'],
  [
    'a resolver that is a name',
    [...OK_LISTEN, ...OK_BACKEND, '--resolver', 'dns.local:53'],
    '--resolver',
  ],
  ['an unknown hash key', [...OK_LISTEN, ...OK_BACKEND, '--hash-key', 'cookie'], '--hash-key'],
  [
    'a zero queue timeout',
    [...OK_LISTEN, ...OK_BACKEND, '--queue-timeout', '0'],
    '--queue-timeout',
  ],
  [
    'a health path without /',
    [...OK_LISTEN, ...OK_BACKEND, '--health-http', 'ready'],
    '--health-http',
  ],
  [
    'a health path with a space',
    [...OK_LISTEN, ...OK_BACKEND, '--health-http', '/a b'],
    '--health-http',
  ],
  [
    'a Host header that is not a name',
    [...OK_LISTEN, ...OK_BACKEND, '--health-http', '/r', '--health-host', 'a b'],
    '--health-host',
  ],
  [
    '--health-host without --health-http',
    [...OK_LISTEN, ...OK_BACKEND, '--health-host', 'api'],
    '--health-host',
  ],
  [
    'a status out of range',
    [...OK_LISTEN, ...OK_BACKEND, '--health-http', '/r', '--health-expect-status', '200-700'],
    '--health-expect-status',
  ],
  [
    'a status range upside down',
    [...OK_LISTEN, ...OK_BACKEND, '--health-http', '/r', '--health-expect-status', '399-200'],
    '--health-expect-status',
  ],
  [
    'an unknown escape',
    [...OK_LISTEN, ...OK_BACKEND, '--health-expect', 'a\\q'],
    '--health-expect',
  ],
  [
    'a short \\x escape',
    [...OK_LISTEN, ...OK_BACKEND, '--health-expect', '\\x4'],
    '--health-expect',
  ],
  [
    '--health-send without --health-expect',
    [...OK_LISTEN, ...OK_BACKEND, '--health-send', 'PING'],
    '--health-send',
  ],
  [
    'two kinds of probe',
    [...OK_LISTEN, ...OK_BACKEND, '--health-http', '/r', '--health-grpc'],
    '--health-grpc',
  ],
  [
    'a gRPC service with a slash',
    [...OK_LISTEN, ...OK_BACKEND, '--health-grpc', 'a/b'],
    '--health-grpc',
  ],
  ['a health port of 0', [...OK_LISTEN, ...OK_BACKEND, '--health-port', '0'], '--health-port'],
  ['an agent port too big', [...OK_LISTEN, ...OK_BACKEND, '--agent-port', '70000'], '--agent-port'],
  ['a backend agent port', [...OK_LISTEN, '--backend', '127.0.0.1:80,agent=x'], 'agent'],
  [
    '--agent-interval without any agent',
    [...OK_LISTEN, ...OK_BACKEND, '--agent-interval', '1s'],
    '--agent-interval',
  ],
  [
    'an agent interval under the floor',
    [...OK_LISTEN, ...OK_BACKEND, '--agent-port', '9', '--agent-interval', '1ms'],
    '--agent-interval',
  ],
  [
    'a metric name with a space',
    [...OK_LISTEN, ...OK_BACKEND, '--load-metric', 'queue depth'],
    '--load-metric',
  ],
  [
    'a label matcher without quotes',
    [...OK_LISTEN, ...OK_BACKEND, '--load-metric', 'q{model=m}'],
    '--load-metric',
  ],
  [
    '--load-interval without --load-metric',
    [...OK_LISTEN, ...OK_BACKEND, '--load-interval', '1s'],
    '--load-interval',
  ],
  [
    'least-load without --load-metric',
    [...OK_LISTEN, ...OK_BACKEND, '--algorithm', 'least-load'],
    '--algorithm',
  ],
  [
    'a metrics path without /',
    [...OK_LISTEN, ...OK_BACKEND, '--load-metric', 'q', '--load-metrics-path', 'metrics'],
    '--load-metrics-path',
  ],
  [
    'a balance factor below 100',
    [...OK_LISTEN, ...OK_BACKEND, '--hash-balance-factor', '90'],
    '--hash-balance-factor',
  ],
  [
    'a bad inspect timeout',
    [...OK_LISTEN, ...OK_BACKEND, '--inspect-timeout', 'soon'],
    '--inspect-timeout',
  ],
  ['a hash key of no kind', [...OK_LISTEN, ...OK_BACKEND, '--hash-key', 'host'], '--hash-key'],
  ['stats without --socket', ['stats'], '--socket'],
  ['ctl without words', ['ctl', '--socket', '/tmp/x.sock'], 'words'],
];

/** fulcrum run to its exit, without blocking this process (so several can run at once). */
function runToExit(
  args: string[],
): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

/**
 * The error the config loader throws for `args`, when it is a ConfigError: what the CLI prints as
 * its one line, exit 2 (src/cli.ts maps every ConfigError so, and the cases run as processes
 * below prove it). Null when the loader accepts them or throws anything else (commander's own
 * errors, other commands): those cases run as processes.
 */
async function configError(args: string[]): Promise<ConfigError | null> {
  if (args[0] === 'stats' || args[0] === 'ctl') return null;
  try {
    await loaderFromArgs(args)();
    return null;
  } catch (err) {
    return err instanceof ConfigError ? err : null;
  }
}

/** Cases that run as processes though the loader's ConfigError tells the answer: a sample of
 *  them, so the CLI's mapping of that error is seen from outside. */
const SPAWNED_SAMPLE = 8;

// A process start costs a few hundred ms of Node startup: the processes run four at a time, and
// each case is checked as its own test, in order.
const RUNNING_AT_ONCE = 4;
const runs: Array<Promise<Awaited<ReturnType<typeof runToExit>> | ConfigError>> = [];
for (let i = 0; i < cases.length; i++) {
  const before = runs[i - RUNNING_AT_ONCE] ?? Promise.resolve();
  runs.push(
    before.then(async () => {
      const error = i < SPAWNED_SAMPLE ? null : await configError(cases[i][1]);
      return error ?? runToExit(cases[i][1]);
    }),
  );
}

for (const [i, [what, , flag]] of cases.entries()) {
  t.test(`${what}: exit 2, one line naming ${flag}`, async (t) => {
    const outcome = await runs[i];
    if (outcome instanceof ConfigError) {
      // In process: the line the CLI would print is `fulcrum: MESSAGE`.
      t.equal(outcome.message.split('\n').length, 1, 'one line');
      t.ok(outcome.message.includes(flag), `names ${flag}: ${outcome.message}`);
      return;
    }
    const run = outcome;
    t.equal(run.status, 2, `exit status (stderr: ${run.stderr})`);
    const lines = run.stderr.trim().split('\n');
    t.equal(lines.length, 1, 'exactly one line');
    t.match(lines[0], /^fulcrum: /);
    t.ok(lines[0].includes(flag), `names ${flag}: ${lines[0]}`);
    t.notMatch(run.stderr, /\n\s+at /, 'no stack trace');
    t.equal(run.stdout, '', 'nothing on stdout');
  });
}

t.test('a port in use: exit 2, one line naming --listen and the address', async (t) => {
  const blocker = net.createServer().listen(0, '127.0.0.1');
  await once(blocker, 'listening');
  const port = (blocker.address() as net.AddressInfo).port;
  t.teardown(() => {
    blocker.close();
  });
  const run = fulcrum(['--listen', `127.0.0.1:${port}`, ...OK_BACKEND, '--workers', '2']);
  t.equal(run.status, 2);
  t.equal(run.stderr, `fulcrum: --listen 127.0.0.1:${port}: address in use by another process\n`);
});

t.test(
  'regression: an address another process listens on with SO_REUSEPORT is refused',
  async (t) => {
    // A listener as a fulcrum worker holds one: SO_REUSEPORT would let a second one bind beside it
    // and the kernel split the clients between the two processes.
    const blocker = net.createServer().listen({ port: 0, host: '127.0.0.1', reusePort: true });
    await once(blocker, 'listening');
    const port = (blocker.address() as net.AddressInfo).port;
    t.teardown(() => {
      blocker.close();
    });
    const run = fulcrum(['--listen', `127.0.0.1:${port}`, ...OK_BACKEND, '--workers', '1']);
    t.equal(run.status, 2);
    t.equal(run.stderr, `fulcrum: --listen 127.0.0.1:${port}: address in use by another process\n`);

    const first = await startFulcrum(['--listen', '127.0.0.1:0', ...OK_BACKEND]);
    t.teardown(() => first.stop());
    const second = fulcrum([
      '--listen',
      `127.0.0.1:${first.port}`,
      ...OK_BACKEND,
      '--workers',
      '1',
    ]);
    t.equal(second.status, 2, "a second fulcrum on the first one's address");
    t.match(second.stderr, /address in use by another process\n$/);
  },
);

t.test('--help lists every flag with its default, exit 0', async (t) => {
  const run = fulcrum(['run', '--help']);
  t.equal(run.status, 0);
  for (const flag of [
    '--listen',
    '--backend',
    '--algorithm',
    '--workers',
    '--connect-timeout',
    '--idle-timeout',
    '--retries',
    '--max-connections',
    '--drain-timeout',
    '--log-level',
    '--backlog',
  ]) {
    t.ok(run.stdout.includes(flag), flag);
  }
  t.match(run.stdout, /default: "least-conn"/);
  t.match(run.stdout, /default: "3s"/);
});

t.test('--log-format pretty: readable lines for a terminal, not JSON', async (t) => {
  const proc = spawn(
    process.execPath,
    [BIN, ...OK_LISTEN, ...OK_BACKEND, '--log-format', 'pretty'],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let out = '';
  let signalled = false;
  proc.stdout.on('data', (chunk: Buffer) => {
    out += chunk.toString();
    if (!signalled && out.includes('ready')) {
      signalled = true; // once: a second signal means "exit now, status 1"
      proc.kill('SIGTERM');
    }
  });
  const [code] = (await once(proc, 'exit')) as [number];
  t.equal(code, 0);
  t.match(out, /INFO \(\d+\): listening/);
  t.match(out, /INFO \(\d+\): ready/);
  t.notMatch(out, /^\{"level"/m, 'no JSON lines');
});

t.test('--version prints the version, exit 0', async (t) => {
  const run = fulcrum(['--version']);
  t.equal(run.status, 0);
  t.match(run.stdout, /^\d+\.\d+\.\d+\n$/);
});

/** What the backend grammar's help must name: every option, and the SRV form. */
const GRAMMAR_WORDS = [
  'weight=',
  'backup',
  'maxconn=',
  'slowstart=',
  'send-proxy=',
  'name=',
  'srv+',
];

t.test('regression: --backend help names every backend option and srv+NAME', async (t) => {
  const run = fulcrum(['run', '--help']);
  const backendHelp = run.stdout.slice(
    run.stdout.indexOf('--backend'),
    run.stdout.indexOf('--algorithm'),
  );
  for (const word of GRAMMAR_WORDS) {
    t.ok(backendHelp.includes(word), `--backend help names ${word}`);
  }
});

t.test(
  'regression: --send-proxy none is accepted, as the file accepts sendProxy: none',
  async (t) => {
    const backend = await startBackend(greet);
    t.teardown(() => backend.close());
    const running = await startFulcrum([
      '--workers',
      '1',
      '--send-proxy',
      'none',
      '--backend',
      backend.address,
    ]);
    const socket = await connect(running.port);
    t.equal(
      await readLine(socket),
      String(backend.port),
      'no header reaches the backend: it greets as usual',
    );
    socket.destroy();
    t.equal(await running.stop(), 0);
  },
);

t.test(
  'regression: the stats socket help and add backend usage name the whole backend grammar',
  async (t) => {
    const { path } = await startWithStats(t);
    const help = await query(path, 'help');
    const usage = await query(path, 'add backend');
    for (const text of [help, usage]) {
      for (const word of GRAMMAR_WORDS) {
        t.ok(text.includes(word), `names ${word}: ${text.split('\n')[0]}`);
      }
    }
  },
);
