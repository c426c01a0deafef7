/**
 * Access: a tunnel needs a token whose account owns the publication, a grant from its owner, or the
 * publication's service key. A wrong key is refused in one line when the redirector starts. A
 * redirector's IPC endpoint and its listeners serve only its own user's processes (and root's).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort, HOOK_RUN, lineEchoServer, Program, PYTHON, run, tmpDir, UNDERPASS } from '../harness';

const ALICE = 'alice-token-0123456789';
const BOB = 'bob-token-0123456789abc';

describe('access: accounts, grants and service keys', function () {
  let dir: string;
  let serverPort: number;
  let echoPort: number;
  const programs: Program[] = [];
  let published: Map<string, { host: string; key: string }>;

  function start(label: string, args: string[]): Program {
    const p = new Program(label, process.execPath, args);
    programs.push(p);
    return p;
  }
  const endpoint = (token: string): string[] => [
    '--server',
    `127.0.0.1:${serverPort}`,
    '--ca',
    path.join(dir, 'data', 'tls', 'cert.pem'),
    '--token',
    token,
  ];

  /** Starts a redirector for bob and runs a client through it; returns the client's line. */
  async function bobReaches(
    host: string,
    extra: string[] = [],
  ): Promise<{ line: string; stderr: string; redirector: Program }> {
    const ipc = path.join(dir, `r${programs.length}.sock`);
    const redirector = start('redirector', [
      UNDERPASS,
      'redirector',
      ...endpoint(BOB),
      '--ipc',
      ipc,
      '--pseudo-net',
      `127.${230 + programs.length}.0.0/16`,
      ...extra,
    ]);
    await redirector.waitFor(/serving hooks on/);
    const r = await run(process.execPath, [
      HOOK_RUN,
      '--ipc',
      ipc,
      '--',
      PYTHON,
      '-c',
      `import socket
try:
    s = socket.create_connection(('${host}', ${echoPort})); s.sendall(b'in\\n'); print(s.recv(10).decode().strip())
except socket.gaierror: print('no such name')`,
    ]);
    return { line: r.stdout.trim(), stderr: r.stderr, redirector };
  }

  before(async function () {
    dir = tmpDir('access');
    serverPort = await freePort();
    echoPort = await freePort();
    programs.push(lineEchoServer(echoPort));
    fs.writeFileSync(
      path.join(dir, 'accounts.json'),
      JSON.stringify({ tokens: { alice: ALICE, bob: BOB }, grants: { 'alice/granted': ['bob'] } }),
    );
    const server = start('server', [
      UNDERPASS,
      'server',
      '--listen',
      `127.0.0.1:${serverPort}`,
      '--data-dir',
      path.join(dir, 'data'),
      '--accounts',
      path.join(dir, 'accounts.json'),
    ]);
    await server.waitFor(/listening on/);
    const proxy = start('proxy', [
      UNDERPASS,
      'proxy',
      ...endpoint(ALICE),
      '--json',
      '--publish',
      `private=127.0.0.1:${echoPort}`,
      '--publish',
      `granted=127.0.0.1:${echoPort}`,
    ]);
    await proxy.waitFor(/"name":"granted"/, 20_000, 'stdout');
    await proxy.waitFor(/"name":"private"/, 20_000, 'stdout');
    published = new Map(
      proxy.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { name: string; host: string; key: string })
        .map((p) => [p.name, p]),
    );
  });

  after(async function () {
    await Promise.all(programs.map((p) => p.stop()));
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("names publications under their owner's account", function () {
    assert.equal(published.get('private')!.host, 'private.alice.underpass.internal');
  });

  it("another account's publication: invisible without a grant or key, reachable with either", async function () {
    const denied = await bobReaches(published.get('private')!.host);
    assert.equal(denied.line, 'no such name', denied.stderr);
    // The refusal's reason reaches the app's stderr in one line (issue 12).
    assert.match(
      denied.stderr,
      /^hook-run: process \d+: \S+ belongs to another account: present its service key[^\n]*\n$/,
    );
    await denied.redirector.waitFor(
      /private\.alice\.underpass\.internal belongs to another account: present its service key/,
    );
    assert.equal((await bobReaches(published.get('granted')!.host)).line, 'in');
    const withKey = await bobReaches(published.get('private')!.host, [
      '--service-key',
      `${published.get('private')!.host}=${published.get('private')!.key}`,
    ]);
    assert.equal(withKey.line, 'in');
  });

  it("another user's process is refused at the redirector's IPC endpoint", async function () {
    if (process.getuid?.() !== 0) this.skip(); // needs root to run a process as another user
    const ipc = path.join(dir, 'xdg', 'underpass', 'redirector.sock');
    const redirector = start('redirector', [
      UNDERPASS,
      'redirector',
      ...endpoint(BOB),
      '--ipc',
      ipc,
      '--pseudo-net',
      '127.229.0.0/16',
    ]);
    await redirector.waitFor(/serving hooks on/);
    fs.chmodSync(dir, 0o755); // let the other user walk to the redirector's own 0700 directory
    const probe = `import socket
s = socket.socket(socket.AF_UNIX)
try:
    s.connect('${ipc}'); print('connected')
except PermissionError: print('refused')`;
    // The system interpreter: another user may not be able to run one under root's home.
    const other = await run('runuser', [
      '-u',
      'nobody',
      '--',
      fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : PYTHON,
      '-c',
      probe,
    ]);
    assert.equal(other.stdout.trim(), 'refused', other.stderr);
    const same = await run(PYTHON, ['-c', probe]);
    assert.equal(same.stdout.trim(), 'connected');
  });

  it("another user's process is reset at the redirector's listeners; its own user's gets through", async function () {
    if (process.getuid?.() !== 0) this.skip(); // needs root to run a process as another user
    const ipc = path.join(dir, 'listeners.sock');
    const redirector = start('redirector', [
      UNDERPASS,
      'redirector',
      ...endpoint(BOB),
      '--ipc',
      ipc,
      '--pseudo-net',
      '127.228.0.0/16',
    ]);
    await redirector.waitFor(/serving hooks on/);
    const host = published.get('granted')!.host;
    // A hooked client of the redirector's user resolves the name, which opens the listener.
    const hooked = await run(process.execPath, [
      HOOK_RUN,
      '--ipc',
      ipc,
      '--',
      PYTHON,
      '-c',
      `import socket
s = socket.create_connection(('${host}', ${echoPort}), timeout=20); s.sendall(b'in\\n'); print(s.recv(10).decode().strip(), s.getpeername()[0])`,
    ]);
    const [line, address] = hooked.stdout.trim().split(' ');
    assert.equal(line, 'in', hooked.stderr);
    // Unhooked, straight to the listener: the connect completes in the kernel, and the first bytes
    // usually leave before the redirector has checked who connects.
    const probe = `import socket
s = socket.create_connection(('${address}', ${echoPort}), timeout=20)
try:
    s.sendall(b'probe\\n'); print(s.recv(10).decode().strip() or 'closed')
except ConnectionError: print('reset')`;
    const nobody = (await run('id', ['-u', 'nobody'])).stdout.trim();
    const other = await run('runuser', [
      '-u',
      'nobody',
      '--',
      fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : PYTHON,
      '-c',
      probe,
    ]);
    assert.equal(other.stdout.trim(), 'reset', other.stderr);
    await redirector.waitFor(
      new RegExp(
        `refused a connection to ${address!.replace(/\./g, '\\.')}:${echoPort} from 127\\.0\\.0\\.1:\\d+: its socket belongs to uid ${nobody}, not to this redirector's user \\(uid 0\\) or root`,
      ),
    );
    assert.equal(redirector.stderr.match(/refused a connection/g)?.length, 1, redirector.stderr);
    // The same probe from the redirector's user: its first bytes waited in the kernel, none were lost.
    const same = await run(PYTHON, ['-c', probe]);
    assert.equal(same.stdout.trim(), 'probe', same.stderr);
  });

  it("another user's connection has its tunnel requested while it waits, but none of its bytes reach the target, and the target's connection is reset", async function () {
    if (process.getuid?.() !== 0) this.skip(); // needs root to run a process as another user
    // The target records what each of its connections received and whether it has closed.
    const seen: Array<{ bytes: number; closed: boolean }> = [];
    const target = net.createServer((socket) => {
      const record = { bytes: 0, closed: false };
      seen.push(record);
      socket.on('data', (d: Buffer) => {
        record.bytes += d.length;
        socket.write(d);
      });
      socket.on('error', () => undefined);
      socket.on('close', () => (record.closed = true));
    });
    const targetPort = await freePort();
    await new Promise<void>((resolve) => target.listen(targetPort, '127.0.0.1', resolve));
    try {
      const proxy = start('proxy', [
        UNDERPASS,
        'proxy',
        ...endpoint(ALICE),
        '--json',
        '--publish',
        `early=127.0.0.1:${targetPort}`,
      ]);
      const host = ((await proxy.waitFor(/"name":"early","host":"([^"]+)"/, 20_000, 'stdout')) as RegExpMatchArray)[1]!;
      const ipc = path.join(dir, 'early.sock');
      const redirector = start('redirector', [
        UNDERPASS,
        'redirector',
        ...endpoint(ALICE),
        '--ipc',
        ipc,
        '--pseudo-net',
        '127.226.0.0/16',
      ]);
      await redirector.waitFor(/serving hooks on/);
      const hooked = await run(process.execPath, [
        HOOK_RUN,
        '--ipc',
        ipc,
        '--',
        PYTHON,
        '-c',
        `import socket
s = socket.create_connection(('${host}', ${targetPort}), timeout=20); s.sendall(b'mine\\n'); print(s.recv(10).decode().strip(), s.getpeername()[0])`,
      ]);
      const [line, address] = hooked.stdout.trim().split(' ');
      assert.equal(line, 'mine', hooked.stderr);
      const other = await run('runuser', [
        '-u',
        'nobody',
        '--',
        fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : PYTHON,
        '-c',
        `import socket
s = socket.create_connection(('${address}', ${targetPort}), timeout=20)
try:
    s.sendall(b'probe\\n'); print(s.recv(10).decode().strip() or 'closed')
except ConnectionError: print('reset')`,
      ]);
      assert.equal(other.stdout.trim(), 'reset', other.stderr);
      await redirector.waitFor(/refused a connection/);
      for (let i = 0; i < 200 && !(seen.length === 2 && seen[1]!.closed); i++) await sleep(50);
      // The second connection is the refused one's early tunnel: opened, given nothing, and closed.
      assert.deepEqual(seen, [
        { bytes: 5, closed: seen[0]!.closed },
        { bytes: 0, closed: true },
      ]);
    } finally {
      target.close();
    }
  });

  it("a hooked client's connections are admitted by its claim, with no /proc check; an unhooked one's by the check", async function () {
    const ipc = path.join(dir, 'claims.sock');
    const redirector = new Program(
      'redirector',
      process.execPath,
      [UNDERPASS, 'redirector', ...endpoint(BOB), '--ipc', ipc, '--pseudo-net', '127.227.0.0/16'],
      { env: { UNDERPASS_LOG_LEVEL: 'debug' } },
    );
    programs.push(redirector);
    await redirector.waitFor(/serving hooks on/);
    const host = published.get('granted')!.host;
    // Every way the hook sees a connect begin: blocking connect(), non-blocking connect() (EINPROGRESS),
    // an AF_INET6 socket to the v4-mapped address, and sendto() with MSG_FASTOPEN. Each prints its source
    // port, which the redirector's log must show admitted by a claim.
    const hooked = await run(process.execPath, [
      HOOK_RUN,
      '--ipc',
      ipc,
      '--',
      PYTHON,
      '-c',
      `import select, socket
address = socket.gethostbyname('${host}')
def echo(s, line):
    s.setblocking(True); s.sendall(line); assert s.recv(100) == line
    return str(s.getsockname()[1])
ports = []
s = socket.create_connection((address, ${echoPort}), timeout=20); ports.append(echo(s, b'blocking\\n'))
n = socket.socket(); n.setblocking(False)
assert n.connect_ex((address, ${echoPort})) == 115  # EINPROGRESS
select.select([], [n], [], 20); ports.append(echo(n, b'non-blocking\\n'))
m = socket.socket(socket.AF_INET6); m.connect(('::ffff:' + address, ${echoPort})); ports.append(echo(m, b'mapped\\n'))
f = socket.socket(); f.sendto(b'fast open\\n', socket.MSG_FASTOPEN, (address, ${echoPort})); assert f.recv(100) == b'fast open\\n'; ports.append(str(f.getsockname()[1]))
print(address, *ports)`,
    ]);
    const [address, ...ports] = hooked.stdout.trim().split(' ');
    assert.equal(ports.length, 4, hooked.stderr + hooked.stdout);
    const at = `${address!.replace(/\./g, '\\.')}:${echoPort}`;
    for (const port of ports)
      await redirector.waitFor(new RegExp(`admitted 127\\.0\\.0\\.1:${port} to ${at} by claim`));
    assert.doesNotMatch(redirector.stderr, /by owner check/);
    // The same user's client without the hook claims nothing: it waits for the /proc check, and gets through.
    const unhooked = await run(PYTHON, [
      '-c',
      `import socket
s = socket.create_connection(('${address}', ${echoPort}), timeout=20); s.sendall(b'unhooked\\n'); print(s.recv(100).decode().strip(), s.getsockname()[1])`,
    ]);
    const [line, port] = unhooked.stdout.trim().split(' ');
    assert.equal(line, 'unhooked', unhooked.stderr);
    await redirector.waitFor(new RegExp(`admitted 127\\.0\\.0\\.1:${port} to ${at} by owner check`));
  });

  it('a wrong service key is refused in one line when the redirector starts', async function () {
    const host = published.get('private')!.host;
    const r = await run(process.execPath, [
      UNDERPASS,
      'redirector',
      ...endpoint(BOB),
      '--ipc',
      path.join(dir, 'wrong.sock'),
      '--service-key',
      `${host}=not-the-key-at-all`,
    ]);
    assert.notEqual(r.code, 0);
    // The error is the last line (after the log line saying how the session got out), with no stack.
    assert.equal(
      r.stderr.trim().split('\n').pop(),
      `underpass redirector: wrong service key for ${host}: ask its owner for the key the proxy printed`,
    );
    assert.doesNotMatch(r.stderr, /\n\s+at /);
  });
});
