/**
 * Direct tickets: the credential a redirector presents to a service proxy's direct listener (seed figure
 * 8, the "hop"). The server, which alone decides who may use a publication, signs a ticket for one
 * redirector account and one publication with a secret it gave the proxy when it accepted the publication;
 * the proxy checks the signature, the publication and the expiry itself, without asking the server, and
 * binds each ticket to the first HTTP/2 session that shows it, so a copied ticket opens nothing elsewhere.
 *
 * Format (PROTOCOL.md §1.6): `v1.` BODY `.` MAC, BODY the base64url of the JSON {@link TicketBody}, MAC the
 * base64url of HMAC-SHA256(secret, `v1.` BODY). Pure code: no sockets, the clock is a parameter.
 */
import crypto from 'node:crypto';
import { z } from 'zod';
import { ForbiddenError } from './errors';

/** How long a ticket opens tunnels after the server issued it (ms). */
export const TICKET_LIFETIME_MS = 60_000;

/** Longest a ticket may claim to live, against a skewed or lying clock (ms). */
const MAX_LIFETIME_MS = 10 * 60_000;

const PREFIX = 'v1.';

export const TicketBody = z
  .object({
    /** The publication's pseudo name. */
    h: z.string().min(1).max(253),
    /** The redirector's account the server checked. */
    a: z.string().min(1).max(63),
    /** Expiry, ms since the epoch. */
    e: z.number().int().min(0),
    /** Random, unique per ticket: what a replay is recognised by. */
    n: z.string().min(16).max(64),
  })
  .strict();
export type TicketBody = z.infer<typeof TicketBody>;

/** A fresh secret for one publication's tickets (base64url, 256 bits). */
export function newTicketSecret(): string {
  return crypto.randomBytes(32).toString('base64url');
}

function mac(secret: string, signed: string): Buffer {
  return crypto.createHmac('sha256', secret).update(signed).digest();
}

/** Signs a ticket for `account` to reach `host` until `now + lifetimeMs`. */
export function mintTicket(
  secret: string,
  host: string,
  account: string,
  now = Date.now(),
  lifetimeMs = TICKET_LIFETIME_MS,
): { ticket: string; expiresAt: number } {
  const body: TicketBody = {
    h: host,
    a: account,
    e: now + lifetimeMs,
    n: crypto.randomBytes(16).toString('base64url'),
  };
  const signed = PREFIX + Buffer.from(JSON.stringify(body)).toString('base64url');
  return { ticket: `${signed}.${mac(secret, signed).toString('base64url')}`, expiresAt: body.e };
}

/** The host a ticket claims, before its signature is checked: which publication's secret to check it with. */
export function tryTicketHost(ticket: string): string | null {
  return tryBody(ticket)?.h ?? null;
}

function tryBody(ticket: string): TicketBody | null {
  if (!ticket.startsWith(PREFIX) || ticket.length > 1024) return null;
  const dot = ticket.indexOf('.', PREFIX.length);
  if (dot < 0) return null;
  try {
    const parsed = TicketBody.safeParse(
      JSON.parse(Buffer.from(ticket.slice(PREFIX.length, dot), 'base64url').toString('utf8')),
    );
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}

/**
 * The ticket's body when `secret` signed it for `host` and it has not expired; throws ForbiddenError
 * saying which of those failed, in one line. Replays are the caller's to refuse (it holds the sessions).
 */
export function verifyTicket(ticket: string, secret: string, host: string, now = Date.now()): TicketBody {
  const body = tryBody(ticket);
  const dot = ticket.lastIndexOf('.');
  if (body === null || dot <= PREFIX.length)
    throw new ForbiddenError('not a direct ticket: ask the tunnel server for one (GET /v1/direct/NAME)');
  const given = Buffer.from(ticket.slice(dot + 1), 'base64url');
  const wanted = mac(secret, ticket.slice(0, dot));
  if (given.length !== wanted.length || !crypto.timingSafeEqual(given, wanted))
    throw new ForbiddenError('the direct ticket is not signed for this proxy: ask the tunnel server for a new one');
  if (body.h !== host) throw new ForbiddenError(`the direct ticket is for ${body.h}, not ${host}`);
  if (body.e <= now) throw new ForbiddenError('the direct ticket expired: ask the tunnel server for a new one');
  if (body.e > now + MAX_LIFETIME_MS)
    throw new ForbiddenError('the direct ticket lives too long for this clock: check both machines keep time');
  return body;
}
