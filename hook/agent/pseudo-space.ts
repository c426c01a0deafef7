/**
 * What counts as pseudo: names under the redirector's zones and addresses inside its pseudo network,
 * both learnt from the `hello` reply. Every check here runs on the hot path of ordinary lookups and
 * connects, so it is a few string and integer comparisons and never an IPC round trip.
 *
 * Names are compared as lower case without a trailing dot, by plain suffix. The redirector validates
 * every name with tldts authoritatively; bundling tldts here was measured and rejected (see
 * `normaliseHostName`).
 */
import { formatIPv4, inPseudoNet, tryParseIPv4 } from '../../protocol/ipc-wire';
import type { HelloReply } from '../../protocol/ipc';
import { AF_INET, AF_INET6 } from './libc';

export class PseudoSpace {
  /** Lower case, without trailing dot (also the native gates' data, see gates.ts). */
  readonly zones: string[];
  /** The pseudo network, host order. */
  readonly base: number;
  readonly prefix: number;

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
  }

  /** The normalised name when `name` lies under one of the zones (not the zone itself), else null. */
  tryPseudoName(name: string): string | null {
    const normalised = normaliseHostName(name);
    if (normalised === null) return null;
    for (const zone of this.zones) {
      if (
        normalised.length > zone.length + 1 &&
        normalised.endsWith(zone) &&
        normalised.charCodeAt(normalised.length - zone.length - 1) === 0x2e
      ) {
        return normalised;
      }
    }
    return null;
  }

  isPseudoAddress(address: number): boolean {
    return inPseudoNet(address, this.base, this.prefix);
  }

  /**
   * The IPv4 pseudo destination of a sockaddr, or null: AF_INET inside the pseudo network, or AF_INET6
   * `::ffff:a.b.c.d` (a dual-stack socket) with a.b.c.d inside it.
   */
  tryPseudoDestination(sockaddr: NativePointer, length: number): { address: string; port: number } | null {
    if (sockaddr.isNull() || length < 2) return null;
    const family = sockaddr.readU16();
    let address: number;
    if (family === AF_INET && length >= 16) {
      address = readU32BigEndian(sockaddr.add(4));
    } else if (family === AF_INET6 && length >= 24) {
      const bytes = sockaddr.add(8);
      if (bytes.readU64().toNumber() !== 0 || bytes.add(8).readU32() !== 0xffff0000) return null;
      address = readU32BigEndian(bytes.add(12));
    } else {
      return null;
    }
    if (!this.isPseudoAddress(address)) return null;
    const port = (sockaddr.add(2).readU8() << 8) | sockaddr.add(3).readU8();
    return { address: formatIPv4(address), port };
  }
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
