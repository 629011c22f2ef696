// Latency recorders: recording allocates nothing, percentiles come out in milliseconds, the
// last-minute window forgets what is older, and histograms survive the trip between threads.

import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { decode, LatencyRecorder, percentiles, WINDOW_SLOTS } from '../../src/stats/latency.ts';

t.test('a million records trigger no garbage collection', async (t) => {
  const probe = fileURLToPath(new URL('../fixtures/gc-record.ts', import.meta.url));
  const run = spawnSync(process.execPath, ['--expose-gc', probe, '1000000'], { encoding: 'utf8' });
  t.equal(run.status, 0, run.stderr);
  t.equal(JSON.parse(run.stdout).gcs, 0);
});

t.test('percentiles in milliseconds, values clamped into range', async (t) => {
  const r = new LatencyRecorder();
  for (let us = 1; us <= 1000; us++) r.record(us * 1000); // 1..1000 ms
  r.record(-5); // clamped to 1 us
  r.record(10 * 3_600_000_000); // clamped to an hour
  const p = percentiles(r.total);
  t.equal(p.count, 1002);
  t.ok(Math.abs(p.p50 - 500) / 500 < 0.02, `p50 ${p.p50} ~ 500 ms`);
  t.ok(Math.abs(p.p99 - 990) / 990 < 0.02, `p99 ${p.p99} ~ 990 ms`);
  t.ok(p.max >= 3_500_000, `max ${p.max} is the clamped hour`);
});

t.test(
  'the last-minute window forgets slots older than a minute; encode/decode round-trips',
  async (t) => {
    const r = new LatencyRecorder();
    r.record(5000);
    const [total, minute] = r.encode();
    t.equal(decode(total).totalCount, 1);
    t.equal(decode(minute).totalCount, 1);
    for (let k = 0; k < WINDOW_SLOTS; k++) r.rotate();
    r.record(7000);
    const [total2, minute2] = r.encode();
    t.equal(decode(total2).totalCount, 2, 'the whole run keeps everything');
    t.equal(decode(minute2).totalCount, 1, 'the window dropped the old value');
    const p50 = percentiles(decode(minute2)).p50;
    t.ok(Math.abs(p50 - 7) / 7 < 0.01, `p50 ${p50} ~ 7 ms (two significant digits)`);
  },
);
