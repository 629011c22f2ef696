// The stats socket's language: one command per line in, one answer out. Invariant: an answer is
// never empty and never contains an empty line (the server ends each with one); an error answer
// is one line starting with "error: ", and a refused or failed command changes nothing.

import { BACKEND_GRAMMAR } from '../config/backend.ts';
import type { StatsLevel } from '../config/types.ts';
import type { Logger } from '../log.ts';
import type { FrontendStat, LatencyStat, StatsView } from './view.ts';
import { MAX_WEIGHT } from './view.ts';

const HELP = [
  'help                              this list',
  'show info [json]                  version, pid, uptime, workers, connections, rates',
  'show stat [json]                  one row per frontend and backend',
  'show latency [json]               connect, first-byte and duration percentiles, whole run and last minute',
  'show state                        runtime changes kept in the state file (added, deleted, weights, admin)',
  'enable FRONTEND/BACKEND           admin: take new connections again',
  'disable FRONTEND/BACKEND          admin: no new connections; live ones stay',
  'drain FRONTEND/BACKEND            admin: like disable, reported draining until its last connection ends',
  'set weight FRONTEND/BACKEND N     admin: weight 0..256',
  `add backend FRONTEND ${BACKEND_GRAMMAR}`,
  '                                  admin: a new backend, in every worker at once (a hostname follows DNS)',
  'del backend FRONTEND/BACKEND [now] admin: no new connections; leaves after its last (now: resets them)',
  'reset counters                    admin: zero the cumulative counters',
  'reload                            admin: re-read the config file, as SIGHUP does',
  'quit                              close this connection',
].join('\n');

/** What the server should do after answering. */
export interface Answer {
  text: string;
  close: boolean;
}

function error(message: string): Answer {
  return { text: `error: ${message}`, close: false };
}

function ok(text: string): Answer {
  return { text, close: false };
}

export async function execute(
  line: string,
  view: StatsView,
  level: StatsLevel,
  version: string,
  log: Logger,
): Promise<Answer> {
  const words = line.trim().split(/\s+/);
  const [verb, second, third] = words;
  switch (verb) {
    case 'help':
      return ok(HELP);
    case 'quit':
      return { text: 'bye', close: true };
    case 'show':
      if (second === 'info' && words.length <= 3 && (third === undefined || third === 'json')) {
        const info = view.info(version);
        return ok(
          third === 'json'
            ? JSON.stringify(info)
            : Object.entries(info)
                .map(([k, v]) => `${k}: ${v}`)
                .join('\n'),
        );
      }
      if (second === 'stat' && words.length <= 3 && (third === undefined || third === 'json')) {
        const stat = await view.stat();
        return ok(third === 'json' ? JSON.stringify(stat) : formatStat(stat.frontends));
      }
      if (second === 'latency' && words.length <= 3 && (third === undefined || third === 'json')) {
        const latency = await view.latency();
        return ok(
          third === 'json' ? JSON.stringify({ frontends: latency }) : formatLatency(latency),
        );
      }
      if (second === 'state' && words.length === 2) {
        return ok(JSON.stringify(view.source.showState(), null, 2));
      }
      return error('usage: show info [json] | show stat [json] | show latency [json] | show state');
    case 'enable':
    case 'disable':
    case 'drain':
    case 'set':
    case 'reset':
    case 'add':
    case 'del':
      return admin(words, view, level, log);
    case 'reload': {
      if (level !== 'admin')
        return error('"reload" needs the admin level; this socket is read-only');
      if (words.length !== 1) return error('usage: reload');
      log.info({ command: 'reload' }, 'admin command');
      const result = await view.source.reload();
      return result.ok ? ok(result.message) : error(result.message);
    }
    default:
      return error(`unknown command "${printable(verb ?? '')}" (try help)`);
  }
}

async function admin(
  words: string[],
  view: StatsView,
  level: StatsLevel,
  log: Logger,
): Promise<Answer> {
  if (level !== 'admin')
    return error(`"${words[0]}" needs the admin level; this socket is read-only`);
  const [verb, second, third, fourth] = words;
  if (verb === 'add') {
    if (second !== 'backend' || words.length !== 4) {
      return error(`usage: add backend FRONTEND ${BACKEND_GRAMMAR}`);
    }
    log.info({ command: 'add backend', frontend: third, backend: fourth }, 'admin command');
    const outcome = await view.source.addBackend(third, fourth);
    return outcome.ok ? ok(outcome.message) : error(outcome.message);
  }
  if (verb === 'del') {
    const now = words[3] === 'now';
    if (second !== 'backend' || words.length !== (now ? 4 : 3)) {
      return error('usage: del backend FRONTEND/BACKEND [now]');
    }
    const slash = third.indexOf('/');
    if (slash < 0) return error(`"${printable(third)}" is not FRONTEND/BACKEND`);
    log.info({ command: 'del backend', backend: third, now }, 'admin command');
    const outcome = await view.source.delBackend(
      third.slice(0, slash),
      third.slice(slash + 1),
      now,
    );
    return outcome.ok ? ok(outcome.message) : error(outcome.message);
  }
  if (verb === 'reset') {
    if (second !== 'counters' || words.length !== 2) return error('usage: reset counters');
    view.resetCounters();
    log.info({ command: 'reset counters' }, 'admin command');
    return ok('counters reset');
  }
  if (verb === 'set') {
    if (second !== 'weight' || words.length !== 4)
      return error('usage: set weight FRONTEND/BACKEND N');
    const ref = view.find(third);
    if (typeof ref === 'string') return error(ref);
    if (!/^\d+$/.test(fourth) || Number(fourth) > MAX_WEIGHT) {
      return error(`weight "${printable(fourth)}" is out of range (0..${MAX_WEIGHT})`);
    }
    await view.source.setWeight(ref, Number(fourth));
    log.info({ command: 'set weight', backend: ref.name, weight: Number(fourth) }, 'admin command');
    return ok(`${ref.name} weight ${fourth}`);
  }
  if (words.length !== 2) return error(`usage: ${verb} FRONTEND/BACKEND`);
  const ref = view.find(second);
  if (typeof ref === 'string') return error(ref);
  await view.source.setAdmin(
    ref,
    verb === 'enable' ? 'enabled' : verb === 'disable' ? 'disabled' : 'draining',
  );
  log.info({ command: verb, backend: ref.name }, 'admin command');
  return ok(`${ref.name} ${verb === 'drain' ? 'draining' : `${verb}d`}`);
}

/** A word as it may be echoed in an error: printable ASCII, and not too long. */
function printable(word: string): string {
  const clean = word.replace(/[^\x20-\x7e]/g, '?');
  return clean.length > 40 ? `${clean.slice(0, 40)}...` : clean;
}

function table(rows: string[][]): string {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  return rows
    .map((r) =>
      r
        .map((cell, c) => cell.padEnd(widths[c]))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

function formatStat(frontends: FrontendStat[]): string {
  const rows: string[][] = [
    [
      'NAME',
      'STATE',
      'WEIGHT',
      'ACTIVE',
      'TOTAL',
      'FAILURES',
      'BYTES_IN',
      'BYTES_OUT',
      'CONNECT_P50',
      'CONNECT_P99',
    ],
  ];
  for (const frontend of frontends) {
    const active = frontend.backends.reduce((n, b) => n + b.active, 0);
    const total = frontend.backends.reduce((n, b) => n + b.total, 0);
    rows.push([
      `${frontend.name} (${frontend.listen.join(', ')}, ${frontend.algorithm})`,
      '',
      '',
      String(active),
      String(total),
      '',
      '',
      '',
      '',
      '',
    ]);
    for (const b of frontend.backends) {
      rows.push([
        `  ${frontend.name}/${b.name}`,
        b.state,
        String(b.weight),
        String(b.active),
        String(b.total),
        String(b.failures),
        String(b.bytesIn),
        String(b.bytesOut),
        `${b.connectMs.p50}ms`,
        `${b.connectMs.p99}ms`,
      ]);
    }
  }
  return table(rows);
}

function formatLatency(frontends: Array<LatencyStat & { backends: LatencyStat[] }>): string {
  const sections: string[] = [];
  for (const [metric, title] of [
    ['connectMs', 'connect time'],
    ['firstByteMs', "time to the backend's first byte"],
    ['durationMs', 'connection duration'],
  ] as const) {
    const rows: string[][] = [['NAME', 'WINDOW', 'COUNT', 'P50', 'P90', 'P99', 'P99.9', 'MAX']];
    const add = (name: string, stat: LatencyStat) => {
      for (const [window, p] of [
        ['total', stat[metric].total],
        ['1m', stat[metric].lastMinute],
      ] as const) {
        rows.push([
          name,
          window,
          String(p.count),
          ...[p.p50, p.p90, p.p99, p.p999, p.max].map((v) => `${v}ms`),
        ]);
      }
    };
    for (const frontend of frontends) {
      add(frontend.name, frontend);
      for (const b of frontend.backends) add(`  ${frontend.name}/${b.name}`, b);
    }
    sections.push(`${title}\n${table(rows)}`);
  }
  // One blank-free answer: sections are separated by a ruler, not an empty line.
  return sections.join('\n--\n');
}
