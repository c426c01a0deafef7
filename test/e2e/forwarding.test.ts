/**
 * Forwarding mode through the real programs: the tunnel server dials a plain destination for a
 * redirector — by a name only the server's side resolves (the server runs in a mount namespace of its
 * own, with its own /etc/hosts), and by address — reached with curl through the redirector's SOCKS5
 * and HTTP proxy listeners. A destination off `--forward-allow`, and the server's own loopback reached
 * by a name, are refused in one line for the client and one log line for the operator.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Chain, freePort, Program, PYTHON, run, tmpDir, UNDERPASS, which } from '../harness';

describe('forwarding mode', function () {
  let dir: string;
  let chain: Chain;
  let server: Program;
  let web: Program;
  let webPort: number;
  let socksPort: number;
  let httpPort: number;
  const programs: Program[] = [];

  before(async function () {
    if (process.getuid?.() !== 0 || which('unshare') === null || which('curl') === null) this.skip();
    dir = tmpDir('forwarding');
    webPort = await freePort();
    socksPort = await freePort();
    httpPort = await freePort();
    fs.writeFileSync(path.join(dir, 'page'), 'reached by forwarding\n');
    web = new Program('web', PYTHON, ['-m', 'http.server', '--bind', '127.0.0.1', String(webPort)], { cwd: dir });
    // Names only the server's side knows: its own /etc/hosts, in its own mount namespace.
    const hosts = path.join(dir, 'hosts');
    fs.writeFileSync(hosts, '127.0.0.1 localhost\n127.0.0.1 intranet.corp.example\n127.0.0.1 self.loop.example\n');
    chain = new Chain([]);
    chain.serverPort = await freePort();
    server = new Program('server', 'unshare', [
      '-m',
      'sh',
      '-c',
      'mount --bind "$0" /etc/hosts && exec "$@"',
      hosts,
      process.execPath,
      UNDERPASS,
      'server',
      '--listen',
      `127.0.0.1:${chain.serverPort}`,
      '--data-dir',
      chain.dataDir,
      '--forward-allow',
      `.corp.example:${webPort}`,
      // The web server is on the server's loopback: only an address rule lets the server dial there.
      '--forward-allow',
      `127.0.0.1/32:${webPort}`,
      '--forward-allow',
      '.loop.example',
    ]);
    await server.waitFor(/listening on/);
    chain.token = fs.readFileSync(path.join(chain.dataDir, 'token'), 'utf8').trim();
    const r = new Program('redirector', process.execPath, [
      UNDERPASS,
      'redirector',
      ...chain.endpointArgs(),
      '--ipc',
      chain.ipcPath,
      '--pseudo-net',
      chain.pseudoNet,
      '--dns',
      'off',
      '--socks',
      `127.0.0.1:${socksPort}`,
      '--http-proxy',
      `127.0.0.1:${httpPort}`,
      '--forward',
      '.corp.example',
      '--forward',
      '.loop.example',
      '--forward',
      '127.0.0.0/8',
    ]);
    programs.push(r);
    await r.waitFor(/serving hooks on/);
  });

  after(async function () {
    await Promise.all([...programs, web, server].filter(Boolean).map((p) => p.stop()));
    if (dir !== undefined) fs.rmSync(dir, { recursive: true, force: true });
    if (chain !== undefined) fs.rmSync(chain.dir, { recursive: true, force: true });
  });

  function curl(...args: string[]): ReturnType<typeof run> {
    return run('curl', ['-sS', '--max-time', '20', ...args], { timeoutMs: 30_000 });
  }

  it('reaches a destination by a name only the server resolves, and by address', async function () {
    const local = await run('getent', ['hosts', 'intranet.corp.example']);
    assert.notEqual(local.code, 0, 'the client side cannot resolve the name');
    const byName = await curl(
      '--socks5-hostname',
      `127.0.0.1:${socksPort}`,
      `http://intranet.corp.example:${webPort}/page`,
    );
    assert.equal(byName.code, 0, byName.stderr);
    assert.equal(byName.stdout, 'reached by forwarding\n');
    const byAddress = await curl('-p', '-x', `http://127.0.0.1:${httpPort}`, `http://127.0.0.1:${webPort}/page`);
    assert.equal(byAddress.code, 0, byAddress.stderr);
    assert.equal(byAddress.stdout, 'reached by forwarding\n');
    await server.waitFor(/forwarding .*intranet\.corp\.example/);
  });

  it('refuses a destination off --forward-allow, and the server loopback by a name, one line each', async function () {
    const offList = await curl(
      '--socks5-hostname',
      `127.0.0.1:${socksPort}`,
      `http://intranet.corp.example:${webPort + 1}/`,
    );
    assert.notEqual(offList.code, 0);
    assert.equal(offList.stderr.trim().split('\n').length, 1, offList.stderr);
    await server.waitFor(
      new RegExp(`refused a forward to intranet\\.corp\\.example:${webPort + 1}: .*--forward-allow`),
    );

    // Its own listening port, by a name its operator allowed: the name is allowed, the address is not listed.
    const self = await curl(
      '--socks5-hostname',
      `127.0.0.1:${socksPort}`,
      `http://self.loop.example:${chain.serverPort}/`,
    );
    assert.notEqual(self.code, 0);
    assert.equal(self.stderr.trim().split('\n').length, 1, self.stderr);
    await server.waitFor(/refused a forward to self\.loop\.example:\d+: .*the server's own 127\.0\.0\.1/);
    const audit = fs.readFileSync(path.join(chain.dataDir, 'audit.log'), 'utf8');
    assert.match(audit, /"event":"forward.refused".*self\.loop\.example/);
  });
});
