/**
 * `underpass status` against a running redirector: the session (route, round trip), the listener a
 * hooked client's lookup opened, and a refusal it met, as a person reads them and as JSON.
 */
import assert from 'node:assert/strict';
import { StatusReply } from '../../protocol/ipc';
import { Chain, freePort, lineEchoServer, Program, PYTHON, run, UNDERPASS } from '../harness';

describe('underpass status', function () {
  let chain: Chain;
  let echo: Program;
  let echoPort: number;

  before(async function () {
    echoPort = await freePort();
    echo = lineEchoServer(echoPort);
    chain = await new Chain([`echo=127.0.0.1:${echoPort}`]).start();
  });

  after(async function () {
    await chain.stop();
    await echo.stop();
  });

  it("shows the session, the listeners in use and the latest refusals; --json fits the IPC table's schema", async function () {
    const host = chain.host('echo');
    const missing = host.replace(/^echo\./, 'nosuch.');
    const client = await chain.hookRun([
      PYTHON,
      '-c',
      `import socket
s = socket.create_connection((${JSON.stringify(host)}, ${echoPort}))
s.sendall(b"hi\\n"); assert s.recv(10) == b"hi\\n"
try:
    socket.getaddrinfo(${JSON.stringify(missing)}, 80)
except socket.gaierror:
    print("refused")`,
    ]);
    assert.equal(client.code, 0, client.stderr);
    assert.match(client.stdout, /refused/);

    const text = await run(process.execPath, [UNDERPASS, 'status', '--ipc', chain.ipcPath]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, new RegExp(`^session    up to 127\\.0\\.0\\.1:${chain.serverPort} over TLS`, 'm'));
    assert.match(text.stdout, /round trip \d+\.\d ms, account default/);
    assert.match(
      text.stdout,
      new RegExp(`^  ${host.replaceAll('.', '\\.')}  127\\.\\d+\\.\\d+\\.\\d+:${echoPort}`, 'm'),
    );
    assert.match(text.stdout, new RegExp(`NOT_FOUND  .*${missing.replaceAll('.', '\\.')}`));

    const json = await run(process.execPath, [UNDERPASS, 'status', '--ipc', chain.ipcPath, '--json']);
    assert.equal(json.code, 0, json.stderr);
    const status = StatusReply.parse(JSON.parse(json.stdout));
    assert.equal(status.session.up, true);
    assert.ok(status.listeners.some((l) => l.host === host && l.port === echoPort));

    const none = await run(process.execPath, [UNDERPASS, 'status', '--ipc', `${chain.ipcPath}.absent`]);
    assert.notEqual(none.code, 0);
    assert.equal(none.stderr.trim().split('\n').length, 1, none.stderr);
    assert.match(none.stderr, /^underpass status: no redirector at /);
  });
});
