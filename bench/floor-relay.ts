/**
 * One relay of the floor chain (floor.ts): every connection accepted on --listen is joined to a new
 * connection to --to by runtime/splice.ts, the relay Underpass itself uses. `--tls-in CERT KEY` terminates
 * TLS with the server's cipher order; `--tls-out CA` dials TLS. Nothing else: no HTTP/2, no tunnel
 * requests, no resumption — what three Node processes cost when they do nothing but carry bytes.
 *
 *   node dist/bench/floor-relay.js --listen PORT --to PORT [--tls-in CERT KEY] [--tls-out CA]
 *
 * Prints `relay listening on PORT` once ready.
 */
import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { SERVER_CIPHERS } from '../protocol/wire';
import { splice } from '../runtime/splice';

function arg(name: string, count = 1): string[] | null {
  const at = process.argv.indexOf(name);
  return at < 0 ? null : process.argv.slice(at + 1, at + 1 + count);
}

const listen = Number(arg('--listen')?.[0]);
const to = Number(arg('--to')?.[0]);
const tlsIn = arg('--tls-in', 2);
const tlsOut = arg('--tls-out');
const ca = tlsOut ? fs.readFileSync(tlsOut[0]!) : null;

function onward(): net.Socket {
  // Half-open both ways, as the redirector's listeners and the proxy's connections are: an end travels on
  // alone, and the other direction keeps flowing.
  if (ca === null) return net.connect({ host: '127.0.0.1', port: to, noDelay: true, allowHalfOpen: true });
  // As runtime/transport.ts dials: TCP with Nagle off, then TLS checked against the certificate, which
  // names the bench server's listen address, 127.0.0.1.
  return tls.connect({
    socket: net.connect({ host: '127.0.0.1', port: to, noDelay: true, allowHalfOpen: true }),
    host: '127.0.0.1',
    ca,
  });
}

function accept(socket: net.Socket): void {
  socket.setNoDelay(true);
  splice(socket, onward());
}

const server = tlsIn
  ? tls.createServer(
      {
        cert: fs.readFileSync(tlsIn[0]!),
        key: fs.readFileSync(tlsIn[1]!),
        ciphers: `${SERVER_CIPHERS}:${tls.DEFAULT_CIPHERS}`,
        honorCipherOrder: true,
        allowHalfOpen: true,
      },
      accept,
    )
  : net.createServer({ allowHalfOpen: true }, accept);
server.maxConnections = 1_000_000;
server.on('error', (e) => {
  process.stderr.write(`floor relay: ${e.message}\n`);
  process.exit(1);
});
server.listen({ host: '127.0.0.1', port: listen, backlog: 4096 }, () =>
  process.stdout.write(`relay listening on ${listen}\n`),
);
process.on('SIGTERM', () => process.exit(0));
