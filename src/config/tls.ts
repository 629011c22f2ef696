// Reading what a terminating frontend's TLS settings name: certificates, keys, the CA, the CRL
// and the ticket keys. Done once per load (start, `check`, every reload), after the config is
// built and before anything uses it, so a reload picks up renewed certificates and a file that
// does not load fails the load with one line naming the file and why (the running config
// stays). Invariant: a config that comes out of here has every PEM read and proven to load into
// a secure context, so a worker building its contexts from it cannot fail on a file.

import { createPrivateKey, X509Certificate } from 'node:crypto';
import { resolve } from 'node:path';
import { createSecureContext } from 'node:tls';
import { unreadCertificate } from './build.ts';
import { ConfigError, parseServerName } from './parse.ts';
import { readTextFile } from './read.ts';
import type {
  BackendTlsConfig,
  Config,
  FrontendConfig,
  TlsCertificate,
  TlsConfig,
} from './types.ts';

/** The largest certificate, key, CA or CRL file read (a CA bundle is a few hundred KB). */
const MAX_PEM_BYTES = 4 * 1024 * 1024;
const READ_TIMEOUT_MS = 5000;

/** The size of a set of session ticket keys, as OpenSSL takes it: name, HMAC and AES keys. */
export const TICKET_KEY_BYTES = 48;

function read(file: string, what: string): Promise<string> {
  return readTextFile(file, what, MAX_PEM_BYTES, READ_TIMEOUT_MS);
}

/** OpenSSL's words for why a context refused a file, without the library's prefix. */
function reason(err: unknown): string {
  const message = (err as Error).message.split('\n')[0];
  return message.replace(/^error:[0-9A-F]+:[^:]*:[^:]*:/, '').trim() || 'cannot be loaded';
}

/** A CA file's PEM, proven to hold a certificate a context takes. */
async function readCa(file: string): Promise<string> {
  const pem = await read(file, 'CA file');
  try {
    new X509Certificate(pem);
    createSecureContext({ ca: pem });
  } catch (err) {
    throw new ConfigError(file, `not a PEM CA certificate (${reason(err)})`);
  }
  return pem;
}

/** The names a certificate serves: its subjectAltName DNS names, else its CN. */
function ownNames(x509: X509Certificate): string[] {
  const names: string[] = [];
  for (const part of (x509.subjectAltName ?? '').split(', ')) {
    if (!part.startsWith('DNS:')) continue;
    try {
      names.push(parseServerName(part.slice(4), ''));
    } catch {
      // A SAN entry that is no host name (an IP address is IP:, but odd entries exist) serves
      // no server name.
    }
  }
  if (names.length > 0) return names;
  const cn = /^CN=(.*)$/m.exec(x509.subject)?.[1];
  if (cn === undefined) return [];
  try {
    return [parseServerName(cn, '')];
  } catch {
    return [];
  }
}

async function loadCertificate(
  given: TlsCertificate,
  warnings: string[],
  frontend: string,
  base: string,
): Promise<TlsCertificate> {
  const c = {
    ...given,
    certFile: resolve(base, given.certFile),
    keyFile: resolve(base, given.keyFile),
  };
  const [cert, key] = await Promise.all([
    read(c.certFile, 'certificate'),
    read(c.keyFile, 'private key'),
  ]);
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(cert);
  } catch (err) {
    throw new ConfigError(c.certFile, `not a PEM certificate (${reason(err)})`);
  }
  let keyType: string;
  try {
    const privateKey = createPrivateKey(key);
    keyType = privateKey.asymmetricKeyType ?? 'unknown';
    if (!x509.checkPrivateKey(privateKey)) {
      throw new ConfigError(c.keyFile, `is not the private key of ${c.certFile}`);
    }
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError(c.keyFile, `not a PEM private key (${reason(err)})`);
  }
  try {
    createSecureContext({ cert, key });
  } catch (err) {
    throw new ConfigError(c.certFile, `cannot be used with ${c.keyFile} (${reason(err)})`);
  }
  const notAfter = Date.parse(x509.validTo);
  if (notAfter < Date.now()) {
    warnings.push(`${c.certFile}: frontend ${frontend}'s certificate expired on ${x509.validTo}`);
  }
  const serverNames = c.names.length > 0 ? c.names : ownNames(x509);
  return {
    ...c,
    cert,
    key,
    serverNames,
    serial: x509.serialNumber,
    subject: x509.subject.replaceAll('\n', ', '),
    notAfter,
    keyType,
  };
}

async function loadTlsOf(
  frontend: FrontendConfig,
  warnings: string[],
  base: string,
): Promise<TlsConfig> {
  const at = (file: string | null) => (file === null ? null : resolve(base, file));
  const tls = {
    ...frontend.tls,
    ca: at(frontend.tls.ca),
    crl: at(frontend.tls.crl),
    ticketKeys: at(frontend.tls.ticketKeys),
  };
  const certificates = await Promise.all(
    tls.certificates.map((c) => loadCertificate(c, warnings, frontend.name, base)),
  );
  const caPem = tls.ca === null ? null : await readCa(tls.ca);
  let crlPem: string | null = null;
  if (tls.crl !== null) {
    crlPem = await read(tls.crl, 'CRL');
    try {
      createSecureContext({ crl: crlPem });
    } catch (err) {
      throw new ConfigError(tls.crl, `not a PEM CRL (${reason(err)})`);
    }
  }
  let ticketKeyBytes: string | null = null;
  if (tls.ticketKeys !== null) {
    const text = (await read(tls.ticketKeys, 'ticket key file')).trim();
    const bytes = Buffer.from(text, 'base64');
    if (!/^[A-Za-z0-9+/=\s]+$/.test(text) || bytes.length !== TICKET_KEY_BYTES) {
      throw new ConfigError(
        tls.ticketKeys,
        `must hold ${TICKET_KEY_BYTES} bytes in base64 (openssl rand -base64 ${TICKET_KEY_BYTES}); it holds ${/^[A-Za-z0-9+/=\s]+$/.test(text) ? `${bytes.length} bytes` : 'something else'}`,
      );
    }
    ticketKeyBytes = bytes.toString('base64');
  }
  return { ...tls, certificates, caPem, crlPem, ticketKeyBytes };
}

/** A pool's backend TLS files: the CA backends are checked against, a client certificate. */
async function loadBackendTls(tls: BackendTlsConfig, base: string): Promise<BackendTlsConfig> {
  const at = (file: string | null) => (file === null ? null : resolve(base, file));
  const ca = at(tls.ca);
  const cert = at(tls.cert);
  const key = at(tls.key);
  const caPem = ca === null ? null : await readCa(ca);
  let certPem: string | null = null;
  let keyPem: string | null = null;
  if (cert !== null && key !== null) {
    const loaded = await loadCertificate(unreadCertificate(cert, key, []), [], 'backend', base);
    certPem = loaded.cert;
    keyPem = loaded.key;
  }
  return { ...tls, ca, cert, key, caPem, certPem, keyPem };
}

/** The config with every TLS file its frontends name read and checked (see the top); a
 *  relative path is from `base` (the config file's directory, or the working directory). */
export async function loadTls(config: Config, base: string): Promise<Config> {
  const warnings = [...config.warnings];
  const frontends = await Promise.all(
    config.frontends.map(async (f) => {
      const tls = f.tls.certificates.length === 0 ? f.tls : await loadTlsOf(f, warnings, base);
      const b = f.backendTls;
      const backendTls = b.ca === null && b.cert === null ? b : await loadBackendTls(b, base);
      return { ...f, tls, backendTls };
    }),
  );
  return { ...config, frontends, warnings };
}
