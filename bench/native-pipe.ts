// Why fulcrum's relay still enters JavaScript once per read, measured. Node has a relay written in
// C++ between two stream handles (StreamPipe, `internalBinding('stream_pipe')`, used by http2 to
// send files, reachable from user code only with --expose-internals). A relay built on it never
// calls into JavaScript for a chunk: the cost this benchmark was written to weigh. It measures the
// CPU each relay spends per request (small keep-alive requests, 50 connections: the balancer's
// own utime + stime from /proc over the same load), fulcrum's relay and HAProxy beside it, and
// then whether the StreamPipe relay survives a backend that resets while a client still sends
// (a synchronous write error on the sink). On Node 24.21 it does not: the process dies of a
// segmentation fault (StreamPipe hands the failed write on with a null request, and the listener
// beneath dereferences it), which rules it out for a balancer. Run this again on a new Node: the
// day the second line says "survives", the first says what adopting it is worth.
// Usage: npm run bench:native-pipe [-- --seconds 4 --runs 5]   (needs nginx-light and wrk;
// haproxy for the comparison: apt-get install -y nginx-light wrk haproxy)

import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { parseArgs } from 'node:util';
import {
  freePort,
  has,
  median,
  startFulcrum,
  startHaproxy,
  startNginx,
  waitForPort,
  workDir,
} from './lib.ts';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '4' },
    runs: { type: 'string', default: '5' },
  },
});
const seconds = Number(values.seconds);
const runs = Math.max(1, Number(values.runs));

// A relay on StreamPipe, both ways: accept a raw handle, connect one to the backend, pipe. A
// connection ends when both pipes have ended (each end's FIN, or an error, unpipes its pipe).
const PIPE_RELAY = `
const net = require('node:net');
const { internalBinding } = require('internal/test/binding');
const { StreamPipe } = internalBinding('stream_pipe');
const { TCP, TCPConnectWrap, constants } = process.binding('tcp_wrap');
const [port, backendPort] = process.argv.slice(1).map(Number);
const server = net.createServer();
function ignore() {}
server.listen(port, '127.0.0.1', () => {
  server._handle.onconnection = (status, client) => {
    if (status < 0) return;
    const backend = new TCP(constants.SOCKET);
    client.onread = ignore;
    backend.onread = ignore;
    client.setNoDelay(true);
    backend.setNoDelay(true);
    const req = new TCPConnectWrap();
    req.oncomplete = (err) => {
      if (err < 0) { client.close(); backend.close(); return; }
      let ended = 0;
      const end = () => { if (++ended === 2) { client.close(); backend.close(); } };
      const up = new StreamPipe(client, backend);
      const down = new StreamPipe(backend, client);
      up.onunpipe = end;
      down.onunpipe = end;
      up.start();
      down.start();
    };
    backend.connect(req, '127.0.0.1', backendPort);
  };
  console.log('ready');
});
`;

function startPipeRelay(port: number, backendPort: number): ChildProcess {
  return spawn(
    process.execPath,
    ['--expose-internals', '--no-warnings', '-e', PIPE_RELAY, String(port), String(backendPort)],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
}

/** CPU seconds (user + system) the process has used so far, from /proc. */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime: fields 14, 15
}

/** CPU milliseconds the balancer `pid` spends per 1000 requests, and requests/s, over one run. */
function run(pid: number, port: number): { cpuPer1000: number; rps: number } {
  const before = cpuSeconds(pid);
  const out = execFileSync(
    'wrk',
    ['-t1', '-c50', `-d${seconds}s`, `http://127.0.0.1:${port}/small`],
    {
      encoding: 'utf8',
    },
  );
  const used = cpuSeconds(pid) - before;
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? 0);
  return { cpuPer1000: (used * 1000 * 1000) / (rps * seconds), rps };
}

/** Does the relay outlive clients that keep sending to a backend that resets them? */
async function survivesResets(): Promise<boolean> {
  const backendPort = await freePort();
  const backend = net.createServer((s) => {
    s.on('error', () => {});
    s.once('data', () => s.resetAndDestroy());
  });
  await new Promise<void>((resolve) => backend.listen(backendPort, '127.0.0.1', resolve));
  const port = await freePort();
  const relay = startPipeRelay(port, backendPort);
  await waitForPort(port);
  const chunk = Buffer.alloc(16 * 1024, 1);
  // 200 clients one after another, each writing until it is closed: the backend's reset lands
  // while the pipe is writing to it.
  for (let i = 0; i < 200 && relay.exitCode === null && relay.signalCode === null; i++) {
    const client = net.connect(port, '127.0.0.1');
    client.on('error', () => {});
    const writing = setInterval(() => client.write(chunk), 1);
    // Not events.once: it would reject on the client's 'error' (the reset), which is expected here.
    await new Promise((resolve) => client.once('close', resolve));
    clearInterval(writing);
  }
  const alive = relay.exitCode === null && relay.signalCode === null;
  console.log(
    alive
      ? 'StreamPipe relay: survives 200 backends resetting mid-stream'
      : `StreamPipe relay: died (${relay.signalCode ?? `exit ${relay.exitCode}`}) when a backend reset mid-stream`,
  );
  relay.kill('SIGKILL');
  backend.close();
  return alive;
}

if (!has('nginx') || !has('wrk')) {
  console.error('bench:native-pipe needs nginx and wrk: apt-get install -y nginx-light wrk');
  process.exit(2);
}
const dir = workDir();
const backendPort = await freePort();
await startNginx(dir, [backendPort], { small: Buffer.from('ok\n'.padEnd(100, '.')) });

const targets: Array<{ name: string; pid: number; port: number }> = [];
if (has('haproxy')) {
  const port = await freePort();
  const proc = await startHaproxy(dir, port, [backendPort]);
  targets.push({ name: 'haproxy', pid: proc.pid as number, port });
}
const fulcrumPort = await freePort();
const fulcrum = await startFulcrum(fulcrumPort, [backendPort], ['--workers', '1']);
targets.push({ name: 'fulcrum', pid: fulcrum.pid as number, port: fulcrumPort });
const pipePort = await freePort();
const pipe = startPipeRelay(pipePort, backendPort);
await waitForPort(pipePort);
targets.push({ name: 'StreamPipe relay', pid: pipe.pid as number, port: pipePort });

const results = new Map(
  targets.map((t) => [t.name, [] as Array<{ cpuPer1000: number; rps: number }>]),
);
for (let i = 0; i < runs; i++) {
  for (const t of targets) results.get(t.name)?.push(run(t.pid, t.port));
}
pipe.kill('SIGKILL');

console.log(
  `small keep-alive requests, 50 connections, ${runs} interleaved runs of ${seconds} s (medians):`,
);
const cpu = (name: string) => median((results.get(name) ?? []).map((r) => r.cpuPer1000));
for (const t of targets) {
  const rps = median((results.get(t.name) ?? []).map((r) => r.rps));
  const vsHaproxy = results.has('haproxy')
    ? `, ${(cpu(t.name) / cpu('haproxy')).toFixed(2)}x HAProxy's`
    : '';
  console.log(
    `  ${t.name.padEnd(17)} CPU ${cpu(t.name).toFixed(1)} ms per 1000 requests${vsHaproxy}, ${(cpu(t.name) / cpu('fulcrum')).toFixed(2)}x fulcrum's; ${Math.round(rps)} requests/s`,
  );
}
await survivesResets();
process.exit(0);
