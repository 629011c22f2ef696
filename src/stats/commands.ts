// The stats socket's language: one command per line in, one answer out. Invariant: an answer is
// never empty and never contains an empty line (the server ends each with one); an error answer
// is one line starting with "error: ", and a refused or failed command changes nothing.

import { BACKEND_GRAMMAR } from '../config/backend.ts';
import type { StatsLevel } from '../config/types.ts';
import type { Logger } from '../log.ts';
import { MAX_WEIGHT } from '../shared/table.ts';
import type { Percentiles } from './latency.ts';
import type { BackendStat, FrontendLatency, FrontendStat, LatencyStat, StatsView } from './view.ts';

const HELP = [
  'help                              this list',
  'show info [json]                  version, pid, uptime, workers, connections, rates',
  'show stat [json]                  one row per frontend and per backend of its pool (json: pools too)',
  'show latency [json]               connect, first-byte and duration percentiles, whole run and last minute',
  'show tls [json]                   terminating frontends: certificates (names, serial, expiry), handshakes, resumptions, failures by reason',
  'show state                        runtime changes kept in the state file (added, deleted, weights, admin)',
  'enable POOL/BACKEND               admin: take new connections again',
  'disable POOL/BACKEND              admin: no new connections; live ones stay',
  'drain POOL/BACKEND                admin: like disable, reported draining until its last connection ends',
  'set weight POOL/BACKEND N         admin: weight 0..256',
  `add backend POOL ${BACKEND_GRAMMAR}`,
  '                                  admin: a new backend, in every worker at once (a hostname follows DNS)',
  'del backend POOL/BACKEND [now]    admin: no new connections; leaves after its last (now: resets them)',
  '                                  (POOL: a pool of pools:, or a frontend that lists its own backends)',
  'reset counters                    admin: zero the cumulative counters',
  'reload                            admin: re-read the config file, as SIGHUP does',
  'rotate tls-keys                   admin: new TLS session ticket keys now, as every hour (tickets sealed before get a full handshake)',
  'upgrade                           admin: start a new fulcrum (a new version) that takes over every listener, as SIGUSR2 does',
  'quit                              close this connection',
].join('\n');

/** The answer to a change: done (with what was done), or why not. */
export interface Outcome {
  ok: boolean;
  message: string;
}

/** What the admin commands act through; the view itself is read-only. */
export interface AdminInterface {
  /** Re-reads the config, as SIGHUP does. */
  reload(): Promise<Outcome>;
  /** Starts a successor process that takes over, as SIGUSR2 does. */
  upgrade(): Promise<Outcome>;
  addBackend(pool: string, spec: string): Promise<Outcome>;
  delBackend(pool: string, backend: string, now: boolean): Promise<Outcome>;
  setAdmin(ref: string, admin: AdminChoice): Promise<Outcome>;
  setWeight(ref: string, weight: number): Promise<Outcome>;
  resetCounters(): Outcome;
  /** New TLS session ticket keys now (as the hourly rotation makes them). */
  rotateTicketKeys(): Promise<Outcome>;
  /** What the state file holds (or would hold, without --state-file). */
  showState(): unknown;
}

/** An operator's admin state for a backend. */
export type AdminChoice = 'enabled' | 'disabled' | 'draining';

function answer(outcome: Outcome): Answer {
  return outcome.ok ? ok(outcome.message) : error(outcome.message);
}

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
  admin: AdminInterface,
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
      if (second === 'tls' && words.length <= 3 && (third === undefined || third === 'json')) {
        const tls = (await view.stat()).frontends.filter((f) => f.tls !== null);
        if (third === 'json') {
          return ok(JSON.stringify({ frontends: tls.map((f) => ({ name: f.name, ...f.tls })) }));
        }
        return ok(tls.length === 0 ? 'no frontend terminates TLS' : formatTls(tls));
      }
      if (second === 'state' && words.length === 2) {
        return ok(JSON.stringify(admin.showState(), null, 2));
      }
      return error(
        'usage: show info [json] | show stat [json] | show latency [json] | show tls [json] | show state',
      );
    case 'enable':
    case 'disable':
    case 'drain':
    case 'set':
    case 'reset':
    case 'add':
    case 'del':
      return change(words, admin, level, log);
    case 'reload': {
      if (level !== 'admin')
        return error('"reload" needs the admin level; this socket is read-only');
      if (words.length !== 1) return error('usage: reload');
      log.info({ command: 'reload' }, 'admin command');
      return answer(await admin.reload());
    }
    case 'rotate': {
      if (level !== 'admin')
        return error('"rotate" needs the admin level; this socket is read-only');
      if (words.length !== 2 || second !== 'tls-keys') return error('usage: rotate tls-keys');
      log.info({ command: 'rotate tls-keys' }, 'admin command');
      return answer(await admin.rotateTicketKeys());
    }
    case 'upgrade': {
      if (level !== 'admin')
        return error('"upgrade" needs the admin level; this socket is read-only');
      if (words.length !== 1) return error('usage: upgrade');
      log.info({ command: 'upgrade' }, 'admin command');
      return answer(await admin.upgrade());
    }
    default:
      return error(`unknown command "${printable(verb ?? '')}" (try help)`);
  }
}

async function change(
  words: string[],
  admin: AdminInterface,
  level: StatsLevel,
  log: Logger,
): Promise<Answer> {
  if (level !== 'admin')
    return error(`"${words[0]}" needs the admin level; this socket is read-only`);
  const [verb, second, third, fourth] = words;
  if (verb === 'add') {
    if (second !== 'backend' || words.length !== 4) {
      return error(`usage: add backend POOL ${BACKEND_GRAMMAR}`);
    }
    log.info({ command: 'add backend', pool: third, backend: fourth }, 'admin command');
    return answer(await admin.addBackend(third, fourth));
  }
  if (verb === 'del') {
    const now = words[3] === 'now';
    if (second !== 'backend' || words.length !== (now ? 4 : 3)) {
      return error('usage: del backend POOL/BACKEND [now]');
    }
    const slash = third.indexOf('/');
    if (slash < 0) return error(`"${printable(third)}" is not POOL/BACKEND`);
    log.info({ command: 'del backend', backend: third, now }, 'admin command');
    return answer(await admin.delBackend(third.slice(0, slash), third.slice(slash + 1), now));
  }
  if (verb === 'reset') {
    if (second !== 'counters' || words.length !== 2) return error('usage: reset counters');
    log.info({ command: 'reset counters' }, 'admin command');
    return answer(admin.resetCounters());
  }
  if (verb === 'set') {
    if (second !== 'weight' || words.length !== 4) return error('usage: set weight POOL/BACKEND N');
    if (!/^\d+$/.test(fourth) || Number(fourth) > MAX_WEIGHT) {
      return error(`weight "${printable(fourth)}" is out of range (0..${MAX_WEIGHT})`);
    }
    log.info({ command: 'set weight', backend: third, weight: Number(fourth) }, 'admin command');
    return answer(await admin.setWeight(third, Number(fourth)));
  }
  if (words.length !== 2) return error(`usage: ${verb} POOL/BACKEND`);
  log.info({ command: verb, backend: second }, 'admin command');
  return answer(
    await admin.setAdmin(
      second,
      verb === 'enable' ? 'enabled' : verb === 'disable' ? 'disabled' : 'draining',
    ),
  );
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

/** The weight in force, and the configured one when an agent or a slow start changed it. */
export function weightText(b: BackendStat): string {
  return b.effectiveWeight === b.weight ? String(b.weight) : `${b.effectiveWeight}/${b.weight}`;
}

/** The reported load, or why there is none (`-`: nothing is asked). */
export function loadText(b: BackendStat): string {
  if (b.load !== null) return String(Math.round(b.load * 1000) / 1000);
  return b.loadError === null ? '-' : `none (${b.loadError})`;
}

/** UDP frontends and their backends: sessions, datagrams and bytes each way, drops by reason. */
function formatUdpStat(frontends: FrontendStat[]): string {
  const rows: string[][] = [
    [
      'NAME',
      'STATE',
      'WEIGHT',
      'SESSIONS',
      'TOTAL',
      'FAILURES',
      'DGRAMS_IN',
      'DGRAMS_OUT',
      'BYTES_IN',
      'BYTES_OUT',
      'DROPPED',
      'CHECK',
    ],
  ];
  for (const frontend of frontends) {
    const udp = frontend.udp;
    if (udp === null) continue;
    const pool = frontend.pool === frontend.name ? '' : `, pool ${frontend.pool}`;
    const dropped = Object.entries(udp.dropped)
      .filter(([, n]) => n > 0)
      .map(([reason, n]) => `${reason}=${n}`);
    rows.push([
      `${frontend.name} (${frontend.listen.join(', ')}${pool}, ${frontend.algorithm})`,
      '',
      '',
      String(frontend.live),
      String(frontend.accepted),
      '',
      String(udp.datagramsIn),
      String(udp.datagramsOut),
      String(udp.bytesIn),
      String(udp.bytesOut),
      dropped.length === 0 ? '0' : dropped.join(' '),
      '',
    ]);
    for (const b of frontend.backends) {
      rows.push([
        `  ${frontend.pool}/${b.name}`,
        b.state,
        weightText(b),
        String(b.active),
        String(b.total),
        String(b.failures),
        String(b.datagramsIn),
        String(b.datagramsOut),
        String(b.bytesIn),
        String(b.bytesOut),
        '',
        b.check === null ? '-' : `${b.check.result} (${b.check.ms}ms)`,
      ]);
    }
  }
  return table(rows);
}

/** Terminating frontends: handshakes, resumed share, time, failures by reason. */
function formatTlsStat(frontends: FrontendStat[]): string {
  const rows: string[][] = [
    ['TLS', 'HANDSHAKES', 'RESUMED', 'HANDSHAKE_P50', 'HANDSHAKE_P99', 'FAILED'],
  ];
  for (const frontend of frontends) {
    const tls = frontend.tls;
    if (tls === null) continue;
    const failed = Object.entries(tls.failed)
      .filter(([, n]) => n > 0)
      .map(([reason, n]) => `${reason}=${n}`);
    rows.push([
      frontend.name,
      String(tls.handshakes),
      tls.handshakes === 0 ? '-' : `${Math.round((tls.resumed / tls.handshakes) * 100)}%`,
      `${tls.handshakeMs.p50}ms`,
      `${tls.handshakeMs.p99}ms`,
      failed.length === 0 ? '0' : failed.join(' '),
    ]);
  }
  return table(rows);
}

/** `show tls`: each terminating frontend's certificates, then the handshake table. */
function formatTls(frontends: FrontendStat[]): string {
  const rows: string[][] = [['FRONTEND', 'CERTIFICATE', 'NAMES', 'SERIAL', 'KEY', 'EXPIRES']];
  for (const frontend of frontends) {
    for (const c of frontend.tls?.certificates ?? []) {
      const days = Math.floor(c.expiresInSeconds / 86400);
      rows.push([
        frontend.name,
        c.file,
        c.names.join(',') || '-',
        c.serial,
        c.keyType,
        `${c.notAfter.slice(0, 10)} (${days < 0 ? 'EXPIRED' : `${days}d`})`,
      ]);
    }
  }
  return `${table(rows)}\n--\n${formatTlsStat(frontends)}`;
}

/** The TCP table, the TLS one, the UDP one: each that has rows, separated by a ruler (an empty
 *  line would end the answer). */
function formatStat(all: FrontendStat[]): string {
  const tcp = all.filter((f) => f.protocol === 'tcp');
  const tables = [
    tcp.length > 0 ? formatTcpStat(tcp) : '',
    tcp.some((f) => f.tls !== null) ? formatTlsStat(tcp) : '',
    tcp.length < all.length ? formatUdpStat(all) : '',
  ];
  return tables.filter((text) => text !== '').join('\n--\n');
}

function formatTcpStat(frontends: FrontendStat[]): string {
  const rows: string[][] = [
    [
      'NAME',
      'STATE',
      'WEIGHT',
      'ACTIVE',
      'HELD',
      'QUEUED',
      'TOTAL',
      'FAILURES',
      'BYTES_IN',
      'BYTES_OUT',
      'CONNECT_P50',
      'CONNECT_P99',
      'CHECK',
      'LOAD',
      'AGENT',
    ],
  ];
  for (const frontend of frontends) {
    // The frontend's own counts, as `show info` and the JSON give them: a client closed before
    // it reached a backend (the inspect timeout, no backend up) is one of them. Its backends are
    // its pool's, named as admin commands name them (POOL/BACKEND): ACTIVE is every frontend's
    // on it, HELD this frontend's.
    const pool = frontend.pool === frontend.name ? '' : `, pool ${frontend.pool}`;
    const priority = frontend.priority === 0 ? '' : `, priority ${frontend.priority}`;
    const share = frontend.share === 100 ? '' : `, share ${frontend.share}%`;
    rows.push([
      `${frontend.name} (${frontend.listen.join(', ')}${pool}${priority}${share}, ${frontend.algorithm})`,
      '',
      '',
      String(frontend.live),
      '',
      String(frontend.queued),
      String(frontend.accepted),
      '',
      '',
      '',
      '',
      '',
      '',
      '',
      '',
    ]);
    for (const b of frontend.backends) {
      rows.push([
        `  ${frontend.pool}/${b.name}`,
        b.state,
        weightText(b),
        String(b.active),
        String(b.held),
        '',
        String(b.total),
        String(b.failures),
        String(b.bytesIn),
        String(b.bytesOut),
        `${b.connectMs.p50}ms`,
        `${b.connectMs.p99}ms`,
        b.check === null ? '-' : `${b.check.result} (${b.check.ms}ms)`,
        loadText(b),
        b.agent?.said ?? '-',
      ]);
    }
  }
  return table(rows);
}

const PERCENTILE_HEADER = ['NAME', 'WINDOW', 'COUNT', 'P50', 'P90', 'P99', 'P99.9', 'MAX'];
type Windows = { total: Percentiles; lastMinute: Percentiles };

/** Two rows of percentiles: the whole run and the last minute. */
function percentileRows(rows: string[][], name: string, windows: Windows): void {
  for (const [window, p] of [
    ['total', windows.total],
    ['1m', windows.lastMinute],
  ] as const) {
    rows.push([
      name,
      window,
      String(p.count),
      ...[p.p50, p.p90, p.p99, p.p999, p.max].map((v) => `${v}ms`),
    ]);
  }
}

function formatLatency(frontends: FrontendLatency[]): string {
  const sections: string[] = [];
  for (const [metric, title] of [
    ['connectMs', 'connect time'],
    ['firstByteMs', "time to the backend's first byte"],
    ['durationMs', 'connection duration'],
  ] as const) {
    const rows = [PERCENTILE_HEADER];
    const add = (name: string, stat: LatencyStat) => percentileRows(rows, name, stat[metric]);
    for (const frontend of frontends) {
      add(frontend.name, frontend);
      for (const b of frontend.backends) add(`  ${frontend.name}/${b.name}`, b);
    }
    sections.push(`${title}\n${table(rows)}`);
  }
  const tls = frontends.filter((f) => f.handshakeMs !== null);
  if (tls.length > 0) {
    const rows = [PERCENTILE_HEADER];
    for (const frontend of tls) {
      percentileRows(rows, frontend.name, frontend.handshakeMs as Windows);
    }
    sections.push(`TLS handshake time\n${table(rows)}`);
  }
  // One blank-free answer: sections are separated by a ruler, not an empty line.
  return sections.join('\n--\n');
}
