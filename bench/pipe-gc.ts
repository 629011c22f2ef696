// The pipe's allocation, measured: a frontend runs in this process (no worker thread), a backend
// and a client run in child processes, and 1 GiB is relayed each way. Counts the garbage
// collections in this process, which runs nothing but the data plane, for the raw-handle relay
// (both sides read into reused buffers) and Node's public path (net.Socket on both sides, a
// fresh buffer per read).
// Usage: npm run bench:pipe

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { PerformanceObserver } from 'node:perf_hooks';
import { startLocalFrontend } from '../src/local.ts';

const TOTAL = 1024 * 1024 * 1024;

// A peer that either sends TOTAL bytes then ends, or counts what it gets until the end.
const PEER = `
const net = require('node:net');
const chunk = Buffer.alloc(256 * 1024, 7);
function send(s) {
  let sent = 0;
  const pump = () => {
    while (sent < ${TOTAL}) { sent += chunk.length; if (!s.write(chunk)) return s.once('drain', pump); }
    s.end();
  };
  pump();
}
function count(s, done) { let got = 0; s.on('data', (c) => { got += c.length; }); s.on('end', () => done(got)); }
const [role, sends, port] = process.argv.slice(1);
if (role === 'backend') {
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    if (sends === 'yes') { send(s); s.resume(); } else count(s, () => s.end());
  }).listen(0, '127.0.0.1', () => console.log(server.address().port));
} else {
  const s = net.connect({ port: Number(port), host: '127.0.0.1', allowHalfOpen: true });
  if (sends === 'yes') { send(s); s.resume(); s.on('end', () => { console.log(${TOTAL}); process.exit(0); }); }
  else count(s, (got) => { console.log(got); process.exit(0); });
}
`;

interface Result {
  gcs: number;
  gcMs: number;
  seconds: number;
}

async function run(hook: boolean, download: boolean): Promise<Result> {
  const backend = spawn(process.execPath, ['-e', PEER, 'backend', download ? 'yes' : 'no'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const [portLine] = (await once(backend.stdout, 'data')) as [Buffer];
  if (hook) delete process.env.FULCRUM_NO_ACCEPT_HOOK;
  else process.env.FULCRUM_NO_ACCEPT_HOOK = '1';
  const local = await startLocalFrontend([
    '--listen',
    '127.0.0.1:0',
    '--backend',
    `127.0.0.1:${portLine.toString().trim()}`,
    '--retries',
    '0',
  ]);
  if (local.hooked !== hook) throw new Error('the accept path is not the one asked for');
  const { port } = local;

  let gcs = 0;
  let gcMs = 0;
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      gcs++;
      gcMs += entry.duration;
    }
  });
  observer.observe({ entryTypes: ['gc'] });
  const started = performance.now();
  const client = spawn(
    process.execPath,
    ['-e', PEER, 'client', download ? 'no' : 'yes', String(port)],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const [gotLine] = (await once(client.stdout, 'data')) as [Buffer];
  const seconds = (performance.now() - started) / 1000;
  await new Promise((resolve) => setTimeout(resolve, 100));
  observer.disconnect();
  if (Number(gotLine.toString()) !== TOTAL) throw new Error(`got ${gotLine} bytes`);
  local.close();
  backend.kill();
  return { gcs, gcMs, seconds };
}

for (const download of [true, false]) {
  console.log(
    download ? 'download (backend -> client), 1 GiB' : 'upload (client -> backend), 1 GiB',
  );
  for (const hook of [true, false]) {
    const r = await run(hook, download);
    const name = hook ? 'raw handles (reused buffers)' : 'public path (buffer per read)';
    console.log(
      `  ${name.padEnd(30)} ${String(r.gcs).padStart(4)} GCs, ${r.gcMs.toFixed(0).padStart(4)} ms in GC, ${(1 / r.seconds).toFixed(2)} GiB/s`,
    );
  }
}
process.exit(0);
