import assert from 'node:assert/strict';
import { seconds } from '../../cli/underpass';
import { ConfigError } from '../../protocol/errors';

describe('cli: flag values', function () {
  const cases: Array<[string, number | null]> = [
    ['15', 15],
    ['0.5', 0.5],
    ['0', 0],
    ['-1', -1],
    ['1e3', 1000],
    ['', null],
    [' ', null],
    ['fifteen', null],
    ['15s', null],
    ['Infinity', null],
  ];
  for (const [value, expected] of cases) {
    it(`--keepalive ${JSON.stringify(value)} ${expected === null ? 'is refused' : `is ${expected} s`}`, function () {
      const parse = seconds('--keepalive');
      if (expected === null) {
        assert.throws(
          () => parse(value),
          (e: unknown) => e instanceof ConfigError && e.message === `--keepalive '${value}' is not a number of seconds`,
        );
      } else {
        assert.equal(parse(value), expected);
      }
    });
  }
});
