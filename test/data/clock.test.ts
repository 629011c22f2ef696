// The worker's coarse clock: how often the idle sweep runs for a given idle timeout. (That no
// timeout fires early, and an idle one not long late, is checked end to end in pipe.test.ts.)

import t from 'tap';
import { IDLE_SWEEP_TICKS, idleSweepTicks, TICK_MS } from '../../src/data/clock.ts';

t.test('the idle sweep runs every tenth of the timeout, between a tick and a second', async (t) => {
  t.equal(IDLE_SWEEP_TICKS * TICK_MS, 1000, 'at most a second apart');
  t.equal(idleSweepTicks(5 * 60_000), IDLE_SWEEP_TICKS, 'the 5-minute default: once a second');
  t.equal(idleSweepTicks(10_000), IDLE_SWEEP_TICKS, '10 s: once a second');
  t.equal(idleSweepTicks(5_000), 5, '5 s: every half second');
  t.equal(idleSweepTicks(2_000), 2, '2 s: every 200 ms');
  t.equal(idleSweepTicks(1_000), 1, '1 s: every tick');
  t.equal(idleSweepTicks(300), 1, 'shorter: every tick, never less often');
});
