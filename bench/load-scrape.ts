// What reading backends' metrics pages costs the main thread (issue 24, item 8), in one run:
// 1. One 4 MiB page whose every line is a series of the selected metric, read over HTTP from
//    another process: CPU and heap growth of fulcrum's streaming reader against the old way
//    (the whole page kept, then parse-prometheus-text-format), warm. Targets: <= 50 ms, <= 8 MB.
// 2. fulcrum with --load-interval 1s in front of 40 hostile metrics pages (4 MiB of matching
//    series, 1M repeated lines, 4 MiB of newlines, in turn) and 8 honest ones, against 48 honest
//    ones: resident memory, the slowest `show info` while it runs, and the oldest honest report.
//    Targets: resident within 50 MB of the honest run, show info < 100 ms, honest reports fresh.
// Loopback only: the pages are served on 127.0.1.x. Run: npm run bench:load-scrape

import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { parseMetricSelector } from '../src/config/parse.ts';
import { MetricReader } from '../src/control/metric-reader.ts';
import { httpGet } from '../src/control/probes.ts';
import { query } from '../src/stats/client.ts';
import { BIN, freePort } from './lib.ts';

const PAGE_BYTES = 4 * 1024 * 1024;
const SELECTOR = parseMetricSelector('queue_depth{model="m"}', 'bench');

/** A child process serving, on `port` of each host, the page its index names: the first
 *  `hostile` hosts a hostile page (in turn each shape, or with `rotate` false the first). */
function servePages(hosts: string[], port: number, hostile: number, rotate = true) {
  const program = `
const http = require('node:http');
const [port, hostile, rotate, ...hosts] = process.argv.slice(1);
const line = 'queue_depth{model="m",engine="0"} 1\\n';
const pages = [
  Buffer.from(line.repeat(Math.floor(${PAGE_BYTES} / line.length))),
  Buffer.from('queue_depth 1\\n'.repeat(Math.floor(${PAGE_BYTES} / 14))),
  Buffer.alloc(${PAGE_BYTES} - 1, 10),
];
const honest = Buffer.from('# TYPE queue_depth gauge\\nqueue_depth{model="m"} 2\\nother 5\\n');
hosts.forEach((host, i) => {
  let n = 0;
  http.createServer((req, res) => {
    const page = i < Number(hostile) ? pages[rotate === '1' ? n++ % pages.length : 0] : honest;
    res.end(page);
  }).listen(Number(port), host);
});
setTimeout(() => process.send('ready'), 300);
`;
  const child = spawn(
    process.execPath,
    ['-e', program, String(port), String(hostile), rotate ? '1' : '0', ...hosts],
    {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    },
  );
  return {
    ready: new Promise((resolve) => child.once('message', resolve)),
    stop: () => child.kill(),
  };
}

function get(port: number, keep: boolean, reader: MetricReader | null): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    httpGet(
      { host: '127.0.1.1', port },
      '/metrics',
      null,
      10_000,
      PAGE_BYTES,
      (out) => ('failed' in out ? reject(new Error(out.failed)) : resolve(out.body)),
      keep
        ? null
        : (chunk) => {
            reader?.feed(chunk);
            return true;
          },
    );
  });
}

async function onePage(): Promise<void> {
  const port = await freePort();
  const server = servePages(['127.0.1.1'], port, 1, false);
  await server.ready;
  const measure = async (way: 'streaming' | 'whole page') => {
    // Peak resident memory from the kernel's high-water mark, reset first (writing 5 to
    // clear_refs): no sampling timer, whose own work would be counted as the page's.
    writeFileSync('/proc/self/clear_refs', '5');
    const rss0 = process.memoryUsage.rss();
    const cpu0 = process.cpuUsage();
    let sum: number | string;
    if (way === 'streaming') {
      const reader = new MetricReader(SELECTOR);
      await get(port, false, reader);
      sum = reader.finish();
    } else {
      const page = (await get(port, true, null)).toString('utf8');
      const families = parsePrometheusTextFormat(page);
      sum = families.flatMap((f) => f.metrics).reduce((n, m) => n + Number(m.value), 0);
    }
    const cpu = process.cpuUsage(cpu0);
    const peak =
      Number(/VmHWM:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1]) * 1024;
    return { cpuMs: (cpu.user + cpu.system) / 1000, heapMB: (peak - rss0) / 1e6, sum };
  };
  // Warm first (a scraper reads a page every interval, so warm is its state: V8 takes a few pages
  // to compile the reader fully), then five runs; the median run is shown. The streaming runs
  // come first: process.cpuUsage() counts V8's helper threads, which go on freeing the whole
  // page's garbage after it, and would charge it to the run that follows.
  const runs: Record<string, Array<{ cpuMs: number; heapMB: number; sum: number | string }>> = {
    streaming: [],
    'whole page': [],
  };
  for (const way of ['streaming', 'whole page'] as const) {
    for (let i = 0; i < 8; i++) await measure(way);
    for (let i = 0; i < 5; i++) runs[way].push(await measure(way));
  }
  server.stop();
  // What this machine's JavaScript takes to look at 4 MiB once, now (shared machines vary by 2x
  // from one minute to the next): the reader's cost is best read against it.
  const bytes = new Uint8Array(PAGE_BYTES).fill(0x61);
  const scans: number[] = [];
  for (let i = 0; i < 15; i++) {
    const t0 = performance.now();
    let n = 0;
    for (let j = 0; j < bytes.length; j++) if (bytes[j] === 0x0a) n++;
    scans.push(performance.now() - t0 + n);
  }
  const scan = scans.sort((a, b) => a - b)[7];
  console.log('1. one 4 MiB page of matching series (median of five warm runs each)');
  for (const [way, rows] of Object.entries(runs)) {
    const r = rows.sort((a, b) => a.cpuMs - b.cpuMs)[2];
    const peak = Math.max(...rows.map((row) => row.heapMB));
    console.log(
      `   ${way.padEnd(10)}  cpu ${r.cpuMs.toFixed(1).padStart(6)} ms (${rows[0].cpuMs.toFixed(1)} to ${rows[4].cpuMs.toFixed(1)}, ${(r.cpuMs / scan).toFixed(1)}x a bare loop)  resident at most +${peak.toFixed(1).padStart(5)} MB  sum ${r.sum}`,
    );
  }
  console.log(`   a bare loop over 4 MiB: ${scan.toFixed(1)} ms`);
}

function rssMB(pid: number): number {
  const line = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(line?.[1] ?? 0) / 1024;
}

async function balancer(hostile: number, honest: number) {
  const hosts = Array.from({ length: hostile + honest }, (_, i) => `127.0.1.${i + 1}`);
  const port = await freePort();
  const server = servePages(hosts, port, hostile);
  await server.ready;
  const dir = mkdtempSync(join(tmpdir(), 'fulcrum-bench-load-'));
  const stats = join(dir, 'stats.sock');
  const config = join(dir, 'fulcrum.yaml');
  writeFileSync(
    config,
    `workers: 1\nstatsSocket: ${stats}\nlog: { level: error }\nfrontends:\n  - name: a\n    listen: [127.0.0.1:0]\n    algorithm: least-load\n    health: false\n    load: { metric: 'queue_depth{model="m"}', interval: 1s, port: ${port} }\n    backends: [${hosts.map((h) => `${h}:9`).join(', ')}]\n`,
  );
  const proc = spawn(process.execPath, [BIN, '--config', config], { stdio: 'ignore' });
  for (let i = 0; i < 100; i++) {
    if (
      await query(stats, 'show info').then(
        () => true,
        () => false,
      )
    )
      break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  let slowest = 0;
  let oldest = 0;
  let rss = 0;
  const warm = Date.now() + 2000;
  const until = Date.now() + 15_000;
  while (Date.now() < until) {
    if (Date.now() < warm) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      continue;
    }
    const t0 = performance.now();
    await query(stats, 'show info json');
    slowest = Math.max(slowest, performance.now() - t0);
    const stat = JSON.parse(await query(stats, 'show stat json')) as {
      frontends: Array<{ backends: Array<{ name: string; loadAgeMs: number | null }> }>;
    };
    for (const b of stat.frontends[0].backends.slice(hostile)) {
      oldest = Math.max(oldest, b.loadAgeMs ?? Number.POSITIVE_INFINITY);
    }
    rss = Math.max(rss, rssMB(proc.pid as number));
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  proc.kill();
  server.stop();
  return { rss, slowest, oldest };
}

// fulcrum's probe sockets and timers are unref'd (they must not keep a balancer alive): hold the
// bench's loop open while it waits on them.
const alive = setInterval(() => {}, 1000);

async function main(): Promise<void> {
  await onePage();
  const honest = await balancer(0, 48);
  const hostile = await balancer(40, 8);
  console.log('2. fulcrum, --load-interval 1s, 15 s each (measured after 2 s of warm-up)');
  for (const [name, r] of [
    ['48 honest pages', honest],
    ['40 hostile + 8 honest', hostile],
  ] as const) {
    console.log(
      `   ${name.padEnd(22)} resident ${r.rss.toFixed(0).padStart(4)} MB  slowest show info ${r.slowest.toFixed(1).padStart(6)} ms  oldest honest report ${r.oldest.toFixed(0)} ms`,
    );
  }
  console.log(
    `   resident difference ${(hostile.rss - honest.rss).toFixed(0)} MB (target <= 50); show info ${hostile.slowest < 100 ? 'under' : 'OVER'} 100 ms; honest reports ${hostile.oldest < 3000 ? 'fresh' : 'STALE'}`,
  );
}

await main();
clearInterval(alive);
