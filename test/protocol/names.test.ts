import assert from 'node:assert/strict';
import { ConfigError } from '../../protocol/errors';
import {
  formatHostPort,
  label,
  pseudoName,
  tryNormalizeHostname,
  tryParseHostPort,
  tryParsePseudoName,
} from '../../protocol/names';

describe('protocol/names: pseudo names under the zone', function () {
  it('composes <publication>.<account>.<zone>', function () {
    assert.equal(pseudoName('redis', 'default', 'underpass.internal'), 'redis.default.underpass.internal');
  });

  it('parses pseudo names case-insensitively, with or without the trailing dot', function () {
    assert.deepEqual(tryParsePseudoName('Redis.Default.UNDERPASS.internal.', 'underpass.internal'), {
      publication: 'redis',
      account: 'default',
      host: 'redis.default.underpass.internal',
    });
  });

  it('rejects names outside the zone, too shallow, and IP literals', function () {
    assert.equal(tryParsePseudoName('redis.default.example.com', 'underpass.internal'), null);
    // Too shallow: an account with no publication. (Deeper names are publications in a hierarchy.)
    assert.equal(tryParsePseudoName('default.underpass.internal', 'underpass.internal'), null);
    assert.equal(
      tryParsePseudoName('a.redis.default.underpass.internal', 'underpass.internal')?.publication,
      'a.redis',
    );
    assert.equal(tryParsePseudoName('underpass.internal', 'underpass.internal'), null);
    assert.equal(tryNormalizeHostname('127.0.0.1'), null);
    assert.equal(tryNormalizeHostname('bad host'), null);
  });

  it('accepts only DNS labels as publication names', function () {
    assert.equal(label('Web-1', 'publication name'), 'web-1');
    for (const bad of ['a.b', 'has space', '', 'x'.repeat(64)]) {
      assert.throws(() => label(bad, 'publication name'), ConfigError, bad);
    }
  });

  it('parses and formats HOST:PORT once for every flag and header', function () {
    assert.deepEqual(tryParseHostPort('127.0.0.1:7443'), { host: '127.0.0.1', port: 7443 });
    assert.deepEqual(tryParseHostPort('[::1]:80'), { host: '::1', port: 80 });
    assert.deepEqual(tryParseHostPort('redis.default.underpass.internal:6379'), {
      host: 'redis.default.underpass.internal',
      port: 6379,
    });
    for (const bad of ['no-port', 'host:0', 'host:70000', 'a b:1', 'user@host:1', 'host:1/path', ''])
      assert.equal(tryParseHostPort(bad), null, bad);
    assert.equal(formatHostPort({ host: '::1', port: 80 }), '[::1]:80');
    assert.equal(formatHostPort({ host: 'example.internal', port: 1 }), 'example.internal:1');
  });
});
