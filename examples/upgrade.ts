// `npm run demo:upgrade`: fulcrum upgrades itself under load. An echo backend, fulcrum in front
// of it (two workers, a stats socket, a state file), 30 streams sending data through it and a new
// short connection every 20 ms; then `upgrade` on the stats socket (what SIGUSR2 does). The
// streams finish on the old process, byte for byte; the short connections never fail; the new
// process answers the stats socket and keeps the weight set before the upgrade.

import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { query } from '../src/stats/client.ts';

const BIN = fileURLToPath(new URL('../bin/fulcrum', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'fulcrum-upgrade-demo-'));
const stats = join(dir, 'stats.sock');

const backend = net.createServer({ allowHalfOpen: true }, (socket) => {
  socket.on('error', () => {});
  socket.pipe(socket);
});
backend.listen(0, '127.0.0.1');
await once(backend, 'listening');
const backendAddress = `127.0.0.1:${(backend.address() as net.AddressInfo).port}`;

const fulcrum = spawn(
  process.execPath,
  [
    BIN,
    '--listen',
    '127.0.0.1:0',
    '--backend',
    backendAddress,
    '--workers',
    '2',
    '--stats-socket',
    stats,
    '--state-file',
    join(dir, 'state.json'),
  ],
  { stdio: ['ignore', 'pipe', 'inherit'] },
);
let port = 0;
const messages: string[] = [];
let pending = '';
fulcrum.stdout.on('data', (chunk: Buffer) => {
  pending += chunk.toString();
  const lines = pending.split('\n');
  pending = lines.pop() ?? '';
  for (const line of lines) {
    const entry = JSON.parse(line) as Record<string, unknown>;
    messages.push(`pid ${entry.pid}: ${entry.msg}`);
    if (entry.msg === 'listening')
      port = Number(String((entry.listen as string[])[0]).split(':')[1]);
  }
});
while (!messages.some((m) => m.endsWith(': ready'))) await new Promise((r) => setTimeout(r, 20));
const oldPid = fulcrum.pid;
console.log(`fulcrum pid ${oldPid} on 127.0.0.1:${port}, in front of ${backendAddress}`);
console.log(await query(stats, `set weight default/${backendAddress} 7`));

// 30 streams, each with a running hash of what it sent and what came back.
const streams = await Promise.all(
  Array.from({ length: 30 }, async () => {
    const socket = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    await once(socket, 'connect');
    const s = { socket, sent: createHash('sha256'), got: createHash('sha256'), n: 0, m: 0 };
    socket.on('data', (chunk: Buffer) => {
      s.got.update(chunk);
      s.m += chunk.length;
    });
    return s;
  }),
);
const pump = setInterval(() => {
  for (const s of streams) {
    const chunk = randomBytes(4096);
    s.sent.update(chunk);
    s.n += chunk.length;
    s.socket.write(chunk);
  }
}, 50);

// A short connection every 20 ms: a line out, the same line back.
let ok = 0;
const failed: string[] = [];
const shorts: Promise<void>[] = [];
const ticker = setInterval(() => {
  shorts.push(
    new Promise<void>((resolve) => {
      const socket = net.connect({ host: '127.0.0.1', port });
      let got = '';
      socket.on('data', (chunk: Buffer) => {
        got += chunk.toString();
        if (got === 'ping\n') {
          ok++;
          socket.destroy();
          resolve();
        }
      });
      socket.on('error', (err) => {
        failed.push(err.message);
        resolve();
      });
      socket.on('connect', () => socket.write('ping\n'));
    }),
  );
}, 20);

await new Promise((r) => setTimeout(r, 1000));
console.log(`upgrade: ${await query(stats, 'upgrade')}`);
await new Promise((r) => setTimeout(r, 1000));
console.log(`show info: ${(await query(stats, 'show info')).split('\n').slice(0, 2).join(', ')}`);
clearInterval(pump);
for (const s of streams) s.socket.end();
await Promise.all(streams.map((s) => once(s.socket, 'close')));
clearInterval(ticker);
await Promise.all(shorts);
const intact = streams.filter(
  (s) => s.n === s.m && s.sent.digest('hex') === s.got.digest('hex'),
).length;
const [code] = await once(fulcrum, 'exit');
const info = await query(stats, 'show info json');
const newPid = (JSON.parse(info) as { pid: number }).pid;
const weight = (await query(stats, 'show stat')).includes(' 7 ') ? 'kept' : 'lost';

console.log('\nwhat the two processes logged:');
for (const m of messages.filter((m) => /upgrade|ready|stopped|draining/.test(m))) {
  console.log(`  ${m}`);
}
console.log(`\nstreams intact through the upgrade: ${intact} of ${streams.length}`);
console.log(`short connections: ${ok} answered, ${failed.length} refused or reset`);
console.log(`old process ${oldPid}: exited ${code} once its streams ended`);
console.log(`new process ${newPid}: answers the stats socket; the weight set before: ${weight}`);

process.kill(newPid, 'SIGTERM');
backend.close();
process.exit(intact === streams.length && failed.length === 0 && code === 0 ? 0 : 1);
