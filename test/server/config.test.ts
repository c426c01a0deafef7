import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { DEFAULT_ZONE, GRACE_MS, KEEPALIVE_MS } from '../../protocol/defaults';
import { ConfigError } from '../../protocol/errors';
import { createLogger } from '../../runtime/log';
import { Accounts, AuthThrottle, loadAccountsFile } from '../../server/accounts';
import { serverConfig, type ServerOptions } from '../../server/config';
import { tmpDir } from '../harness';

const logger = createLogger('test', 'text', 'error');
const base: ServerOptions = { host: '127.0.0.1', port: 0, dataDir: '/tmp/underpass-x', logger };
const TOKEN_A = 'a'.repeat(24);
const TOKEN_B = 'b'.repeat(24);

describe('server/config: the tunnel server options', function () {
  it('completes the options from the defaults, and normalises the zone', function () {
    const config = serverConfig({ ...base, zone: undefined });
    assert.equal(config.zone, DEFAULT_ZONE);
    assert.equal(config.keepaliveMs, KEEPALIVE_MS);
    assert.equal(config.graceMs, GRACE_MS);
    assert.equal(config.tunnelTimeoutMs, 15_000);
    assert.equal(config.maxPendingPerProxy, 10_000);
    assert.equal(config.maxPendingPerSession, 2_000);
    assert.equal(serverConfig({ ...base, zone: 'Tunnels.Example.' }).zone, 'tunnels.example');
  });

  const refusals: Array<[string, Partial<ServerOptions>, RegExp]> = [
    ['a port out of range', { port: 70_000 }, /not a TCP port/],
    ['a zone that is no DNS name', { zone: 'not a zone' }, /zone 'not a zone' is not a valid DNS name/],
    ['a zero keepalive', { keepaliveMs: 0 }, /^--keepalive '0'/],
    ['a grace over a day', { graceMs: 86_401_000 }, /^--grace '86401'/],
    ['no pending tunnels allowed', { maxPendingPerProxy: 0 }, /at least 1/],
    ['an empty data dir', { dataDir: '' }, /--data-dir is empty/],
  ];
  for (const [what, change, message] of refusals) {
    it(`refuses ${what}, in one line`, function () {
      assert.throws(
        () => serverConfig({ ...base, ...change }),
        (e: unknown) => e instanceof ConfigError && message.test(e.message),
      );
    });
  }
});

describe('server/accounts: the accounts file and the throttle', function () {
  let dir: string;
  beforeEach(function () {
    dir = tmpDir('accounts');
  });
  afterEach(function () {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const files: Array<[string, string, RegExp | ((accounts: Accounts) => void)]> = [
    [
      'tokens and grants',
      JSON.stringify({ tokens: { alice: TOKEN_A, bob: TOKEN_B }, grants: { 'alice/redis': ['bob'] } }),
      (accounts) => {
        assert.equal(accounts.tryAccountOf(TOKEN_A), 'alice');
        assert.equal(accounts.tryAccountOf(TOKEN_B), 'bob');
        assert.ok(accounts.mayUse('bob', 'alice', 'redis'));
        assert.ok(!accounts.mayUse('bob', 'alice', 'pg'));
      },
    ],
    [
      'tokens alone',
      JSON.stringify({ tokens: { alice: TOKEN_A } }),
      (a) => assert.equal(a.tryAccountOf(TOKEN_A), 'alice'),
    ],
    ['not JSON', '{tokens', /--accounts .*: /],
    ['a short token', JSON.stringify({ tokens: { alice: 'short' } }), /tokens of 16 characters or more/],
    ['an unknown field', JSON.stringify({ tokens: {}, admins: [] }), /expected \{"tokens"/],
    [
      'a grant that is not OWNER/PUBLICATION',
      JSON.stringify({ tokens: {}, grants: { alice: ['bob'] } }),
      /grant 'alice' is not OWNER\/PUBLICATION/,
    ],
    [
      'an account that is not a DNS label',
      JSON.stringify({ tokens: { 'a.b': TOKEN_A } }),
      /account name 'a.b' is not a DNS label/,
    ],
  ];
  for (const [what, text, expected] of files) {
    it(`--accounts with ${what}`, async function () {
      const file = path.join(dir, 'accounts.json');
      fs.writeFileSync(file, text);
      const accounts = new Accounts();
      if (expected instanceof RegExp) {
        await assert.rejects(
          loadAccountsFile(file, accounts),
          (e: unknown) => e instanceof ConfigError && expected.test(e.message),
        );
      } else {
        await loadAccountsFile(file, accounts);
        expected(accounts);
      }
    });
  }

  it('--accounts with a missing file says which', async function () {
    await assert.rejects(loadAccountsFile(path.join(dir, 'none.json'), new Accounts()), ConfigError);
  });

  const throttles: Array<[string, number[], number, boolean]> = [
    ['under the limit', [0, 1, 2], 3, false],
    ['at the limit', Array.from({ length: 20 }, (_, i) => i), 30, true],
    ['at the limit, once the window passed', Array.from({ length: 20 }, (_, i) => i), 10_100, false],
    ['failures spread over more than a window', Array.from({ length: 20 }, (_, i) => i * 1000), 19_001, false],
  ];
  for (const [what, failures, at, blocked] of throttles) {
    it(`the throttle, ${what}: ${blocked ? 'blocked' : 'open'}`, function () {
      const throttle = new AuthThrottle();
      for (const t of failures) throttle.fail('10.0.0.1', t);
      assert.equal(throttle.isBlocked('10.0.0.1', at), blocked);
      assert.equal(throttle.isBlocked('10.0.0.2', at), false, 'another address');
    });
  }
});
