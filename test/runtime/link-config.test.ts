import assert from 'node:assert/strict';
import { GRACE_MS, KEEPALIVE_MS } from '../../protocol/defaults';
import { ConfigError } from '../../protocol/errors';
import { defaultLinkConfig, linkConfig, parseHostPort, type LinkOptions } from '../../runtime/link-config';
import { createLogger } from '../../runtime/log';
import { Backoff } from '../../runtime/server-list';
import { candidateRoutes, describeRoute, proxyFor, type TransportKind } from '../../runtime/transport';

const logger = createLogger('test', 'text', 'error');
const base: LinkOptions = { server: { host: '127.0.0.1', port: 7443 }, ca: Buffer.from('pem'), token: 'token', logger };

describe('runtime/link-config: an endpoint session options', function () {
  const hostPorts: Array<[string, { host: string; port: number } | null]> = [
    ['127.0.0.1:7443', { host: '127.0.0.1', port: 7443 }],
    ['tunnel.example.org:443', { host: 'tunnel.example.org', port: 443 }],
    ['[::1]:7443', { host: '::1', port: 7443 }],
    ['localhost:1', { host: 'localhost', port: 1 }],
    ['127.0.0.1', null],
    ['127.0.0.1:', null],
    ['127.0.0.1:0', null],
    ['127.0.0.1:65536', null],
    [':7443', null],
    ['::1:7443', null],
    ['user@host:7443', null],
    ['host:7443/path', null],
    ['bad_host!:7443', null],
  ];
  for (const [input, expected] of hostPorts) {
    it(`HOST:PORT ${JSON.stringify(input)}`, function () {
      if (expected === null) {
        assert.throws(
          () => parseHostPort(input, '--server'),
          (e: unknown) => e instanceof ConfigError && e.message.startsWith(`--server '${input}' is not HOST:PORT`),
        );
      } else {
        assert.deepEqual(parseHostPort(input, '--server'), expected);
      }
    });
  }

  const proxies: Array<[string, string | RegExp]> = [
    ['http://10.0.0.1:8888', 'http://10.0.0.1:8888/'],
    ['10.0.0.1:8888', 'http://10.0.0.1:8888/'],
    ['http://user:pass@proxy.example:3128', 'http://user:pass@proxy.example:3128/'],
    ['socks5://127.0.0.1:1080', 'socks5://127.0.0.1:1080'],
    ['socks5h://127.0.0.1:1080', 'socks5h://127.0.0.1:1080'],
    ['ftp://127.0.0.1:21', /only http:\/\/, socks5:\/\/ and socks5h:\/\//],
    ['http://[bad', /is not a URL/],
  ];
  for (const [flag, expected] of proxies) {
    it(`--proxy ${flag}`, function () {
      const target = { host: '127.0.0.1', port: 7443 };
      if (expected instanceof RegExp) {
        assert.throws(
          () => proxyFor(target, flag),
          (e: unknown) => e instanceof ConfigError && expected.test(e.message),
        );
      } else {
        assert.equal(proxyFor(target, flag)?.href, expected);
      }
    });
  }

  const routes: Array<[TransportKind, boolean, string[]]> = [
    ['auto', false, ['TLS direct', 'WebSocket (wss) direct']],
    [
      'auto',
      true,
      ['TLS direct', 'TLS via HTTP proxy p:3128', 'WebSocket (wss) direct', 'WebSocket (wss) via HTTP proxy p:3128'],
    ],
    ['tls', true, ['TLS direct', 'TLS via HTTP proxy p:3128']],
    ['wss', false, ['WebSocket (wss) direct']],
  ];
  for (const [kind, proxied, expected] of routes) {
    it(`routes for --transport ${kind}${proxied ? ' with a proxy' : ''}`, function () {
      const proxy = proxied ? new URL('http://p:3128') : null;
      assert.deepEqual(candidateRoutes(kind, proxy).map(describeRoute), expected);
    });
  }

  it('backs off from the first delay, doubling to the last, with ±50 % jitter, and starts over on reset', function () {
    const random = Math.random;
    try {
      for (const jitter of [0, 0.5, 0.999999]) {
        Math.random = (): number => jitter;
        const backoff = new Backoff(250, 30_000);
        const delays = Array.from({ length: 10 }, () => backoff.next());
        const bases = [250, 500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000];
        assert.deepEqual(
          delays,
          bases.map((b) => Math.round(b * (0.5 + jitter))),
        );
        backoff.reset();
        assert.equal(backoff.next(), Math.round(250 * (0.5 + jitter)));
      }
    } finally {
      Math.random = random;
    }
  });

  it('completes the options from the defaults', function () {
    const config = linkConfig({ ...base, proxy: undefined, keepaliveMs: undefined });
    assert.equal(config.keepaliveMs, KEEPALIVE_MS);
    assert.equal(config.graceMs, GRACE_MS);
    assert.equal(config.transport, 'auto');
    assert.equal(config.proxy, undefined);
    assert.deepEqual(config.backoff, defaultLinkConfig.backoff);
    assert.equal(linkConfig({ ...base, graceMs: 0 }).graceMs, 0);
  });

  const refusals: Array<[string, Partial<LinkOptions>, RegExp]> = [
    ['a zero keepalive', { keepaliveMs: 0 }, /^--keepalive '0' must be a number of seconds between 0 and 3600$/],
    ['a keepalive over an hour', { keepaliveMs: 3_601_000 }, /^--keepalive '3601'/],
    ['a negative grace', { graceMs: -1000 }, /^--grace '-1' must be a number of seconds between 0 and 86400$/],
    [
      'an unknown transport',
      { transport: 'udp' as TransportKind },
      /^--transport 'udp' must be one of auto, tls, wss$/,
    ],
    ['an unusable proxy', { proxy: 'ftp://x:21' }, /only http/],
    ['an empty token', { token: '' }, /--token is empty/],
    ['a backoff that falls', { backoff: { minMs: 500, maxMs: 100 } }, /backoff/],
  ];
  for (const [what, change, message] of refusals) {
    it(`refuses ${what}, in one line`, function () {
      assert.throws(
        () => linkConfig({ ...base, ...change }),
        (e: unknown) => e instanceof ConfigError && message.test(e.message),
      );
    });
  }
});
