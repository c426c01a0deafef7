/**
 * The tunnel servers an endpoint may use (`--server a:p,b:p,c:p`, or one name that resolves to several
 * addresses): the nodes of one cluster, any of which serves its publications under the same names and
 * keys. The link dials them in order from the one that worked last, so that when its node dies it is on
 * another at the next attempt, and comes back to none of them by itself while the one it has works;
 * between attempts, it backs off.
 */
import dns from 'node:dns/promises';
import { formatHostPort, isIpLiteral, type HostPort } from '../protocol/names';

/** One address to dial: the server as given (for TLS's name check) and, for a name, one of its addresses. */
export interface Candidate {
  server: HostPort;
  /** The address to connect to when `server.host` is a name that resolves to several. */
  address: string | undefined;
  /** For logs: `HOST:PORT`, with the address when there is one. */
  where: string;
}

/** Every address of a name (dns.lookup, as a connect resolves it). */
export type Resolve = (host: string) => Promise<string[]>;

const lookupAll: Resolve = async (host) => (await dns.lookup(host, { all: true })).map((a) => a.address);

export class ServerList {
  private current: Candidate;

  constructor(
    private readonly servers: readonly HostPort[],
    private readonly resolve: Resolve = lookupAll,
  ) {
    this.current = { server: servers[0]!, address: undefined, where: formatHostPort(servers[0]!) };
  }

  /** Whether there is more than one server to go to. */
  get several(): boolean {
    return this.servers.length > 1 || this.current.address !== undefined;
  }

  /** The server of the live (or last) session. */
  get where(): string {
    return this.current.where;
  }

  /** Every candidate, the one that worked last first, then the others in the order given. */
  async candidates(): Promise<Candidate[]> {
    const all: Candidate[] = [];
    for (const server of this.servers) all.push(...(await expand(server, this.resolve)));
    const at = all.findIndex((c) => c.where === this.current.where);
    return at <= 0 ? all : [...all.slice(at), ...all.slice(0, at)];
  }

  /** The session now runs to `candidate`; true when that is another server than before. */
  use(candidate: Candidate): boolean {
    const moved = candidate.where !== this.current.where;
    this.current = candidate;
    return moved;
  }
}

/** A name that resolves to several addresses is one candidate per address; anything else, itself. */
async function expand(server: HostPort, resolve: Resolve): Promise<Candidate[]> {
  const plain = { server, address: undefined, where: formatHostPort(server) };
  if (isIpLiteral(server.host)) return [plain];
  let addresses: string[];
  try {
    addresses = await resolve(server.host);
  } catch {
    // The dial says why (with the name), as it would without a list.
    return [plain];
  }
  if (addresses.length <= 1) return [plain];
  return addresses.map((address) => ({
    server,
    address,
    where: `${formatHostPort(server)} (${formatHostPort({ host: address, port: server.port })})`,
  }));
}

/** Backoff between reconnect attempts: `minMs` doubling up to `maxMs`, each with ±50 % jitter. */
export class Backoff {
  private attempt = 0;
  constructor(
    private readonly minMs: number,
    private readonly maxMs: number,
  ) {}
  next(): number {
    const base = Math.min(this.maxMs, this.minMs * 2 ** this.attempt);
    this.attempt += 1;
    return Math.round(base * (0.5 + Math.random()));
  }
  reset(): void {
    this.attempt = 0;
  }
}
