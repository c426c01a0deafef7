/**
 * The tunnel server in this process, spoken to over real HTTP/2 and TLS: what the authentication
 * throttle holds back.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http2 from 'node:http2';
import { createLogger } from '../../runtime/log';
import { TunnelServer } from '../../server/server';
import { tmpDir } from '../harness';

const TOKEN = 'a-valid-token-of-the-default-account';

function status(session: http2.ClientHttp2Session, token: string): Promise<number> {
  return new Promise((resolve) => {
    let stream: http2.ClientHttp2Stream;
    try {
      stream = session.request(
        { ':method': 'GET', ':path': '/v1/session', authorization: `Bearer ${token}` },
        { endStream: true },
      );
    } catch {
      resolve(-2); // GOAWAY: the session may open no more streams
      return;
    }
    stream.on('error', () => resolve(-1));
    stream.on('response', (headers) => {
      resolve(Number(headers[':status']));
      stream.close();
    });
  });
}

describe('server: authentication throttle', function () {
  let dir: string;
  let server: TunnelServer;
  let port: number;

  beforeEach(async function () {
    dir = tmpDir('server');
    server = new TunnelServer({
      host: '127.0.0.1',
      port: 0,
      dataDir: dir,
      token: TOKEN,
      logger: createLogger('test', 'text', 'error'),
    });
    port = (await server.start()).port;
  });
  afterEach(async function () {
    await server.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('holds back a session that guesses tokens after showing a valid one', async function () {
    const session = http2.connect(`https://127.0.0.1:${port}`, { ca: fs.readFileSync(server.certPath) });
    session.on('error', () => undefined);
    assert.equal(await status(session, TOKEN), 200);
    const statuses: number[] = [];
    for (let i = 0; i < 30; i++) statuses.push(await status(session, `guess-${i}`));
    assert.equal(statuses[0], 401);
    assert.ok(
      statuses.includes(429) || statuses.includes(-2),
      `guessing is throttled: ${[...new Set(statuses)].join(',')}`,
    );
    session.destroy();
  });

  it('never holds back a session that keeps showing its valid token', async function () {
    const guesser = http2.connect(`https://127.0.0.1:${port}`, { ca: fs.readFileSync(server.certPath) });
    guesser.on('error', () => undefined);
    const session = http2.connect(`https://127.0.0.1:${port}`, { ca: fs.readFileSync(server.certPath) });
    session.on('error', () => undefined);
    assert.equal(await status(session, TOKEN), 200);
    for (let i = 0; i < 30; i++) await status(guesser, `guess-${i}`);
    // Same address (loopback) as the guesser, now blocked for new sessions.
    assert.equal(await status(session, TOKEN), 200);
    guesser.destroy();
    session.destroy();
  });
});
