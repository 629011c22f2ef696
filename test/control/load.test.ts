// Load the backends report: least-load follows changed /metrics values within two intervals; a
// failed scrape drops the report (the backend is judged by its live connections) and is logged
// once; a page that is huge, not Prometheus, or lacks the metric is a scrape failure, never a
// crash; the load shows in `show stat json`, `show stat` and /metrics.

import { once } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import t from 'tap';
import { parseMetricSelector } from '../../src/config/parse.ts';
import {
  BIG_PAGE_BYTES_PER_SECOND,
  BIG_SCRAPES,
  MAX_METRICS_PAGE,
  readMetric,
  SMALL_PAGE,
} from '../../src/control/load.ts';
import { MAX_SAMPLE_LINE, MetricReader } from '../../src/control/metric-reader.ts';
import { query } from '../../src/stats/client.ts';
import {
  connect,
  eventually,
  readLine,
  settled,
  showStat,
  socketPath,
  startFulcrum,
  waitFor,
  waitForLog,
} from '../helpers.ts';

/** A server on `host`, port `port` (0: any): resolves once it listens. */
async function listen(server: net.Server, host: string, port: number): Promise<number> {
  server.listen(port, host);
  await once(server, 'listening');
  return (server.address() as net.AddressInfo).port;
}

/**
 * Backends on their own loopback addresses (127.0.0.2, .3, ...): each a TCP service that greets
 * a client with its name and holds it, and a metrics page on one port shared by all (fulcrum's
 * --load-metrics-port) that answers `page.text`.
 */
async function reportingBackends(names: string[]) {
  const servers: net.Server[] = [];
  let metricsPort = 0;
  const backends = [];
  for (const [i, name] of names.entries()) {
    const host = `127.0.0.${i + 2}`;
    const page = { text: '', status: 200, scrapes: 0, slow: false };
    const metrics = http.createServer((_req, res) => {
      page.scrapes++;
      // A slow page sends its headers and then nothing: the scrape must give up, not wait.
      res.writeHead(page.status, { 'content-type': 'text/plain; version=0.0.4' });
      if (!page.slow) res.end(page.text);
    });
    metricsPort = await listen(metrics, host, metricsPort);
    const service = net.createServer((socket) => {
      socket.on('error', () => {});
      socket.resume();
      socket.write(`${name}\n`);
    });
    const port = await listen(service, host, 0);
    servers.push(metrics, service);
    backends.push({
      page,
      address: `${host}:${port}`,
      /** Sets the queue this backend reports, beside series that must not count. */
      queue(n: number) {
        page.text = [
          '# HELP queue_depth Requests waiting.',
          '# TYPE queue_depth gauge',
          `queue_depth{model="m",engine="0"} ${n}`,
          `queue_depth{model="other",engine="0"} 1000`,
          'queue_depth_total 5000',
          '',
        ].join('\n');
      },
    });
  }
  const close = async () => {
    for (const server of servers) {
      if (server instanceof http.Server) server.closeAllConnections();
      server.close();
    }
  };
  return { backends, metricsPort, close };
}

t.test('least-load follows changed /metrics values within two intervals', async (t) => {
  const pool = await reportingBackends(['a', 'b']);
  const [a, b] = pool.backends;
  a.queue(10);
  b.queue(0);
  const stats = socketPath();
  const intervalMs = 500;
  const fulcrum = await startFulcrum([
    '--workers',
    '2',
    '--stats-socket',
    stats,
    '--algorithm',
    'least-load',
    '--load-metric',
    'queue_depth{model="m"}',
    '--load-interval',
    `${intervalMs}ms`,
    '--load-metrics-port',
    String(pool.metricsPort),
    '--backend',
    `${a.address},name=a`,
    '--backend',
    `${b.address},name=b`,
  ]);
  t.teardown(async () => {
    await fulcrum.stop();
    await pool.close();
  });
  const loads = async () => (await showStat(stats))[0].backends.map((x) => x.load);
  await eventually(async () => (await loads()).join() === '10,0', 5000, 'the first reports');

  /** Opens `n` clients and holds them: which backend greeted each. */
  const held: net.Socket[] = [];
  const open = async (n: number) => {
    const names: string[] = [];
    for (let i = 0; i < n; i++) {
      const socket = await connect(fulcrum.port);
      held.push(socket);
      names.push(await readLine(socket));
    }
    return names;
  };
  t.same(await open(5), ['b', 'b', 'b', 'b', 'b'], 'a reports a queue of 10: b takes them');
  for (const s of held.splice(0)) s.destroy();

  const flipped = Date.now();
  a.queue(0);
  b.queue(10);
  await eventually(async () => (await loads()).join() === '0,10', 5000, 'the new reports');
  const took = Date.now() - flipped;
  t.ok(took <= 2 * intervalMs, `the new values are in within two intervals (${took} ms)`);
  t.same(await open(4), ['a', 'a', 'a', 'a'], 'now a takes them');
  for (const s of held.splice(0)) s.destroy();

  // Connections placed since a report count: equal reports, and a holds 3 clients of its own.
  a.queue(5);
  b.queue(5);
  await eventually(async () => (await loads()).join() === '5,5', 5000, 'equal reports');
  const spread = await open(6);
  t.ok(
    spread.includes('a') && spread.includes('b'),
    `equal reports: clients placed since are counted, not all on one (${spread.join()})`,
  );
  for (const s of held.splice(0)) s.destroy();

  const text = await query(stats, 'show stat');
  t.match(text, /LOAD/);
  t.match(text, /default\/a\s.*\s5\s/);
  await settled(stats, fulcrum);
});

t.test(
  'a failed scrape drops the report, is logged once, and the backend is judged by its connections',
  async (t) => {
    const pool = await reportingBackends(['a', 'b']);
    const [a, b] = pool.backends;
    a.queue(0);
    b.queue(0);
    const stats = socketPath();
    const fulcrum = await startFulcrum([
      '--workers',
      '1',
      '--stats-socket',
      stats,
      '--metrics',
      '127.0.0.1:0',
      '--algorithm',
      'least-load',
      '--load-metric',
      'queue_depth{model="m"}',
      '--load-interval',
      '100ms',
      '--load-timeout',
      '500ms',
      '--load-metrics-port',
      String(pool.metricsPort),
      '--backend',
      `${a.address},name=a`,
      '--backend',
      `${b.address},name=b`,
    ]);
    t.teardown(async () => {
      await fulcrum.stop();
      await pool.close();
    });
    const statA = async () => (await showStat(stats))[0].backends[0];
    await eventually(async () => (await statA()).load === 0, 5000, 'a report');

    a.page.status = 500;
    await eventually(async () => (await statA()).load === null, 5000, 'the report dropped');
    t.match(await statA(), { loadError: 'metrics page answered HTTP 500' });
    const scrapes = a.page.scrapes;
    await waitFor(() => a.page.scrapes >= scrapes + 3, 5000, 'three more failed scrapes');
    // a's failures only: under a loaded machine b's scrape may time out (--load-timeout) and be
    // logged once on its own.
    const failures = fulcrum.logs.filter(
      (l) => l.backend === 'a' && String(l.msg).startsWith('load report failed'),
    );
    t.equal(failures.length, 1, 'logged once, however often it fails');

    // Without a report a is judged by live connections: b reports 0 but holds 3 placed since.
    const held: net.Socket[] = [];
    const names: string[] = [];
    for (let i = 0; i < 4; i++) {
      const socket = await connect(fulcrum.port);
      held.push(socket);
      names.push(await readLine(socket));
    }
    t.ok(names.includes('a'), `a still gets clients by its connections (${names.join()})`);
    for (const s of held) s.destroy();

    a.page.status = 200;
    a.page.text = '<html>not metrics</html>';
    await eventually(
      async () => (await statA()).loadError === 'metric queue_depth not found',
      5000,
      'not Prometheus',
    );
    a.page.slow = true;
    await eventually(async () => (await statA()).loadError === 'HTTP timeout', 5000, 'a slow page');
    a.page.slow = false;
    a.page.text = `${'x'.repeat(MAX_METRICS_PAGE)}\n`;
    await eventually(
      async () => (await statA()).loadError === 'HTTP response too large',
      5000,
      'a huge page',
    );
    a.queue(7);
    await eventually(async () => (await statA()).load === 7, 5000, 'back');
    // Logged once it has reported three times in a row (a flapping page is not a line a scrape).
    await waitForLog(fulcrum, (l) => l.msg === 'load report back', 5000, 'back, logged');

    const url = (await waitForLog(fulcrum, (l) => l.msg === 'metrics', 5000, 'the metrics url'))
      .url as string;
    const body = await fetch(url).then((r) => r.text());
    t.match(body, /fulcrum_backend_reported_load\{pool="default",backend="a"\} 7/);
    t.match(body, /fulcrum_backend_reported_load\{pool="default",backend="b"\} 0/);
    await settled(stats, fulcrum);
  },
);

t.test(
  'big pages are read in a lane of their own, within one byte budget; small pages keep their pace',
  async (t) => {
    // 20 backends with a 1 MiB page of matching series, 2 with an ordinary page, read every
    // 100 ms. Alone, each big page would be read once a second (PAGE_BYTES_PER_SECOND): 20 MiB/s
    // on the main thread. Together they may cost BIG_PAGE_BYTES_PER_SECOND, BIG_SCRAPES at once.
    const line = 'queue_depth{model="m",engine="0"} 1\n';
    const lines = Math.floor((1024 * 1024) / line.length);
    const bigPage = Buffer.from(line.repeat(lines));
    t.ok(bigPage.length > SMALL_PAGE, 'the big page is big');
    const hosts = Array.from({ length: 22 }, (_, i) => `127.0.3.${i + 2}`);
    const requests = hosts.map(() => 0);
    const servers: http.Server[] = [];
    let port = 0;
    for (const [i, host] of hosts.entries()) {
      const server = http.createServer((_req, res) => {
        requests[i]++;
        res.end(i < 20 ? bigPage : 'queue_depth{model="m"} 3\n');
      });
      port = await listen(server, host, port);
      servers.push(server);
    }
    const stats = socketPath();
    const fulcrum = await startFulcrum([
      '--stats-socket',
      stats,
      '--no-health-check',
      '--algorithm',
      'least-load',
      '--load-metric',
      'queue_depth{model="m"}',
      '--load-interval',
      '100ms',
      '--load-metrics-port',
      String(port),
      ...hosts.flatMap((host, i) => ['--backend', `${host}:9,name=b${i}`]),
    ]);
    t.teardown(async () => {
      await fulcrum.stop();
      for (const server of servers) {
        server.closeAllConnections();
        server.close();
      }
    });
    const backends = async () => (await showStat(stats))[0].backends;
    // Every page reports, the big ones too (those found big while the lane was full were put off
    // and read there later: a put-off read is no failure).
    await eventually(
      async () => (await backends()).every((b, i) => b.load === (i < 20 ? lines : 3)),
      20_000,
      'every page reports',
    );

    const big = () => requests.slice(0, 20).reduce((n, r) => n + r, 0);
    const small = () => requests.slice(20);
    const [big0, small0, t0] = [big(), small(), performance.now()];
    await waitFor(() => performance.now() - t0 >= 2000, 5000, 'two seconds of scrapes');
    const seconds = (performance.now() - t0) / 1000;
    const bigReads = big() - big0;
    // The budget, plus the reads in flight when the window opened and closed.
    const most =
      Math.ceil((seconds * BIG_PAGE_BYTES_PER_SECOND) / bigPage.length) + 2 * BIG_SCRAPES;
    t.ok(
      bigReads <= most,
      `big pages read ${bigReads} times in ${seconds.toFixed(1)} s (at most ${most})`,
    );
    for (const [i, n] of small().entries()) {
      t.ok(
        n - small0[i] >= 5,
        `a small page is read at its interval beside them (${n - small0[i]})`,
      );
    }
    t.notOk(
      fulcrum.logs.some((l) => String(l.msg).startsWith('load report failed')),
      'no report failed or went stale while waiting for its turn',
    );
    await settled(stats, fulcrum);
  },
);

t.test('readMetric sums matching series and names what is wrong', async (t) => {
  const page = [
    '# TYPE vllm:num_requests_waiting gauge',
    'vllm:num_requests_waiting{model_name="a",engine="0"} 3',
    'vllm:num_requests_waiting{model_name="a",engine="1"} 4.5',
    'vllm:num_requests_waiting{model_name="b",engine="0"} 100',
    'vllm:num_requests_waiting_total 9',
    'vllm:gpu_cache_usage_perc 0.25',
  ].join('\n');
  const sel = (text: string) => parseMetricSelector(text, 'test');
  t.equal(readMetric(page, sel('vllm:num_requests_waiting{model_name="a"}')), 7.5);
  t.equal(readMetric(page, sel('vllm:num_requests_waiting')), 107.5, 'no labels: every series');
  t.equal(readMetric(page, sel('vllm:gpu_cache_usage_perc')), 0.25);
  t.equal(readMetric(page, sel('missing')), 'metric missing not found');
  t.equal(
    readMetric(page, sel('vllm:num_requests_waiting{model_name="c"}')),
    'no series matches vllm:num_requests_waiting{model_name="c"}',
  );
  t.equal(readMetric('queue NaN\n', sel('queue')), 'queue is not a finite number (NaN)');
  t.equal(readMetric('queue +Inf\n', sel('queue')), 'queue is not a finite number (+Inf)');
  t.equal(readMetric('garbage {{{', sel('queue')), 'metric queue not found');
  t.equal(
    readMetric('q{a="x\\"y,}"} 2\nq{a="z"} 3 1700000000000\n', sel('q{a="x\\"y,}"}')),
    2,
    'escapes and separators inside a quoted value; a timestamp after the value',
  );
});

t.test('regression: only sane loads count (issue 24, item 9)', async (t) => {
  const sel = (text: string) => parseMetricSelector(text, 'test');
  t.equal(readMetric('q -5\n', sel('q')), 'q is negative (-5): a load is 0 or more');
  t.equal(readMetric('q -1e308\n', sel('q')), 'q is negative (-1e308): a load is 0 or more');
  t.equal(readMetric('q 1e308\nq 1e308\n', sel('q')), 'the sum of q is not finite');
  t.equal(readMetric('q\n', sel('q')), 'a series of q has no value', 'a line with no value');
  t.equal(readMetric('q{a="b"}\n', sel('q')), 'a series of q has no value');
  t.equal(readMetric('q 0x10\n', sel('q')), 'q is not a number (0x10)');
  t.equal(readMetric('q 1_000\n', sel('q')), 'q is not a number (1_000)');
  t.equal(readMetric('q 1 2 3\n', sel('q')), 'metrics page does not parse ( 1 2 3)');
  t.equal(readMetric('q 1e2\nq .5\nq 3.\n', sel('q')), 103.5, 'decimal forms count');
  // Values read from their bytes are the numbers Number() reads from their text, to the last bit.
  for (const v of [
    '0.1',
    '4.5e-3',
    '1e22',
    '1e23',
    '123456789012345',
    '1234567890123456789',
    '0.000000000000000000001',
    '1.7976931348623157e308',
    '5e-324',
    '2.2250738585072014E-308',
    '9007199254740993',
    '0.30000000000000004',
    '+7',
    '00012.50',
    '1e0000000000000000001',
  ]) {
    t.equal(readMetric(`q ${v}\n`, sel('q')), Number(v), `${v} reads as Number() does`);
  }
  t.equal(
    readMetric(
      'q{m="h\u00e9llo"} 2\nq{m="hello"} 3\nq{m="\\"\u00e9"} 4\n',
      sel('q{m="h\u00e9llo"}'),
    ),
    2,
    'a UTF-8 label value matches as written (the page is read as bytes)',
  );
  t.equal(readMetric('q{m="\\"\u00e9"} 4\n', sel('q{m="\\"\u00e9"}')), 4, 'escaped, with UTF-8');
  t.equal(readMetric('q \u00e9\n', sel('q')), 'q is not a number (\u00e9)', 'named as UTF-8');
});

t.test(
  'a page read as it arrives: split anywhere, the same answer; a long line is refused',
  async (t) => {
    const sel = parseMetricSelector('vllm:num_requests_waiting{model_name="a"}', 'test');
    const page = Buffer.from(
      '# HELP vllm:num_requests_waiting x\nvllm:num_requests_waiting{model_name="a",e="0"} 3\nvllm:num_requests_waiting_total 9\nother 1\nvllm:num_requests_waiting{model_name="a",e="1"} 4.5',
    );
    for (const size of [1, 2, 3, 7, 64]) {
      const reader = new MetricReader(sel);
      for (let i = 0; i < page.length; i += size) reader.feed(page.subarray(i, i + size));
      t.equal(reader.finish(), 7.5, `fed ${size} bytes at a time`);
    }
    const reader = new MetricReader(parseMetricSelector('q', 'test'));
    reader.feed(Buffer.from(`q{a="${'x'.repeat(MAX_SAMPLE_LINE)}`));
    reader.feed(Buffer.from('"} 1\n'));
    t.equal(reader.finish(), `a line of q is longer than ${MAX_SAMPLE_LINE} bytes`);
  },
);
