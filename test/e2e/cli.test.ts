/**
 * The command surface of ../shared/CLI-CONTRACT.md, as acceptance checks drive it: default IPC
 * endpoint, a certificate of the user's own, clean stops on SIGINT and SIGTERM, JSON logs.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import selfsigned from 'selfsigned';
import { freePort, HOOK_RUN, lineEchoServer, Program, PYTHON, run, tmpDir, UNDERPASS } from '../harness';

describe('the command surface', function () {
  let dir: string;
  let echo: Program;
  let echoPort: number;
  const programs: Program[] = [];

  before(async function () {
    dir = tmpDir('cli');
    echoPort = await freePort();
    echo = lineEchoServer(echoPort);
  });

  after(async function () {
    await Promise.all([...programs, echo].map((p) => p.stop()));
    fs.rmSync(dir, { recursive: true, force: true });
  });

  function start(label: string, args: string[], env: NodeJS.ProcessEnv = {}): Program {
    const p = new Program(label, process.execPath, args, { env });
    programs.push(p);
    return p;
  }

  it("serves with --cert/--key of the user's own, logs JSON, and hook-run finds a redirector started without --ipc", async function () {
    const pems = await selfsigned.generate([{ name: 'commonName', value: 'localhost' }], {
      keyType: 'ec',
      extensions: [
        {
          name: 'subjectAltName',
          altNames: [
            { type: 2, value: 'localhost' },
            { type: 7, ip: '127.0.0.1' },
          ],
        },
      ],
    });
    fs.writeFileSync(path.join(dir, 'cert.pem'), pems.cert);
    fs.writeFileSync(path.join(dir, 'key.pem'), pems.private);
    const port = await freePort();
    const server = start('server', [
      UNDERPASS,
      'server',
      '--listen',
      `127.0.0.1:${port}`,
      '--data-dir',
      path.join(dir, 'data'),
      '--token',
      'cli-test-token',
      '--cert',
      path.join(dir, 'cert.pem'),
      '--key',
      path.join(dir, 'key.pem'),
      '--log-format',
      'json',
    ]);
    await server.waitFor(/listening on/);
    assert.ok(!fs.existsSync(path.join(dir, 'data', 'tls')), 'no certificate is generated when one is given');
    assert.ok(!fs.existsSync(path.join(dir, 'data', 'token')), 'no token file is written when --token is given');
    for (const line of server.stderr.trim().split('\n')) assert.doesNotThrow(() => JSON.parse(line), line);

    const endpoint = ['--server', `127.0.0.1:${port}`, '--ca', path.join(dir, 'cert.pem'), '--token', 'cli-test-token'];
    const proxy = start('proxy', [
      UNDERPASS,
      'proxy',
      ...endpoint,
      '--publish',
      `echo=127.0.0.1:${echoPort}`,
      '--json',
    ]);
    const published = JSON.parse((await proxy.waitFor(/^(\{.*\})$/m, 20_000, 'stdout'))[1]!) as { host: string };

    // Both find the same default endpoint through XDG_RUNTIME_DIR.
    const env = { XDG_RUNTIME_DIR: path.join(dir, 'xdg') };
    const redirector = start(
      'redirector',
      [UNDERPASS, 'redirector', ...endpoint, '--pseudo-net', '127.240.0.0/16'],
      env,
    );
    await redirector.waitFor(/serving hooks on .*xdg\/underpass\/redirector\.sock/);
    assert.equal(fs.statSync(path.join(dir, 'xdg', 'underpass')).mode & 0o777, 0o700);
    assert.equal(fs.statSync(path.join(dir, 'xdg', 'underpass', 'redirector.sock')).mode & 0o777, 0o600);
    const r = await run(
      process.execPath,
      [
        HOOK_RUN,
        '--',
        PYTHON,
        '-c',
        `import socket
s = socket.create_connection(('${published.host}', ${echoPort})); s.sendall(b'default endpoint\\n'); print(s.recv(100).decode().strip())`,
      ],
      { env },
    );
    assert.equal(r.stdout.trim(), 'default endpoint', r.stderr);

    // Every long-running command stops cleanly on SIGINT and SIGTERM with status 0.
    assert.deepEqual(await redirector.stop('SIGINT'), { code: 0, signal: null });
    assert.deepEqual(await proxy.stop('SIGTERM'), { code: 0, signal: null });
    assert.deepEqual(await server.stop('SIGINT'), { code: 0, signal: null });
    assert.ok(
      !fs.existsSync(path.join(dir, 'xdg', 'underpass', 'redirector.sock')),
      'the redirector removes its socket',
    );
  });
});
