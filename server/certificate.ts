/**
 * The server's TLS identity. Without `--cert/--key`, a self-signed certificate is generated into
 * `DATA_DIR/tls/` on first start and kept: endpoints pin it with `--ca DATA_DIR/tls/cert.pem`. It is valid
 * for the address the server listens on (every local address when it listens on a wildcard), plus the
 * loopback names, so the endpoints' ordinary host-name verification passes.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { isIpLiteral } from '../protocol/names';

export interface Identity {
  cert: Buffer;
  key: Buffer;
  certPath: string;
}

function altNamesFor(listenHost: string): Array<{ type: 2; value: string } | { type: 7; ip: string }> {
  const names = new Set<string>(['localhost']);
  const ips = new Set<string>(['127.0.0.1', '::1']);
  const wildcard = listenHost === '0.0.0.0' || listenHost === '::' || listenHost === '';
  if (wildcard) {
    names.add(os.hostname());
    for (const list of Object.values(os.networkInterfaces())) for (const a of list ?? []) ips.add(a.address);
  } else if (isIpLiteral(listenHost)) {
    ips.add(listenHost);
  } else {
    names.add(listenHost);
  }
  return [
    ...[...names].map((value) => ({ type: 2 as const, value })),
    ...[...ips].map((ip) => ({ type: 7 as const, ip })),
  ];
}

async function exists(file: string): Promise<boolean> {
  return fs.access(file).then(
    () => true,
    () => false,
  );
}

/** Loads the given certificate, or the one in the data dir, generating it on first start. */
export async function ensureIdentity(
  dataDir: string,
  listenHost: string,
  given?: { cert: string; key: string },
): Promise<Identity> {
  if (given) {
    return { cert: await fs.readFile(given.cert), key: await fs.readFile(given.key), certPath: given.cert };
  }
  const dir = path.join(dataDir, 'tls');
  const certPath = path.join(dir, 'cert.pem');
  const keyPath = path.join(dir, 'key.pem');
  if ((await exists(certPath)) && (await exists(keyPath))) {
    return { cert: await fs.readFile(certPath), key: await fs.readFile(keyPath), certPath };
  }
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  const pems = await selfSigned(listenHost);
  await fs.writeFile(keyPath, pems.private, { mode: 0o600 });
  await fs.writeFile(certPath, pems.cert, { mode: 0o644 });
  return { cert: Buffer.from(pems.cert), key: Buffer.from(pems.private), certPath };
}

/**
 * A fresh self-signed certificate (EC P-256, five years) for `listenHost`: the server's identity on first
 * start, and a proxy's direct listener's at every start (redirectors pin its fingerprint, not a CA).
 */
export async function selfSigned(listenHost: string): Promise<{ cert: string; private: string }> {
  const notBefore = new Date(Date.now() - 60_000);
  const notAfter = new Date(notBefore);
  notAfter.setFullYear(notAfter.getFullYear() + 5);
  // Loaded only on first start: the X.509 stack behind it costs a quarter second to load.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const selfsigned = require('selfsigned') as typeof import('selfsigned');
  const pems = await selfsigned.generate(
    [{ name: 'commonName', value: listenHost === '' ? 'underpass' : listenHost }],
    {
      keyType: 'ec',
      curve: 'P-256',
      algorithm: 'sha256',
      notBeforeDate: notBefore,
      notAfterDate: notAfter,
      extensions: [
        { name: 'basicConstraints', cA: false },
        { name: 'keyUsage', digitalSignature: true, keyEncipherment: true },
        { name: 'extKeyUsage', serverAuth: true },
        { name: 'subjectAltName', altNames: altNamesFor(listenHost) },
      ],
    },
  );
  return { cert: pems.cert, private: pems.private };
}
