// Real certificates for the TLS tests, made by openssl at test time: a test CA, server and
// client certificates issued by it (ECDSA P-256, or RSA), a CRL. Every file lives in a temporary
// directory removed when the test ends.

import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface Issued {
  readonly cert: string;
  readonly key: string;
  /** Hex, as openssl and node:crypto print it. */
  readonly serial: string;
}

function openssl(args: string[], cwd: string): string {
  return execFileSync('openssl', args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] }).toString();
}

let serials = 0x1000;

export class TestCa {
  readonly dir: string;
  readonly name: string;
  readonly cert: string;
  readonly key: string;

  /** A CA of its own in a new temporary directory (`cleanup` removes it). */
  constructor(name = 'fulcrum test CA', dir?: string) {
    this.dir = dir ?? mkdtempSync(join(tmpdir(), 'fulcrum-tls-'));
    this.name = name;
    const slug = name.replace(/\W+/g, '-');
    this.key = join(this.dir, `${slug}.key`);
    this.cert = join(this.dir, `${slug}.pem`);
    openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', this.key], this.dir);
    openssl(
      [
        'req',
        '-x509',
        '-new',
        '-key',
        this.key,
        '-subj',
        `/CN=${name}`,
        '-days',
        '30',
        '-addext',
        'basicConstraints=critical,CA:TRUE',
        '-addext',
        'keyUsage=critical,keyCertSign,cRLSign',
        '-out',
        this.cert,
      ],
      this.dir,
    );
    writeFileSync(join(this.dir, `${slug}.index`), '');
    writeFileSync(join(this.dir, `${slug}.crlnumber`), '01\n');
    writeFileSync(
      join(this.dir, `${slug}.cnf`),
      `[ca]\ndefault_ca = own\n[own]\ndatabase = ${join(this.dir, `${slug}.index`)}\ncrlnumber = ${join(this.dir, `${slug}.crlnumber`)}\ndefault_md = sha256\ndefault_crl_days = 30\n`,
    );
  }

  /**
   * A certificate issued by this CA: for a server (`names` become its subjectAltName DNS names)
   * or, with `client`, a client certificate with subject CN `cn`.
   */
  issue(
    cn: string,
    options: { names?: string[]; rsa?: boolean; client?: boolean; file?: string } = {},
  ): Issued {
    const base = join(this.dir, options.file ?? `${cn.replace(/\W+/g, '-')}-${serials}`);
    const key = `${base}.key`;
    const cert = `${base}.pem`;
    if (options.rsa === true) {
      openssl(
        ['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', key],
        this.dir,
      );
    } else {
      openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', key], this.dir);
    }
    const ext = `${base}.ext`;
    const names = options.names ?? [];
    writeFileSync(
      ext,
      [
        'basicConstraints=CA:FALSE',
        `extendedKeyUsage=${options.client === true ? 'clientAuth' : 'serverAuth'}`,
        names.length > 0 ? `subjectAltName=${names.map((n) => `DNS:${n}`).join(',')}` : '',
      ]
        .filter(Boolean)
        .join('\n'),
    );
    openssl(['req', '-new', '-key', key, '-subj', `/CN=${cn}`, '-out', `${base}.csr`], this.dir);
    const serial = (serials++).toString(16).toUpperCase();
    openssl(
      [
        'x509',
        '-req',
        '-in',
        `${base}.csr`,
        '-CA',
        this.cert,
        '-CAkey',
        this.key,
        '-set_serial',
        `0x${serial}`,
        '-days',
        '30',
        '-extfile',
        ext,
        '-out',
        cert,
      ],
      this.dir,
    );
    return { cert, key, serial: serial.padStart(4, '0') };
  }

  /** Revokes `issued` and writes this CA's CRL; returns its path. */
  revoke(issued: Issued): string {
    const slug = this.name.replace(/\W+/g, '-');
    const cnf = join(this.dir, `${slug}.cnf`);
    const common = ['-config', cnf, '-keyfile', this.key, '-cert', this.cert];
    openssl(['ca', ...common, '-revoke', issued.cert], this.dir);
    const crl = join(this.dir, `${slug}.crl.pem`);
    openssl(['ca', ...common, '-gencrl', '-out', crl], this.dir);
    return crl;
  }

  /** The CA certificate's PEM, as a client trusts it. */
  certPem(): string {
    return readFileSync(this.cert, 'utf8');
  }

  /** A file of this CA's (a certificate or key it issued), as text. */
  read(path: string): string {
    return readFileSync(path, 'utf8');
  }

  cleanup(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}
