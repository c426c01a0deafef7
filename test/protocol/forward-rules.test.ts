/** Forwarding rules: the grammar, what each form matches, and the addresses the server guards. */
import assert from 'node:assert/strict';
import { isGuardedAddress, parseForwardRule, ruleMatches, tryMatchName } from '../../protocol/forward-rules';

describe('protocol/forward-rules', function () {
  const cases: [string, string, number, boolean][] = [
    ['.corp.example', 'intranet.corp.example', 80, true],
    ['.corp.example', 'corp.example', 443, true],
    ['.corp.example', 'evilcorp.example', 80, false],
    ['corp.example', 'intranet.corp.example', 80, false],
    ['corp.example', 'CORP.example', 80, true],
    ['.corp.example:443', 'a.corp.example', 443, true],
    ['.corp.example:443', 'a.corp.example', 80, false],
    ['.corp.example:8000-8100', 'a.corp.example', 8080, true],
    ['.corp.example:8000-8100', 'a.corp.example', 8101, false],
    ['10.0.0.0/8', '10.1.2.3', 22, true],
    ['10.0.0.0/8', '11.1.2.3', 22, false],
    ['10.0.0.0/8', 'ten.example', 22, false],
    ['192.0.2.7:5432', '192.0.2.7', 5432, true],
    ['192.0.2.7:5432', '192.0.2.7', 5433, false],
    ['2001:db8::/32', '2001:db8::1', 443, true],
    ['[2001:db8::]/32:443', '2001:db8::1', 443, true],
    ['[2001:db8::]/32:443', '2001:db8::1', 80, false],
  ];
  for (const [rule, host, port, want] of cases) {
    it(`${rule} ${want ? 'matches' : 'does not match'} ${host}:${port}`, function () {
      assert.equal(ruleMatches(parseForwardRule(rule), host, port), want);
    });
  }

  for (const bad of ['', 'a..b', '10.0.0.0/33', '.corp.example:0', '.corp.example:9-1', '[::1', 'a/b/c', 'x:70000']) {
    it(`refuses the rule ${JSON.stringify(bad)} in one line`, function () {
      assert.throws(() => parseForwardRule(bad), /forward rule/);
    });
  }

  it('matches a name with a name rule whatever its port, for a lookup that knows none yet', function () {
    const rules = ['.corp.example:443', 'wiki.example', '10.0.0.0/8'].map(parseForwardRule);
    assert.equal(tryMatchName(rules, 'a.corp.example')?.text, '.corp.example:443');
    assert.equal(tryMatchName(rules, 'WIKI.example.')?.text, 'wiki.example');
    assert.equal(tryMatchName(rules, 'sub.wiki.example'), null);
    assert.equal(tryMatchName(rules, '10.1.2.3'), null, 'an address is no name');
  });

  it("keeps a network rule's address and prefix, for the hook", function () {
    const rule = parseForwardRule('10.1.0.0/16:80');
    assert.equal(rule.kind, 'net');
    if (rule.kind === 'net') assert.deepEqual([rule.address, rule.prefix, rule.family], ['10.1.0.0', 16, 4]);
  });

  const guarded: [string, boolean][] = [
    ['127.0.0.1', true],
    ['127.9.9.9', true],
    ['169.254.169.254', true],
    ['0.0.0.0', true],
    ['::1', true],
    ['fe80::1', true],
    ['10.0.0.1', false],
    ['192.0.2.1', false],
  ];
  for (const [address, want] of guarded) {
    it(`${address} is ${want ? '' : 'not '}guarded`, function () {
      assert.equal(isGuardedAddress(address), want);
    });
  }
});
