// The one logger: pino JSON lines on stdout, where journald keeps them. Invariant: nothing on the
// data path logs; lines here are lifecycle events (listening, stopping, a worker lost).
//
// pino and pino-pretty are loaded on first use (synchronously, through require): a data-plane
// worker needs pino only when the access log is on, and pino-pretty only for a terminal; loading
// them costs ~35 ms each per thread, at every start and in every worker.

import { createRequire } from 'node:module';
import type pinoModule from 'pino';
import type prettyModule from 'pino-pretty';
import type { LogFormat, LogLevel } from './config/types.ts';

export type Logger = pinoModule.Logger;

const require = createRequire(import.meta.url);

function pino(): typeof pinoModule {
  return require('pino') as typeof pinoModule;
}

/** Where lines go: JSON for journald and log shippers, or pino-pretty's text for a terminal. */
function destination(format: LogFormat): pinoModule.DestinationStream {
  // Synchronous: lines are rare, and none is lost when the process exits right after one.
  if (format === 'pretty') {
    const pretty = require('pino-pretty') as typeof prettyModule;
    return pretty({ sync: true, colorize: process.stdout.isTTY === true, destination: 1 });
  }
  return pino().destination({ fd: 1, sync: true });
}

export function createLogger(level: LogLevel, format: LogFormat): Logger {
  return pino()({ level, base: { pid: process.pid } }, destination(format));
}

/**
 * The access log of one worker thread: synchronous writes of whole lines (each under PIPE_BUF),
 * so lines from several threads sharing stdout never interleave.
 */
export function createAccessLogger(format: LogFormat): Logger {
  const p = pino();
  return p({ base: null, timestamp: p.stdTimeFunctions.isoTime }, destination(format));
}
