/**
 * Issue 12's client matrix: real, unmodified clients that these tests did not write — the MariaDB client,
 * a Java program on java.net.Socket, Ruby's TCPSocket, PHP's fsockopen and stream_socket_client, and
 * OpenBSD netcat — each run under hook-run against a real server (MariaDB, redis) published by the proxy.
 * A pseudo name resolves only through the hook, so a client that the hook failed to enter fails to
 * resolve: every reply below proves the client was hooked and its bytes crossed the whole chain.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Chain, Program, freePort, run, tmpDir, which } from '../harness';

/** Debian's MariaDB server binary (not on a user's PATH), or null. */
function mariadbd(): string | null {
  return which('mariadbd') ?? (fs.existsSync('/usr/sbin/mariadbd') ? '/usr/sbin/mariadbd' : null);
}

function need(command: string): void {
  assert.ok(which(command) !== null, `${command} is missing: run 'npm run prerequisites'`);
}

/** A throw-away MariaDB server on 127.0.0.1:`port` with a fresh data directory in `dir`. */
async function startMariadb(dir: string, port: number): Promise<Program> {
  const server = mariadbd();
  assert.ok(server !== null, "MariaDB's server (mariadbd) is missing: run 'npm run prerequisites'");
  // As root, mariadbd must be told to stay root; as anyone else it runs as that user.
  const user = process.getuid?.() === 0 ? ['--user=root'] : [];
  const data = path.join(dir, 'data');
  const install = await run('mariadb-install-db', [
    '--no-defaults',
    `--datadir=${data}`,
    '--auth-root-authentication-method=normal',
    '--skip-test-db',
    ...user,
  ]);
  assert.equal(install.code, 0, `mariadb-install-db failed:\n${install.stderr}${install.stdout}`);
  const program = new Program('mariadbd', server, [
    '--no-defaults',
    `--datadir=${data}`,
    ...user,
    '--bind-address=127.0.0.1',
    `--port=${port}`,
    `--socket=${path.join(dir, 'mariadb.sock')}`,
    `--pid-file=${path.join(dir, 'mariadb.pid')}`,
    '--innodb-buffer-pool-size=16M',
    '--skip-log-bin',
  ]);
  await program.waitFor(/ready for connections/, 60_000);
  return program;
}

describe('client matrix: real clients under hook-run', function () {
  let chain: Chain;
  let redisPort: number;
  let mariaPort: number;
  let dir: string;
  const extra: Program[] = [];

  before(async function () {
    for (const command of ['mariadb', 'mariadb-install-db', 'java', 'ruby', 'php', 'nc', 'redis-server']) need(command);
    dir = tmpDir('clients');
    if (process.getuid?.() === 0) fs.chmodSync(dir, 0o777);
    redisPort = await freePort();
    mariaPort = await freePort();
    const redis = new Program('redis-server', 'redis-server', [
      '--port',
      String(redisPort),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--appendonly',
      'no',
    ]);
    extra.push(redis);
    extra.push(await startMariadb(dir, mariaPort));
    await redis.waitFor(/Ready to accept connections/);
    chain = await new Chain([`redis=127.0.0.1:${redisPort}`, `maria=127.0.0.1:${mariaPort}`]).start();
  });

  after(async function () {
    await chain?.stop();
    await Promise.all(extra.map((p) => p.stop()));
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  /** What the real redis holds under `key`, asked directly (not through the chain). */
  async function redisGet(key: string): Promise<string> {
    const r = await run('redis-cli', ['-h', '127.0.0.1', '-p', String(redisPort), '--raw', 'get', key]);
    return r.stdout.trim();
  }

  it('the MariaDB client runs statements on a real MariaDB server', async function () {
    const value = crypto.randomBytes(8).toString('hex');
    const r = await chain.hookRun(
      [
        'mariadb',
        '--no-defaults',
        '-h',
        chain.host('maria'),
        '-P',
        String(mariaPort),
        '-u',
        'root',
        '--batch',
        '--skip-column-names',
        '-e',
        `create database if not exists matrix; create table matrix.t (v varchar(32)); insert into matrix.t values ('${value}'); select v from matrix.t; select @@port`,
      ],
      { timeoutMs: 60_000 },
    );
    assert.equal(r.stderr, '');
    assert.equal(r.stdout, `${value}\n${mariaPort}\n`);
    assert.equal(r.code, 0);
  });

  it('a Java program (java.net.Socket, single-file source launch) talks to redis', async function () {
    const source = path.join(dir, 'Client.java');
    fs.writeFileSync(
      source,
      `import java.io.*;
import java.net.*;
public class Client {
  public static void main(String[] args) throws Exception {
    try (Socket s = new Socket(args[0], Integer.parseInt(args[1]))) {
      OutputStream out = s.getOutputStream();
      out.write(("SET java " + args[2] + "\\r\\nGET java\\r\\n").getBytes("US-ASCII"));
      out.flush();
      BufferedReader in = new BufferedReader(new InputStreamReader(s.getInputStream(), "US-ASCII"));
      String ok = in.readLine(); in.readLine();
      System.out.println(ok + " " + in.readLine());
    }
  }
}
`,
    );
    const value = crypto.randomBytes(8).toString('hex');
    const r = await chain.hookRun(['java', source, chain.host('redis'), String(redisPort), value], {
      timeoutMs: 90_000,
    });
    assert.equal(r.stdout, `+OK ${value}\n`, r.stderr);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await redisGet('java'), value);
  });

  it("Ruby's TCPSocket talks to redis", async function () {
    const value = crypto.randomBytes(8).toString('hex');
    const r = await chain.hookRun([
      'ruby',
      '-rsocket',
      '-e',
      's = TCPSocket.new(ARGV[0], ARGV[1].to_i); s.write("SET ruby #{ARGV[2]}\\r\\n"); puts s.gets',
      chain.host('redis'),
      String(redisPort),
      value,
    ]);
    assert.equal(r.stdout, '+OK\r\n', r.stderr);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await redisGet('ruby'), value);
  });

  it("PHP's fsockopen and stream_socket_client talk to redis", async function () {
    const value = crypto.randomBytes(8).toString('hex');
    const script = `[, $host, $port, $value] = $argv;
$a = fsockopen($host, (int) $port, $errno, $error, 20);
if ($a === false) { fwrite(STDERR, "fsockopen: $error\\n"); exit(1); }
fwrite($a, "SET php $value\\r\\n");
echo fgets($a);
$b = stream_socket_client("tcp://$host:$port", $errno, $error, 20);
if ($b === false) { fwrite(STDERR, "stream_socket_client: $error\\n"); exit(1); }
fwrite($b, "GET php\\r\\n");
fgets($b);
echo fgets($b);`;
    const r = await chain.hookRun(['php', '-r', script, chain.host('redis'), String(redisPort), value]);
    assert.equal(r.stdout, `+OK\r\n${value}\r\n`, r.stderr);
    assert.equal(r.code, 0, r.stderr);
  });

  it('nc (OpenBSD netcat) carries stdin to redis and its reply back', async function () {
    const value = crypto.randomBytes(8).toString('hex');
    // -N shuts the socket down once stdin ends, so nc exits when redis has answered and closed.
    const r = await chain.hookRun(['nc', '-N', chain.host('redis'), String(redisPort)], {
      input: `SET nc ${value}\r\nGET nc\r\nQUIT\r\n`,
    });
    assert.equal(r.stdout, `+OK\r\n$16\r\n${value}\r\n+OK\r\n`, r.stderr);
    assert.equal(r.code, 0, r.stderr);
  });
});
