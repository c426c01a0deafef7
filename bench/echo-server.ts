/**
 * The target the latency and concurrency figures connect to: a TCP echo server in its own process (so
 * the bench's own event loop never serves both ends of a measured connection). Usage:
 * `node dist/bench/echo-server.js PORT`; prints `echo listening on PORT` once ready.
 */
import net from 'node:net';

const port = Number(process.argv[2]);
let open = 0;
const server = net.createServer({ noDelay: true }, (socket) => {
  open += 1;
  socket.on('error', () => undefined);
  socket.once('close', () => (open -= 1));
  socket.pipe(socket);
});
server.maxConnections = 1_000_000;
server.on('error', (e) => {
  process.stderr.write(`echo: ${e.message}\n`);
  process.exit(1);
});
server.listen({ host: '127.0.0.1', port, backlog: 4096 }, () => process.stdout.write(`echo listening on ${port}\n`));
process.on('SIGUSR2', () => process.stdout.write(`echo open ${open}\n`));
process.on('SIGTERM', () => process.exit(0));
