/**
 * What counts as pseudo: names under the redirector's zones and addresses inside its pseudo network,
 * both learnt from the `hello` reply, and what forwarding mode hands to the redirector as well (its
 * `forward`: names matching its patterns, connects to its IPv4 networks). Every check here runs on the
 * hot path of ordinary lookups and connects, so it is a few string and integer comparisons and never an
 * IPC round trip.
 *
 * Names are compared as lower case without a trailing dot, by plain suffix. The redirector validates
 * every name with tldts authoritatively; bundling tldts here was measured and rejected (see
 * `normaliseHostName`).
 */
import { formatIPv4, inPseudoNet, tryParseIPv4, type IPv4Endpoint } from '../../protocol/ipc-wire';
import type { HelloReply } from '../../protocol/ipc';
import { maskOf, NAME_ONLY, NAME_OR_UNDER, NAME_UNDER, type GatedName, type GateNet } from './gates';
import { AF_INET, AF_INET6 } from './libc';

export class PseudoSpace {
  /** Lower case, without trailing dot (also the native gates' data, see gates.ts). */
  readonly zones: string[];
  /** The pseudo network, host order. */
  readonly base: number;
  readonly prefix: number;
  /** Forwarded name patterns: `suffix`, the name and every name under it; else the name alone. */
  readonly forwardNames: Array<{ name: string; suffix: boolean }>;
  /** Forwarded IPv4 networks, host order, with their ports (all of them when the pattern named none). */
  readonly forwardNets: GateNet[];

  constructor(hello: HelloReply) {
    const base = tryParseIPv4(hello.pseudoNet.base);
    if (
      base === null ||
      !Number.isInteger(hello.pseudoNet.prefix) ||
      hello.pseudoNet.prefix < 1 ||
      hello.pseudoNet.prefix > 32
    ) {
      throw new Error(`redirector sent a bad pseudo network ${JSON.stringify(hello.pseudoNet)}`);
    }
    this.base = base;
    this.prefix = hello.pseudoNet.prefix;
    this.zones = hello.zones.map((zone) => zone.toLowerCase().replace(/\.$/, '')).filter((zone) => zone !== '');
    this.forwardNames = (hello.forward?.names ?? []).flatMap(({ name, suffix }) => {
      const normalised = normaliseHostName(name);
      return normalised === null ? [] : [{ name: normalised, suffix }];
    });
    this.forwardNets = (hello.forward?.nets ?? []).flatMap(({ address, prefix, ports }) => {
      const value = tryParseIPv4(address);
      if (value === null || !Number.isInteger(prefix) || prefix < 0 || prefix > 32) return [];
      const mask = maskOf(prefix);
      return [{ base: (value & mask) >>> 0, mask, low: ports?.low ?? 1, high: ports?.high ?? 0xffff }];
    });
  }

  /** What the native gates compare names with (gates.ts): the zones, then the forwarded patterns. */
  gatedNames(): GatedName[] {
    return [
      ...this.zones.map((name): GatedName => ({ name, match: NAME_UNDER })),
      ...this.forwardNames.map(({ name, suffix }): GatedName => ({ name, match: suffix ? NAME_OR_UNDER : NAME_ONLY })),
    ];
  }

  /**
   * The normalised name when the redirector answers it: under one of the zones (not the zone itself), or
   * matching a forwarded name pattern. Else null.
   */
  tryPseudoName(name: string): string | null {
    const normalised = normaliseHostName(name);
    if (normalised === null) return null;
    const under = (parent: string): boolean =>
      normalised.length > parent.length + 1 &&
      normalised.endsWith(parent) &&
      normalised.charCodeAt(normalised.length - parent.length - 1) === 0x2e;
    if (this.zones.some(under)) return normalised;
    if (this.forwardNames.some(({ name, suffix }) => normalised === name || (suffix && under(name)))) return normalised;
    return null;
  }

  isPseudoAddress(address: number): boolean {
    return inPseudoNet(address, this.base, this.prefix);
  }

  /**
   * The IPv4 pseudo destination of a sockaddr, or null: AF_INET inside the pseudo network, or AF_INET6
   * `::ffff:a.b.c.d` (a dual-stack socket) with a.b.c.d inside it.
   */
  tryPseudoDestination(sockaddr: NativePointer, length: number): IPv4Endpoint | null {
    const endpoint = tryIPv4Of(sockaddr, length);
    if (endpoint === null || !this.isPseudoAddress(endpoint.value)) return null;
    return { address: formatIPv4(endpoint.value), port: endpoint.port };
  }

  /**
   * The IPv4 destination of a connect forwarding mode catches, or null: outside the pseudo network, in
   * one of the forwarded networks with its port (what the connect gate let through, checked again).
   */
  tryForwardDestination(sockaddr: NativePointer, length: number): IPv4Endpoint | null {
    const endpoint = tryIPv4Of(sockaddr, length);
    if (endpoint === null || this.isPseudoAddress(endpoint.value)) return null;
    const { value, port } = endpoint;
    const caught = this.forwardNets.some(
      (net) => (value & net.mask) >>> 0 === net.base && port >= net.low && port <= net.high,
    );
    return caught ? { address: formatIPv4(value), port } : null;
  }
}

/** The IPv4 address (host order) and port of an AF_INET sockaddr, or of an AF_INET6 `::ffff:a.b.c.d` one. */
function tryIPv4Of(sockaddr: NativePointer, length: number): { value: number; port: number } | null {
  if (sockaddr.isNull() || length < 2) return null;
  const family = sockaddr.readU16();
  let value: number;
  if (family === AF_INET && length >= 16) {
    value = readU32BigEndian(sockaddr.add(4));
  } else if (family === AF_INET6 && length >= 24) {
    const bytes = sockaddr.add(8);
    if (bytes.readU64().toNumber() !== 0 || bytes.add(8).readU32() !== 0xffff0000) return null;
    value = readU32BigEndian(bytes.add(12));
  } else {
    return null;
  }
  return { value, port: (sockaddr.add(2).readU8() << 8) | sockaddr.add(3).readU8() };
}

/**
 * Lower case, without one trailing dot, or null when `name` cannot be a DNS host name at all (empty,
 * too long, or with characters outside letters, digits, `-`, `_` and `.`). tldts would do the same with
 * IDNA on top, but measured with frida 17.26 (QuickJS, x86_64), a script holding only tldts' `parse`
 * (131 KB minified) takes 63-77 ms to load, against 9-10 ms for this whole agent (12 KB); every hooked
 * process, each child of a pipeline included, would pay that. A name this check lets through is
 * re-checked with tldts by the redirector before it answers, so nothing is decided on this check alone.
 */
export function normaliseHostName(name: string): string | null {
  let text = name.endsWith('.') ? name.slice(0, -1) : name;
  if (text.length === 0 || text.length > 253) return null;
  text = text.toLowerCase();
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    const ok =
      (code >= 0x61 && code <= 0x7a) ||
      (code >= 0x30 && code <= 0x39) ||
      code === 0x2d ||
      code === 0x2e ||
      code === 0x5f;
    if (!ok) return null;
  }
  return text;
}

/** Reads an IPv4 address (network byte order) as an unsigned 32-bit number. */
export function readU32BigEndian(pointer: NativePointer): number {
  return (
    ((pointer.readU8() << 24) |
      (pointer.add(1).readU8() << 16) |
      (pointer.add(2).readU8() << 8) |
      pointer.add(3).readU8()) >>>
    0
  );
}
