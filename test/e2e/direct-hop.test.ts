/**
 * Issue 16, the direct hop (seed figure 8): a proxy host and a client host, each a network namespace
 * this test builds, both allowed out only to the tunnel server (on our side), and joined to each other by
 * a veth pair of their own. The redirector's tunnels go straight to the proxy's direct listener while it
 * is reachable — the server's status page then counts no tunnel and no byte for the publication —,
 * through the server while an nft rule on the client host drops the direct port, and straight again
 * once the rule is gone and the retry interval passed; every switch is in the redirector's log.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Chain, freePort, inNetns, Program, PYTHON, run, tmpDir, UNDERPASS } from '../harness';
import { ClientHost, HostLink } from '../netns';

const DIRECT_PORT = 17443;
const SOCKS = '127.0.0.1:1080';

interface PublicationStatus {
  host: string;
  tunnelsOpened: number;
  bytesUp: number;
  bytesDown: number;
}

describe('direct hop: straight to the proxy when it can be reached, the relay otherwise', function () {
  this.timeout(120_000);
  let client: ClientHost;
  let proxyHost: ClientHost;
  let link: HostLink;
  let web: Program;
  let chain: Chain;
  let dir: string;
  let sha: string;
  let metricsPort: number;

  /** What the server's status page says of the publication. */
  async function serverCounts(): Promise<PublicationStatus> {
    const body = (await (await fetch(`http://127.0.0.1:${metricsPort}/status.json`)).json()) as {
      publications: PublicationStatus[];
    };
    const found = body.publications.find((p) => p.host === chain.host('web'));
    assert.ok(found, JSON.stringify(body));
    return found;
  }

  /** curl on the client host through the redirector's SOCKS5 listener: the file's SHA-256. */
  async function fetchBig(): Promise<string> {
    const [cmd, args] = inNetns(client.name, 'curl', [
      '-sS',
      '--fail',
      '--max-time',
      '30',
      '--socks5-hostname',
      SOCKS,
      `http://${chain.host('web')}:${webPort()}/big.bin`,
    ]);
    const r = await run(cmd, args);
    assert.equal(r.code, 0, r.stderr);
    return crypto.createHash('sha256').update(r.stdoutBuffer).digest('hex');
  }

  /** Where `underpass status` says the publication's tunnels go. */
  async function via(): Promise<string | undefined> {
    const [cmd, args] = inNetns(client.name, process.execPath, [UNDERPASS, 'status', '--ipc', chain.ipcPath, '--json']);
    const r = await run(cmd, args);
    const status = JSON.parse(r.stdout) as { listeners: { host: string; via?: string }[] };
    return status.listeners.find((l) => l.host === chain.host('web'))?.via;
  }

  const webPort = (): string => chain.published.get('web')!.target.split(':')[1]!;

  before(async function () {
    dir = tmpDir('direct');
    const big = crypto.randomBytes(8 * 1024 * 1024);
    fs.writeFileSync(path.join(dir, 'big.bin'), big);
    sha = crypto.createHash('sha256').update(big).digest('hex');
    // Larger than all a tunnel holds in flight (a 16 MiB stream window and the sockets' buffers).
    fs.writeFileSync(path.join(dir, 'slow.bin'), Buffer.alloc(64 * 1024 * 1024));
    const serverPort = await freePort();
    metricsPort = await freePort();
    client = ClientHost.create([serverPort]);
    proxyHost = ClientHost.create([serverPort], { server: client.outer });
    link = new HostLink(proxyHost, client);
    client.allowTo(link.aAddress, DIRECT_PORT);
    const port = String(await freePort());
    const [cmd, args] = inNetns(proxyHost.name, PYTHON, ['-m', 'http.server', port, '--bind', '127.0.0.1']);
    web = new Program('web', cmd, [...args, '--directory', dir]);
    await web.waitFor(/Serving HTTP/);
    chain = new Chain([`web=127.0.0.1:${port}`], {
      serverHost: client.outer,
      serverArgs: ['--metrics', `127.0.0.1:${metricsPort}`],
      clientNetns: client.name,
      proxyNetns: proxyHost.name,
      proxyArgs: ['--direct-listen', `${link.aAddress}:${DIRECT_PORT}`],
      // --keepalive 1: a direct session whose path dies is found out within two seconds.
      redirectorArgs: ['--socks', SOCKS, '--direct-retry', '0.5', '--keepalive', '1'],
    });
    chain.serverPort = serverPort;
    await chain.start();
  });

  after(async function () {
    await chain?.stop();
    await web?.stop();
    proxyHost?.destroy();
    client?.destroy();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('the client host reaches the proxy host only over their own link', async function () {
    const probe = (address: string): Promise<{ stdout: string }> => {
      const [cmd, args] = inNetns(client.name, PYTHON, [
        '-c',
        `import socket
try:
    socket.create_connection(('${address}', ${DIRECT_PORT}), timeout=3); print('open')
except OSError: print('blocked')`,
      ]);
      return run(cmd, args);
    };
    assert.equal((await probe(link.aAddress)).stdout.trim(), 'open');
    assert.equal((await probe(proxyHost.inner)).stdout.trim(), 'blocked');
  });

  it('a hooked client and curl go direct: the server carries no tunnel and no byte of them', async function () {
    const hooked = await chain.hookRun([
      PYTHON,
      '-c',
      `import urllib.request
print(urllib.request.urlopen('http://${chain.host('web')}:${webPort()}/', timeout=20).status)`,
    ]);
    assert.equal(hooked.stdout.trim(), '200', hooked.stderr);
    assert.equal(await fetchBig(), sha);
    await chain.redirector.waitFor(new RegExp(`${chain.host('web')}: direct hop to ${link.aAddress}:${DIRECT_PORT}`));
    const counts = await serverCounts();
    assert.deepEqual([counts.tunnelsOpened, counts.bytesUp, counts.bytesDown], [0, 0, 0]);
    assert.equal(await via(), 'direct');
  });

  it('relays while an nft rule drops the direct port, and logs the switch', async function () {
    client.block(link.aAddress, DIRECT_PORT);
    assert.equal(await fetchBig(), sha);
    await chain.redirector.waitFor(new RegExp(`${chain.host('web')}: direct → relay`));
    const counts = await serverCounts();
    assert.equal(counts.tunnelsOpened, 1);
    assert.ok(counts.bytesDown >= 8 * 1024 * 1024, JSON.stringify(counts));
    assert.equal(await via(), 'relay');
  });

  it('goes direct again once the rule is gone and the retry interval passed', async function () {
    const before = await serverCounts();
    client.unblock();
    await chain.redirector.waitFor(new RegExp(`${chain.host('web')}: relay → direct`), 60_000);
    assert.equal(await fetchBig(), sha);
    const after = await serverCounts();
    assert.equal(after.tunnelsOpened, before.tunnelsOpened);
    assert.equal(after.bytesDown, before.bytesDown);
  });

  it('a direct tunnel whose path dies is reset, not moved: the app sees its connection fail', async function () {
    const before = await serverCounts();
    // A slow download, so the tunnel is still open when the path goes.
    const [cmd, args] = inNetns(client.name, 'curl', [
      '-sS',
      '-o',
      '/dev/null',
      '--limit-rate',
      '200K',
      '--max-time',
      '60',
      '--socks5-hostname',
      SOCKS,
      `http://${chain.host('web')}:${webPort()}/slow.bin`,
    ]);
    const download = run(cmd, args);
    await new Promise((r) => setTimeout(r, 1500));
    client.block(link.aAddress, DIRECT_PORT);
    try {
      const r = await download;
      assert.notEqual(r.code, 0, 'the download finished although its direct path was cut');
      assert.doesNotMatch(r.stderr, /timed out/i);
      await chain.redirector.waitFor(new RegExp(`${chain.host('web')}: the direct session stopped answering`));
    } finally {
      client.unblock();
    }
    assert.equal((await serverCounts()).tunnelsOpened, before.tunnelsOpened);
  });
});
