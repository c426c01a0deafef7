import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { listenOnPseudo, movedListenerWarning } from '../../redirector/pseudo-listener';
import { run } from '../harness';

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

  it('takes another port for a privileged one when it is not root, and says how to allow it', async function () {
    const start = Number(fs.readFileSync('/proc/sys/net/ipv4/ip_unprivileged_port_start', 'utf8'));
    // Where every port is open to everyone (some containers), no listener ever moves for this reason.
    if (start <= 1) this.skip();
    const port = Math.min(80, start - 1);
    // As root the port would simply be taken, so the check runs as nobody, in a Node of its own.
    const module = path.join(__dirname, '..', '..', 'redirector', 'pseudo-listener.js');
    const script = `const net = require('net'); const m = require(${JSON.stringify(module)});
(async () => { const s = net.createServer(); const b = await m.listenOnPseudo(s, '${address}', ${port});
console.log(JSON.stringify(b)); console.log(await m.movedListenerWarning('web.default.underpass.internal', '${address}', ${port}, b)); s.close(); })();`;
    const asRoot = process.getuid?.() === 0;
    const r = asRoot
      ? await run('runuser', ['-u', 'nobody', '--', process.execPath, '-e', script])
      : await run(process.execPath, ['-e', script]);
    assert.equal(r.stderr, '');
    const [json, line] = r.stdout.trim().split('\n');
    const binding = JSON.parse(json!) as { listenPort: number; moved: string };
    assert.equal(binding.moved, 'privileged');
    assert.notEqual(binding.listenPort, port);
    assert.equal(
      line,
      `port ${port} is privileged and the redirector is not root: hooked apps reach web.default.underpass.internal:${port} ` +
        `through ${address}:${binding.listenPort}; programs without the hook cannot reach ${address}:${port} — run ` +
        `'sysctl net.ipv4.ip_unprivileged_port_start=${port}' (or give the redirector CAP_NET_BIND_SERVICE) and restart ` +
        `it, or give them 'underpass forward LOCAL_PORT web.default.underpass.internal:${port}'`,
    );
  });

  it('passes on any other failure', async function () {
    await assert.rejects(listenOnPseudo(server(), address, 70_000), /ERR_SOCKET_BAD_PORT|port/);
  });
});
