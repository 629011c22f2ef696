// `fulcrum top`: a live view of every frontend and backend, refreshed every second, as htop shows
// processes. Invariant: on a terminal the screen is restored however top ends (q, Ctrl-C, a
// signal, the balancer going away); without a terminal it prints plain frames, no escape codes.

import { query } from './client.ts';
import { loadText, weightText } from './commands.ts';
import type { FrontendStat, LatencyStat } from './view.ts';

export interface TopOptions {
  socket: string;
  intervalMs: number;
  /** Frames to draw before exiting; Infinity until q. */
  iterations: number;
}

interface Snapshot {
  at: number;
  info: Record<string, number | string>;
  frontends: FrontendStat[];
  latency: Array<LatencyStat & { backends: LatencyStat[] }>;
}

const ENTER = '\x1b[?1049h\x1b[?25l';
const LEAVE = '\x1b[?25h\x1b[?1049l';
const HOME_CLEAR = '\x1b[H\x1b[2J';

async function snapshot(socket: string): Promise<Snapshot> {
  const [info, stat, latency] = await Promise.all([
    query(socket, 'show info json'),
    query(socket, 'show stat json'),
    query(socket, 'show latency json'),
  ]);
  return {
    at: Date.now(),
    info: JSON.parse(info),
    frontends: JSON.parse(stat).frontends,
    latency: JSON.parse(latency).frontends,
  };
}

function bytes(perSecond: number): string {
  const units = ['B', 'KB', 'MB', 'GB'];
  let value = perSecond;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)}${units[unit]}/s`;
}

function uptime(seconds: number): string {
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  return `${h}:${String(m).padStart(2, '0')}:${String(s).padStart(2, '0')}`;
}

/** One frame as lines of text. Rates are the change since `previous`. */
export function render(now: Snapshot, previous: Snapshot | null): string[] {
  const span = previous === null ? 0 : (now.at - previous.at) / 1000;
  const rate = (current: number, before: number | undefined) =>
    span > 0 && before !== undefined ? Math.max(0, (current - before) / span) : 0;
  const i = now.info;
  const lines = [
    `fulcrum ${i.version}  pid ${i.pid}  up ${uptime(Number(i.uptime_seconds))}  workers ${i.workers}  ` +
      `connections ${i.connections_now} now, ${i.connections_total} total, ${i.connection_rate}/s`,
    '',
  ];
  const rows: string[][] = [
    [
      'FRONTEND, POOL/BACKEND',
      'STATE',
      'WEIGHT',
      'ACTIVE',
      'HELD',
      'CONN/S',
      'TOTAL',
      'FAIL',
      'IN',
      'OUT',
      'CONNECT p50/p99',
      'FIRST BYTE p99',
      'LOAD',
      'CHECK',
    ],
  ];
  now.frontends.forEach((frontend, f) => {
    const before = previous?.frontends[f];
    const pool = frontend.pool === frontend.name ? '' : ` pool ${frontend.pool}`;
    const classes =
      frontend.priority === 0 && frontend.share === 100
        ? ''
        : ` priority ${frontend.priority} share ${frontend.share}%`;
    // A UDP frontend: ACTIVE is its sessions, CONN/S new sessions, IN and OUT datagrams a second,
    // FAIL the datagrams it dropped.
    const udp = frontend.udp;
    const old = before?.udp ?? null;
    const dropped = udp === null ? 0 : Object.values(udp.dropped).reduce((a, b) => a + b, 0);
    // A terminating frontend: CONN/S its handshakes a second, TOTAL and FAIL its handshakes done
    // and failed, CONNECT their times, FIRST BYTE the resumed share.
    const tls = frontend.tls;
    const failed = tls === null ? 0 : Object.values(tls.failed).reduce((a, b) => a + b, 0);
    const resumed =
      tls === null || tls.handshakes === 0 ? 0 : Math.round((tls.resumed / tls.handshakes) * 100);
    rows.push([
      `${frontend.name} ${frontend.listen.join(',')}${pool}${classes} ${frontend.algorithm}${tls === null ? '' : ' tls'}`,
      '',
      '',
      String(frontend.live),
      frontend.queued > 0 ? `${frontend.queued} waiting` : '',
      udp !== null
        ? rate(frontend.accepted, before?.accepted).toFixed(1)
        : tls !== null
          ? rate(tls.handshakes, before?.tls?.handshakes).toFixed(1)
          : '',
      udp !== null ? String(frontend.accepted) : tls !== null ? String(tls.handshakes) : '',
      udp !== null ? `${dropped} dropped` : tls !== null ? `${failed} failed` : '',
      udp === null ? '' : `${rate(udp.datagramsIn, old?.datagramsIn).toFixed(0)} dg/s`,
      udp === null ? '' : `${rate(udp.datagramsOut, old?.datagramsOut).toFixed(0)} dg/s`,
      tls === null ? '' : `${tls.handshakeMs.p50}/${tls.handshakeMs.p99}ms handshake`,
      tls === null ? '' : `${resumed}% resumed`,
      '',
      '',
    ]);
    frontend.backends.forEach((b, k) => {
      const old = before?.backends[k];
      const l = now.latency[f]?.backends[k];
      rows.push([
        `  ${frontend.pool}/${b.name}`,
        b.state,
        weightText(b),
        String(b.active),
        String(b.held),
        rate(b.total, old?.total).toFixed(1),
        String(b.total),
        String(b.failures),
        bytes(rate(b.bytesIn, old?.bytesIn)),
        bytes(rate(b.bytesOut, old?.bytesOut)),
        l ? `${l.connectMs.total.p50}/${l.connectMs.total.p99}ms` : '',
        l ? `${l.firstByteMs.total.p99}ms` : '',
        b.load === null ? '-' : loadText(b),
        b.check?.result ?? '-',
      ]);
    });
  });
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  for (const r of rows)
    lines.push(
      r
        .map((cell, c) => cell.padEnd(widths[c]))
        .join('  ')
        .trimEnd(),
    );
  return lines;
}

export async function runTop(options: TopOptions): Promise<void> {
  const tty = process.stdout.isTTY === true;
  let restored = !tty;
  const restore = () => {
    if (restored) return;
    restored = true;
    if (process.stdin.isTTY) process.stdin.setRawMode(false);
    process.stdout.write(LEAVE);
  };
  let quit: () => void = () => {};
  const quitting = new Promise<void>((resolve) => {
    quit = resolve;
  });
  if (tty) {
    process.stdout.write(ENTER);
    process.on('exit', restore);
    for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(signal, quit);
    if (process.stdin.isTTY) {
      process.stdin.setRawMode(true);
      process.stdin.resume();
      process.stdin.on('data', (key: Buffer) => {
        // q, Q, Ctrl-C, Esc.
        if ([0x71, 0x51, 0x03, 0x1b].includes(key[0])) quit();
      });
    }
  }
  let previous: Snapshot | null = null;
  try {
    for (let frame = 0; frame < options.iterations; frame++) {
      const now = await snapshot(options.socket);
      const lines = render(now, previous);
      previous = now;
      if (tty) {
        const rows = process.stdout.rows ?? 24;
        lines.push('', 'q: quit');
        process.stdout.write(HOME_CLEAR + lines.slice(0, rows).join('\n'));
      } else {
        process.stdout.write(`${lines.join('\n')}\n\n`);
      }
      if (frame + 1 >= options.iterations) break;
      const stop = await Promise.race([
        quitting.then(() => true),
        new Promise<boolean>((resolve) => setTimeout(() => resolve(false), options.intervalMs)),
      ]);
      if (stop) break;
    }
  } finally {
    restore();
    if (tty) process.stdin.pause();
  }
}
