/**
 * Bad input costs only the one who sent it: wrong tokens, unreachable servers, wrong flags, and garbage
 * on the server's port each get one clear line (and a non-zero exit for a CLI), while the sessions that
 * already run keep working.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';
import selfsigned from 'selfsigned';
import { type Chain, EchoChain, freePort, Program, PYTHON, run, UNDERPASS } from '../harness';

/** One line, no stack trace. */
function assertOneLine(stderr: string, pattern: RegExp): void {
  const lines = stderr.trim().split('\n');
  assert.equal(lines.length, 1, `expected one line, got:\n${stderr}`);
  assert.match(lines[0]!, pattern);
  assert.doesNotMatch(stderr, /\n\s+at /);
}

describe('bad input: one clear line, nothing else disturbed', function () {
  const echoChain = new EchoChain();
  let chain: Chain;
  let echoPort: number;
  const assertChainWorks = (): Promise<void> => echoChain.assertTunnelWorks();

  before(async function () {
    await echoChain.start();
    chain = echoChain.chain;
    echoPort = echoChain.port;
  });

  after(async function () {
    await echoChain.stop();
  });

  it('a wrong token: the proxy and the redirector say so in one line and exit non-zero', async function () {
    const proxy = await run(process.execPath, [
      UNDERPASS,
      'proxy',
      '--server',
      `127.0.0.1:${chain.serverPort}`,
      '--ca',
      chain.ca,
      '--token',
      'wrong',
      '--publish',
      `x=127.0.0.1:${echoPort}`,
    ]);
    assert.notEqual(proxy.code, 0);
    assertOneLine(proxy.stderr, /^underpass proxy: the server rejected the token/);
    const redirector = await run(process.execPath, [
      UNDERPASS,
      'redirector',
      '--server',
      `127.0.0.1:${chain.serverPort}`,
      '--ca',
      chain.ca,
      '--token',
      'wrong',
      '--ipc',
      `${chain.dir}/other.sock`,
    ]);
    assert.notEqual(redirector.code, 0);
    assertOneLine(redirector.stderr, /token/);
  });

  it('an unreachable server, a wrong CA, a bad flag, a bad --publish: one line each', async function () {
    const closed = await freePort();
    const unreachable = await run(process.execPath, [
      UNDERPASS,
      'redirector',
      '--server',
      `127.0.0.1:${closed}`,
      '--ca',
      chain.ca,
      '--token',
      chain.token,
      '--ipc',
      `${chain.dir}/x.sock`,
    ]);
    assert.notEqual(unreachable.code, 0);
    assertOneLine(unreachable.stderr, /cannot reach the tunnel server at 127\.0\.0\.1:\d+ \(ECONNREFUSED\)/);

    const otherCa = `${chain.dir}/other-ca.pem`;
    fs.writeFileSync(
      otherCa,
      (await selfsigned.generate([{ name: 'commonName', value: '127.0.0.1' }], { keyType: 'ec' })).cert,
    );
    const wrongCa = await run(process.execPath, [
      UNDERPASS,
      'proxy',
      '--server',
      `127.0.0.1:${chain.serverPort}`,
      '--ca',
      otherCa,
      '--token',
      chain.token,
      '--publish',
      `x=127.0.0.1:1`,
    ]);
    assert.notEqual(wrongCa.code, 0);
    assertOneLine(wrongCa.stderr, /TLS to 127\.0\.0\.1:\d+ failed .*--ca/);

    const badCa = await run(process.execPath, [
      UNDERPASS,
      'proxy',
      '--server',
      `127.0.0.1:${chain.serverPort}`,
      '--ca',
      `${chain.dir}/missing.pem`,
      '--token',
      chain.token,
      '--publish',
      `x=127.0.0.1:1`,
    ]);
    assertOneLine(badCa.stderr, /cannot read --ca/);

    const flag = await run(process.execPath, [UNDERPASS, 'server', '--data-dir', `${chain.dir}/unused`, '--bogus']);
    assert.notEqual(flag.code, 0);
    assertOneLine(flag.stderr, /^underpass: unknown option '--bogus'/);
    const missing = await run(process.execPath, [UNDERPASS, 'server']);
    assertOneLine(missing.stderr, /^underpass: required option '--data-dir <dir>' not specified/);

    const publish = await run(process.execPath, [
      UNDERPASS,
      'proxy',
      '--server',
      `127.0.0.1:${chain.serverPort}`,
      '--ca',
      chain.ca,
      '--token',
      chain.token,
      '--publish',
      'no-port',
    ]);
    assert.notEqual(publish.code, 0);
    assertOneLine(publish.stderr, /--publish 'no-port'.*NAME=HOST:PORT/);
  });

  it('a target that refuses: the client gets ECONNREFUSED and the proxy says why in one line', async function () {
    const deadPort = await freePort();
    const proxy = chain.adopt(
      new Program('proxy-dead', process.execPath, [
        UNDERPASS,
        'proxy',
        ...chain.endpointArgs(),
        '--json',
        '--publish',
        `dead=127.0.0.1:${deadPort}`,
      ]),
    );
    const published = JSON.parse((await proxy.waitFor(/^(\{"event":"published".*\})$/m, 20_000, 'stdout'))[1]!) as {
      host: string;
    };
    const r = await chain.hookRun([
      PYTHON,
      '-c',
      `import socket
try:
    socket.create_connection(('${published.host}', ${deadPort})); print('connected')
except ConnectionRefusedError: print('refused')`,
    ]);
    assert.equal(r.stdout.trim(), 'refused', r.stderr);
    await proxy.waitFor(new RegExp(`cannot connect to 127\\.0\\.0\\.1:${deadPort} \\(ECONNREFUSED\\)`));
    await assertChainWorks();
  });

  it("hostile IPC peers (node-ipc's reserved event names, garbage, oversized, unterminated) cost only themselves", async function () {
    const r = await run('python3', [
      '-c',
      `import socket, json
def send(raw, read=True):
    s = socket.socket(socket.AF_UNIX); s.connect('${chain.ipcPath}'); s.settimeout(5)
    try:
        s.sendall(raw)
        return s.recv(4096) if read else b''
    except (ConnectionResetError, BrokenPipeError): return b''
    finally: s.close()
for t in ['connect', 'close', 'error', 'data', 'start', 'socket.disconnected', 'no-such-event']:
    send(json.dumps({'type': t, 'data': {'x': 1}}).encode() + b'\\f', read=False)
print(send(b'{"type":"resolve","data":{"name":42}}\\f').decode().strip('\\f'))
send(b'not json at all\\f', read=False)
print(send(b'x' * 200000, read=True) == b'')
send(b'{"type":"resolve"', read=False)
print(send(json.dumps({'type': 'resolve', 'data': {'name': '${chain.host('echo')}'}}).encode() + b'\\f').decode().strip('\\f'))
# A message cut inside a character (é is two bytes in UTF-8), its halves a moment apart.
import time
s = socket.socket(socket.AF_UNIX); s.connect('${chain.ipcPath}'); s.settimeout(5)
raw = json.dumps({'type': 'resolve', 'data': {'name': 'caf\u00e9.default.underpass.internal'}}, ensure_ascii=False).encode() + b'\\f'
cut = raw.index('\u00e9'.encode()) + 1
s.sendall(raw[:cut]); time.sleep(0.2); s.sendall(raw[cut:])
print(s.recv(4096).decode().strip('\\f')); s.close()`,
    ]);
    const lines = r.stdout.trim().split('\n');
    assert.equal(lines.length, 4, r.stdout + r.stderr);
    assert.deepEqual(JSON.parse(lines[0]!), {
      type: 'reply',
      data: { ok: false, code: 'BAD_REQUEST', message: 'malformed resolve request' },
    });
    assert.equal(lines[1], 'True', 'an oversized message is dropped without a reply');
    assert.equal((JSON.parse(lines[2]!) as { data: { ok: boolean } }).data.ok, true);
    const cut = JSON.parse(lines[3]!) as { data: { ok: boolean; message?: string } };
    assert.match(cut.data.message ?? '', /café/, `a character cut between two reads arrives whole: ${lines[3]}`);
    assert.equal(chain.redirector.child.exitCode, null, 'the redirector is still running');
    await assertChainWorks();
  });

  it('garbage, a stalled TLS handshake and a malformed control stream cost only their sender', async function () {
    // Random bytes where a TLS ClientHello belongs.
    await new Promise<void>((resolve) => {
      const s = net.connect(chain.serverPort, '127.0.0.1', () => s.end(crypto.randomBytes(4096)));
      s.on('error', () => resolve());
      s.on('close', () => resolve());
    });
    // A TLS handshake that starts and never finishes, held open while the chain is used.
    const stalled = net.connect(chain.serverPort, '127.0.0.1', () => stalled.write(Buffer.from('160301', 'hex')));
    stalled.on('error', () => undefined);
    // A valid token, then a control stream that sends nonsense.
    const session = http2.connect(`https://127.0.0.1:${chain.serverPort}`, { ca: fs.readFileSync(chain.ca) });
    session.on('error', () => undefined);
    const control = session.request({
      ':method': 'POST',
      ':path': '/v1/control',
      authorization: `Bearer ${chain.token}`,
    });
    control.on('error', () => undefined);
    const closed = new Promise<number>((resolve) => control.once('close', () => resolve(control.rstCode ?? -1)));
    control.write('{"type":"publish","name":"x","port":99999}\n');
    assert.equal(await closed, http2.constants.NGHTTP2_PROTOCOL_ERROR);
    // A TLS client that is not HTTP/2.
    await new Promise<void>((resolve) => {
      const t = tls.connect(
        { port: chain.serverPort, host: '127.0.0.1', ca: fs.readFileSync(chain.ca), ALPNProtocols: ['http/1.1'] },
        () => t.end('GET / HTTP/1.1\r\n\r\n'),
      );
      t.on('error', () => resolve());
      t.on('close', () => resolve());
    });
    await assertChainWorks();
    session.destroy();
    stalled.destroy();
    assert.equal(chain.server.child.exitCode, null, 'the server is still running');
  });
});
