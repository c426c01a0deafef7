/**
 * Pseudo DNS names: `<publication>.<account>.<zone>`, e.g. `redis.default.underpass.internal`. A
 * publication's name may have several labels, most specific first (`denpc.home` gives
 * `denpc.home.jsmith.underpass.internal`): the account is always the label right before the zone. They
 * look like any host name but no DNS server serves them (so no lookup of one ever leaves the machine);
 * only the hook answers them, with a
 * pseudo address. The default zone sits under `.internal`, the top-level name reserved for private use,
 * so a name that ever leaks to real DNS cannot reach anyone's host.
 *
 * Every parse and check of a host name goes through tldts.
 */
import { parse } from 'tldts';
import { ConfigError } from './errors';

// tldts validates a host name only on its extraction path, so extraction stays on; a result that differs
// from the input means the input was a URL or had other parts, and is refused.
const parseOptions = { allowPrivateDomains: true, validateHostname: true } as const;

/** Lower-cased host name without trailing dot, or null when it is not a valid DNS host name (or is an IP). */
export function tryNormalizeHostname(input: string): string | null {
  const lowered = (input.endsWith('.') ? input.slice(0, -1) : input).toLowerCase();
  const result = parse(lowered, parseOptions);
  if (result.isIp === true || result.hostname !== lowered) return null;
  if (lowered.length === 0 || lowered.length > 253) return null;
  return lowered;
}

/** True when `host` is a valid IP literal (v4 or v6), as tldts sees it. */
export function isIpLiteral(host: string): boolean {
  return parse(host, parseOptions).isIp === true;
}

/** A single DNS label usable as a publication or account name; throws ConfigError otherwise. */
export function label(input: string, what: string): string {
  const normalized = tryNormalizeHostname(input);
  if (normalized === null || normalized.includes('.')) {
    throw new ConfigError(`${what} '${input}' is not a DNS label: use letters, digits and '-', at most 63 characters`);
  }
  return normalized;
}

/** Validates a zone (one or more labels). */
/**
 * A publication name: one DNS label or several (`denpc.home`), most specific first; throws ConfigError
 * otherwise. Its pseudo name must still fit DNS's 253 characters, which pseudoName() checks.
 */
export function publicationName(input: string): string {
  const normalized = tryNormalizeHostname(input);
  if (normalized === null || normalized.split('.').some((l) => l.length === 0 || l.length > 63)) {
    throw new ConfigError(
      `publication name '${input}' is not a DNS name: use labels of letters, digits and '-' joined by dots (e.g. denpc.home)`,
    );
  }
  return normalized;
}

export function zone(input: string): string {
  const normalized = tryNormalizeHostname(input);
  if (normalized === null) throw new ConfigError(`zone '${input}' is not a valid DNS name`);
  return normalized;
}

export function pseudoName(publication: string, account: string, zoneName: string): string {
  const name = tryNormalizeHostname(`${publication}.${account}.${zoneName}`);
  if (name === null) throw new ConfigError(`'${publication}.${account}.${zoneName}' is not a valid DNS name`);
  return name;
}

/**
 * The id of `account`'s publication `name`, `ACCOUNT/NAME`: the key of the store, the grants and the
 * directory. Neither part may hold a '/' (both are DNS labels).
 */
export function publicationId(account: string, name: string): string {
  return `${account}/${name}`;
}

/** The NAME of publication id `ACCOUNT/NAME` (publicationId's second part). */
export function nameOfPublication(id: string): string {
  return id.slice(id.indexOf('/') + 1);
}

/** If `host` is a pseudo name under `zoneName`, its publication and account; else null. */
export function tryParsePseudoName(
  host: string,
  zoneName: string,
): { publication: string; account: string; host: string } | null {
  const normalized = tryNormalizeHostname(host);
  if (normalized === null || !normalized.endsWith(`.${zoneName}`)) return null;
  const labels = normalized.slice(0, -(zoneName.length + 1)).split('.');
  if (labels.length < 2) return null;
  const account = labels.pop()!;
  return { publication: labels.join('.'), account, host: normalized };
}

export interface HostPort {
  host: string;
  port: number;
}

/** Parses `HOST:PORT` (`[v6]:PORT` for IPv6) with a valid host name or IP literal; null otherwise. */
export function tryParseHostPort(input: string): HostPort | null {
  let url: URL;
  try {
    url = new URL(`tcp://${input}`);
  } catch {
    return null;
  }
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  const port = Number(url.port);
  if (url.port === '' || url.pathname !== '' || url.username !== '' || !(port >= 1 && port <= 65535)) return null;
  if (!isIpLiteral(host) && tryNormalizeHostname(host) === null) return null;
  return { host, port };
}

/** `HOST:PORT`, with an IPv6 literal in brackets. */
export function formatHostPort({ host, port }: HostPort): string {
  return `${host.includes(':') ? `[${host}]` : host}:${port}`;
}
