/**
 * The server's side of the direct hop (seed figure 8): which publications' proxies announced a direct
 * listener, and the tickets it issues for them. A proxy's announcement lives with the control stream
 * that made it (a reconnecting proxy announces again, with a fresh secret), so a ticket signed for an
 * earlier proxy session opens nothing at the new one. The server checks the redirector's access exactly
 * as for a relayed tunnel before it signs; the proxy then checks the ticket on its own.
 */
import { mintTicket, newTicketSecret } from '../protocol/direct-ticket';
import type { DirectListing } from '../protocol/control';
import { NotFoundError } from '../protocol/errors';
import type { DirectOffer } from '../protocol/wire';

/** A direct listener a proxy session announced for one of its publications, and its ticket secret. */
interface Announced extends DirectListing {
  secret: string;
}

export class DirectTickets {
  /** By proxy session (any object standing for one), then by publication name (lower case). */
  private readonly byProxy = new WeakMap<object, Map<string, Announced>>();

  /** Records a proxy's direct listener for `name`; returns the secret to send back with `published`. */
  announce(proxy: object, name: string, listing: DirectListing): string {
    let offers = this.byProxy.get(proxy);
    if (offers === undefined) this.byProxy.set(proxy, (offers = new Map()));
    const secret = newTicketSecret();
    offers.set(name.toLowerCase(), { ...listing, secret });
    return secret;
  }

  /** Whether the proxy session holding `name` announced a direct listener for it. */
  has(proxy: object | undefined, name: string): boolean {
    return proxy !== undefined && this.byProxy.get(proxy)?.has(name.toLowerCase()) === true;
  }

  /** A ticket for `account` to reach `host` (publication `name`, held by `proxy`) directly; throws NotFoundError. */
  issue(proxy: object, name: string, host: string, account: string): DirectOffer {
    const offer = this.byProxy.get(proxy)?.get(name.toLowerCase());
    if (offer === undefined)
      throw new NotFoundError(`${host} has no direct listener: its proxy runs without --direct-listen`);
    const { ticket, expiresAt } = mintTicket(offer.secret, host, account);
    return { addresses: offer.addresses, fingerprint: offer.fingerprint, ticket, expiresAt };
  }
}
