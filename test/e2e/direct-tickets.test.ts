/**
 * Who may use a proxy's direct listener: only a redirector the server authorises for that publication
 * gets a ticket, and the listener refuses a forged, foreign or replayed ticket in one line, without
 * dialling the target. The test speaks the session protocol itself (HTTP/2 over TLS, as a redirector
 * does) against a real server and a real proxy, to present tickets no redirector would.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http2 from 'node:http2';
import path from 'node:path';
import tls from 'node:tls';
import { DirectOffer, Headers, Paths } from '../../protocol/wire';
import { Chain, freePort, lineEchoServer, type Program } from '../harness';

const BOB = 'bob-token-0123456789abc';

/** An HTTP/2 session to `host:port` over TLS, trusting `ca` or, with `pin`, the certificate of that fingerprint. */
async function connect(port: number, options: { ca?: string; pin?: string }): Promise<http2.ClientHttp2Session> {
  const socket = tls.connect({
    host: '127.0.0.1',
    port,
    ALPNProtocols: ['h2'],
    ...(options.ca !== undefined ? { ca: fs.readFileSync(options.ca) } : { rejectUnauthorized: false }),
  });
  await new Promise<void>((resolve, reject) => {
    socket.once('secureConnect', resolve);
    socket.once('error', reject);
  });
  if (options.pin !== undefined) assert.equal(socket.getPeerCertificate().fingerprint256, options.pin);
  const session = http2.connect(`https://127.0.0.1:${port}`, { createConnection: () => socket });
  session.on('error', () => undefined);
  return session;
}

/** One request: its status, refusal line and body. */
async function ask(
  session: http2.ClientHttp2Session,
  headers: http2.OutgoingHttpHeaders,
  body?: string,
): Promise<{ status: number; message: string; body: string }> {
  const stream = session.request(headers, { endStream: body === undefined });
  if (body !== undefined) stream.write(body);
  const response = await new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
    stream.once('response', resolve);
    stream.once('error', reject);
  });
  let text = '';
  stream.setEncoding('utf8').on('data', (d: string) => {
    text += d;
    if (body !== undefined && text.endsWith('\n')) stream.close();
  });
  await new Promise((resolve) => stream.once('close', resolve));
  return {
    status: Number(response[':status']),
    message: String(response[Headers.errorMessage] ?? ''),
    body: text,
  };
}

describe('direct tickets: the server decides who may use the direct listener', function () {
  let chain: Chain;
  let echo: Program;
  let directPort: number;
  let host: string;
  let server: http2.ClientHttp2Session;

  before(async function () {
    const echoPort = await freePort();
    echo = lineEchoServer(echoPort, { upper: true });
    directPort = await freePort();
    chain = new Chain([`echo=127.0.0.1:${echoPort}`], { proxyArgs: ['--direct-listen', `127.0.0.1:${directPort}`] });
    fs.mkdirSync(chain.dataDir, { recursive: true });
    const accounts = path.join(chain.dir, 'accounts.json');
    fs.writeFileSync(accounts, JSON.stringify({ tokens: { bob: BOB } }));
    chain.options.serverArgs = ['--accounts', accounts];
    await chain.startServer();
    await chain.startProxy();
    host = chain.host('echo');
    server = await connect(chain.serverPort, { ca: chain.ca });
  });

  after(async function () {
    server?.close();
    await chain?.stop();
    await echo?.stop();
  });

  const auth = (token: string): http2.OutgoingHttpHeaders => ({
    authorization: `Bearer ${token}`,
    [Headers.version]: '1',
  });

  async function offer(token = chain.token): Promise<DirectOffer> {
    const r = await ask(server, { ':method': 'GET', ':path': Paths.direct + host, ...auth(token) });
    assert.equal(r.status, 200, r.message);
    return DirectOffer.parse(JSON.parse(r.body));
  }

  const tunnel = (session: http2.ClientHttp2Session, ticket: string): ReturnType<typeof ask> =>
    ask(
      session,
      {
        ':method': 'CONNECT',
        ':authority': `${host}:${chain.published.get('echo')!.target.split(':')[1]!}`,
        [Headers.directTicket]: ticket,
      },
      'hello\n',
    );

  it('names the publication as direct, and issues a ticket to its owner', async function () {
    const info = await ask(server, { ':method': 'GET', ':path': Paths.names + host, ...auth(chain.token) });
    assert.equal(JSON.parse(info.body).direct, true);
    const o = await offer();
    assert.deepEqual(o.addresses, [`127.0.0.1:${directPort}`]);
    const session = await connect(directPort, { pin: o.fingerprint });
    const r = await tunnel(session, o.ticket);
    session.close();
    assert.equal(r.status, 200, r.message);
    assert.equal(r.body, 'HELLO\n');
  });

  it('gives another account no ticket', async function () {
    const r = await ask(server, { ':method': 'GET', ':path': Paths.direct + host, ...auth(BOB) });
    assert.equal(r.status, 403);
    assert.match(r.message, /belongs to another account/);
  });

  it('refuses a forged ticket, and one replayed on another session, in one line each', async function () {
    const o = await offer();
    const first = await connect(directPort, { pin: o.fingerprint });
    assert.equal((await tunnel(first, o.ticket)).status, 200);
    // The same ticket keeps working on the session it was first shown on.
    assert.equal((await tunnel(first, o.ticket)).status, 200);
    const second = await connect(directPort, { pin: o.fingerprint });
    const replayed = await tunnel(second, o.ticket);
    assert.equal(replayed.status, 403);
    assert.match(replayed.message, /^replayed direct ticket \(account default\)/);
    const third = await connect(directPort, { pin: o.fingerprint });
    const forged = await tunnel(third, `${o.ticket.slice(0, o.ticket.lastIndexOf('.'))}.${'A'.repeat(43)}`);
    assert.equal(forged.status, 403);
    assert.match(forged.message, /not signed for this proxy/);
    for (const s of [first, second, third]) s.close();
    await chain.proxy.waitFor(/refused a direct tunnel from 127\.0\.0\.1: replayed direct ticket/);
    await chain.proxy.waitFor(/refused a direct tunnel from 127\.0\.0\.1: the direct ticket is not signed/);
    assert.doesNotMatch(chain.proxy.stderr, /cannot connect to/);
  });
});
