/**
 * What a user gets from the published package rather than the checkout: `npm pack`, `npm install -g` of
 * the tarball into a clean prefix (its postinstall prepares the hook's sidecar), then the README's quick
 * start with the global `underpass` and `hook-run` commands, with curl as the unmodified client.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { freePort, Program, ROOT, run, tmpDir, which, type Published } from '../harness';

describe('the packed package installed globally', function () {
  // Packing builds, and installing creates the sidecar's virtualenv: about a minute on this machine.
  this.timeout(300_000);
  let dir: string;
  const programs: Program[] = [];

  before(function () {
    if (which('curl') === null) this.skip();
    dir = tmpDir('package');
  });

  after(async function () {
    await Promise.all(programs.map((p) => p.stop()));
    fs.rmSync(dir, { recursive: true, force: true });
  });

  function start(label: string, command: string, args: string[], env: NodeJS.ProcessEnv = {}): Program {
    const p = new Program(label, command, args, { env, cwd: dir });
    programs.push(p);
    return p;
  }

  it('npm pack, npm install -g into a clean prefix, then the quick start with the global commands', async function () {
    const packed = await run('npm', ['pack', '--pack-destination', dir, '--silent'], { timeoutMs: 180_000 });
    assert.equal(packed.code, 0, packed.stderr);
    const tarball = path.join(dir, packed.stdout.trim().split('\n').pop() ?? '');
    assert.ok(fs.existsSync(tarball), `npm pack named ${tarball}`);
    const listing = await run('tar', ['tzf', tarball]);
    assert.doesNotMatch(listing.stdout, /^package\/(test|dist\/test)\//m, 'tests stay out of the package');

    const prefix = path.join(dir, 'prefix');
    const installed = await run(
      'npm',
      ['install', '-g', '--prefix', prefix, '--no-audit', '--no-fund', '--allow-scripts=underpass', tarball],
      { timeoutMs: 240_000, cwd: dir },
    );
    assert.equal(installed.code, 0, installed.stderr);
    const underpass = path.join(prefix, 'bin', 'underpass');
    const hookRun = path.join(prefix, 'bin', 'hook-run');
    // Nothing of the checkout may be reached from the installed commands.
    const env = { PATH: `${path.join(prefix, 'bin')}:${process.env.PATH ?? ''}`, NODE_PATH: '' };
    assert.ok(fs.realpathSync(underpass).startsWith(fs.realpathSync(prefix)));
    assert.ok(!fs.realpathSync(underpass).startsWith(ROOT + path.sep));

    const webPort = await freePort();
    fs.writeFileSync(path.join(dir, 'index.html'), 'served from behind the firewall\n');
    start('web', 'python3', ['-m', 'http.server', '--bind', '127.0.0.1', String(webPort)]);

    const serverPort = await freePort();
    const data = path.join(dir, 'data');
    const server = start(
      'server',
      underpass,
      ['server', '--listen', `127.0.0.1:${serverPort}`, '--data-dir', data],
      env,
    );
    await server.waitFor(/listening on/);
    const token = fs.readFileSync(path.join(data, 'token'), 'utf8').trim();
    const ca = path.join(data, 'tls', 'cert.pem');
    const endpoint = ['--server', `127.0.0.1:${serverPort}`, '--ca', ca, '--token', token];

    const proxy = start(
      'proxy',
      underpass,
      ['proxy', ...endpoint, '--publish', `web=127.0.0.1:${webPort}`, '--json'],
      env,
    );
    const line = await proxy.waitFor(/^\{"event":"published".*\}$/m, 20_000, 'stdout');
    const published = JSON.parse(line[0]) as Published;

    const ipc = path.join(dir, 'redirector.sock');
    const redirector = start('redirector', underpass, ['redirector', ...endpoint, '--ipc', ipc], env);
    await redirector.waitFor(/serving hooks on/);

    const got = await run(
      hookRun,
      ['--ipc', ipc, '--', 'curl', '-sS', '--max-time', '20', `http://${published.host}:${webPort}/index.html`],
      { env, cwd: dir, timeoutMs: 60_000, processGroup: true },
    );
    assert.equal(got.code, 0, got.stderr);
    assert.equal(got.stdout, 'served from behind the firewall\n');
  });
});
