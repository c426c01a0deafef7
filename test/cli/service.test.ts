/**
 * `underpass service install`: the unit's text from a table of cases, then the real command writing a
 * unit that systemd's own checker accepts and whose ExecStart, run as systemd would, starts the server.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { quoteExecArg, serviceUnit } from '../../cli/service';
import { freePort, Program, PYTHON, run, tmpDir, UNDERPASS, which } from '../harness';

describe('underpass service install', function () {
  const quoting: [string, string][] = [
    ['--listen', '--listen'],
    ['127.0.0.1:7443', '127.0.0.1:7443'],
    ['/var/lib/underpass', '/var/lib/underpass'],
    ['a b', '"a b"'],
    ['100%', '100%%'],
    ['$HOME', '"$$HOME"'],
    ['say "hi"', '"say \\"hi\\""'],
    ['back\\slash', '"back\\\\slash"'],
    ['', '""'],
  ];
  for (const [arg, quoted] of quoting) {
    it(`quotes ${JSON.stringify(arg)} for ExecStart as ${quoted}`, function () {
      assert.equal(quoteExecArg(arg), quoted);
    });
  }

  const base = { node: '/usr/bin/node', entry: '/opt/underpass/bin/underpass.js' };
  const units: { title: string; options: Parameters<typeof serviceUnit>[0]; has: RegExp[]; hasNot: RegExp[] }[] = [
    {
      title: 'a system server with no --data-dir keeps its state in systemd state directory',
      options: { ...base, program: 'server', scope: 'system', args: ['--listen', '0.0.0.0:7443'] },
      has: [
        /^ExecStart=\/usr\/bin\/node \/opt\/underpass\/bin\/underpass\.js server --listen 0\.0\.0\.0:7443 --data-dir %S\/underpass$/m,
        /^StateDirectory=underpass$/m,
        /^Restart=on-failure$/m,
        /^WantedBy=multi-user\.target$/m,
      ],
      hasNot: [],
    },
    {
      title: 'a server with its own --data-dir gets no state directory',
      options: { ...base, program: 'server', scope: 'user', args: ['--data-dir', '/srv/up'] },
      has: [/--data-dir \/srv\/up$/m, /^WantedBy=default\.target$/m],
      hasNot: [/StateDirectory/, /%S/],
    },
    {
      title: 'a user redirector runs with its flags as given',
      options: { ...base, program: 'redirector', scope: 'user', args: ['--server', 'tunnel.example.org:7443'] },
      has: [/ redirector --server tunnel\.example\.org:7443$/m, /^Description=Underpass redirector$/m],
      hasNot: [/NoNewPrivileges/, /StateDirectory/],
    },
  ];
  for (const unit of units) {
    it(unit.title, function () {
      const text = serviceUnit(unit.options);
      for (const pattern of unit.has) assert.match(text, pattern);
      for (const pattern of unit.hasNot) assert.doesNotMatch(text, pattern);
    });
  }

  describe('the command', function () {
    let dir: string;
    let server: Program | undefined;

    before(function () {
      dir = tmpDir('service');
    });

    after(async function () {
      await server?.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    });

    it('writes a unit systemd accepts, whose ExecStart starts the server; refuses unknown flags in one line', async function () {
      const port = await freePort();
      const unitDir = path.join(dir, 'units');
      const installed = await run(process.execPath, [
        UNDERPASS,
        'service',
        'install',
        'server',
        '--user',
        '--dir',
        unitDir,
        '--',
        '--listen',
        `127.0.0.1:${port}`,
        '--token',
        'a token with spaces and 100%',
      ]);
      assert.equal(installed.code, 0, installed.stderr);
      const file = path.join(unitDir, 'underpass-server.service');
      assert.match(installed.stdout, new RegExp(`wrote ${file}`));
      assert.match(installed.stdout, /systemctl --user enable --now underpass-server\.service/);
      // The token stays out of the world-readable unit, in a file only its owner reads.
      const envFile = path.join(unitDir, 'underpass-server.env');
      assert.equal(fs.statSync(envFile).mode & 0o777, 0o600);
      assert.equal(fs.readFileSync(envFile, 'utf8'), 'UNDERPASS_TOKEN="a token with spaces and 100%"\n');

      if (which('systemd-analyze') !== null) {
        const verified = await run('systemd-analyze', ['verify', '--man=no', file]);
        assert.equal(verified.code, 0, verified.stderr);
        assert.equal(verified.stderr.trim(), '', 'systemd-analyze verify has no warnings');
      }

      // Split the ExecStart line the way systemd does (shlex follows the same double-quote rules), and
      // stand in for systemd's %S and %% expansion.
      const text = fs.readFileSync(file, 'utf8');
      assert.doesNotMatch(text, /a token with spaces/);
      assert.match(text, new RegExp(`^EnvironmentFile=${envFile}$`, 'm'));
      const execLine = /^ExecStart=(.*)$/m.exec(text)?.[1] ?? '';
      const state = path.join(dir, 'state');
      const split = await run(PYTHON, [
        '-c',
        'import json, shlex, sys; print(json.dumps(shlex.split(sys.argv[1])))',
        execLine.replaceAll('%S', state).replaceAll('%%', '%').replaceAll('$$', '$'),
      ]);
      const [command, ...args] = JSON.parse(split.stdout) as string[];
      assert.equal(command, process.execPath);
      server = new Program('service server', command!, args, {
        env: { UNDERPASS_TOKEN: 'a token with spaces and 100%' },
      });
      await server.waitFor(/listening on/);
      assert.ok(fs.existsSync(path.join(state, 'underpass', 'tls', 'cert.pem')), 'state lands in the state directory');
      assert.ok(
        !fs.existsSync(path.join(state, 'underpass', 'token')),
        'the server took the token from the environment',
      );

      const again = await run(process.execPath, [UNDERPASS, 'service', 'install', 'server', '--dir', unitDir]);
      assert.notEqual(again.code, 0);
      assert.match(again.stderr, /exists: pass --force/);

      const bad = await run(process.execPath, [
        UNDERPASS,
        'service',
        'install',
        'proxy',
        '--dir',
        unitDir,
        '--',
        '--no-such-flag',
      ]);
      assert.notEqual(bad.code, 0);
      assert.equal(bad.stderr.trim().split('\n').length, 1, bad.stderr);
      assert.match(bad.stderr, /has no flag --no-such-flag/);
    });
  });
});
