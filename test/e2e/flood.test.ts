/**
 * Hostile load against a running server costs only the offender: thousands of half-open connections,
 * a flood of tunnel requests, token guessing, and fuzzed control lines — each followed by a tunnel that
 * still works for everyone else.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import fc from 'fast-check';
import { EchoChain, type Chain } from '../harness';

describe('flood: hostile load costs only the offender', function () {
  const echoChain = new EchoChain();
  let chain: Chain;
  let echoPort: number;
  const assertTunnelWorks = (): Promise<void> => echoChain.assertTunnelWorks();

  before(async function () {
    await echoChain.start();
    chain = echoChain.chain;
    echoPort = echoChain.port;
  });

  after(async function () {
    await echoChain.stop();
  });

  function session(token: string): http2.ClientHttp2Session {
    const s = http2.connect(`https://127.0.0.1:${chain.serverPort}`, { ca: fs.readFileSync(chain.ca) });
    s.on('error', () => undefined);
    (s as http2.ClientHttp2Session & { token: string }).token = token;
    return s;
  }

  function request(s: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders, token: string): Promise<number> {
    return new Promise((resolve) => {
      let st: http2.ClientHttp2Stream;
      try {
        st = s.request(
          { authorization: `Bearer ${token}`, ...headers },
          { endStream: headers[':method'] !== 'CONNECT' },
        );
      } catch {
        resolve(-2); // the server sent GOAWAY: this session may open no more streams
        return;
      }
      st.on('error', () => resolve(-1));
      st.on('response', (h) => {
        resolve(Number(h[':status']));
        st.close();
      });
    });
  }

  it('2,000 half-open connections that never finish TLS', async function () {
    const sockets: net.Socket[] = [];
    for (let i = 0; i < 2000; i++) {
      const s = net.connect(chain.serverPort, '127.0.0.1');
      s.on('error', () => undefined);
      if (i % 2 === 0) s.on('connect', () => s.write(Buffer.from('1603010200', 'hex'))); // a ClientHello that never comes
      sockets.push(s);
    }
    await new Promise((r) => setTimeout(r, 500));
    await assertTunnelWorks();
    for (const s of sockets) s.destroy();
  });

  it('a flood of 5,000 tunnel requests on one session', async function () {
    const s = session(chain.token);
    const statuses = await Promise.all(
      Array.from({ length: 5000 }, (_, i) =>
        request(
          s,
          {
            ':method': 'CONNECT',
            ':authority':
              i % 2 === 0 ? `nothing${i}.default.underpass.internal:1` : `${chain.host('echo')}:${echoPort + 1}`,
          },
          chain.token,
        ),
      ),
    );
    assert.ok(
      statuses.every((st) => st === 404),
      `all refused as not found: ${[...new Set(statuses)].join(',')}`,
    );
    s.destroy();
    await assertTunnelWorks();
  });

  it('fuzzed control streams end only themselves', async function () {
    const s = session(chain.token);
    const samples = fc.sample(
      fc.oneof(
        fc.uint8Array({ minLength: 1, maxLength: 2048 }),
        fc.json().map((j) => Buffer.from(j + '\n')),
      ),
      { numRuns: 50, seed: 42 },
    );
    const codes: number[] = [];
    for (const bytes of samples) {
      codes.push(
        await new Promise<number>((resolve) => {
          const control = s.request({
            ':method': 'POST',
            ':path': '/v1/control',
            authorization: `Bearer ${chain.token}`,
          });
          control.on('error', () => undefined);
          const timer = setTimeout(() => control.close(), 2000);
          control.on('close', () => {
            clearTimeout(timer);
            resolve(control.rstCode ?? -1);
          });
          control.write(Buffer.concat([Buffer.from(bytes), Buffer.from('\n')]));
        }),
      );
    }
    assert.ok(
      codes.some((c) => c === http2.constants.NGHTTP2_PROTOCOL_ERROR),
      `malformed lines end their stream with PROTOCOL_ERROR: ${codes.join(',')}`,
    );
    s.destroy();
    await assertTunnelWorks();
  });
  // Last: the guesser's address (loopback, as every test's) stays blocked for new sessions a while.
  it('token guessing is throttled for the guesser only', async function () {
    const s = session('guess');
    const statuses: number[] = [];
    for (let i = 0; i < 30; i++)
      statuses.push(
        await request(s, { ':method': 'GET', ':path': '/v1/session' }, crypto.randomBytes(12).toString('hex')),
      );
    assert.equal(statuses[0], 401);
    assert.ok(statuses.includes(429), `guessing is throttled: ${[...new Set(statuses)].join(',')}`);
    s.destroy();
    // The working endpoints share the guesser's address (loopback) and keep working.
    await assertTunnelWorks();
  });
});
