import assert from 'node:assert/strict';
import { ConfigError } from '../../protocol/errors';
import { label, pseudoName, tryNormalizeHostname, tryParsePseudoName } from '../../protocol/names';

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

  it('rejects names outside the zone, with the wrong depth, and IP literals', function () {
    assert.equal(tryParsePseudoName('redis.default.example.com', 'underpass.internal'), null);
    assert.equal(tryParsePseudoName('a.redis.default.underpass.internal', 'underpass.internal'), null);
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
});
