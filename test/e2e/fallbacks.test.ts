/**
 * Issue 12, "programs the hook cannot enter": the redirector's DNS responder (dig, UDP and TCP), a Go
 * program built here reaching a publication under hook-run through it, curl through the SOCKS5 listener
 * (--socks5-hostname) and the HTTP proxy (CONNECT, and plain absolute-form requests), signals passed on
 * to a static program under hook-run, `underpass forward` carrying psql to a real PostgreSQL (and across a
 * redirector restart), garbage at every listener, and another user's connection refused at the SOCKS and
 * HTTP listeners and a forward port. Every program is real and runs as its own process; nothing of ours
 * is mocked.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import {
  Chain,
  freePort,
  HOOK_RUN_LAUNCHER,
  httpServer,
  lineEchoServer,
  Program,
  PYTHON,
  run,
  tmpDir,
  UNDERPASS,
  which,
} from '../harness';
import { startPostgres } from '../postgres';

describe('programs the hook cannot enter: DNS responder, SOCKS5, HTTP proxy, forward', function () {
  let chain: Chain;
  let dir: string;
  let echoPort: number;
  let webPort: number;
  let pgPort: number;
  let socksPort: number;
  let httpPort: number;
  let dnsPort: number;
  // A range of our own, so that a redirector of another test run on this machine does not hold its port 53.
  const second = 150 + (process.pid % 70);
  const pseudoNet = `127.${second}.0.0/16`;
  const responder = `127.${second}.255.255`;
  const page = 'a page behind the firewall\n';
  const extra: Program[] = [];

  before(async function () {
    dir = tmpDir('fallbacks');
    fs.chmodSync(dir, 0o755);
    echoPort = await freePort();
    webPort = await freePort();
    pgPort = await freePort();
    socksPort = await freePort();
    httpPort = await freePort();
    dnsPort = await freePort();
    fs.mkdirSync(path.join(dir, 'www'));
    fs.writeFileSync(path.join(dir, 'www', 'page.txt'), page);
    extra.push(lineEchoServer(echoPort, { upper: true }));
    extra.push(httpServer(webPort, path.join(dir, 'www')));

    const pgDir = path.join(dir, 'pg');
    fs.mkdirSync(pgDir);
    extra.push(await startPostgres(pgDir, pgPort));

    chain = await new Chain([`echo=127.0.0.1:${echoPort}`, `web=127.0.0.1:${webPort}`, `pg=127.0.0.1:${pgPort}`], {
      redirectorArgs: [
        '--pseudo-net',
        pseudoNet,
        '--socks',
        `127.0.0.1:${socksPort}`,
        '--http-proxy',
        `127.0.0.1:${httpPort}`,
        // A responder on a port of its own, beside the default one on port 53 (root only).
        '--dns',
        `127.0.0.1:${dnsPort}`,
      ],
    }).start();
  });

  after(async function () {
    await chain?.stop();
    await Promise.all(extra.map((p) => p.stop()));
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  const dig = (server: [string, number], args: string[]): ReturnType<typeof run> =>
    run('dig', ['+tries=1', '+time=5', '-p', String(server[1]), `@${server[0]}`, ...args]);

  it('the DNS responders answer pseudo names with the address hooked processes get, and refuse the rest', async function () {
    assert.ok(which('dig') !== null, "dig is missing: run 'npm run prerequisites'");
    const servers: Array<[string, number]> = [['127.0.0.1', dnsPort]];
    // The default responder takes port 53, which only root may bind here.
    if (process.getuid?.() === 0) {
      await chain.redirector.waitFor(new RegExp(`DNS responder for the zone on ${responder.replace(/\./g, '\\.')}:53`));
      servers.push([responder, 53]);
    }
    const host = chain.host('echo');
    const hooked = await chain.hookRun([PYTHON, '-c', `import socket; print(socket.gethostbyname('${host}'))`]);
    const address = hooked.stdout.trim();
    assert.match(address, new RegExp(`^127\\.${second}\\.`), hooked.stderr);
    for (const server of servers) {
      for (const transport of ['+notcp', '+tcp']) {
        const a = await dig(server, [transport, '+short', host, 'A']);
        assert.equal(a.stdout.trim(), address, a.stderr);
        const aaaa = await dig(server, [transport, '+noall', '+comments', '+answer', host, 'AAAA']);
        assert.match(aaaa.stdout, /status: NOERROR/);
        assert.match(aaaa.stdout, /ANSWER: 0/);
        const unknown = await dig(server, [
          transport,
          '+noall',
          '+comments',
          `nothing.default.underpass.internal`,
          'A',
        ]);
        assert.match(unknown.stdout, /status: NXDOMAIN/);
        // Outside the zone: refused at once, never forwarded anywhere.
        const outside = await dig(server, [transport, '+noall', '+comments', 'example.invalid', 'A']);
        assert.match(outside.stdout, /status: REFUSED/);
      }
    }
  });

  it('a Go program (its own resolver) reaches a publication under hook-run, through the DNS responder', async function () {
    if (process.getuid?.() !== 0) this.skip(); // the namespace's resolv.conf needs the responder on port 53
    const go = which('go');
    assert.ok(go !== null, 'go is missing');
    const src = path.join(dir, 'godial');
    fs.mkdirSync(src);
    fs.writeFileSync(path.join(src, 'go.mod'), 'module godial\n\ngo 1.21\n');
    fs.writeFileSync(
      path.join(src, 'main.go'),
      `package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
)

func main() {
	conn, err := net.Dial("tcp", os.Args[1])
	if err != nil {
		fmt.Println("dial failed:", err)
		os.Exit(2)
	}
	fmt.Fprintf(conn, "from go\\n")
	line, err := bufio.NewReader(conn).ReadString('\\n')
	if err != nil {
		fmt.Println("read failed:", err)
		os.Exit(3)
	}
	fmt.Print(line)
}
`,
    );
    const build = await run(go!, ['build', '-o', path.join(src, 'godial'), '.'], {
      cwd: src,
      env: { CGO_ENABLED: '0', GOFLAGS: '-mod=mod', GOTOOLCHAIN: 'local', GOPROXY: 'off' },
      timeoutMs: 240_000,
    });
    assert.equal(build.code, 0, build.stderr);
    const r = await chain.hookRun([path.join(src, 'godial'), `${chain.host('echo')}:${echoPort}`]);
    assert.equal(r.stdout, 'FROM GO\n', r.stderr);
    assert.equal(r.code, 0);
    assert.match(
      r.stderr.trim(),
      new RegExp(
        `^hook-run: process \\d+: godial is a Go program: [^\\n]*DNS responder ${responder.replace(/\./g, '\\.')} [^\\n]*runs unhooked$`,
      ),
    );
    // The machine's own resolv.conf is untouched.
    assert.doesNotMatch(fs.readFileSync('/etc/resolv.conf', 'utf8'), new RegExp(responder.replace(/\./g, '\\.')));
  });

  it('hook-run passes SIGINT and SIGTERM sent to it on to a program it cannot hook, and reports its status', async function () {
    const gcc = which('gcc') ?? which('cc');
    assert.ok(gcc !== null, "a C compiler is needed to build the static test program: run 'npm run prerequisites'");
    const source = path.join(dir, 'waiter.c');
    fs.writeFileSync(
      source,
      `#include <signal.h>
#include <stdio.h>
#include <unistd.h>
static volatile sig_atomic_t got;
static void on(int signo) { got = signo; }
int main(void) {
  signal(SIGINT, on); signal(SIGTERM, on);
  printf("ready\\n"); fflush(stdout);
  while (!got) pause();
  printf("got %d\\n", got);
  return 7;
}
`,
    );
    const binary = path.join(dir, 'waiter');
    const cc = await run(gcc!, ['-static', '-O0', '-o', binary, source]);
    assert.equal(cc.code, 0, cc.stderr);
    for (const signal of ['SIGINT', 'SIGTERM'] as const) {
      const hooked = new Program('hook-run', HOOK_RUN_LAUNCHER, ['--ipc', chain.ipcPath, '--', binary]);
      extra.push(hooked);
      await hooked.waitFor(/^ready$/m, 20_000, 'stdout');
      assert.deepEqual(await hooked.stop(signal), { code: 7, signal: null }, hooked.stderr);
      assert.equal(hooked.stdout, `ready\ngot ${signal === 'SIGINT' ? 2 : 15}\n`);
    }
  });

  it('curl --socks5-hostname reaches a publication; a name outside the zone is refused', async function () {
    const url = `http://${chain.host('web')}:${webPort}/page.txt`;
    const r = await run('curl', ['-sS', '--max-time', '20', '--socks5-hostname', `127.0.0.1:${socksPort}`, url]);
    assert.equal(r.stdout, page, r.stderr);
    const wrong = await run('curl', [
      '-sS',
      '--max-time',
      '20',
      '--socks5-hostname',
      `127.0.0.1:${socksPort}`,
      'http://example.invalid/',
    ]);
    assert.notEqual(wrong.code, 0);
    assert.equal(wrong.stdout, '');
    await chain.redirector.waitFor(
      /SOCKS5: refused example\.invalid:80: example\.invalid is not a pseudo name under underpass\.internal/,
    );
    // In the zone but no publication, and a publication on a port it is not published on.
    const socks = (target: string): ReturnType<typeof run> =>
      run('curl', ['-sS', '--max-time', '20', '--socks5-hostname', `127.0.0.1:${socksPort}`, `http://${target}/`]);
    const unknown = await socks('nothing.default.underpass.internal:80');
    assert.notEqual(unknown.code, 0);
    await chain.redirector.waitFor(
      /SOCKS5: refused nothing\.default\.underpass\.internal:80: [^\n]*is not a publication/,
    );
    const wrongPort = await socks(`${chain.host('web')}:1`);
    assert.notEqual(wrongPort.code, 0);
    await chain.redirector.waitFor(
      new RegExp(`SOCKS5: refused [^\\n]*:1: [^\\n]*is published on port ${webPort}, not 1`),
    );
  });

  it('curl -x reaches a publication with CONNECT and with a plain request; outside the zone gets a 403', async function () {
    const url = `http://${chain.host('web')}:${webPort}/page.txt`;
    const proxy = `http://127.0.0.1:${httpPort}`;
    const tunnel = await run('curl', ['-sS', '--max-time', '20', '-p', '-x', proxy, url]);
    assert.equal(tunnel.stdout, page, tunnel.stderr);
    const plain = await run('curl', ['-sS', '--max-time', '20', '-x', proxy, url]);
    assert.equal(plain.stdout, page, plain.stderr);
    const wrong = await run('curl', ['-sS', '--max-time', '20', '-p', '-x', proxy, 'http://example.invalid/']);
    assert.notEqual(wrong.code, 0);
    assert.match(wrong.stderr, /403/);
    const wrongPort = await run('curl', [
      '-sS',
      '--max-time',
      '20',
      '-p',
      '-x',
      proxy,
      `http://${chain.host('web')}:1/`,
    ]);
    assert.match(wrongPort.stderr, /502/);
    const wrongPlain = await run('curl', ['-sS', '--max-time', '20', '-x', proxy, 'http://example.invalid/']);
    assert.match(wrongPlain.stdout, /^underpass: example\.invalid is not a pseudo name under underpass\.internal/);
  });

  it('garbage at the SOCKS5, HTTP and DNS listeners costs only its sender; the redirector keeps serving', async function () {
    const hostile = `import socket, struct
def send(port, data, kind=socket.SOCK_STREAM, host='127.0.0.1'):
    s = socket.socket(socket.AF_INET, kind); s.settimeout(5)
    try:
        s.connect((host, port)); s.sendall(data) if kind == socket.SOCK_STREAM else s.send(data)
        try: s.recv(100)
        except (socket.timeout, ConnectionError): pass
    except ConnectionError: pass
    s.close()
send(${socksPort}, bytes(range(256)) * 4)                     # not SOCKS at all
send(${socksPort}, b'\\x05\\x01\\x00\\x05\\x09\\x00\\x03')         # a greeting, then an unknown command
send(${socksPort}, b'\\x05\\x01\\x00\\x05\\x01\\x00\\x07\\x01\\x02')  # an unknown address type
send(${httpPort}, b'CONNECT \\x00\\xff HTTP/1.1\\r\\n\\r\\n')
send(${httpPort}, b'\\x16\\x03\\x01' + bytes(500))              # a TLS hello at a plain HTTP proxy
send(${httpPort}, b'GET ftp://x/ HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')
${
  process.getuid?.() === 0
    ? `send(53, struct.pack('!H', 65535) + bytes(100), host='${responder}')  # DNS over TCP: an oversized length
send(53, bytes(range(40)), socket.SOCK_DGRAM, '${responder}')`
    : ''
}
print('sent')`;
    const r = await run(PYTHON, ['-c', hostile]);
    assert.equal(r.stdout.trim(), 'sent', r.stderr);
    assert.equal(chain.redirector.child.exitCode, null, 'the redirector still runs');
    const url = `http://${chain.host('web')}:${webPort}/page.txt`;
    const socks = await run('curl', ['-sS', '--max-time', '20', '--socks5-hostname', `127.0.0.1:${socksPort}`, url]);
    assert.equal(socks.stdout, page, socks.stderr);
    const http = await run('curl', ['-sS', '--max-time', '20', '-p', '-x', `http://127.0.0.1:${httpPort}`, url]);
    assert.equal(http.stdout, page, http.stderr);
  });

  it("another user's connection to the SOCKS5 and HTTP listeners and a forward port is refused; its own user's gets through", async function () {
    if (process.getuid?.() !== 0) this.skip(); // needs root to run a process as another user
    const url = `http://${chain.host('web')}:${webPort}/page.txt`;
    const nobody = (await run('id', ['-u', 'nobody'])).stdout.trim();
    const other = await run('runuser', [
      '-u',
      'nobody',
      '--',
      'curl',
      '-sS',
      '--max-time',
      '20',
      '--socks5-hostname',
      `127.0.0.1:${socksPort}`,
      url,
    ]);
    assert.notEqual(other.code, 0);
    assert.equal(other.stdout, '');
    await chain.redirector.waitFor(
      new RegExp(
        `refused a connection to 127\\.0\\.0\\.1:${socksPort} from 127\\.0\\.0\\.1:\\d+: its socket belongs to uid ${nobody}`,
      ),
    );
    const same = await run('curl', ['-sS', '--max-time', '20', '--socks5-hostname', `127.0.0.1:${socksPort}`, url]);
    assert.equal(same.stdout, page, same.stderr);

    // The HTTP proxy and a forward port are loopback listeners with the same check.
    const otherHttp = await run('runuser', [
      '-u',
      'nobody',
      '--',
      'curl',
      '-sS',
      '--max-time',
      '20',
      '-x',
      `http://127.0.0.1:${httpPort}`,
      url,
    ]);
    assert.notEqual(otherHttp.code, 0);
    assert.equal(otherHttp.stdout, '');
    await chain.redirector.waitFor(
      new RegExp(`refused a connection to 127\\.0\\.0\\.1:${httpPort} from [^\\n]*uid ${nobody}`),
    );
    const local = await freePort();
    const forward = new Program('forward', process.execPath, [
      UNDERPASS,
      'forward',
      String(local),
      `${chain.host('web')}:${webPort}`,
      '--ipc',
      chain.ipcPath,
    ]);
    extra.push(forward);
    await forward.waitFor(/forwarding /);
    const otherForward = await run('runuser', [
      '-u',
      'nobody',
      '--',
      'curl',
      '-sS',
      '--max-time',
      '20',
      `http://127.0.0.1:${local}/page.txt`,
    ]);
    assert.notEqual(otherForward.code, 0);
    await forward.waitFor(new RegExp(`refused a connection to 127\\.0\\.0\\.1:${local} from [^\\n]*uid ${nobody}`));
    const sameForward = await run('curl', ['-sS', '--max-time', '20', `http://127.0.0.1:${local}/page.txt`]);
    assert.equal(sameForward.stdout, page, sameForward.stderr);
    assert.deepEqual(await forward.stop('SIGTERM'), { code: 0, signal: null });
  });

  it('underpass forward carries psql to a real PostgreSQL, and stops with status 0', async function () {
    const local = await freePort();
    const forward = new Program('forward', process.execPath, [
      UNDERPASS,
      'forward',
      String(local),
      `${chain.host('pg')}:${pgPort}`,
      '--ipc',
      chain.ipcPath,
    ]);
    extra.push(forward);
    await forward.waitFor(
      new RegExp(`forwarding 127\\.0\\.0\\.1:${local} to ${chain.host('pg').replace(/\./g, '\\.')}:${pgPort}`),
    );
    for (let i = 0; i < 3; i++) {
      const r = await run('psql', [
        '-h',
        '127.0.0.1',
        '-p',
        String(local),
        '-U',
        'postgres',
        '-tAc',
        `select ${i} + 40`,
      ]);
      assert.equal(r.stdout.trim(), String(i + 40), r.stderr);
    }
    forward.child.kill('SIGINT');
    assert.deepEqual(await forward.exited, { code: 0, signal: null });
  });

  it('underpass forward keeps working across a restart of the redirector (pseudo addresses are kept)', async function () {
    const local = await freePort();
    const forward = new Program('forward', process.execPath, [
      UNDERPASS,
      'forward',
      String(local),
      `${chain.host('echo')}:${echoPort}`,
      '--ipc',
      chain.ipcPath,
    ]);
    extra.push(forward);
    await forward.waitFor(/forwarding /);
    const line = (text: string): Promise<{ stdout: string; stderr: string }> =>
      run(PYTHON, [
        '-c',
        `import socket
s = socket.create_connection(('127.0.0.1', ${local}), timeout=20); s.sendall(b'${text}\\n'); print(s.makefile().readline().strip())`,
      ]);
    assert.equal((await line('before')).stdout.trim(), 'BEFORE');
    await chain.redirector.stop();
    await chain.startRedirector();
    const after = await line('after');
    assert.equal(after.stdout.trim(), 'AFTER', after.stderr + forward.stderr);
    assert.deepEqual(await forward.stop('SIGTERM'), { code: 0, signal: null });
  });

  it('underpass forward says in one line: unknown name, wrong port, port in use, no redirector', async function () {
    const local = await freePort();
    const forward = (args: string[]): ReturnType<typeof run> => run(process.execPath, [UNDERPASS, 'forward', ...args]);
    const lastLine = (r: { stderr: string }): string => r.stderr.trim().split('\n').pop()!;
    const unknown = await forward([
      String(local),
      `nothing.default.underpass.internal:${pgPort}`,
      '--ipc',
      chain.ipcPath,
    ]);
    assert.equal(unknown.code, 1);
    assert.match(lastLine(unknown), /^underpass forward: nothing\.default\.underpass\.internal: [^\n]+$/);
    const wrongPort = await forward([String(local), `${chain.host('pg')}:1`, '--ipc', chain.ipcPath]);
    assert.equal(wrongPort.code, 1);
    assert.match(lastLine(wrongPort), /^underpass forward: [^\n]*is not published on port 1$/);
    const holder = net.createServer();
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
    const held = (holder.address() as net.AddressInfo).port;
    const inUse = await forward([`127.0.0.1:${held}`, `${chain.host('pg')}:${pgPort}`, '--ipc', chain.ipcPath]);
    assert.equal(inUse.code, 1);
    assert.match(
      lastLine(inUse),
      new RegExp(
        `^underpass forward: cannot listen on 127\\.0\\.0\\.1:${held} for the forward \\(another program holds it\\): choose another port$`,
      ),
    );
    holder.close();
    const missing = path.join(dir, 'nobody-here.sock');
    const none = await forward([String(local), `${chain.host('pg')}:${pgPort}`, '--ipc', missing]);
    assert.equal(none.code, 1);
    assert.equal(
      none.stderr.trim(),
      `underpass forward: no redirector at ${missing}: start one with 'underpass redirector ... --ipc ${missing}' or pass --ipc PATH of a running one`,
    );
  });
});
