// The command line: `fulcrum [run] --listen ... --backend ...`. Invariant: bad input of any kind
// prints exactly one line to stderr, naming the flag and the problem, and exits with status 2.

import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { addSettingOptions, configLoader, inputsFromFlags } from './config/flags.ts';
import { ConfigError, parseDuration, parseInteger } from './config/parse.ts';
import type { Config } from './config/types.ts';
import { ListenError } from './control/listeners.ts';
import { ActivationError } from './control/systemd.ts';
import { ClientError, isError, query } from './stats/client.ts';

// The balancer itself (supervisor, workers, stats, logs) and `top` load only when run: a command
// that fails on its input, `check` and the socket clients start in a fraction of the time.

/** Exit status for bad input (flags, config, a listener that cannot open). */
export const EXIT_USAGE = 2;

const VERSION = (
  JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
    version: string;
  }
).version;

function fail(message: string): never {
  process.stderr.write(`fulcrum: ${message}\n`);
  // A successor (an upgrade) also tells the process it would replace, which logs it.
  if (process.connected && typeof process.send === 'function') {
    process.send({ type: 'failed', message });
  }
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

  const run = program
    .command('run', { isDefault: true })
    .description('run the balancer (the default command)')
    .option(
      '-c, --config <file>',
      'read frontends and settings from a YAML (or JSON) file; process-wide flags given with it override its values',
    );
  const options = addSettingOptions(run);
  run
    .addHelpText(
      'after',
      '\nDurations: 500ms, 3s, 5m, 1h (a bare number is milliseconds).\n' +
        'Example: fulcrum --listen 0.0.0.0:5432 --backend 10.0.0.1:5432 --backend 10.0.0.2:5432,weight=2',
    )
    .action(async (flags: { config?: string }, command: Command) => {
      await runBalancer(configLoader(inputsFromFlags(command, options), flags.config));
    });

  program
    .command('check')
    .description(
      'check a config file (and resolve its hostnames) without binding anything; exit 0 if good, 2 if not',
    )
    .requiredOption('-c, --config <file>', 'the config file')
    .action(async (flags: { config: string }) => {
      const [{ resolveConfig }, { loadConfigFile }] = await Promise.all([
        import('./control/discovery.ts'),
        import('./config/file.ts'),
      ]);
      const config = await resolveConfig(await loadConfigFile(flags.config));
      for (const warning of config.warnings) process.stderr.write(`fulcrum: warning: ${warning}\n`);
      // Each pool's backends once, however many frontends share it.
      const pools = new Map(config.frontends.map((f) => [f.pool, f.backends.length]));
      const backends = [...pools.values()].reduce((n, count) => n + count, 0);
      const shared = pools.size < config.frontends.length ? `, ${pools.size} pools` : '';
      process.stdout.write(
        `${flags.config}: ok (${config.frontends.length} frontends${shared}, ${backends} backends)\n`,
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
    .command('ready')
    .description(
      "whether fulcrum should get traffic (for keepalived's vrrp_script): exit 0 ready, 1 not ready (and why), 2 when it cannot be asked",
    )
    .requiredOption('-s, --socket <path>', 'the stats socket')
    .action(async (flags: { socket: string }) => {
      const { runReady } = await import('./ready.ts');
      await runReady(['--socket', flags.socket]);
    });

  program
    .command('ctl')
    .description(
      'send one command to the stats socket and print the answer (exit 1 on an error answer)',
    )
    .requiredOption('-s, --socket <path>', 'the stats socket')
    .argument('<words...>', 'the command, e.g. disable default/10.0.0.2:5432 (try: help)')
    .action(async (words: string[], flags: { socket: string }) => {
      // One argument must not smuggle a second command (a newline) or anything unprintable.
      const { controlCharacter } = await import('./stats/server.ts');
      for (const word of words) {
        const control = controlCharacter(word);
        if (control !== null) fail(`ctl: a word contains a control character (${control})`);
      }
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
      const { runTop } = await import('./stats/top.ts');
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

/**
 * Signals that came before the balancer existed. bin/fulcrum catches SIGHUP before it loads
 * anything (its default action would kill the process); `onHup` is its handler, to take over.
 */
export interface EarlySignals {
  hup: boolean;
  onHup: () => void;
}

let early: EarlySignals = { hup: false, onHup: () => {} };

async function runBalancer(load: () => Promise<Config>): Promise<void> {
  // Until the config is loaded a SIGHUP is only noted: there is nothing to reload yet.
  process.on('SIGHUP', early.onHup);
  const config = await load();
  const [{ createLogger }, { Supervisor }] = await Promise.all([
    import('./log.ts'),
    import('./control/supervisor.ts'),
  ]);
  const log = createLogger(config.logLevel, config.logFormat);
  const supervisor = new Supervisor(config, log, VERSION, load);
  // Before start(): a signal that arrives as 'ready' is logged must find a handler, not kill us.
  process.on('SIGTERM', () => supervisor.stop('SIGTERM'));
  process.on('SIGINT', () => supervisor.stop('SIGINT'));
  process.on('SIGHUP', () => void supervisor.reload('SIGHUP'));
  process.on('SIGUSR2', () => void supervisor.upgrade('SIGUSR2'));
  process.off('SIGHUP', early.onHup);
  // Noted while loading: the file may have changed since it was read, so reload once ready.
  if (early.hup) void supervisor.reload('SIGHUP');
  await supervisor.start();
}

export async function main(argv: string[], signals?: EarlySignals): Promise<void> {
  if (signals !== undefined) {
    early = signals;
    // Only `run` has a use for SIGHUP; the other commands take its default again.
    process.off('SIGHUP', signals.onHup);
  }
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
      err instanceof ActivationError ||
      err instanceof ClientError
    ) {
      fail(err.message);
    }
    // A StatsSocketError (stats/server.ts, loaded with the balancer): told by its code.
    if (err instanceof Error && (err as { code?: unknown }).code === 'FULCRUM_STATS_SOCKET') {
      fail(err.message);
    }
    throw err;
  }
}
