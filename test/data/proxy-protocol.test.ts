// The PROXY protocol parser and builders: round trips for v1 and v2, IPv4 and IPv6; every prefix
// of a valid header is "incomplete", never wrong; random and mutated input never throws and never
// passes as a header it is not.

import { randomBytes } from 'node:crypto';
import t from 'tap';
import type { ProxyAddresses } from '../../src/data/proxy-protocol.ts';
import { buildV1, buildV2, parseProxyHeader, V1_MAX } from '../../src/data/proxy-protocol.ts';

const FOUR: ProxyAddresses = {
  sourceAddress: '192.0.2.10',
  sourcePort: 51234,
  destinationAddress: '198.51.100.1',
  destinationPort: 5432,
};
const SIX: ProxyAddresses = {
  sourceAddress: '2001:db8::1',
  sourcePort: 40000,
  destinationAddress: '2001:db8:0:1::2',
  destinationPort: 443,
};

t.test('v1 and v2 round trips, IPv4 and IPv6, with the client bytes after', async (t) => {
  for (const [name, build] of [
    ['v1', buildV1],
    ['v2', buildV2],
  ] as const) {
    for (const addresses of [FOUR, SIX]) {
      const header = build(addresses);
      const parsed = parseProxyHeader(Buffer.concat([header, Buffer.from('GET / HTTP/1.1\r\n')]));
      t.equal(parsed.status, 'ok', `${name} ${addresses.sourceAddress}`);
      if (parsed.status !== 'ok') continue;
      t.equal(parsed.length, header.length, "the header length, so what follows is the client's");
      t.same(parsed.addresses, addresses);
    }
  }
  t.equal(buildV1(FOUR).toString(), 'PROXY TCP4 192.0.2.10 198.51.100.1 51234 5432\r\n');
  t.same(
    parseProxyHeader(
      buildV2({
        ...FOUR,
        sourceAddress: '::ffff:192.0.2.10',
        destinationAddress: '::ffff:198.51.100.1',
      }),
    ),
    { status: 'ok', length: 28, addresses: FOUR },
    'an IPv4 client on a dual-stack socket is sent as TCP4',
  );
});

t.test('LOCAL and UNKNOWN headers keep the real peer', async (t) => {
  t.same(parseProxyHeader(Buffer.from('PROXY UNKNOWN\r\n')), {
    status: 'ok',
    length: 15,
    addresses: null,
  });
  const local = buildV2(FOUR);
  local[12] = 0x20;
  t.same(parseProxyHeader(local), { status: 'ok', length: local.length, addresses: null });
});

t.test('every proper prefix of a valid header is incomplete', async (t) => {
  for (const header of [buildV1(FOUR), buildV1(SIX), buildV2(FOUR), buildV2(SIX)]) {
    for (let n = 0; n < header.length; n++) {
      const parsed = parseProxyHeader(header.subarray(0, n));
      if (parsed.status !== 'incomplete') {
        t.fail(`prefix ${n} of ${header.length}: ${JSON.stringify(parsed)}`);
        return;
      }
    }
  }
  t.pass('all prefixes wait for more');
});

const garbage: Array<[string, string | Buffer]> = [
  ['plain HTTP', 'GET / HTTP/1.1\r\n\r\n'],
  ['a bad protocol', 'PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n'],
  ['a bad address', 'PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n'],
  ['an IPv6 address in TCP4', 'PROXY TCP4 ::1 5.6.7.8 1 2\r\n'],
  ['a port out of range', 'PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n'],
  ['a signed port', 'PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n'],
  ['a leading-zero port', 'PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n'],
  ['too few fields', 'PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n'],
  ['no CRLF within 107 bytes', `PROXY TCP4 ${'1'.repeat(120)}`],
  [
    'a v2 header of version 3',
    Buffer.concat([
      buildV2(FOUR).subarray(0, 12),
      Buffer.from([0x31, 0x11, 0, 12]),
      Buffer.alloc(12),
    ]),
  ],
  [
    'a v2 UNIX address',
    Buffer.concat([
      buildV2(FOUR).subarray(0, 12),
      Buffer.from([0x21, 0x31, 0, 216]),
      Buffer.alloc(216),
    ]),
  ],
  [
    'a short v2 TCP4 block',
    Buffer.concat([
      buildV2(FOUR).subarray(0, 12),
      Buffer.from([0x21, 0x11, 0, 4]),
      Buffer.alloc(4),
    ]),
  ],
];

for (const [what, input] of garbage) {
  t.test(`invalid: ${what}`, async (t) => {
    const parsed = parseProxyHeader(Buffer.isBuffer(input) ? input : Buffer.from(input, 'latin1'));
    t.equal(parsed.status, 'invalid', JSON.stringify(parsed));
  });
}

t.test(
  'fuzz: 20000 random inputs never throw and rarely pass, and only as real headers',
  async (t) => {
    let ok = 0;
    let wrong = 0;
    for (let k = 0; k < 20_000; k++) {
      const input = randomBytes(k % 64);
      // Some start like a header, to get past the first byte: the v1 prefix or the v2 signature.
      if (k % 3 === 0) Buffer.from('PROXY ').copy(input);
      if (k % 3 === 1) buildV2(FOUR).copy(input, 0, 0, Math.min(12, input.length));
      const parsed = parseProxyHeader(input);
      if (parsed.status === 'ok') {
        ok++;
        // Whatever passed is a header: a v2 head with a known command and family, within bounds.
        if (parsed.length > input.length || input[0] !== 0x0d) wrong++;
      }
    }
    t.equal(wrong, 0, 'nothing passed that is not a v2 header within the input');
    t.ok(ok < 400, `${ok} random v2 heads happened to be valid (LOCAL or UNSPEC)`);
  },
);

t.test('fuzz: single-byte mutations of valid headers never throw', async (t) => {
  let count = 0;
  for (const header of [buildV1(FOUR), buildV1(SIX), buildV2(FOUR), buildV2(SIX)]) {
    for (let at = 0; at < header.length; at++) {
      for (const value of [0x00, 0x0a, 0x0d, 0x20, 0x3a, 0x7f, 0xff]) {
        const mutated = Buffer.from(header);
        mutated[at] = value;
        const parsed = parseProxyHeader(mutated);
        count++;
        if (parsed.status === 'ok' && parsed.length > mutated.length) {
          t.fail(`a mutation at ${at} parsed past the input`);
        }
      }
    }
  }
  t.ok(count > 1000, `${count} mutations parsed without throwing`);
  t.equal(parseProxyHeader(Buffer.alloc(V1_MAX + 10, 'P')).status, 'invalid');
});
