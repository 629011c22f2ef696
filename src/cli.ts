// The command line: `fulcrum [run] --listen ... --backend ...`. Invariant: bad input of any kind
// prints exactly one line to stderr, naming the flag and the problem, and exits with status 2.

import { readFileSync } from 'node:fs';
import { Command, CommanderError, Option } from 'commander';
import type { Config, RunFlags } from './config.ts';
import { ConfigError, configFromFlags, DEFAULTS, parseDuration, parseInteger } from './config.ts';
import { loadConfigFile, overridesFromFlags } from './config-file.ts';
import { resolveConfig } from './control/discovery.ts';
import { ListenError, Supervisor } from './control/supervisor.ts';
import { ActivationError } from './control/systemd.ts';
import { ALGORITHMS } from './core/scheduler.ts';
import { createLogger } from './log.ts';
import { ClientError, isError, query } from './stats/client.ts';
import { StatsSocketError } from './stats/server.ts';
import { runTop } from './stats/top.ts';

/** Exit status for bad input (flags, config, a listener that cannot open). */
export const EXIT_USAGE = 2;

const VERSION = (
  JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
    version: string;
  }
).version;

function collect(value: string, previous: string[] | undefined): string[] {
  return previous === undefined ? [value] : [...previous, value];
}

function fail(message: string): never {
  process.stderr.write(`fulcrum: ${message}\n`);
  process.exit(EXIT_USAGE);
}

export function buildProgram(): Command {
  const program = new Command('fulcrum')
    .description(
      'An L4 TCP load balancer: least-connections or weighted, zero-copy, multi-threaded.',
    )
    .version(VERSION, '-V, --version')
    .showHelpAfterError(false)
    .exitOverride()
    .configureOutput({
      writeErr: (text) => {
        // commander prints "error: ..." lines here: make them ours, one line.
        const line = text
          .trim()
          .split('\n')[0]
          .replace(/^error: /, '');
        process.stderr.write(`fulcrum: ${line}\n`);
      },
    });

  program
    .command('run', { isDefault: true })
    .description('run the balancer (the default command)')
    .option(
      '-c, --config <file>',
      'read frontends and settings from a YAML (or JSON) file; flags given with it override its top-level values',
    )
    .option(
      '-l, --listen <host:port[,accept-proxy]>',
      'address to accept clients on; repeatable ([::]:80 for IPv6); accept-proxy: clients come with a PROXY header',
      collect,
    )
    .option(
      '-b, --backend <host:port[,weight=N][,backup][,maxconn=N][,name=NAME]>',
      'a backend; repeatable. weight 0..256 (default 1, 0 = never picked); backup = used only when no other is available; maxconn = most live connections; name = how stats call it',
      collect,
    )
    .addOption(
      new Option('-a, --algorithm <name>', 'how a backend is picked')
        .choices(ALGORITHMS)
        .default(DEFAULTS.algorithm),
    )
    .addOption(
      new Option(
        '--send-proxy <version>',
        'write a PROXY protocol header to every backend',
      ).choices(['v1', 'v2']),
    )
    .option(
      '--proxy-timeout <duration>',
      'on an accept-proxy listener, a client must send its PROXY header within',
      DEFAULTS.proxyTimeout,
    )
    .addOption(
      new Option('--hash-key <key>', 'what maglev hashes: the client address, or address and port')
        .choices(['source-ip', 'source-ip-port'])
        .default(DEFAULTS.hashKey),
    )
    .option(
      '-w, --workers <n|auto>',
      'data-plane threads (auto = available CPUs)',
      DEFAULTS.workers,
    )
    .option(
      '--connect-timeout <duration>',
      'give up connecting to a backend after',
      DEFAULTS.connectTimeout,
    )
    .option(
      '--idle-timeout <duration>',
      'close a connection with no traffic for',
      DEFAULTS.idleTimeout,
    )
    .option('--allow <cidr>', 'only clients in these networks may connect; repeatable', collect)
    .option(
      '--deny <cidr>',
      'clients in these networks are refused (wins over --allow); repeatable',
      collect,
    )
    .option(
      '--max-conns-per-source <n>',
      'live connections one client address may hold; more are closed at once (0 = no limit)',
    )
    .option(
      '--conn-rate-per-source <n/s>',
      'new connections per second one client address may open; more are closed at once',
    )
    .option(
      '--queue-timeout <duration>',
      'when every backend is at its maxconn, a new client waits this long for room',
      DEFAULTS.queueTimeout,
    )
    .option(
      '--retries <n>',
      'connect attempts on other backends after a refused or timed-out one',
      DEFAULTS.retries,
    )
    .option(
      '--health-interval <duration>',
      'time between TCP probes of each backend',
      DEFAULTS.healthInterval,
    )
    .option(
      '--health-timeout <duration>',
      'a probe not connected by then fails',
      DEFAULTS.healthTimeout,
    )
    .option(
      '--rise <n>',
      'consecutive successful probes that mark a down backend up',
      DEFAULTS.rise,
    )
    .option(
      '--fall <n>',
      'consecutive failures (probes or client connects) that mark an up backend down',
      DEFAULTS.fall,
    )
    .option(
      '--no-health-check',
      'no probes: every backend counts as up (retries still cover failed connects)',
    )
    .option(
      '--max-connections <n>',
      'live connections over all workers; beyond it new clients are closed (0 = no limit)',
      DEFAULTS.maxConnections,
    )
    .option(
      '--drain-timeout <duration>',
      'on SIGTERM/SIGINT, wait this long for connections to finish',
      DEFAULTS.drainTimeout,
    )
    .option(
      '--access-log',
      'one JSON line per finished connection: client, backend, bytes, times, how it ended',
    )
    .option(
      '--log-format <format>',
      'json (for journald and shippers) or pretty (for a terminal)',
      DEFAULTS.logFormat,
    )
    .option(
      '--log-level <level>',
      'fatal, error, warn, info, debug, trace or silent',
      DEFAULTS.logLevel,
    )
    .option(
      '--backlog <n>',
      'listen backlog (the kernel caps it at net.core.somaxconn)',
      DEFAULTS.backlog,
    )
    .option(
      '--stats-socket <path>',
      'serve stats and admin commands on this unix socket (mode 0600)',
    )
    .option(
      '--stats-socket-mode <octal>',
      'file mode of the stats socket (0660 lets a group in)',
      DEFAULTS.statsSocketMode,
    )
    .addOption(
      new Option('--stats-level <level>', 'what the stats socket allows')
        .choices(['read', 'admin'])
        .default(DEFAULTS.statsLevel),
    )
    .option('--metrics <host:port>', 'serve Prometheus metrics on http://HOST:PORT/metrics')
    .option(
      '--resolver <host:port>',
      "a DNS server for hostname and srv+NAME backends (repeatable; default: the system's)",
      collect,
    )
    .option(
      '--resolve-interval <duration>',
      'resolve hostname and SRV backends again this often (sooner if the TTL is shorter)',
      DEFAULTS.resolveInterval,
    )
    .option(
      '--state-file <path>',
      'keep runtime changes (add/del backend, weights, disable/drain) here, across reloads and restarts',
    )
    .addHelpText(
      'after',
      '\nDurations: 500ms, 3s, 5m, 1h (a bare number is milliseconds).\n' +
        'Example: fulcrum --listen 0.0.0.0:5432 --backend 10.0.0.1:5432 --backend 10.0.0.2:5432,weight=2',
    )
    .action(async (flags: RunFlags, command: Command) => {
      await run(flags, (key) => command.getOptionValueSource(key) === 'cli');
    });

  program
    .command('check')
    .description(
      'check a config file (and resolve its hostnames) without binding anything; exit 0 if good, 2 if not',
    )
    .requiredOption('-c, --config <file>', 'the config file')
    .action(async (flags: { config: string }) => {
      const config = await resolveConfig(await loadConfigFile(flags.config));
      const backends = config.frontends.reduce((n, f) => n + f.backends.length, 0);
      process.stdout.write(
        `${flags.config}: ok (${config.frontends.length} frontends, ${backends} backends)\n`,
      );
    });

  program
    .command('stats')
    .description('show every frontend and backend (`show stat` on the stats socket)')
    .requiredOption('-s, --socket <path>', 'the stats socket')
    .option('--json', 'JSON instead of a table')
    .action(async (flags: { socket: string; json?: boolean }) => {
      const answer = await query(
        flags.socket,
        flags.json === true ? 'show stat json' : 'show stat',
      );
      process.stdout.write(`${answer}\n`);
    });

  program
    .command('ctl')
    .description(
      'send one command to the stats socket and print the answer (exit 1 on an error answer)',
    )
    .requiredOption('-s, --socket <path>', 'the stats socket')
    .argument('<words...>', 'the command, e.g. disable default/10.0.0.2:5432 (try: help)')
    .action(async (words: string[], flags: { socket: string }) => {
      const answer = await query(flags.socket, words.join(' '));
      process.stdout.write(`${answer}\n`);
      if (isError(answer)) process.exitCode = 1;
    });

  program
    .command('top')
    .description('a live view of every frontend and backend, refreshed every second (q quits)')
    .requiredOption('-s, --socket <path>', 'the stats socket')
    .option('-d, --delay <duration>', 'time between refreshes', '1s')
    .option('-n, --iterations <n>', 'frames to draw, then exit (default: until q)')
    .action(async (flags: { socket: string; delay: string; iterations?: string }) => {
      await runTop({
        socket: flags.socket,
        intervalMs: parseDuration(flags.delay, '--delay'),
        iterations:
          flags.iterations === undefined
            ? Number.POSITIVE_INFINITY
            : parseInteger(flags.iterations, '--iterations', 1, 1_000_000),
      });
      process.exit(0);
    });

  return program;
}

/** Loads the config as the command line asks: from the file (flags override its top level) or
 *  from flags alone; hostnames are resolved by the supervisor. Called again on every reload. */
function configLoader(flags: RunFlags, given: (key: string) => boolean): () => Promise<Config> {
  if (flags.config === undefined) return async () => configFromFlags(flags);
  const file = flags.config;
  const overrides = overridesFromFlags(flags, given);
  return () => loadConfigFile(file, overrides);
}

async function run(flags: RunFlags, given: (key: string) => boolean): Promise<void> {
  const load = configLoader(flags, given);
  const config = await load();
  const log = createLogger(config.logLevel, config.logFormat);
  const supervisor = new Supervisor(config, log, VERSION, load);
  // Before start(): a signal that arrives as 'ready' is logged must find a handler, not kill us.
  process.on('SIGTERM', () => supervisor.stop('SIGTERM'));
  process.on('SIGINT', () => supervisor.stop('SIGINT'));
  process.on('SIGHUP', () => void supervisor.reload('SIGHUP'));
  await supervisor.start();
}

export async function main(argv: string[]): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version exit 0; everything else commander rejects is bad input.
      process.exit(err.exitCode === 0 ? 0 : EXIT_USAGE);
    }
    if (
      err instanceof ConfigError ||
      err instanceof ListenError ||
      err instanceof StatsSocketError ||
      err instanceof ActivationError ||
      err instanceof ClientError
    ) {
      fail(err.message);
    }
    throw err;
  }
}
