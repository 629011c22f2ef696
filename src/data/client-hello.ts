// The server name a TLS client asks for, read from its ClientHello without terminating TLS
// (HAProxy's req.ssl_sni, nginx's ssl_preread, Envoy's tls_inspector). The hello may arrive over
// several TCP segments and TLS records; we only look, and every byte read goes on to the backend
// unchanged. Invariants: the parser never throws and never reads past `length`; it answers
// "incomplete" only while the bytes so far can still become a ClientHello no longer than
// MAX_HELLO_BYTES, and says how many bytes it needs before looking again, so a client that
// dribbles bytes costs one parse per record, not one per byte.

/** The most bytes read for a ClientHello, record headers included: a 16 KiB handshake message
 *  (RFC 8446's record limit) split over a few records. Anything longer is not looked into. */
export const MAX_HELLO_BYTES = 16384 + 4 + 5 * 16;
/** Longest ClientHello handshake body we look into. */
const MAX_HANDSHAKE = 16384;
const RECORD_HEADER = 5;
const CONTENT_HANDSHAKE = 0x16;
const HANDSHAKE_CLIENT_HELLO = 1;
const EXTENSION_SERVER_NAME = 0;
const NAME_TYPE_HOST = 0;
/** Longest DNS name (RFC 1035), without the trailing dot. */
const MAX_NAME = 253;

export type HelloParse =
  /** More bytes may make a ClientHello: look again once `need` bytes have arrived. */
  | { readonly status: 'incomplete'; readonly need: number }
  /** Done looking: the host name the hello asks for, lowercased; null when it names none, or
   *  the bytes are no ClientHello (plain text, SSLv2, garbage, too long). */
  | { readonly status: 'done'; readonly serverName: string | null };

const NONE: HelloParse = { status: 'done', serverName: null };

function incomplete(need: number): HelloParse {
  return need > MAX_HELLO_BYTES ? NONE : { status: 'incomplete', need };
}

/** Reads the ClientHello at the start of `data[0, length)`. */
export function parseClientHello(data: Buffer, length: number = data.length): HelloParse {
  if (length === 0) return incomplete(1);
  if (data[0] !== CONTENT_HANDSHAKE) return NONE;
  // Gather the handshake message from as many records as it takes.
  const fragments: Buffer[] = [];
  let gathered = 0;
  let wanted = -1; // the whole handshake message, header included, once its header is in
  let at = 0;
  while (wanted < 0 || gathered < wanted) {
    if (length < at + RECORD_HEADER) {
      // A record header cut short: what there is of it must still look like one.
      if (at + 1 < length && data[at + 1] !== 3) return NONE;
      if (at < length && data[at] !== CONTENT_HANDSHAKE) return NONE;
      return incomplete(at + RECORD_HEADER);
    }
    if (data[at] !== CONTENT_HANDSHAKE || data[at + 1] !== 3) return NONE;
    const recordLength = data.readUInt16BE(at + 3);
    if (recordLength === 0 || recordLength > 16384) return NONE;
    const end = at + RECORD_HEADER + recordLength;
    if (end > MAX_HELLO_BYTES) return NONE;
    if (length < end) {
      // The first record's start shows what the message is: no need to wait for the rest.
      if (at === 0 && length >= RECORD_HEADER + 4 && !helloHead(data, RECORD_HEADER)) return NONE;
      return incomplete(end);
    }
    fragments.push(data.subarray(at + RECORD_HEADER, end));
    gathered += recordLength;
    at = end;
    if (wanted < 0 && gathered >= 4) {
      const head = fragments.length === 1 ? fragments[0] : Buffer.concat(fragments);
      if (!helloHead(head, 0)) return NONE;
      wanted = 4 + ((head[1] << 16) | (head[2] << 8) | head[3]);
    }
  }
  const message = fragments.length === 1 ? fragments[0] : Buffer.concat(fragments);
  return { status: 'done', serverName: serverName(message.subarray(4, wanted)) };
}

/** Whether the handshake header at `at` is a ClientHello's, of a length we look into. */
function helloHead(data: Buffer, at: number): boolean {
  const body = (data[at + 1] << 16) | (data[at + 2] << 8) | data[at + 3];
  return data[at] === HANDSHAKE_CLIENT_HELLO && body <= MAX_HANDSHAKE;
}

/** The host_name of the server_name extension in a ClientHello body; null if none or malformed. */
function serverName(hello: Buffer): string | null {
  // legacy_version (2), random (32), session id (1 + up to 32)
  let at = 34;
  if (hello.length < at + 1) return null;
  const sessionId = hello[at];
  if (sessionId > 32) return null;
  at += 1 + sessionId;
  if (hello.length < at + 2) return null;
  const suites = hello.readUInt16BE(at);
  if (suites < 2 || suites % 2 !== 0) return null;
  at += 2 + suites;
  if (hello.length < at + 1) return null;
  const compressions = hello[at];
  if (compressions < 1) return null;
  at += 1 + compressions;
  if (hello.length <= at) return null; // a hello without extensions names no server
  if (hello.length < at + 2) return null;
  const extensions = hello.readUInt16BE(at);
  at += 2;
  if (at + extensions !== hello.length) return null;
  while (at + 4 <= hello.length) {
    const type = hello.readUInt16BE(at);
    const size = hello.readUInt16BE(at + 2);
    at += 4;
    if (at + size > hello.length) return null;
    if (type === EXTENSION_SERVER_NAME) return hostName(hello.subarray(at, at + size));
    at += size;
  }
  return null;
}

/** The host name in a server_name extension's list (RFC 6066 section 3). */
function hostName(extension: Buffer): string | null {
  if (extension.length < 2 || extension.readUInt16BE(0) !== extension.length - 2) return null;
  let at = 2;
  while (at + 3 <= extension.length) {
    const type = extension[at];
    const size = extension.readUInt16BE(at + 1);
    at += 3;
    if (at + size > extension.length) return null;
    if (type === NAME_TYPE_HOST) return validName(extension, at, at + size);
    at += size;
  }
  return null;
}

/** The name in `bytes[start, end)` lowercased, if it is a DNS name (letters, digits, `-`, `_`,
 *  dots between labels; one trailing dot dropped); null otherwise. */
function validName(bytes: Buffer, start: number, end: number): string | null {
  if (end > start && bytes[end - 1] === 0x2e) end--;
  if (end === start || end - start > MAX_NAME) return null;
  let label = 0;
  for (let i = start; i < end; i++) {
    const b = bytes[i];
    if (b === 0x2e) {
      if (label === 0) return null;
      label = 0;
      continue;
    }
    const letter = (b | 0x20) >= 0x61 && (b | 0x20) <= 0x7a;
    const ok = letter || (b >= 0x30 && b <= 0x39) || b === 0x2d || b === 0x5f;
    if (!ok || ++label > 63) return null;
  }
  if (label === 0) return null;
  return bytes.toString('latin1', start, end).toLowerCase();
}
