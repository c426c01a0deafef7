import assert from 'node:assert/strict';
import { ConfigError } from '../../protocol/errors';
import { defaultProxyConfig, parsePublish, proxyConfig, type Target } from '../../proxy/config';
import { createLogger } from '../../runtime/log';

const logger = createLogger('test', 'text', 'error');
const link = { server: { host: '127.0.0.1', port: 7443 }, ca: Buffer.from('pem'), token: 'token', logger };

describe('proxy/config: the service proxy options', function () {
  const publishes: Array<[string, Target | RegExp]> = [
    ['redis=127.0.0.1:6379', { name: 'redis', host: '127.0.0.1', port: 6379 }],
    ['Web=db.internal.example:80', { name: 'web', host: 'db.internal.example', port: 80 }],
    ['pg=[::1]:5432', { name: 'pg', host: '::1', port: 5432 }],
    ['=127.0.0.1:6379', /missing NAME=/],
    ['redis', /missing NAME=/],
    ['redis=127.0.0.1', /is not HOST:PORT/],
    ['redis=127.0.0.1:0', /is not HOST:PORT/],
    ['redis=127.0.0.1:65536', /is not HOST:PORT/],
    ['redis=http://127.0.0.1:6379', /is not HOST:PORT/],
    ['denpc.home=127.0.0.1:6379', { name: 'denpc.home', host: '127.0.0.1', port: 6379 }],
    ['re..dis=127.0.0.1:6379', /is not a DNS name/],
    ['-x=127.0.0.1:6379', /is not a DNS name/],
  ];
  for (const [spec, expected] of publishes) {
    it(`--publish ${spec}`, function () {
      if (expected instanceof RegExp) {
        assert.throws(
          () => parsePublish(spec),
          (e: unknown) => e instanceof ConfigError && expected.test(e.message),
        );
      } else {
        assert.deepEqual(parsePublish(spec), expected);
      }
    });
  }

  it('completes the options from the defaults', function () {
    const config = proxyConfig({ link, targets: [parsePublish('redis=127.0.0.1:6379')], logger });
    assert.equal(config.connectTimeoutMs, defaultProxyConfig.connectTimeoutMs);
    assert.equal(
      proxyConfig({ link, targets: config.targets, logger, connectTimeoutMs: undefined }).connectTimeoutMs,
      10_000,
    );
    assert.equal(proxyConfig({ link, targets: config.targets, logger, connectTimeoutMs: 500 }).connectTimeoutMs, 500);
  });

  const refusals: Array<[string, Parameters<typeof proxyConfig>[0], RegExp]> = [
    ['no publication', { link, targets: [], logger }, /nothing to publish/],
    [
      'a name twice',
      { link, targets: [parsePublish('a=127.0.0.1:1'), parsePublish('a=127.0.0.1:2')], logger },
      /names 'a' twice/,
    ],
    ['a zero timeout', { link, targets: [parsePublish('a=127.0.0.1:1')], logger, connectTimeoutMs: 0 }, /timeout/],
  ];
  for (const [what, options, message] of refusals) {
    it(`refuses ${what}, in one line`, function () {
      assert.throws(
        () => proxyConfig(options),
        (e: unknown) => e instanceof ConfigError && message.test(e.message),
      );
    });
  }
});
