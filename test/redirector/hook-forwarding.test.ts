/** What the redirector hands a hooked app for forwarding mode, and how it judges the app's connects. */
import assert from 'node:assert/strict';
import { parseForwardRule } from '../../protocol/forward-rules';
import { HookForwarding } from '../../redirector/hook-forwarding';
import { PseudoAddressTable } from '../../redirector/pseudo-table';

describe('redirector/hook-forwarding', function () {
  const zone = 'underpass.internal';
  const make = (rules: string[]): { forwarding: HookForwarding; table: PseudoAddressTable } => {
    const table = new PseudoAddressTable('127.77.0.0/16');
    return { forwarding: new HookForwarding(rules.map(parseForwardRule), table, () => zone), table };
  };

  it('hands over name patterns and IPv4 networks, not IPv6 ones, and nothing without rules', function () {
    const { forwarding } = make(['.corp.example', 'wiki.example:443', '10.0.0.0/8:80-90', '2001:db8::/32']);
    assert.deepEqual(forwarding.hello(), {
      forward: {
        names: [
          { name: 'corp.example', suffix: true },
          { name: 'wiki.example', suffix: false },
        ],
        nets: [{ address: '10.0.0.0', prefix: 8, ports: { low: 80, high: 90 } }],
      },
    });
    assert.deepEqual(make([]).forwarding.hello(), {});
  });

  it('answers a forwarded name with a stable pseudo address, and leaves publications and other names alone', function () {
    const { forwarding, table } = make(['.corp.example']);
    const reply = forwarding.tryResolve('Intranet.Corp.Example.');
    assert.deepEqual(reply, { ok: true, name: 'intranet.corp.example', address: '127.77.0.1', forward: true });
    assert.equal(table.tryNameOf('127.77.0.1'), 'intranet.corp.example');
    assert.equal(forwarding.tryResolve('pg.default.underpass.internal'), null);
    assert.equal(forwarding.tryResolve('example.org'), null);
  });

  it('forwards a connect to a forwarded name on an allowed port, and refuses another port with the fix', function () {
    const { forwarding } = make(['.corp.example:443']);
    forwarding.tryResolve('intranet.corp.example');
    assert.deepEqual(forwarding.tryTarget('127.77.0.1', 443), {
      host: 'intranet.corp.example',
      address: '127.77.0.1',
      standIn: false,
    });
    const refused = forwarding.tryTarget('127.77.0.1', 22);
    assert.ok(refused !== null && 'ok' in refused);
    assert.match(refused.message, /intranet\.corp\.example:22 is not a forwarding destination/);
    assert.match(refused.fix ?? '', /--forward/);
  });

  it('gives an address outside the pseudo network a stand-in, the same one each time', function () {
    const { forwarding } = make(['10.0.0.0/8']);
    const first = forwarding.tryTarget('10.1.2.3', 80);
    assert.deepEqual(first, { host: '10.1.2.3', address: '127.77.0.1', standIn: true });
    assert.deepEqual(forwarding.tryTarget('10.1.2.3', 8080), first);
    assert.ok(forwarding.tryTarget('11.1.2.3', 80) !== null, 'refused: the hook handed over what is not forwarded');
  });

  it('leaves a publication’s pseudo address and an unknown one to the publications', function () {
    const { forwarding, table } = make(['.corp.example']);
    const address = table.addressOf('pg.default.underpass.internal');
    assert.equal(forwarding.tryTarget(address, 5432), null);
    assert.equal(forwarding.tryTarget('127.77.9.9', 80), null);
  });
});
