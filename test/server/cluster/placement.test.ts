import assert from 'node:assert/strict';
import { ConfigError } from '../../../protocol/errors';
import { parsePlacement, place } from '../../../server/cluster/placement';

describe('server/cluster/placement: the operator table of patterns over names', function () {
  const rules = parsePlacement(
    ['# databases on the node by the data', 'db*.alice  node-a', '', '*.bob node-b # all of bob', 'carol node-c'].join(
      '\n',
    ),
    'placement',
  );

  const cases: Array<[string, string, string[], string | null, string | null]> = [
    ['a proxy publishing a matching name', 'alice', ['db1', 'web'], 'node-a', 'db1.alice'],
    ['the first matching line, not the best', 'bob', ['db1'], 'node-b', 'db1.bob'],
    ['a name written in another case', 'alice', ['DB2'], 'node-a', 'DB2.alice'],
    ['an endpoint by its account alone', 'carol', [], 'node-c', 'carol'],
    ['a redirector, whose account no line names', 'alice', [], null, null],
    ['a proxy no line names', 'dave', ['db1'], null, null],
  ];
  for (const [what, account, names, node, subject] of cases) {
    it(`places ${what}`, function () {
      const placed = place(rules, account, names);
      assert.equal(placed?.rule.node ?? null, node);
      assert.equal(placed?.subject ?? null, subject);
    });
  }

  it('says which line placed an endpoint', function () {
    assert.equal(place(rules, 'bob', ['x'])?.rule.line, 4);
  });

  const refusals: Array<[string, string, RegExp]> = [
    ['a line with one field', 'db*.alice', /placement line 1: 'db\*\.alice' is not 'PATTERN NODE'/],
    ['a line with three fields', 'a b c', /line 1: 'a b c' is not 'PATTERN NODE'/],
  ];
  for (const [what, text, message] of refusals) {
    it(`refuses ${what} in one line naming it`, function () {
      assert.throws(
        () => parsePlacement(text, 'placement'),
        (e: unknown) => e instanceof ConfigError && message.test(e.message),
      );
    });
  }
});
