// The source-network matcher routes use at accept, against node's own net.BlockList: the same
// answer for random IPv4 and IPv6 addresses and networks (compressed, IPv4-mapped, IPv4 tails,
// zones), text that is no address refused, and no allocation per match.

import '../children.ts';
import { spawnSync } from 'node:child_process';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { inNetwork, parseAddress, parseNetwork } from '../../src/data/networks.ts';

/** A small seeded generator (mulberry32): the same cases every run. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

const rand = random(11);
const int = (n: number) => Math.floor(rand() * n);
const v4 = () => [int(4) === 0 ? 10 : int(256), int(4), int(256), int(256)].join('.');
/** Mostly near each other (few distinct first groups), so networks and addresses meet. */
function v6(): string {
  const groups = Array.from({ length: 8 }, (_, i) =>
    (i < 2 ? [0x2001, 0xdb8][i] + int(2) : int(3) === 0 ? 0 : int(0x10000)).toString(16),
  );
  const text = groups.join(':');
  // Compressed as inet_ntop would write it, sometimes: the first run of zero groups.
  return int(2) === 0 ? text : text.replace(/(^|:)0(:0)+(:|$)/, '::');
}

/** BlockList's word, IPv4-mapped clients read as IPv4 (as the route gives them). */
function expected(network: string, prefix: number, address: string): boolean {
  const list = new net.BlockList();
  list.addSubnet(network, prefix, network.includes(':') ? 'ipv6' : 'ipv4');
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  const plain = mapped?.[1] ?? address;
  return list.check(plain, plain.includes(':') ? 'ipv6' : 'ipv4');
}

t.test('the same answer as net.BlockList, IPv4 and IPv6', async (t) => {
  let agree = 0;
  let inside = 0;
  const disagree: string[] = [];
  for (let i = 0; i < 4000; i++) {
    const six = int(2) === 0;
    const network = six ? v6() : v4();
    const prefix = six ? int(129) : int(33);
    const address = six ? v6() : int(4) === 0 ? `::ffff:${v4()}` : v4();
    const parsed = parseNetwork(`${network}/${prefix}`);
    if (!parseAddress(address)) disagree.push(`${address} does not parse`);
    const got = inNetwork(parsed);
    const want = expected(network, prefix, address);
    if (got === want) agree++;
    else disagree.push(`${address} in ${network}/${prefix}: ${got}, BlockList ${want}`);
    if (want) inside++;
  }
  t.same(disagree, [], `agree on ${agree} cases`);
  t.ok(inside > 400, `many of them inside their network (${inside})`);
});

t.test('forms the kernel and PROXY headers write', async (t) => {
  const cases: Array<[string, string, boolean]> = [
    ['::ffff:10.8.1.2', '10.8.0.0/16', true],
    ['10.8.1.2', '::ffff:10.8.0.0/112', true],
    ['::1', '::1', true],
    ['::1', '::/0', true],
    ['10.0.0.1', '::/0', true],
    ['0.0.0.0', '0.0.0.0/0', true],
    ['255.255.255.255', '255.255.255.254/31', true],
    ['fe80::1%eth0', 'fe80::/10', true],
    ['2001:db8::1', '2001:db8::/32', true],
    ['2001:db9::1', '2001:db8::/32', false],
    ['2001:DB8:0:0:0:0:0:1', '2001:db8::1/128', true],
    ['::', '::/128', true],
    ['1::', '1::/16', true],
    ['::1.2.3.4', '::102:304/128', true],
    ['10.8.1.2', '10.8.1.2', true],
    ['10.8.1.3', '10.8.1.2', false],
  ];
  for (const [address, cidr, inside] of cases) {
    const network = parseNetwork(cidr);
    t.ok(parseAddress(address), `${address} parses`);
    t.equal(inNetwork(network), inside, `${address} ${inside ? 'in' : 'not in'} ${cidr}`);
  }
  for (const bad of [
    '',
    'x',
    '1.2.3',
    '1.2.3.256',
    '1.2.3.4.5',
    '1::2::3',
    '12345::',
    ':::',
    '1:2:3:4:5:6:7:8:9',
    '1:2:3:4:5:6:7',
    'g::1',
    '1.2.3.4:80',
    '::ffff:1.2.3',
  ]) {
    t.notOk(parseAddress(bad), `"${bad}" is no address`);
  }
});

t.test('a million matches trigger no garbage collection', async (t) => {
  const probe = fileURLToPath(new URL('../fixtures/networks-probe.ts', import.meta.url));
  const run = spawnSync(process.execPath, ['--expose-gc', probe, '1000000'], { encoding: 'utf8' });
  t.equal(run.status, 0, run.stderr);
  const result = JSON.parse(run.stdout) as { gcs: number; heapGrowth: number; hits: number };
  // Each address is in one or two of the networks (a mapped one is in ::ffff:0:0/96 too).
  t.equal(result.hits, 1_500_000, 'the matches found');
  t.equal(result.gcs, 0, 'no garbage collection during the matches');
  t.ok(result.heapGrowth < 512 * 1024, `heap grew ${result.heapGrowth} bytes`);
});
