/**
 * Remote listening through the real programs: `hook-run --publish web --json -- python3 -m http.server`
 * publishes the server app itself (the redirector acts as its service proxy), prints the pseudo name on
 * stderr as JSON, is reached by a hooked curl on another machine (a network namespace that can send to
 * the tunnel server only, with a redirector and a session of its own), and is gone once the app exits.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Chain, freePort, HOOK_RUN_LAUNCHER, inNetns, Program, PYTHON, run, UNDERPASS, which } from '../harness';
import { ClientHost } from '../netns';

describe('remote listening: hook-run --publish', function () {
  let chain: Chain;
  let client: ClientHost;
  const programs: Program[] = [];

  before(async function () {
    if (which('curl') === null || which('ip') === null || process.getuid?.() !== 0) this.skip();
    const serverPort = await freePort();
    client = ClientHost.create([serverPort]);
    chain = new Chain([], { serverHost: client.outer });
    chain.serverPort = serverPort;
    await chain.startServer();
    await chain.startRedirector();
  });

  after(async function () {
    await Promise.all(programs.map((p) => p.stop()));
    await chain?.stop();
    client?.destroy();
  });

  it('publishes the app, which another machine reaches, until the app exits', async function () {
    const port = await freePort();
    const site = path.join(chain.dir, 'site');
    fs.mkdirSync(site, { recursive: true });
    fs.writeFileSync(path.join(site, 'index.html'), 'a server that published itself\n');
    const app = new Program(
      'app',
      HOOK_RUN_LAUNCHER,
      [
        '--ipc',
        chain.ipcPath,
        '--publish',
        'web',
        '--json',
        '--',
        PYTHON,
        '-m',
        'http.server',
        String(port),
        '--bind',
        '127.0.0.1',
      ],
      { cwd: site },
    );
    programs.push(app);
    const line = await app.waitFor(/^\{"event": ?"published".*\}$/m, 30_000, 'stderr');
    const event = JSON.parse(line[0]) as { host: string; port: number; name: string };
    assert.equal(event.host, 'web.default.underpass.internal');
    assert.equal(event.port, port);

    // Another machine: a host of its own that reaches only the tunnel server, with a redirector and a
    // session of its own.
    const ipc = path.join(chain.dir, 'other.sock');
    const [node, redirectorArgs] = inNetns(client.name, process.execPath, [
      UNDERPASS,
      'redirector',
      ...chain.endpointArgs(),
      '--ipc',
      ipc,
      '--pseudo-net',
      '127.201.0.0/16',
      '--dns',
      'off',
    ]);
    const other = new Program('other redirector', node, redirectorArgs);
    programs.push(other);
    await other.waitFor(/serving hooks on/);
    const direct = await run(...inNetns(client.name, 'curl', ['-sS', '--max-time', '3', `http://127.0.0.1:${port}/`]));
    assert.notEqual(direct.code, 0, 'the other machine does not reach the app itself');
    const curl = (): ReturnType<typeof run> =>
      run(
        ...inNetns(client.name, HOOK_RUN_LAUNCHER, [
          '--ipc',
          ipc,
          '--',
          'curl',
          '-sS',
          '--max-time',
          '10',
          `http://${event.host}:${port}/`,
        ]),
        { processGroup: true, timeoutMs: 30_000 },
      );
    const got = await curl();
    assert.equal(got.code, 0, got.stderr);
    assert.equal(got.stdout, 'a server that published itself\n');

    await app.stop('SIGINT');
    await chain.redirector.waitFor(/web is no longer published: its process \d+ exited/, 10_000);
    const gone = await curl();
    assert.notEqual(gone.code, 0, 'the publication is gone with its app');
  });
});
