import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import { listenOnPseudo, movedListenerWarning } from '../../redirector/pseudo-listener';

/** Resolves once `server` listens on `host:port` (port 0: the kernel's choice), with that port. */
function listening(server: net.Server, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port }, () => resolve((server.address() as net.AddressInfo).port));
  });
}

function close(server: net.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

describe("redirector/pseudo-listener: a listener's port on its pseudo address", function () {
  const address = '127.66.0.1';
  const servers: net.Server[] = [];
  const server = (): net.Server => {
    const s = net.createServer();
    servers.push(s);
    return s;
  };

  afterEach(async function () {
    await Promise.all(servers.splice(0).map((s) => (s.listening ? close(s) : Promise.resolve())));
  });

  it('takes the published port when it is free', async function () {
    const port = await listening(server(), '127.0.0.1', 0);
    await close(servers.pop()!);
    assert.deepEqual(await listenOnPseudo(server(), address, port), { listenPort: port, moved: null });
  });

  it('takes another port of the same address when a wildcard listener holds the published one, and says who holds it', async function () {
    const holder = server();
    const port = await listening(holder, '0.0.0.0', 0);
    const ours = server();
    const binding = await listenOnPseudo(ours, address, port);
    assert.equal(binding.moved, 'in-use');
    assert.notEqual(binding.listenPort, port);
    assert.deepEqual(ours.address(), { address, family: 'IPv4', port: binding.listenPort });
    const comm = fs.readFileSync('/proc/self/comm', 'utf8').trim();
    const line = await movedListenerWarning('pg.default.underpass.internal', address, port, binding);
    assert.equal(
      line,
      `port ${port} is held by ${comm} (pid ${process.pid}, uid ${process.getuid?.() ?? 0}) on every local address: ` +
        `hooked apps reach pg.default.underpass.internal:${port} through ${address}:${binding.listenPort}; a program ` +
        `without the hook that connects to ${address}:${port} reaches that program instead (the DNS responder ` +
        `answers SERVFAIL for it) — make it listen on 127.0.0.1 only (or stop it) and restart the redirector, or ` +
        `give those programs 'underpass forward LOCAL_PORT pg.default.underpass.internal:${port}'`,
    );
    assert.doesNotMatch(line, /\n/);
  });

  it('passes on any other failure', async function () {
    await assert.rejects(listenOnPseudo(server(), address, 70_000), /ERR_SOCKET_BAD_PORT|port/);
  });
});
