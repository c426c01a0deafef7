/**
 * Names in a hierarchy through the real chain: `--publish denpc.home=…` reached by a hooked client at
 * `denpc.home.default.ZONE`, a prefix alone is no name, and `underpass ls` lists what lies under a
 * prefix — and nothing of an account the token does not stand for.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Chain, freePort, lineEchoServer, Program, PYTHON, run, UNDERPASS } from '../harness';

describe('names in a hierarchy', function () {
  let chain: Chain;
  let echo: Program;
  let echoPort: number;
  const programs: Program[] = [];

  const aliceToken = 'alice-token-0123456789abcdef';

  /** A proxy of its own, publishing `spec` with `token`, running until stopped. */
  async function proxy(label: string, token: string, spec: string): Promise<Program> {
    const args = [UNDERPASS, 'proxy', ...chain.endpointArgs(), '--publish', spec, '--json'];
    args[args.indexOf('--token') + 1] = token;
    const p = new Program(label, process.execPath, args);
    programs.push(p);
    await p.waitFor(/"event":"published"/, 20_000, 'stdout');
    return p;
  }

  before(async function () {
    echoPort = await freePort();
    echo = lineEchoServer(echoPort);
    // Alice grants her `share` to the default account.
    const accounts = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'names-')), 'accounts.json');
    fs.writeFileSync(
      accounts,
      JSON.stringify({ tokens: { alice: aliceToken }, grants: { 'alice/share': ['default'] } }),
    );
    chain = await new Chain(
      [`denpc.home=127.0.0.1:${echoPort}`, `printer.home=127.0.0.1:${echoPort}`, `web=127.0.0.1:${echoPort}`],
      { serverArgs: ['--accounts', accounts] },
    ).start();
    await proxy('alice proxy', aliceToken, `share=127.0.0.1:${echoPort}`);
    await proxy('alice private', aliceToken, `diary=127.0.0.1:${echoPort}`);
    // Published once, then its proxy goes away: it stays a publication, offline.
    const gone = await proxy('gone proxy', chain.token, `nas.office.home=127.0.0.1:${echoPort}`);
    await gone.stop();
  });

  after(async function () {
    await Promise.all(programs.map((p) => p.stop()));
    await chain.stop();
    await echo.stop();
  });

  it('a dotted publication is reached at its own name, most specific first; its prefix alone is no name', async function () {
    const host = chain.host('denpc.home');
    assert.equal(host, 'denpc.home.default.underpass.internal');
    const got = await chain.hookRun([
      PYTHON,
      '-c',
      `import socket
s = socket.create_connection((${JSON.stringify(host)}, ${echoPort}))
s.sendall(b"hi\\n"); print(s.recv(10).decode().strip())
try:
    socket.getaddrinfo("home.default.underpass.internal", ${echoPort}); print("resolved")
except socket.gaierror: print("no such name")
try:
    socket.getaddrinfo("nas.office.home.default.underpass.internal", ${echoPort}); print("resolved")
except socket.gaierror: print("offline: no such name")`,
    ]);
    assert.equal(got.code, 0, got.stderr);
    assert.equal(got.stdout, 'hi\nno such name\noffline: no such name\n');
  });

  it('underpass ls lists what lies under a prefix, and --json one object a line', async function () {
    const ls = await run(process.execPath, [UNDERPASS, 'ls', 'home.default', '--ipc', chain.ipcPath]);
    assert.equal(ls.code, 0, ls.stderr);
    const lines = ls.stdout.trim().split('\n');
    assert.deepEqual(
      lines.map((l) => l.split(/\s+/)[0]),
      [
        'denpc.home.default.underpass.internal',
        'nas.office.home.default.underpass.internal',
        'printer.home.default.underpass.internal',
      ],
    );
    assert.match(lines[0]!, new RegExp(`port ${echoPort}  online$`));
    assert.match(lines[1]!, new RegExp(`port ${echoPort}  offline$`), 'a publication whose proxy is away');

    const all = await run(process.execPath, [UNDERPASS, 'ls', '--ipc', chain.ipcPath, '--json']);
    const hosts = all.stdout
      .trim()
      .split('\n')
      .map((l) => (JSON.parse(l) as { host: string }).host);
    // Alice's granted `share` shows; her `diary`, not granted, does not.
    assert.deepEqual(hosts.sort(), [
      'denpc.home.default.underpass.internal',
      'nas.office.home.default.underpass.internal',
      'printer.home.default.underpass.internal',
      'share.alice.underpass.internal',
      'web.default.underpass.internal',
    ]);

    const none = await run(process.execPath, [UNDERPASS, 'ls', 'nothing.here', '--ipc', chain.ipcPath]);
    assert.equal(none.code, 0);
    assert.equal(none.stdout, '');
    assert.match(none.stderr, /nothing under nothing\.here/);
    // A prefix without the account finds nothing, and is shown with it.
    const bare = await run(process.execPath, [UNDERPASS, 'ls', 'home', '--ipc', chain.ipcPath]);
    assert.equal(bare.stdout, '');
    assert.match(bare.stderr, /nothing under home .*try 'underpass ls home\.default'\)$/m);
  });

  it("another account's publications never show unless granted", async function () {
    const created = await run(process.execPath, [
      UNDERPASS,
      'token',
      'create',
      '--data-dir',
      chain.dataDir,
      '--account',
      'alice',
    ]);
    const token = created.stdout.trim().split('\n').pop()!;
    const ipc = path.join(chain.dir, 'alice.sock');
    const args = [UNDERPASS, 'redirector', ...chain.endpointArgs(), '--ipc', ipc];
    args[args.indexOf('--token') + 1] = token;
    const alice = new Program('alice redirector', process.execPath, args);
    programs.push(alice);
    await alice.waitFor(/serving hooks on/);
    const ls = await run(process.execPath, [UNDERPASS, 'ls', '--ipc', ipc, '--json']);
    assert.equal(ls.code, 0, ls.stderr);
    // Alice's own, and nothing of the default account's (which granted her nothing).
    const hosts = ls.stdout
      .trim()
      .split('\n')
      .map((l) => (JSON.parse(l) as { host: string }).host);
    assert.deepEqual(hosts, ['diary.alice.underpass.internal', 'share.alice.underpass.internal']);
  });
});
