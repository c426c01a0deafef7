/**
 * Forwarding mode through the real programs, on hosts of the test's own (issue 15, "Done when"): a
 * client host (a network namespace whose firewall lets it send to the tunnel server's port only, with no
 * route anywhere else) runs the redirector; a web host (another namespace) is reachable from the
 * server's host alone. The tunnel server, on the host in between, runs in a mount namespace of its own
 * with its own /etc/hosts, so the web host's name resolves on its side only.
 *
 * From the client host, an unmodified curl reaches the web server through the tunnel server — hooked
 * (`hook-run`: the name resolves to a pseudo address, the address is caught in connect()) and through the
 * redirector's SOCKS5 and HTTP proxy listeners — by that name and by address, while a direct curl cannot.
 * A destination off `--forward-allow`, and the server's own loopback reached by a name, are refused in
 * one line for the user and one log line for the operator.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Chain, freePort, inNetns, Program, PYTHON, run, tmpDir, UNDERPASS, which } from '../harness';
import { ClientHost } from '../netns';

describe('forwarding mode, between hosts', function () {
  let dir: string;
  let client: ClientHost;
  let webHost: ClientHost;
  let chain: Chain;
  let web: Program;
  let webPort: number;
  let socksPort: number;
  let httpPort: number;

  before(async function () {
    if (process.getuid?.() !== 0 || which('unshare') === null || which('curl') === null || which('ip') === null)
      this.skip();
    dir = tmpDir('forwarding');
    webPort = await freePort();
    socksPort = await freePort();
    httpPort = await freePort();
    const serverPort = await freePort();
    client = ClientHost.create([serverPort]);
    webHost = ClientHost.create([]);
    fs.mkdirSync(path.join(dir, 'www'));
    fs.writeFileSync(path.join(dir, 'www', 'page'), 'reached by forwarding\n');
    const [python, webArgs] = inNetns(webHost.name, PYTHON, [
      '-u',
      '-m',
      'http.server',
      String(webPort),
      '--bind',
      webHost.inner,
      '--directory',
      path.join(dir, 'www'),
    ]);
    web = new Program('web', python, webArgs);
    await web.waitFor(/Serving HTTP/);

    // Names only the server's side knows: its own /etc/hosts, in its own mount namespace.
    const hosts = path.join(dir, 'hosts');
    fs.writeFileSync(
      hosts,
      `127.0.0.1 localhost\n${webHost.inner} intranet.corp.example\n127.0.0.1 self.loop.example\n`,
    );
    chain = new Chain([], {
      serverHost: client.outer,
      clientNetns: client.name,
      redirectorArgs: [
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
        `${webHost.inner.replace(/\.\d+$/, '.0')}/24`,
      ],
    });
    chain.serverPort = serverPort;
    chain.server = new Program('server', 'unshare', [
      '-m',
      'sh',
      '-c',
      'mount --bind "$0" /etc/hosts && exec "$@"',
      hosts,
      process.execPath,
      UNDERPASS,
      'server',
      '--listen',
      `${client.outer}:${serverPort}`,
      '--data-dir',
      chain.dataDir,
      '--forward-allow',
      `.corp.example:${webPort}`,
      '--forward-allow',
      `${webHost.inner}/32:${webPort}`,
      '--forward-allow',
      '.loop.example',
    ]);
    await chain.server.waitFor(/listening on/);
    chain.token = fs.readFileSync(path.join(chain.dataDir, 'token'), 'utf8').trim();
    await chain.startRedirector();
  });

  after(async function () {
    await Promise.all([chain?.stop(), web?.stop()]);
    client?.destroy();
    webHost?.destroy();
    if (dir !== undefined) fs.rmSync(dir, { recursive: true, force: true });
  });

  /** curl on the client host, unhooked. */
  function curl(...args: string[]): ReturnType<typeof run> {
    const [command, curlArgs] = inNetns(client.name, 'curl', ['-sS', '--max-time', '20', ...args]);
    return run(command, curlArgs, { timeoutMs: 30_000 });
  }

  /** curl on the client host under hook-run. */
  function hookedCurl(url: string): ReturnType<typeof run> {
    return chain.hookRun(['curl', '-sS', '--max-time', '20', url], { timeoutMs: 60_000 });
  }

  /**
   * What a user sees of a refused hooked curl: the lines on its stderr, curl's own error silenced (`-s`
   * without `-S`), since curl writes its message a character at a time, which a line of hook-run's on the
   * same stderr would split.
   */
  async function refusedHookedCurl(url: string): Promise<string[]> {
    const r = await chain.hookRun(['curl', '-s', '--max-time', '20', url], { timeoutMs: 60_000 });
    assert.notEqual(r.code, 0, r.stdout);
    return r.stderr.trim().split('\n');
  }

  it('the client host reaches neither the web host nor its name directly', async function () {
    const direct = await curl('--max-time', '3', `http://${webHost.inner}:${webPort}/page`);
    assert.notEqual(direct.code, 0, direct.stdout);
    const [getent, getentArgs] = inNetns(client.name, 'getent', ['hosts', 'intranet.corp.example']);
    assert.notEqual((await run(getent, getentArgs)).code, 0, 'the client side cannot resolve the name');
  });

  it('a hooked curl reaches the web host by a name only the server resolves, and by address', async function () {
    const byName = await hookedCurl(`http://intranet.corp.example:${webPort}/page`);
    assert.equal(byName.code, 0, byName.stderr);
    assert.equal(byName.stdout, 'reached by forwarding\n');
    await chain.server.waitFor(/forwarding .*intranet\.corp\.example/);
    const byAddress = await hookedCurl(`http://${webHost.inner}:${webPort}/page`);
    assert.equal(byAddress.code, 0, byAddress.stderr);
    assert.equal(byAddress.stdout, 'reached by forwarding\n');
    await chain.server.waitFor(new RegExp(`forwarding .*${webHost.inner.replace(/\./g, '\\.')}:${webPort}`));
  });

  it('a blocking connect by address sees the address it asked for as its peer', async function () {
    // Python's create_connection blocks; the hook sends it to a pseudo address standing in for the web host.
    const script = `import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
print(s.getpeername()[0])
s.sendall(b'GET /page HTTP/1.0\\r\\n\\r\\n')
print(s.makefile('rb').read().split(b'\\r\\n\\r\\n', 1)[1].decode(), end='')`;
    const r = await chain.hookRun([PYTHON, '-c', script, webHost.inner, String(webPort)], { timeoutMs: 60_000 });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `${webHost.inner}\nreached by forwarding\n`);
  });

  it('curl through the SOCKS5 and HTTP proxy listeners reaches it by name and by address', async function () {
    const byName = await curl(
      '--socks5-hostname',
      `127.0.0.1:${socksPort}`,
      `http://intranet.corp.example:${webPort}/page`,
    );
    assert.equal(byName.code, 0, byName.stderr);
    assert.equal(byName.stdout, 'reached by forwarding\n');
    const byAddress = await curl('-p', '-x', `http://127.0.0.1:${httpPort}`, `http://${webHost.inner}:${webPort}/page`);
    assert.equal(byAddress.code, 0, byAddress.stderr);
    assert.equal(byAddress.stdout, 'reached by forwarding\n');
  });

  it('refuses a destination off --forward-allow in one line, by name and by address', async function () {
    const offByName = await refusedHookedCurl(`http://intranet.corp.example:${webPort + 1}/`);
    assert.equal(offByName.length, 1, offByName.join('\n'));
    assert.match(offByName[0]!, new RegExp(`intranet\\.corp\\.example:${webPort + 1} is not .*--forward-allow`));
    await chain.server.waitFor(
      new RegExp(`refused a forward to intranet\\.corp\\.example:${webPort + 1}: .*--forward-allow`),
    );

    const offByAddress = await refusedHookedCurl(`http://${webHost.inner}:${webPort + 1}/`);
    assert.equal(offByAddress.length, 1, offByAddress.join('\n'));
    assert.match(offByAddress[0]!, /is not a forwarding destination this server allows .*--forward-allow/);

    const socks = await curl(
      '--socks5-hostname',
      `127.0.0.1:${socksPort}`,
      `http://intranet.corp.example:${webPort + 1}/`,
    );
    assert.notEqual(socks.code, 0);
    assert.equal(socks.stderr.trim().split('\n').length, 1, socks.stderr);
  });

  it("refuses the server's own loopback reached by a name, in one line", async function () {
    // Its own listening port, by a name its operator allowed: the name is allowed, the address is not listed.
    const self = await refusedHookedCurl(`http://self.loop.example:${chain.serverPort}/`);
    assert.equal(self.length, 1, self.join('\n'));
    assert.match(self[0]!, /the server's own 127\.0\.0\.1/);
    await chain.server.waitFor(/refused a forward to self\.loop\.example:\d+: .*the server's own 127\.0\.0\.1/);
    const audit = fs.readFileSync(path.join(chain.dataDir, 'audit.log'), 'utf8');
    assert.match(audit, /"event":"forward.refused".*self\.loop\.example/);

    const socks = await curl(
      '--socks5-hostname',
      `127.0.0.1:${socksPort}`,
      `http://self.loop.example:${chain.serverPort}/`,
    );
    assert.notEqual(socks.code, 0);
    assert.equal(socks.stderr.trim().split('\n').length, 1, socks.stderr);
  });
});
