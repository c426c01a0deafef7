/** Issued tokens: the file, verification, scopes, expiry and revocation, without a server. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { isUnderpassError } from '../../protocol/errors';
import { createToken, listTokens, parseExpires, revokeToken, tryTokenId, TOKENS_FILE } from '../../server/tokens';
import { TokenStore } from '../../server/token-store';
import { tmpDir } from '../harness';

describe('server/tokens: issued tokens', function () {
  let dir: string;
  beforeEach(function () {
    dir = tmpDir('tokens');
  });
  afterEach(function () {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const ids: [string, string | null][] = [
    ['up_0123456789ab_secret', '0123456789ab'],
    ['up_0123456789ab_', null],
    ['up_0123456789AB_secret', null],
    ['up_0123456789a_secret', null],
    ['0123456789abcdef', null],
    ['', null],
  ];
  for (const [token, id] of ids) {
    it(`reads the id of ${JSON.stringify(token)} as ${String(id)}`, function () {
      assert.equal(tryTokenId(token), id);
    });
  }

  const durations: [string, number | null][] = [
    ['30d', 30 * 86_400_000],
    ['12h', 12 * 3_600_000],
    ['90m', 90 * 60_000],
    ['2s', 2000],
    ['soon', null],
    ['0s', null],
    ['-5m', null],
  ];
  for (const [text, value] of durations) {
    it(`parses --expires ${text}`, function () {
      if (value === null) assert.throws(() => parseExpires(text), /is not a duration/);
      else assert.equal(parseExpires(text), value);
    });
  }

  function store(): { tokens: TokenStore; ended: string[][] } {
    const ended: string[][] = [];
    const tokens = new TokenStore(
      dir,
      (list) => ended.push(list),
      (e) => assert.fail(e),
    );
    tokens.start();
    return { tokens, ended };
  }

  it('verifies a token, keeps only its digest, and applies its scopes', function () {
    const made = createToken(dir, { account: 'alice', publish: ['web*'], connect: ['*.alice', 'db.bob'] });
    assert.ok(!fs.readFileSync(path.join(dir, TOKENS_FILE), 'utf8').includes(made.token), 'only the hash is kept');
    const { tokens } = store();
    try {
      const verdict = tokens.verify(made.token);
      assert.ok(verdict.ok);
      assert.equal(verdict.grant.account, 'alice');
      assert.ok(verdict.grant.mayPublish('web1'));
      assert.ok(!verdict.grant.mayPublish('db'));
      assert.ok(verdict.grant.mayConnect('redis.alice'));
      assert.ok(verdict.grant.mayConnect('db.bob'));
      assert.ok(!verdict.grant.mayConnect('web.bob'));
      const wrong = tokens.verify(made.token.slice(0, -2) + 'xx');
      assert.ok(!wrong.ok && wrong.reason === 'unknown');
    } finally {
      tokens.stop();
    }
  });

  it('refuses an expired token and reports it once', function () {
    const made = createToken(dir, { account: 'alice', expiresInMs: 60_000 }, Date.now() - 120_000);
    const { tokens, ended } = store();
    try {
      const verdict = tokens.verify(made.token);
      assert.ok(!verdict.ok && verdict.reason === 'expired', JSON.stringify(verdict));
      assert.match(verdict.message, new RegExp(`token ${made.id} expired on`));
      assert.deepEqual(ended, [[made.id]]);
    } finally {
      tokens.stop();
    }
  });

  it('follows the file: a revocation made by another process ends the token', async function () {
    const made = createToken(dir, { account: 'alice' });
    const { tokens, ended } = store();
    try {
      assert.ok(tokens.verify(made.token).ok);
      revokeToken(dir, made.id);
      for (let i = 0; i < 100 && ended.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(ended, [[made.id]]);
      const verdict = tokens.verify(made.token);
      assert.ok(!verdict.ok && verdict.reason === 'revoked');
      assert.equal(listTokens(dir)[0]?.revoked !== undefined, true);
    } finally {
      tokens.stop();
    }
  });

  it('says what to do with an unknown id or a damaged file', function () {
    assert.throws(
      () => revokeToken(dir, 'abcdef012345'),
      (e: unknown) => isUnderpassError(e) && /no token abcdef012345/.test(e.message),
    );
    fs.writeFileSync(path.join(dir, TOKENS_FILE), '{"v":1,"tokens":{"x":{}}}');
    assert.throws(() => listTokens(dir), /is damaged/);
    assert.throws(() => createToken(dir, { account: 'alice', publish: ['has space'] }), /has spaces/);
  });
});
