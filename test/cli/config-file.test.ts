/**
 * `--config FILE`: where a key stands, then the real programs reading files: an unknown key refused in
 * one line with its file and line, the proxy's publications as tables, and flags over the environment
 * over the file.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { lineOfKey, tryConfigPath } from '../../cli/config-file';
import { Chain, freePort, lineEchoServer, Program, run, UNDERPASS, type Published } from '../harness';

describe('config files', function () {
  const text = [
    '# top',
    'listen = "x"',
    '',
    '[publish.redis]',
    'target = "127.0.0.1:6379"',
    '[publish."pg"]',
    'connect-timeout = 5',
  ].join('\n');
  const places: [string, string, number][] = [
    ['', 'listen', 2],
    ['publish', 'redis', 4],
    ['publish.redis', 'target', 5],
    ['publish', 'pg', 6],
    ['publish.pg', 'connect-timeout', 7],
    ['', 'target', 0],
    ['', 'absent', 0],
  ];
  for (const [table, key, line] of places) {
    it(`finds ${table === '' ? '' : `[${table}] `}${key} on line ${line}`, function () {
      assert.equal(lineOfKey(text, table, key), line);
    });
  }

  const argvs: [string[], string | null][] = [
    [['server', '--config', 'a.toml'], 'a.toml'],
    [['server', '--config=b.toml', '--listen', 'x'], 'b.toml'],
    [['run', '--', 'prog', '--config', 'c'], null],
    [['server'], null],
  ];
  for (const [argv, file] of argvs) {
    it(`reads --config from ${argv.join(' ')}`, function () {
      assert.equal(tryConfigPath(argv), file);
    });
  }

  describe('the programs', function () {
    let chain: Chain;
    let echo: Program;
    let echoPort: number;
    const programs: Program[] = [];

    before(async function () {
      echoPort = await freePort();
      echo = lineEchoServer(echoPort);
      chain = new Chain([]);
      await chain.startServer();
    });

    after(async function () {
      await Promise.all(programs.map((p) => p.stop()));
      await chain.stop();
      await echo.stop();
    });

    function write(name: string, lines: string[]): string {
      const file = path.join(chain.dir, name);
      fs.writeFileSync(file, lines.join('\n') + '\n');
      return file;
    }

    it('refuses an unknown key in one line naming the file, its line and the key', async function () {
      const file = write('bad.toml', [
        '# a server',
        `listen = "127.0.0.1:${await freePort()}"`,
        '',
        'data-dri = "/tmp/x"',
      ]);
      const got = await run(process.execPath, [UNDERPASS, 'server', '--config', file]);
      assert.notEqual(got.code, 0);
      assert.equal(got.stderr.trim().split('\n').length, 1, got.stderr);
      assert.match(
        got.stderr,
        new RegExp(`^underpass server: ${file.replaceAll('.', '\\.')}:4: unknown key 'data-dri'`),
      );
      const table = write('bad-publication.toml', ['[publish.web]', 'target = "127.0.0.1:1"', 'retries = 3']);
      const proxy = await run(process.execPath, [UNDERPASS, 'proxy', '--config', table]);
      assert.match(proxy.stderr, /bad-publication\.toml:3: unknown key 'retries' in publish\.web/);
    });

    it("a proxy's publications as tables; a flag beats the environment, which beats the file", async function () {
      const [server, , ca] = chain.endpointArgs().slice(1);
      const file = write('proxy.toml', [
        `server = "${server}"`,
        `ca = "${ca}"`,
        'token = "a-wrong-token-from-the-file"',
        'json = true',
        '',
        '[publish.echo]',
        `target = "127.0.0.1:${echoPort}"`,
        'connect-timeout = 3',
      ]);
      // The environment's right token beats the file's wrong one.
      const proxy = new Program('proxy', process.execPath, [UNDERPASS, 'proxy', '--config', file], {
        env: { UNDERPASS_TOKEN: chain.token },
      });
      programs.push(proxy);
      const line = await proxy.waitFor(/^\{"event":"published","name":"echo".*\}$/m, 20_000, 'stdout');
      assert.equal((JSON.parse(line[0]) as Published).target, `127.0.0.1:${echoPort}`);
      // A wrong token on the command line beats the right one in the environment.
      const flagWins = await run(
        process.execPath,
        [UNDERPASS, 'proxy', '--config', file, '--token', 'a-wrong-token-on-the-command-line'],
        { env: { UNDERPASS_TOKEN: chain.token } },
      );
      assert.notEqual(flagWins.code, 0);
      assert.match(flagWins.stderr, /rejected the token/);
      // A --publish flag replaces the file's publications rather than adding to them.
      const replaced = new Program(
        'proxy 2',
        process.execPath,
        [UNDERPASS, 'proxy', '--config', file, '--publish', `other=127.0.0.1:${echoPort}`],
        { env: { UNDERPASS_TOKEN: chain.token } },
      );
      programs.push(replaced);
      await replaced.waitFor(/"event":"published","name":"other"/, 20_000, 'stdout');
      await new Promise((r) => setTimeout(r, 300));
      assert.doesNotMatch(replaced.stdout, /"name":"echo"/);
    });
  });
});
