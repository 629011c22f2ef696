// The PROXY protocol (HAProxy's spec, versions 1 and 2): the header a balancer puts before a
// client's bytes so the next hop learns the client's real address. We parse it from an upstream
// balancer (accept-proxy) and write it to backends (send-proxy). Invariants: the parser never
// throws and never reads past what it was given; it answers "incomplete" only while the bytes so
// far can still become a valid header, so a client cannot hold a connection with garbage.

import { isIPv4, isIPv6 } from 'node:net';

/** The v2 signature: \r\n\r\n\0\r\nQUIT\n. */
const V2_SIGNATURE = Buffer.from([
  0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
]);
const V1_PREFIX = Buffer.from('PROXY ');
/** The longest v1 header, CRLF included (the spec's 107). */
export const V1_MAX = 107;
/** The longest v2 header we take: the 16-byte head and at most this much after it. */
const V2_MAX_BODY = 4096;

export interface ProxyAddresses {
  readonly sourceAddress: string;
  readonly sourcePort: number;
  readonly destinationAddress: string;
  readonly destinationPort: number;
}

export type ProxyParse =
  | { readonly status: 'incomplete' }
  | { readonly status: 'invalid'; readonly reason: string }
  | {
      readonly status: 'ok';
      /** Bytes the header took; what follows is the client's own. */
      readonly length: number;
      /** The client as the upstream saw it; null for LOCAL/UNKNOWN (use the real peer). */
      readonly addresses: ProxyAddresses | null;
    };

const INCOMPLETE: ProxyParse = { status: 'incomplete' };

function invalid(reason: string): ProxyParse {
  return { status: 'invalid', reason };
}

/** Parses a PROXY header (v1 or v2) at the start of `data`. */
export function parseProxyHeader(data: Buffer): ProxyParse {
  if (data.length === 0) return INCOMPLETE;
  if (data[0] === V1_PREFIX[0]) return parseV1(data);
  if (data[0] === V2_SIGNATURE[0]) return parseV2(data);
  return invalid('not a PROXY protocol header');
}

function startsLike(data: Buffer, prefix: Buffer): boolean {
  const n = Math.min(data.length, prefix.length);
  return data.subarray(0, n).equals(prefix.subarray(0, n));
}

function parseV1(data: Buffer): ProxyParse {
  if (!startsLike(data, V1_PREFIX)) return invalid('not a PROXY protocol header');
  const end = data.indexOf('\r\n');
  if (end < 0) {
    return data.length >= V1_MAX ? invalid('v1 header longer than 107 bytes') : INCOMPLETE;
  }
  if (end + 2 > V1_MAX) return invalid('v1 header longer than 107 bytes');
  const line = data.toString('latin1', 0, end);
  const parts = line.split(' ');
  if (parts[1] === 'UNKNOWN') return { status: 'ok', length: end + 2, addresses: null };
  if (parts.length !== 6) return invalid('v1 header: expected PROXY TCP4|TCP6 SRC DST SPORT DPORT');
  const [, protocol, source, destination, sourcePort, destinationPort] = parts;
  const valid = protocol === 'TCP4' ? isIPv4 : protocol === 'TCP6' ? isIPv6 : null;
  if (valid === null) return invalid(`v1 header: unknown protocol "${protocol.slice(0, 8)}"`);
  if (!valid(source) || !valid(destination)) return invalid('v1 header: bad address');
  const sport = port(sourcePort);
  const dport = port(destinationPort);
  if (sport < 0 || dport < 0) return invalid('v1 header: bad port');
  return {
    status: 'ok',
    length: end + 2,
    addresses: {
      sourceAddress: source,
      sourcePort: sport,
      destinationAddress: destination,
      destinationPort: dport,
    },
  };
}

/** A decimal port 0..65535 without a sign or leading zeros; -1 otherwise. */
function port(text: string): number {
  if (!/^(0|[1-9]\d{0,4})$/.test(text)) return -1;
  const value = Number(text);
  return value <= 65535 ? value : -1;
}

function parseV2(data: Buffer): ProxyParse {
  if (!startsLike(data, V2_SIGNATURE)) return invalid('not a PROXY protocol header');
  if (data.length < 16) return INCOMPLETE;
  const versionCommand = data[12];
  if (versionCommand >> 4 !== 2) return invalid('v2 header: version is not 2');
  const command = versionCommand & 0x0f;
  if (command > 1) return invalid('v2 header: unknown command');
  const familyProtocol = data[13];
  const length = data.readUInt16BE(14);
  if (length > V2_MAX_BODY) return invalid('v2 header: too long');
  if (data.length < 16 + length) return INCOMPLETE;
  const total = 16 + length;
  // LOCAL: a health check or the like from the upstream itself; the real peer stands.
  if (command === 0) return { status: 'ok', length: total, addresses: null };
  if (familyProtocol === 0x00) return { status: 'ok', length: total, addresses: null };
  if (familyProtocol === 0x11) {
    if (length < 12) return invalid('v2 header: short TCP4 address block');
    return {
      status: 'ok',
      length: total,
      addresses: {
        sourceAddress: ipv4(data, 16),
        destinationAddress: ipv4(data, 20),
        sourcePort: data.readUInt16BE(24),
        destinationPort: data.readUInt16BE(26),
      },
    };
  }
  if (familyProtocol === 0x21) {
    if (length < 36) return invalid('v2 header: short TCP6 address block');
    return {
      status: 'ok',
      length: total,
      addresses: {
        sourceAddress: ipv6(data, 16),
        destinationAddress: ipv6(data, 32),
        sourcePort: data.readUInt16BE(48),
        destinationPort: data.readUInt16BE(50),
      },
    };
  }
  return invalid('v2 header: not TCP over IPv4 or IPv6');
}

function ipv4(data: Buffer, at: number): string {
  return `${data[at]}.${data[at + 1]}.${data[at + 2]}.${data[at + 3]}`;
}

function ipv6(data: Buffer, at: number): string {
  const groups: string[] = [];
  for (let i = 0; i < 8; i++) groups.push(data.readUInt16BE(at + i * 2).toString(16));
  return compressIPv6(groups);
}

/** The usual short form: the longest run of zero groups becomes `::`. */
function compressIPv6(groups: string[]): string {
  let bestStart = -1;
  let bestLength = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLength && j - i > 1) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  if (bestStart < 0) return groups.join(':');
  const head = groups.slice(0, bestStart).join(':');
  const tail = groups.slice(bestStart + bestLength).join(':');
  return `${head}::${tail}`;
}

/** An IPv4 client seen on a dual-stack socket (::ffff:a.b.c.d) as plain IPv4. */
function plain(address: string): string {
  return address.startsWith('::ffff:') && isIPv4(address.slice(7)) ? address.slice(7) : address;
}

/** The v1 header for these addresses (TCP4 when both are IPv4, else TCP6). */
export function buildV1(a: ProxyAddresses): Buffer {
  const source = plain(a.sourceAddress);
  const destination = plain(a.destinationAddress);
  if (isIPv4(source) && isIPv4(destination)) {
    return Buffer.from(
      `PROXY TCP4 ${source} ${destination} ${a.sourcePort} ${a.destinationPort}\r\n`,
      'latin1',
    );
  }
  return Buffer.from(
    `PROXY TCP6 ${v6(source)} ${v6(destination)} ${a.sourcePort} ${a.destinationPort}\r\n`,
    'latin1',
  );
}

/** The v2 header for these addresses (TCP over IPv4 when both are IPv4, else IPv6), with
 *  `tlvs` (already encoded, see tlsTlvs) after them. */
export function buildV2(a: ProxyAddresses, tlvs: Buffer | null = null): Buffer {
  const source = plain(a.sourceAddress);
  const destination = plain(a.destinationAddress);
  const four = isIPv4(source) && isIPv4(destination);
  const extra = tlvs === null ? 0 : tlvs.length;
  const header = Buffer.alloc(16 + (four ? 12 : 36) + extra);
  V2_SIGNATURE.copy(header, 0);
  header[12] = 0x21; // version 2, PROXY
  header[13] = four ? 0x11 : 0x21;
  header.writeUInt16BE((four ? 12 : 36) + extra, 14);
  if (tlvs !== null) tlvs.copy(header, 16 + (four ? 12 : 36));
  if (four) {
    writeIPv4(header, 16, source);
    writeIPv4(header, 20, destination);
    header.writeUInt16BE(a.sourcePort, 24);
    header.writeUInt16BE(a.destinationPort, 26);
  } else {
    writeIPv6(header, 16, v6(source));
    writeIPv6(header, 32, v6(destination));
    header.writeUInt16BE(a.sourcePort, 48);
    header.writeUInt16BE(a.destinationPort, 50);
  }
  return header;
}

/** PROXY v2 TLV types and the SSL TLV's sub-types and client bits (the spec's section 2.2). */
const PP2_TYPE_ALPN = 0x01;
const PP2_TYPE_AUTHORITY = 0x02;
const PP2_TYPE_SSL = 0x20;
const PP2_SUBTYPE_SSL_VERSION = 0x21;
const PP2_SUBTYPE_SSL_CN = 0x22;
const PP2_SUBTYPE_SSL_CIPHER = 0x23;
export const PP2_CLIENT_SSL = 0x01;
export const PP2_CLIENT_CERT_CONN = 0x02;
export const PP2_CLIENT_CERT_SESS = 0x04;

/** What a terminated TLS connection tells its backend in a PROXY v2 header. */
export interface TlsFacts {
  readonly serverName: string;
  readonly alpn: string;
  readonly version: string;
  readonly cipher: string;
  /** PP2_CLIENT_* bits. */
  readonly client: number;
  /** 0 when the client certificate was verified (or none was asked for), else not 0. */
  readonly verify: number;
  /** The verified client certificate's subject CN; '' if none. */
  readonly commonName: string;
}

function tlv(type: number, value: Buffer): Buffer {
  const out = Buffer.alloc(3 + value.length);
  out[0] = type;
  out.writeUInt16BE(value.length, 1);
  value.copy(out, 3);
  return out;
}

/** The TLVs of a terminated TLS connection: ALPN and server name if any, and PP2_TYPE_SSL with
 *  the version, cipher and client certificate CN. */
export function tlsTlvs(facts: TlsFacts): Buffer {
  const parts: Buffer[] = [];
  if (facts.alpn !== '') parts.push(tlv(PP2_TYPE_ALPN, Buffer.from(facts.alpn, 'latin1')));
  if (facts.serverName !== '') {
    parts.push(tlv(PP2_TYPE_AUTHORITY, Buffer.from(facts.serverName, 'utf8')));
  }
  const head = Buffer.alloc(5);
  head[0] = facts.client;
  head.writeUInt32BE(facts.verify, 1);
  const subs = [head, tlv(PP2_SUBTYPE_SSL_VERSION, Buffer.from(facts.version, 'latin1'))];
  if (facts.commonName !== '') {
    subs.push(tlv(PP2_SUBTYPE_SSL_CN, Buffer.from(facts.commonName, 'utf8')));
  }
  if (facts.cipher !== '')
    subs.push(tlv(PP2_SUBTYPE_SSL_CIPHER, Buffer.from(facts.cipher, 'latin1')));
  parts.push(tlv(PP2_TYPE_SSL, Buffer.concat(subs)));
  return Buffer.concat(parts);
}

/** An address in IPv6 form: IPv4 ones mapped (::ffff:a.b.c.d). */
function v6(address: string): string {
  return isIPv4(address) ? `::ffff:${address}` : address;
}

function writeIPv4(buffer: Buffer, at: number, address: string): void {
  const parts = address.split('.');
  for (let i = 0; i < 4; i++) buffer[at + i] = Number(parts[i]);
}

function writeIPv6(buffer: Buffer, at: number, address: string): void {
  // Expand :: and a trailing dotted IPv4 part into eight 16-bit groups.
  let text = address;
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (dotted !== null) {
    const [a, b, c, d] = dotted[1].split('.').map(Number);
    text = `${text.slice(0, dotted.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.split('::');
  const left = head === '' ? [] : head.split(':');
  const right = tail === undefined ? [] : tail === '' ? [] : tail.split(':');
  const groups =
    tail === undefined
      ? left
      : [...left, ...Array(8 - left.length - right.length).fill('0'), ...right];
  for (let i = 0; i < 8; i++)
    buffer.writeUInt16BE(Number.parseInt(groups[i] ?? '0', 16), at + i * 2);
}
