/**
 * The server's `--metrics` port, read by real clients: curl scrapes `/metrics` twice during a transfer
 * (the byte counters grow while it runs), and headless Chromium loads the status page, which shows the
 * publication and its live tunnel count. The page's screenshot is kept in dist/test-artifacts/.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Chain, freePort, HOOK_RUN_LAUNCHER, lineEchoServer, Program, PYTHON, ROOT, run, which } from '../harness';

const CHROMIUM = '/usr/bin/chromium';
/** Large enough that, at curl's 16 MB/s, the relay's buffers (tens of MB) cannot hold the rest. */
const BIG = 160 * 1024 * 1024;

function counter(text: string, name: string, labels: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(labels));
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
}

describe('metrics and the status page', function () {
  let chain: Chain;
  let metricsPort: number;
  let proxyMetricsPort: number;
  let redirectorMetricsPort: number;
  let webPort: number;
  let echoPort: number;
  const programs: Program[] = [];

  before(async function () {
    if (which('curl') === null) this.skip();
    metricsPort = await freePort();
    proxyMetricsPort = await freePort();
    redirectorMetricsPort = await freePort();
    webPort = await freePort();
    echoPort = await freePort();
    chain = new Chain([`web=127.0.0.1:${webPort}`, `echo=127.0.0.1:${echoPort}`], {
      serverArgs: ['--metrics', `127.0.0.1:${metricsPort}`],
      proxyArgs: ['--metrics', `127.0.0.1:${proxyMetricsPort}`],
      redirectorArgs: ['--metrics', `127.0.0.1:${redirectorMetricsPort}`, '--metrics-per-publication'],
    });
    fs.mkdirSync(chain.dir, { recursive: true });
    // Sparse: 160 MB of zeros that cost no disk.
    fs.closeSync(fs.openSync(path.join(chain.dir, 'big'), 'w'));
    fs.truncateSync(path.join(chain.dir, 'big'), BIG);
    programs.push(
      new Program('web', PYTHON, ['-m', 'http.server', '--bind', '127.0.0.1', String(webPort)], { cwd: chain.dir }),
      lineEchoServer(echoPort),
    );
    await chain.start();
  });

  after(async function () {
    await Promise.all(programs.map((p) => p.stop()));
    await chain?.stop();
  });

  async function scrape(port = metricsPort): Promise<string> {
    const got = await run('curl', ['-sS', '--max-time', '10', `http://127.0.0.1:${port}/metrics`]);
    assert.equal(got.code, 0, got.stderr);
    return got.stdout;
  }

  it('curl of /metrics during a transfer shows the byte counter growing between two reads', async function () {
    const before = await scrape();
    assert.match(before, /^underpass_build_info\{version="[^"]+",node="v[^"]+",program="server"\} 1$/m);
    assert.match(before, /^underpass_publications_online 2$/m);
    // A download slow enough (16 MB/s) to be read in the middle of.
    const download = chain.hookRun(
      ['curl', '-sS', '-o', '/dev/null', '--limit-rate', '16M', `http://${chain.host('web')}:${webPort}/big`],
      { timeoutMs: 60_000 },
    );
    let first = 0;
    for (let i = 0; i < 100 && first === 0; i++) {
      await new Promise((r) => setTimeout(r, 100));
      first = counter(await scrape(), 'underpass_tunnel_bytes_total', 'direction="downstream"');
    }
    await new Promise((r) => setTimeout(r, 800));
    const second = counter(await scrape(), 'underpass_tunnel_bytes_total', 'direction="downstream"');
    const done = await download;
    assert.equal(done.code, 0, done.stderr);
    assert.ok(first > 0 && second > first, `downstream bytes ${first} then ${second}`);
    assert.ok(second < BIG, 'the second read came before the transfer ended');
    const after = await scrape();
    assert.ok(counter(after, 'underpass_tunnel_bytes_total', 'direction="downstream"') >= BIG);
    assert.ok(counter(after, 'underpass_tunnel_opens_total', 'result="ok"') >= 1);
    assert.match(after, /^underpass_tunnel_open_seconds_count \d+$/m);

    // The proxy and the redirector count the same transfer on their side; the redirector by publication.
    const proxy = await scrape(proxyMetricsPort);
    assert.match(proxy, /program="proxy"/);
    assert.match(proxy, /^underpass_sessions 1$/m);
    assert.ok(counter(proxy, 'underpass_tunnel_bytes_total', 'direction="downstream"') >= BIG, proxy);
    const redirector = await scrape(redirectorMetricsPort);
    const web = `publication="${chain.host('web')}"`;
    assert.ok(counter(redirector, 'underpass_tunnel_bytes_total', `direction="downstream",${web}`) >= BIG, redirector);
    assert.ok(counter(redirector, 'underpass_tunnel_opens_total', `result="ok",${web}`) >= 1, redirector);
  });

  it('headless Chromium shows a publication and its live tunnel count on the status page', async function () {
    if (!fs.existsSync(CHROMIUM)) this.skip();
    // A tunnel held open while the page is read.
    const client = new Program('client', HOOK_RUN_LAUNCHER, [
      '--ipc',
      chain.ipcPath,
      '--',
      PYTHON,
      '-c',
      `import socket, time
s = socket.create_connection((${JSON.stringify(chain.host('echo'))}, ${echoPort}))
s.sendall(b"hi\\n"); assert s.recv(10) == b"hi\\n"
print("connected", flush=True)
time.sleep(600)`,
    ]);
    programs.push(client);
    await client.waitFor(/connected/);

    const { chromium } = await import('playwright-core');
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
    try {
      // A phone's viewport: the page is built for it first.
      const page = await browser.newPage({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2 });
      await page.goto(`http://127.0.0.1:${metricsPort}/`);
      const card = page.locator(`.card[data-host="${chain.host('echo')}"]`);
      await card.locator('.open-tunnels', { hasText: /^1$/ }).waitFor({ timeout: 15_000 });
      assert.match(await card.innerText(), /online/);
      const artifacts = path.join(ROOT, 'dist', 'test-artifacts');
      fs.mkdirSync(artifacts, { recursive: true });
      await page.screenshot({ path: path.join(artifacts, 'status-page.png'), fullPage: true });
      // The count follows the tunnel: it closes, and the page says 0 without a reload.
      await client.stop();
      await card.locator('.open-tunnels', { hasText: /^0$/ }).waitFor({ timeout: 15_000 });
    } finally {
      await browser.close();
    }
  });
});
