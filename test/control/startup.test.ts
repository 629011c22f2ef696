// What a balancer loads at start: a package it does not use costs every start, restart and
// upgrade ~20-100 ms per thread. Without a config file the YAML and schema parsers stay out,
// without a metrics port the Prometheus client, without a terminal the pretty printer; a
// data-plane worker loads pino only for the access log; no thread loads the histograms' encoding
// (pako, a WebAssembly build) before stats are asked for. Recorded with a load hook in the real
// process (test/fixtures/record-loads.ts), main thread and workers apart.

import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Test } from 'tap';
import t from 'tap';
import { greet, startBackend, startFulcrum } from '../helpers.ts';

const HOOK = fileURLToPath(new URL('../fixtures/record-loads.ts', import.meta.url));

/** Starts fulcrum with `args` under the load hook; returns the packages each thread loaded. */
async function packagesLoaded(
  t: Test,
  args: string[],
): Promise<{ main: Set<string>; workers: Set<string> }> {
  const dir = mkdtempSync(join(tmpdir(), 'fulcrum-loads-'));
  const file = join(dir, 'loads.txt');
  writeFileSync(file, '');
  const fulcrum = await startFulcrum(args, {
    NODE_OPTIONS: `--import ${HOOK}`,
    LOADS_FILE: file,
  });
  await fulcrum.stop();
  const main = new Set<string>();
  const workers = new Set<string>();
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const match =
      /^(\d+) .*\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(line) ??
      /^(\d+) (node:\S+)$/.exec(line);
    if (match !== null) (match[1] === '0' ? main : workers).add(match[2]);
  }
  t.ok(main.has('commander'), 'the hook saw the main thread load its packages');
  t.ok(main.has('node:net'), 'and its builtins');
  t.ok(workers.has('hdr-histogram-js'), 'and a worker load its own');
  return { main, workers };
}

t.test('flags alone: no config parsers, no metrics client, no pino in the worker', async (t) => {
  const backend = await startBackend(greet);
  t.teardown(() => backend.close());
  const { main, workers } = await packagesLoaded(t, ['--backend', backend.address]);
  for (const name of ['yaml', 'zod', 'prom-client', 'pino-pretty']) {
    t.notOk(main.has(name), `main thread: no ${name}`);
  }
  for (const name of ['yaml', 'zod', 'prom-client', 'pino-pretty', 'pino', 'commander']) {
    t.notOk(workers.has(name), `worker: no ${name}`);
  }
  // Health checks are TCP connects here: the HTTP clients stay out too.
  for (const name of ['node:http', 'node:http2'])
    t.notOk(main.has(name), `main thread: no ${name}`);
  for (const name of ['pako', '@assemblyscript/loader', 'base64-js']) {
    t.notOk(main.has(name), `main thread: no ${name} (histogram encoding) before stats are asked`);
    t.notOk(workers.has(name), `worker: no ${name} (histogram encoding) before stats are asked`);
  }
});

t.test('a config file, a metrics port and the access log load what they need', async (t) => {
  const backend = await startBackend(greet);
  t.teardown(() => backend.close());
  const dir = mkdtempSync(join(tmpdir(), 'fulcrum-loads-'));
  const config = join(dir, 'fulcrum.yaml');
  writeFileSync(
    config,
    `workers: 1\nmetrics: 127.0.0.1:0\nlog: { access: true }\nfrontends:\n  - { name: a, listen: [127.0.0.1:0], health: false, backends: [${backend.address}] }\n`,
  );
  const { main, workers } = await packagesLoaded(t, ['--config', config]);
  for (const name of ['yaml', 'zod', 'prom-client']) t.ok(main.has(name), `main thread: ${name}`);
  t.ok(workers.has('pino'), 'worker: pino, for the access log');
  t.notOk(workers.has('pino-pretty'), 'worker: no pino-pretty (JSON lines)');
});
