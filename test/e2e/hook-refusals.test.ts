/**
 * Issue 12: every refusal the hook turns into an error code (an unknown name's EAI_NONAME, a connect to a
 * port that is not published, refused) reaches the user as one line on the app's stderr, once per cause
 * however often the app retries, and the redirector logs it.
 */
import assert from 'node:assert/strict';
import { Chain, PYTHON, Program, freePort, lineEchoServer } from '../harness';

describe('refusals the hook turns into error codes (issue 12)', function () {
  let chain: Chain;
  let echo: Program;
  let port = 0;

  before(async function () {
    port = await freePort();
    echo = lineEchoServer(port);
    chain = await new Chain([`echo=127.0.0.1:${port}`]).start();
  });

  after(async function () {
    await chain?.stop();
    await echo?.stop();
  });

  it('an unknown name: one line on stderr for three lookups, and a line in the redirector log', async function () {
    const name = `nosuch.default.${chain.host('echo').split('.').slice(2).join('.')}`;
    const script = `import socket
for _ in range(3):
    try:
        socket.getaddrinfo('${name}', 80)
    except socket.gaierror as error:
        print(error.errno)`;
    const r = await chain.hookRun([PYTHON, '-c', script], { timeoutMs: 30_000 });
    assert.equal(r.code, 0, r.stderr);
    // EAI_NONAME as Python reports glibc's code.
    assert.equal(r.stdout, '-2\n'.repeat(3), r.stderr);
    const lines = r.stderr.split('\n').filter((line) => line.includes('nosuch'));
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0]!, /underpass ls/);
    await chain.redirector.waitFor(/refused a hook's request \(NOT_FOUND\).*nosuch/);
  });

  it('a connect to a port the publication does not have: one line for three refused connects', async function () {
    const host = chain.host('echo');
    const script = `import socket
for _ in range(3):
    try:
        socket.create_connection(('${host}', ${port + 1}))
    except ConnectionRefusedError:
        print('refused')`;
    const r = await chain.hookRun([PYTHON, '-c', script], { timeoutMs: 30_000 });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'refused\n'.repeat(3), r.stderr);
    const lines = r.stderr.split('\n').filter((line) => line.includes(`port ${port + 1}`));
    assert.equal(lines.length, 1, `${r.stderr}\n---\n${chain.redirector.stderr.slice(-1500)}`);
    await chain.redirector.waitFor(new RegExp(`refused a hook's request \\(REFUSED\\).*port ${port + 1}`));
  });
});
