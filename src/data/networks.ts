// Client networks as a route matches them at accept: every address and network as 128 bits
// (an IPv4 one as IPv4-mapped IPv6, so an IPv4 client on a dual-stack listener matches IPv4
// networks), compared word by word. Invariant: matching allocates nothing and costs a few
// integer operations per network, whatever the number of networks (net.BlockList parses the
// address text again for every list it is checked against: ~0.5 us each).

/** A network: its first address and its mask as four 32-bit words each, and its prefix length
 *  over 128 bits. */
export interface Network {
  readonly words: Uint32Array;
  readonly masks: Uint32Array;
  readonly prefix: number;
}

/** The last address parsed (parseAddress), as four words: reused, one per thread. */
const WORDS = new Uint32Array(4);
const GROUPS = new Uint16Array(8);
/** An IPv4 address being parsed. */
const V4 = new Uint32Array(1);

/** A CIDR the config has checked (`10.8.0.0/16`, `2001:db8::/32`, or a bare address). */
export function parseNetwork(cidr: string): Network {
  const [address, prefixText] = cidr.trim().split('/');
  const words = new Uint32Array(4);
  if (!parseInto(address, words)) throw new Error(`"${cidr}" is not an address or CIDR`);
  const v4 = !address.includes(':');
  const prefix = (prefixText === undefined ? (v4 ? 32 : 128) : Number(prefixText)) + (v4 ? 96 : 0);
  const masks = new Uint32Array(4);
  for (let w = 0; w < 4; w++) {
    masks[w] = mask(prefix, w);
    words[w] = (words[w] & masks[w]) >>> 0;
  }
  return { words, masks, prefix };
}

/** Whether the address last parsed by parseAddress() is in `network`. */
export function inNetwork(network: Network): boolean {
  const { words, masks } = network;
  for (let w = 0; w < 4; w++) {
    if ((WORDS[w] & masks[w]) >>> 0 !== words[w]) return false;
  }
  return true;
}

/** The bits of word `w` a prefix of `prefix` bits covers. */
function mask(prefix: number, w: number): number {
  const bits = Math.min(32, Math.max(0, prefix - w * 32));
  return bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
}

/**
 * Parses an IPv4 or IPv6 address (as the kernel or a PROXY header gives it; a `%zone` is
 * ignored) into the words inNetwork() compares; false if it is not one.
 */
export function parseAddress(text: string): boolean {
  return parseInto(text, WORDS);
}

/** parseAddress() into `out`. */
function parseInto(text: string, out: Uint32Array): boolean {
  const zone = text.indexOf('%');
  const end = zone < 0 ? text.length : zone;
  if (text.indexOf(':') < 0) {
    if (!parseV4(text, 0, end)) return false;
    out[0] = 0;
    out[1] = 0;
    out[2] = 0xffff;
    out[3] = V4[0];
    return true;
  }
  let groups = 0;
  /** Where `::` stands, in groups; -1: none. */
  let gap = -1;
  let i = 0;
  if (end >= 2 && text.charCodeAt(0) === 0x3a && text.charCodeAt(1) === 0x3a) {
    gap = 0;
    i = 2;
  }
  while (i < end) {
    let j = i;
    let value = 0;
    while (j < end && j - i < 5) {
      const h = hexDigit(text.charCodeAt(j));
      if (h < 0) break;
      value = value * 16 + h;
      j++;
    }
    if (j < end && text.charCodeAt(j) === 0x2e) {
      // An IPv4 tail (`::ffff:10.0.0.1`): the last two groups.
      if (!parseV4(text, i, end) || groups > 6) return false;
      GROUPS[groups++] = V4[0] >>> 16;
      GROUPS[groups++] = V4[0] & 0xffff;
      i = end;
      break;
    }
    if (j === i || j - i > 4 || groups >= 8) return false;
    GROUPS[groups++] = value;
    if (j === end) {
      i = j;
      break;
    }
    if (text.charCodeAt(j) !== 0x3a) return false;
    if (j + 1 < end && text.charCodeAt(j + 1) === 0x3a) {
      if (gap >= 0) return false;
      gap = groups;
      i = j + 2;
    } else {
      i = j + 1;
      if (i === end) return false;
    }
  }
  if (gap < 0 ? groups !== 8 : groups > 7) return false;
  // The groups before `::`, zeros, the groups after it.
  const zeros = 8 - groups;
  for (let w = 0; w < 4; w++) {
    out[w] = ((group(2 * w, gap, zeros) << 16) | group(2 * w + 1, gap, zeros)) >>> 0;
  }
  return true;
}

/** Group `k` of the expanded address: before the gap as parsed, in it 0, after it shifted. */
function group(k: number, gap: number, zeros: number): number {
  if (gap < 0 || k < gap) return GROUPS[k];
  if (k < gap + zeros) return 0;
  return GROUPS[k - zeros];
}

/** `a.b.c.d` from `from` to `end` into V4[0]; false if it is not one. */
function parseV4(text: string, from: number, end: number): boolean {
  let value = 0;
  let octets = 0;
  let i = from;
  while (octets < 4) {
    let octet = 0;
    const start = i;
    while (i < end && i - start < 3) {
      const c = text.charCodeAt(i);
      if (c < 0x30 || c > 0x39) break;
      octet = octet * 10 + c - 0x30;
      i++;
    }
    if (i === start || octet > 255) return false;
    value = value * 256 + octet;
    octets++;
    if (octets < 4) {
      if (i >= end || text.charCodeAt(i) !== 0x2e) return false;
      i++;
    }
  }
  V4[0] = value;
  return i === end;
}

function hexDigit(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  const lower = c | 0x20;
  if (lower >= 0x61 && lower <= 0x66) return lower - 0x61 + 10;
  return -1;
}
