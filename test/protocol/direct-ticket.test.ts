import assert from 'node:assert/strict';
import fc from 'fast-check';
import { mintTicket, newTicketSecret, tryTicketHost, verifyTicket } from '../../protocol/direct-ticket';
import { ForbiddenError } from '../../protocol/errors';

const HOST = 'web.alice.underpass.internal';

describe('protocol/direct-ticket: what a direct listener accepts', function () {
  const secret = newTicketSecret();
  const now = 1_800_000_000_000;

  it('accepts a ticket the secret signed for this host until it expires', function () {
    const { ticket, expiresAt } = mintTicket(secret, HOST, 'bob', now, 60_000);
    assert.equal(expiresAt, now + 60_000);
    assert.equal(tryTicketHost(ticket), HOST);
    const body = verifyTicket(ticket, secret, HOST, now + 59_999);
    assert.equal(body.a, 'bob');
    assert.throws(() => verifyTicket(ticket, secret, HOST, now + 60_000), /^ForbiddenError: the direct ticket expired/);
  });

  it('refuses another secret, another host, a lifetime no clock explains, and garbage', function () {
    const { ticket } = mintTicket(secret, HOST, 'bob', now);
    assert.throws(() => verifyTicket(ticket, newTicketSecret(), HOST, now), /not signed for this proxy/);
    assert.throws(() => verifyTicket(ticket, secret, 'db.alice.underpass.internal', now), /is for web\.alice/);
    const long = mintTicket(secret, HOST, 'bob', now, 3_600_000).ticket;
    assert.throws(() => verifyTicket(long, secret, HOST, now), /lives too long/);
    for (const bad of ['', 'v1.', 'v1..', 'v2.e30.AAAA', `v1.${Buffer.from('{"h":1}').toString('base64url')}.AA`])
      assert.throws(() => verifyTicket(bad, secret, HOST, now), ForbiddenError);
  });

  it('refuses every change to a signed ticket', function () {
    const { ticket } = mintTicket(secret, HOST, 'bob', now);
    fc.assert(
      fc.property(fc.nat(ticket.length - 1), fc.string({ minLength: 1, maxLength: 1 }), (at, c) => {
        fc.pre(ticket[at] !== c);
        const changed = ticket.slice(0, at) + c + ticket.slice(at + 1);
        // base64url's last character can carry unused bits: a change there may decode to the same bytes.
        try {
          verifyTicket(changed, secret, HOST, now);
          return Buffer.from(changed.slice(changed.lastIndexOf('.') + 1), 'base64url').equals(
            Buffer.from(ticket.slice(ticket.lastIndexOf('.') + 1), 'base64url'),
          );
        } catch (e) {
          return e instanceof ForbiddenError;
        }
      }),
    );
  });
});
