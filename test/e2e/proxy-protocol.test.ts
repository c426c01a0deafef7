/**
 * A target behind the PROXY protocol: a real nginx that accepts only connections opening with a PROXY
 * header (`listen … proxy_protocol`) serves a hooked curl through the whole chain, and logs the client's
 * address as the tunnel server saw it. The client is a host of its own (a network namespace that can
 * send to the tunnel server only), so that address is the client host's, not the server's loopback.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Chain, freePort, Program, which } from '../harness';
import { ClientHost } from '../netns';

const NGINX = '/usr/sbin/nginx';

describe('the PROXY protocol towards a target', function () {
  let chain: Chain;
  let client: ClientHost;
  let nginx: Program;
  let port: number;
  let accessLog: string;

  before(async function () {
    if (!fs.existsSync(NGINX) || which('curl') === null || which('ip') === null || process.getuid?.() !== 0)
      this.skip();
    port = await freePort();
    const serverPort = await freePort();
    client = ClientHost.create([serverPort]);
    chain = new Chain([`web=127.0.0.1:${port}`], {
      proxyArgs: ['--proxy-protocol', 'v2'],
      serverHost: client.outer,
      clientNetns: client.name,
    });
    chain.serverPort = serverPort;
    const dir = path.join(chain.dir, 'nginx');
    fs.mkdirSync(dir, { recursive: true });
    accessLog = path.join(dir, 'access.log');
    fs.writeFileSync(
      path.join(dir, 'nginx.conf'),
      `daemon off;
pid ${dir}/nginx.pid;
error_log stderr;
events {}
http {
  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy; fastcgi_temp_path ${dir}/fcgi;
  uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;
  log_format pp 'client=$proxy_protocol_addr:$proxy_protocol_port request="$request"';
  access_log ${accessLog} pp;
  server {
    listen 127.0.0.1:${port} proxy_protocol;
    location / { return 200 "behind the PROXY protocol\\n"; }
  }
}
`,
    );
    nginx = new Program('nginx', NGINX, ['-c', path.join(dir, 'nginx.conf'), '-p', dir]);
    for (let i = 0; i < 100 && !fs.existsSync(path.join(dir, 'nginx.pid')); i++)
      await new Promise((r) => setTimeout(r, 50));
    await chain.start();
  });

  after(async function () {
    await nginx?.stop('SIGQUIT');
    await chain?.stop();
    client?.destroy();
  });

  it('nginx with proxy_protocol serves a hooked curl and logs the client address the server saw', async function () {
    const got = await chain.hookRun(['curl', '-sS', '--max-time', '20', `http://${chain.host('web')}:${port}/hello`]);
    assert.equal(got.code, 0, got.stderr);
    assert.equal(got.stdout, 'behind the PROXY protocol\n');
    let log = '';
    for (let i = 0; i < 50 && !log.includes('/hello'); i++) {
      await new Promise((r) => setTimeout(r, 100));
      log = fs.existsSync(accessLog) ? fs.readFileSync(accessLog, 'utf8') : '';
    }
    // The redirector's address and port as the tunnel server saw them: the client host's.
    const address = client.inner.replace(/\./g, '\\.');
    assert.match(log, new RegExp(`^client=${address}:\\d+ request="GET /hello HTTP/1\\.1"$`, 'm'));
  });
});
