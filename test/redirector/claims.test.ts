import assert from 'node:assert/strict';
import { CLAIM_TTL_MS, claimKey, ClaimTable, MAX_CLAIMS } from '../../redirector/claims';

/** A client at 127.0.0.1:PORT connected to the listener 127.77.0.2:6379. */
const ends = (
  peerPort: number,
): { peerAddress: string; peerPort: number; localAddress: string; localPort: number } => ({
  peerAddress: '127.0.0.1',
  peerPort,
  localAddress: '127.77.0.2',
  localPort: 6379,
});

describe('redirector/claims: connections hooks name as their own', function () {
  let clock: number;
  const now = (): number => clock;
  beforeEach(function () {
    clock = 1000;
  });

  it('matches a claim to the accept with the same four ends, once', function () {
    const table = new ClaimTable({ now });
    assert.equal(table.add(ends(40000)), 'kept');
    assert.equal(table.take(ends(40001)), false, 'another source port');
    assert.equal(table.take({ ...ends(40000), localPort: 6380 }), false, 'another listener');
    assert.equal(table.take({ ...ends(40000), peerAddress: '127.0.0.2' }), false, 'another source address');
    assert.equal(table.take(ends(40000)), true);
    assert.equal(table.take(ends(40000)), false, 'a claim admits one connection only');
    assert.equal(table.size, 0);
  });

  it('reads a v4-mapped end as plain IPv4, as the hook sends it', function () {
    assert.equal(
      claimKey({ ...ends(40000), peerAddress: '::ffff:127.0.0.1', localAddress: '::FFFF:127.77.0.2' }),
      claimKey(ends(40000)),
    );
    assert.equal(claimKey(ends(40000)), '127.0.0.1:40000>127.77.0.2:6379');
    const table = new ClaimTable({ now });
    table.add(ends(40000));
    assert.equal(table.take({ ...ends(40000), peerAddress: '::ffff:127.0.0.1' }), true);
  });

  it('lets a claim expire unused after its time to live', function () {
    const table = new ClaimTable({ now, ttlMs: 100 });
    table.add(ends(1));
    table.add(ends(2));
    clock += 99;
    assert.equal(table.take(ends(1)), true);
    clock += 1;
    assert.equal(table.take(ends(2)), false, 'expired');
    assert.equal(table.size, 0, 'an expired claim found by take is dropped too');
    assert.equal(new ClaimTable().take(ends(1)), false);
    assert.equal(CLAIM_TTL_MS, 5000);
  });

  it('drops expired claims as new ones come, so an idle table does not keep them', function () {
    const table = new ClaimTable({ now, ttlMs: 100 });
    for (let port = 1; port <= 50; port++) table.add(ends(port));
    clock += 100;
    table.add(ends(51));
    assert.equal(table.size, 1);
  });

  it('keeps at most maxClaims: a flood evicts the oldest, never grows past the bound', function () {
    const table = new ClaimTable({ now, maxClaims: 3 });
    for (let port = 1; port <= 1000; port++) {
      table.add(ends(port));
      assert.ok(table.size <= 3);
    }
    assert.deepEqual(
      [1, 997, 998, 999, 1000].map((port) => table.take(ends(port))),
      [false, false, true, true, true],
    );
    const big = new ClaimTable({ now });
    for (let port = 0; port < MAX_CLAIMS + 5000; port++) big.add(ends(port % 65536));
    assert.equal(big.size, MAX_CLAIMS);
  });

  it('a repeated claim is kept once and lives from its latest copy', function () {
    const table = new ClaimTable({ now, ttlMs: 100, maxClaims: 2 });
    table.add(ends(1));
    table.add(ends(2));
    clock += 50;
    table.add(ends(1)); // now the newest: the bound evicts 2 first
    table.add(ends(3));
    assert.equal(table.size, 2);
    assert.equal(table.take(ends(2)), false);
    clock += 99;
    assert.equal(table.take(ends(1)), true, '149 ms after the first copy, 99 after the second');
  });

  it('wakes an accept already waiting for the claim, and keeps nothing', function () {
    const table = new ClaimTable({ now });
    let woken = 0;
    table.wait(ends(7), () => (woken += 1));
    assert.equal(table.add(ends(8)), 'kept', 'another connection');
    assert.equal(woken, 0);
    assert.equal(table.add(ends(7)), 'woke');
    assert.equal(woken, 1);
    assert.equal(table.take(ends(7)), false, 'the claim was spent on the waiting accept');
    assert.equal(table.add(ends(7)), 'kept', 'a waiter is woken once');
    assert.equal(woken, 1);
  });

  it('stops waiting when told: a later claim is kept, not delivered', function () {
    const table = new ClaimTable({ now });
    let woken = false;
    const stop = table.wait(ends(9), () => (woken = true));
    stop();
    assert.equal(table.add(ends(9)), 'kept');
    assert.equal(woken, false);
    // A stale stop() of an earlier wait never cancels a newer one for the same ends.
    const first = table.wait(ends(10), () => undefined);
    let second = false;
    table.wait(ends(10), () => (second = true));
    first();
    table.add(ends(10));
    assert.equal(second, true);
  });
});
