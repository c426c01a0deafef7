/** Publication names with several labels, and the pseudo names they make. */
import assert from 'node:assert/strict';
import { publicationName, pseudoName, tryParsePseudoName } from '../../protocol/names';
import { isUnder } from '../../protocol/wire';

describe('protocol/names: names in a hierarchy', function () {
  const zone = 'underpass.internal';
  const parsed: [string, { publication: string; account: string } | null][] = [
    ['redis.default.underpass.internal', { publication: 'redis', account: 'default' }],
    ['denpc.home.jsmith.underpass.internal', { publication: 'denpc.home', account: 'jsmith' }],
    ['a.b.c.alice.underpass.internal', { publication: 'a.b.c', account: 'alice' }],
    ['DenPC.Home.JSmith.underpass.internal.', { publication: 'denpc.home', account: 'jsmith' }],
    ['jsmith.underpass.internal', null],
    ['underpass.internal', null],
    ['denpc.home.jsmith.example.org', null],
  ];
  for (const [host, want] of parsed) {
    it(`reads ${host} as ${want === null ? 'no pseudo name' : `${want.publication} of ${want.account}`}`, function () {
      const got = tryParsePseudoName(host, zone);
      assert.deepEqual(got === null ? null : { publication: got.publication, account: got.account }, want);
    });
  }

  const names: [string, string | null][] = [
    ['redis', 'redis'],
    ['denpc.home', 'denpc.home'],
    ['DenPC.Home', 'denpc.home'],
    ['a..b', null],
    ['.home', null],
    ['has space', null],
    ['x'.repeat(64), null],
    ['10.0.0.1', null],
  ];
  for (const [input, want] of names) {
    it(`takes ${JSON.stringify(input)} as a publication name: ${String(want)}`, function () {
      if (want === null) assert.throws(() => publicationName(input), /is not a DNS name/);
      else assert.equal(publicationName(input), want);
    });
  }

  it('makes the most specific name first, and refuses one longer than DNS allows', function () {
    assert.equal(pseudoName('denpc.home', 'jsmith', zone), 'denpc.home.jsmith.underpass.internal');
    assert.throws(() => pseudoName(Array(5).fill('x'.repeat(60)).join('.'), 'jsmith', zone));
  });

  const under: [string, string, boolean][] = [
    ['denpc.home.jsmith.underpass.internal', 'home.jsmith.underpass.internal', true],
    ['home.jsmith.underpass.internal', 'home.jsmith.underpass.internal', true],
    ['myhome.jsmith.underpass.internal', 'home.jsmith.underpass.internal', false],
    ['redis.default.underpass.internal', '', true],
  ];
  for (const [host, suffix, want] of under) {
    it(`${host} ${want ? 'lies' : 'does not lie'} under ${suffix === '' ? "''" : suffix}`, function () {
      assert.equal(isUnder(host, suffix), want);
    });
  }
});
