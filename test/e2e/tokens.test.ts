/**
 * Issued tokens against a running server, through the real programs: `underpass token create` works at
 * once without a restart, an expired token is refused in one line, a revoked token's live tunnel is
 * reset well before the grace period, scopes refuse a publication outside them, and the audit log has a
 * line for each of those acts.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Chain, freePort, HOOK_RUN_LAUNCHER, lineEchoServer, Program, PYTHON, run, UNDERPASS } from '../harness';

interface AuditLine {
  event: string;
  id?: string;
  reason?: string;
  publish?: string;
}

describe('issued tokens', function () {
  let chain: Chain;
  let echo: Program;
  let echoPort: number;
  const programs: Program[] = [];

  before(async function () {
    echoPort = await freePort();
    echo = lineEchoServer(echoPort);
    // A long grace period: a reset that comes early can only be the revocation's.
    chain = new Chain([`echo=127.0.0.1:${echoPort}`], {
      serverArgs: ['--grace', '60'],
      redirectorArgs: ['--grace', '60'],
      proxyArgs: ['--grace', '60'],
    });
    await chain.startServer();
    await chain.startProxy();
  });

  afterEach(async function () {
    await Promise.all(programs.splice(0).map((p) => p.stop()));
  });

  after(async function () {
    await chain.stop();
    await echo.stop();
  });

  async function token(...args: string[]): Promise<{ id: string; token: string }> {
    const created = await run(process.execPath, [UNDERPASS, 'token', 'create', '--data-dir', chain.dataDir, ...args]);
    assert.equal(created.code, 0, created.stderr);
    const lines = created.stdout.trim().split('\n');
    const secret = lines[lines.length - 1]!;
    const id = /^token ([0-9a-f]+) /.exec(lines[0]!)?.[1];
    assert.ok(id !== undefined, created.stdout);
    return { id, token: secret };
  }

  function audit(): AuditLine[] {
    return fs
      .readFileSync(path.join(chain.dataDir, 'audit.log'), 'utf8')
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as AuditLine);
  }

  function redirector(secret: string, ipc: string): Program {
    const args = [UNDERPASS, 'redirector', ...chain.endpointArgs(), '--ipc', ipc, '--grace', '60'];
    args[args.indexOf('--token') + 1] = secret;
    const p = new Program('redirector', process.execPath, args);
    programs.push(p);
    return p;
  }

  it('a token created while the server runs works at once; revoking it resets its live tunnel and refuses it after', async function () {
    const issued = await token('--account', 'default', '--name', 'laptop');
    const ipc = path.join(chain.dir, 'revoke.sock');
    const r = redirector(issued.token, ipc);
    await r.waitFor(/serving hooks on/);

    // An app holding a tunneled connection open, which prints how it ended.
    const client = new Program('client', HOOK_RUN_LAUNCHER, [
      '--ipc',
      ipc,
      '--',
      PYTHON,
      '-c',
      `import socket, sys, time
s = socket.create_connection((${JSON.stringify(chain.host('echo'))}, ${echoPort}))
s.sendall(b"hi\\n")
assert s.recv(10) == b"hi\\n"
print("connected", flush=True)
try:
    data = s.recv(10)
    print("ended: eof" if data == b"" else "ended: data", flush=True)
except OSError as e:
    print("ended:", e.__class__.__name__, flush=True)`,
    ]);
    programs.push(client);
    await client.waitFor(/connected/);

    const revokedAt = Date.now();
    const revoked = await run(process.execPath, [UNDERPASS, 'token', 'revoke', issued.id, '--data-dir', chain.dataDir]);
    assert.equal(revoked.code, 0, revoked.stderr);
    await client.waitFor(/ended: /, 20_000);
    const took = Date.now() - revokedAt;
    // The grace period is 60 s: a reset this early is the revocation ending the session.
    assert.ok(took < 20_000, `reset after ${took} ms`);
    process.stdout.write(`      (the tunnel was reset ${took} ms after the revoke)\n`);
    await chain.server.waitFor(new RegExp(`its token ${issued.id} was revoked`));

    // A new start with the revoked token: one line that says so.
    const again = await run(process.execPath, [
      UNDERPASS,
      'redirector',
      ...chain.endpointArgs().map((a) => (a === chain.token ? issued.token : a)),
      '--ipc',
      path.join(chain.dir, 'again.sock'),
    ]);
    assert.notEqual(again.code, 0);
    assert.equal(again.stderr.trim().split('\n').length, 1, again.stderr);
    assert.match(again.stderr, new RegExp(`token ${issued.id} was revoked`));

    const lines = audit().filter((l) => l.id === issued.id);
    assert.deepEqual(
      lines.slice(0, 2).map((l) => l.event),
      ['token.create', 'token.revoke'],
    );
    assert.ok(lines.some((l) => l.event === 'token.refused' && l.reason === 'revoked'));

    const listed = await run(process.execPath, [UNDERPASS, 'token', 'list', '--data-dir', chain.dataDir]);
    assert.match(listed.stdout, new RegExp(`^${issued.id}  default  revoked `, 'm'));
  });

  it('a token that expires stops working after it, with one line', async function () {
    const issued = await token('--account', 'default', '--expires', '2s');
    const ipc = path.join(chain.dir, 'expire.sock');
    const r = redirector(issued.token, ipc);
    await r.waitFor(/serving hooks on/);
    await chain.server.waitFor(new RegExp(`its token ${issued.id} was expired`), 10_000);
    const late = await run(process.execPath, [
      UNDERPASS,
      'proxy',
      ...chain.endpointArgs().map((a) => (a === chain.token ? issued.token : a)),
      '--publish',
      `late=127.0.0.1:${echoPort}`,
    ]);
    assert.notEqual(late.code, 0);
    assert.equal(late.stderr.trim().split('\n').length, 1, late.stderr);
    assert.match(
      late.stderr,
      new RegExp(`^underpass proxy: the server rejected the token: token ${issued.id} expired on`),
    );
  });

  it('a --publish scope refuses a publication outside it and keeps the one inside', async function () {
    const issued = await token('--account', 'default', '--publish', 'web*');
    const proxy = new Program('scoped proxy', process.execPath, [
      UNDERPASS,
      'proxy',
      ...chain.endpointArgs().map((a) => (a === chain.token ? issued.token : a)),
      '--publish',
      `web1=127.0.0.1:${echoPort}`,
      '--publish',
      `db=127.0.0.1:${echoPort}`,
      '--json',
    ]);
    programs.push(proxy);
    await proxy.waitFor(/"event":"published","name":"web1"/, 20_000, 'stdout');
    await proxy.waitFor(/may not publish 'db'/);
    assert.ok(audit().some((l) => l.event === 'scope.refused' && l.id === issued.id && l.publish === 'db'));
  });
});
