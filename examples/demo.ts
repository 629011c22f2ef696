// `npm run demo`: starts two local backends and fulcrum in front of them (two worker threads,
// least-connections), and shows it balancing: short connections alternate, held connections
// spread evenly, and when one backend dies new clients go to the other without seeing an error.

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import { fileURLToPath } from 'node:url';

const BIN = fileURLToPath(new URL('../bin/fulcrum', import.meta.url));

async function backend(
  name: string,
): Promise<{ server: net.Server; port: number; open: Set<net.Socket> }> {
  const open = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    open.add(socket);
    socket.on('close', () => open.delete(socket));
    socket.on('error', () => {});
    socket.write(`hello from backend ${name}\n`);
    socket.resume();
    socket.on('end', () => socket.end());
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as net.AddressInfo).port, open };
}

function ask(port: number): Promise<{ socket: net.Socket; line: string }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('data', (chunk) => resolve({ socket, line: chunk.toString().trim() }));
    socket.once('error', reject);
  });
}

const a = await backend('A');
const b = await backend('B');
console.log(`backends: A on 127.0.0.1:${a.port}, B on 127.0.0.1:${b.port}`);

const args = [
  '--listen',
  '127.0.0.1:0',
  '--backend',
  `127.0.0.1:${a.port}`,
  '--backend',
  `127.0.0.1:${b.port}`,
  '--workers',
  '2',
  '--drain-timeout',
  '2s',
];
console.log(`\n$ fulcrum ${args.join(' ')}`);
const fulcrum = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
let port = 0;
let output = '';
let markedDown: () => void = () => {};
const backendDown = new Promise<void>((resolve) => {
  markedDown = resolve;
});
await new Promise<void>((resolve, reject) => {
  fulcrum.stdout.on('data', (chunk: Buffer) => {
    output += chunk.toString();
    for (;;) {
      const nl = output.indexOf('\n');
      if (nl < 0) break;
      const line = JSON.parse(output.slice(0, nl)) as { msg: string; listen?: string[] };
      output = output.slice(nl + 1);
      console.log(`  log: ${JSON.stringify(line)}`);
      if (line.msg === 'listening' && line.listen) port = Number(line.listen[0].split(':').pop());
      if (line.msg === 'ready') resolve();
      if (line.msg === 'backend down') markedDown();
    }
  });
  fulcrum.once('exit', (code) => reject(new Error(`fulcrum exited with ${code}`)));
});

console.log(`\n1. Six short connections to fulcrum on 127.0.0.1:${port}, one after another:`);
for (let k = 0; k < 6; k++) {
  const { socket, line } = await ask(port);
  console.log(`   connection ${k + 1}: ${line}`);
  socket.end();
  await once(socket, 'close');
}

console.log('\n2. Ten connections held open at once (least-connections, shared by both workers):');
const held: net.Socket[] = [];
const holds = { A: 0, B: 0 };
for (let k = 0; k < 10; k++) {
  const { socket, line } = await ask(port);
  held.push(socket);
  holds[line.endsWith('A') ? 'A' : 'B']++;
}
console.log(`   backend A holds ${holds.A}, backend B holds ${holds.B}`);
for (const socket of held) socket.destroy();

console.log('\n3. Backend B stops. Six new connections:');
for (const socket of b.open) socket.destroy();
b.server.close();
await once(b.server, 'close');
let errors = 0;
for (let k = 0; k < 6; k++) {
  try {
    const { socket, line } = await ask(port);
    console.log(`   connection ${k + 1}: ${line}`);
    socket.destroy();
  } catch {
    errors++;
  }
}
console.log(
  `   errors seen by clients: ${errors} (a refused connect is retried on another backend)`,
);
console.log('   ...and those failed connects (or the next health probe) take B out of the pool:');
await Promise.race([backendDown, new Promise((resolve) => setTimeout(resolve, 5000))]);

console.log('\n4. SIGTERM: fulcrum stops accepting, drains, and exits 0 with a summary:');
fulcrum.kill('SIGTERM');
const [code] = (await once(fulcrum, 'exit')) as [number];
console.log(`   fulcrum exited with status ${code}`);
a.server.close();
for (const socket of a.open) socket.destroy();

console.log(
  '\nRun it yourself: npx fulcrum --listen 127.0.0.1:8080 --backend HOST:PORT --backend HOST:PORT',
);
process.exit(code === 0 && errors === 0 ? 0 : 1);
