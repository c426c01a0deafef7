import assert from 'node:assert/strict';
import { DEFAULT_PSEUDO_NET } from '../../protocol/defaults';
import { ConfigError } from '../../protocol/errors';
import { CLAIM_WAIT_MS } from '../../redirector/claims';
import { parseServiceKey, redirectorConfig } from '../../redirector/config';
import { createLogger } from '../../runtime/log';

const logger = createLogger('test', 'text', 'error');
const link = { server: { host: '127.0.0.1', port: 7443 }, ca: Buffer.from('pem'), token: 'token', logger };

describe('redirector/config: the redirector options', function () {
  const keys: Array<[string, [string, string] | null]> = [
    ['redis.alice.underpass.internal=KEY123', ['redis.alice.underpass.internal', 'KEY123']],
    ['Redis.Alice.Underpass.Internal.=K=V', ['redis.alice.underpass.internal', 'K=V']],
    ['redis.alice.underpass.internal=', null],
    ['=KEY', null],
    ['KEY', null],
    ['127.0.0.1=KEY', null],
    ['bad host=KEY', null],
  ];
  for (const [spec, expected] of keys) {
    it(`--service-key ${spec}`, function () {
      if (expected === null) {
        assert.throws(
          () => parseServiceKey(spec),
          (e: unknown) => e instanceof ConfigError && /is not PSEUDO_NAME=KEY/.test(e.message),
        );
      } else {
        assert.deepEqual(parseServiceKey(spec), expected);
      }
    });
  }

  it('completes the options from the defaults', function () {
    const config = redirectorConfig({ link, ipcPath: '/tmp/x.sock', logger, pseudoNet: undefined });
    assert.equal(config.pseudoNet, DEFAULT_PSEUDO_NET);
    assert.equal(config.claimWaitMs, CLAIM_WAIT_MS);
    assert.equal(config.parkMs, 10_000);
    assert.equal(config.serviceKeys.size, 0);
    assert.equal(redirectorConfig({ link, ipcPath: '/tmp/x.sock', logger, claimWaitMs: 0 }).claimWaitMs, 0);
  });

  it('refuses an empty IPC path and out-of-range waits, in one line', function () {
    for (const options of [
      { link, ipcPath: '', logger },
      { link, ipcPath: '/tmp/x.sock', logger, parkMs: 0 },
      { link, ipcPath: '/tmp/x.sock', logger, claimWaitMs: -1 },
    ]) {
      assert.throws(() => redirectorConfig(options), ConfigError, JSON.stringify(options.ipcPath));
    }
  });
});
