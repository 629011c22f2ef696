// Latency recorders: recording allocates nothing, percentiles come out in milliseconds, the
// last-minute window forgets what is older, and another thread reads a recorder's counts where
// they are (shared memory), while its owner keeps recording.

import '../children.ts';
import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import t from 'tap';
import { LatencyRecorder, LatencySum, percentiles, WINDOW_SLOTS } from '../../src/stats/latency.ts';

/** What the main thread reads of recorders: their sum, through their shared buffers. */
function read(...buffers: SharedArrayBuffer[]) {
  const sum = new LatencySum();
  for (const buffer of buffers) sum.addRecorder(buffer);
  return sum.read();
}

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
  t.equal(p.mean, Math.round(r.total.mean) / 1000, "the mean is the histogram's own");
});

t.test(
  'the last-minute window forgets slots older than a minute, as a reader sees it',
  async (t) => {
    const r = new LatencyRecorder();
    r.record(5000);
    t.equal(read(r.buffer).total.count, 1);
    t.equal(read(r.buffer).lastMinute.count, 1);
    for (let k = 0; k < WINDOW_SLOTS; k++) r.rotate();
    r.record(7000);
    const seen = read(r.buffer);
    t.equal(seen.total.count, 2, 'the whole run keeps everything');
    t.equal(seen.lastMinute.count, 1, 'the window dropped the old value');
    t.ok(
      Math.abs(seen.lastMinute.p50 - 7) / 7 < 0.01,
      `p50 ${seen.lastMinute.p50} ~ 7 ms (two digits)`,
    );
    // From the counts alone, the maximum is its bucket's top: within the two digits.
    t.ok(seen.total.max >= 7 && seen.total.max < 7.07, `the maximum: ${seen.total.max} ~ 7 ms`);
  },
);

t.test('sums add up recorders, and sums, as one histogram of everything would', async (t) => {
  const a = new LatencyRecorder();
  const b = new LatencyRecorder();
  const all = new LatencyRecorder();
  for (let ms = 1; ms <= 300; ms++) {
    a.record(ms * 1000);
    all.record(ms * 1000);
  }
  for (let ms = 301; ms <= 1000; ms++) {
    b.record(ms * 1000);
    all.record(ms * 1000);
  }
  b.rotate(); // b's values leave the current slot, not the minute
  const one = new LatencySum();
  one.addRecorder(a.buffer);
  const two = new LatencySum();
  two.addRecorder(b.buffer);
  const both = new LatencySum();
  both.addSum(one);
  both.addSum(two);
  const expected = percentiles(all.total);
  t.same(read(a.buffer, b.buffer).total, read(all.buffer).total, 'two recorders read as one');
  t.same(both.read().total, read(all.buffer).total, 'two sums added as one');
  t.same(both.read().lastMinute, read(all.buffer).lastMinute, 'and their last minutes');
  t.equal(both.read().total.p99, expected.p99, "the same p99 as the writer's own histogram");
  t.equal(both.read().total.mean, expected.mean, 'and the same mean');
});

t.test('another thread reads the counts in place while the owner records', async (t) => {
  // The worker records 1..1000 ms once, hands over the buffer, then records 1000 more of 2 s
  // when told to: the main thread's reads see both without another message.
  const worker = new Worker(
    `
    const { parentPort } = require('node:worker_threads');
    import(${JSON.stringify(new URL('../../src/stats/latency.ts', import.meta.url).href)}).then(({ LatencyRecorder }) => {
      const r = new LatencyRecorder();
      for (let ms = 1; ms <= 1000; ms++) r.record(ms * 1000);
      parentPort.postMessage(r.buffer);
      parentPort.once('message', () => {
        for (let k = 0; k < 1000; k++) r.record(2_000_000);
        parentPort.postMessage('done');
      });
    });
    `,
    { eval: true },
  );
  t.teardown(() => worker.terminate());
  const [buffer] = (await once(worker, 'message')) as [SharedArrayBuffer];
  t.ok(buffer instanceof SharedArrayBuffer, 'the worker handed over shared memory');
  const first = read(buffer).total;
  t.equal(first.count, 1000);
  t.ok(Math.abs(first.p50 - 500) / 500 < 0.02, `p50 ${first.p50} ~ 500 ms`);
  worker.postMessage('more');
  await once(worker, 'message');
  const second = read(buffer);
  t.equal(second.total.count, 2000, 'the same buffer, read again, has the later records');
  t.ok(Math.abs(second.total.p99 - 2000) / 2000 < 0.02, `p99 ${second.total.p99} ~ 2000 ms`);
  t.equal(second.lastMinute.count, 2000, 'and so has the last minute');
});
