/**
 * Host-name lookups for the tunnels' targets, kept a few seconds. `net.connect` to a name runs
 * `dns.lookup` — getaddrinfo on libuv's thread pool, /etc/hosts read again each time — for every tunnel:
 * 0.11–0.18 ms of each opening for a target published as `localhost` on this machine (a dial to
 * 127.0.0.1 took 0.11–0.14 ms at the median, to localhost 0.25–0.29 ms). Answers are kept LOOKUP_TTL_MS,
 * as a local resolver cache would keep them, and failures not at all, so a name that starts resolving
 * works at once. Only the lookup is answered from here: Node's connect still tries every address it
 * returns (happy eyeballs), and an address literal never reaches it.
 */
import dns from 'node:dns';
import type { LookupFunction } from 'node:net';

/** How long a lookup's answer is reused (ms). */
export const LOOKUP_TTL_MS = 5_000;

/** Names kept at most; past it the oldest goes (a proxy has a few targets, so this is only a bound). */
export const MAX_CACHED_NAMES = 256;

type LookupCallback = Parameters<LookupFunction>[2];
type Answer = { address: string | dns.LookupAddress[]; family: number | undefined };

export class LookupCache {
  private readonly answers = new Map<string, Answer & { expires: number }>();

  constructor(
    /** The lookup that answers misses (dns.lookup; tests pass their own). */
    private readonly resolve: LookupFunction = dns.lookup as LookupFunction,
    private readonly ttlMs = LOOKUP_TTL_MS,
    /** A monotonic clock in ms; tests pass their own. */
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** A `lookup` for net.connect: the cached answer for the same name and options, else a fresh one. */
  readonly lookup: LookupFunction = (hostname, options, callback) => {
    const key = `${hostname}\0${options.family ?? 0}\0${options.hints ?? 0}\0${options.all === true ? 1 : 0}\0${String(options.order ?? options.verbatim ?? '')}`;
    const cached = this.answers.get(key);
    if (cached !== undefined && cached.expires > this.now()) {
      // Asynchronously, as a lookup answers: the caller may not be ready for its callback yet.
      process.nextTick(answerWith, callback, cached);
      return;
    }
    this.resolve(hostname, options, (error, address, family) => {
      if (error === null) this.keep(key, { address, family });
      else this.answers.delete(key);
      callback(error, address, family);
    });
  };

  private keep(key: string, answer: Answer): void {
    this.answers.delete(key);
    if (this.answers.size >= MAX_CACHED_NAMES) this.answers.delete(this.answers.keys().next().value!);
    this.answers.set(key, { ...answer, expires: this.now() + this.ttlMs });
  }
}

function answerWith(callback: LookupCallback, answer: Answer): void {
  // A copy of a list: the caller walks it, and the next one gets it whole.
  callback(null, Array.isArray(answer.address) ? [...answer.address] : answer.address, answer.family);
}
