/**
 * Forwarding mode for hooked apps (issue 15): which of their lookups and connects the redirector's
 * `--forward` patterns send through the tunnel server as plain connections. The SOCKS5 and HTTP CONNECT
 * listeners get a destination's name or address in their request; a hooked app gets neither, so:
 *
 * - A lookup of a name a name pattern matches is answered here, with a pseudo address of the machine's
 *   table (the tunnel server resolves the name when it dials it, so names only its side knows work). The
 *   lookup knows no port yet: the connect checks it.
 * - A connect to such a pseudo address, or to an IPv4 address a CIDR pattern matches, gets a pseudo
 *   listener for that destination and port, as a publication does. For an address outside the pseudo
 *   network the listener sits on a pseudo address that stands in for it (the table keeps the address as
 *   its "name"), and the hook sends the app's connect there (`via` in the reply).
 *
 * Every forwarded connect asks first, non-blocking ones too (the hook knows them by the `forward` mark
 * in its replies): the server's refusal (the destination is not on its `--forward-allow`, it is the
 * server's own loopback, it does not answer) is then the connect's own ECONNREFUSED, with its one line
 * for the user, instead of a reset the user cannot explain.
 *
 * The hook only hands over what the hello reply's `forward` lists; the decisions, the port checks
 * included, are made here again.
 */
import type { ErrorReply, HelloForward, ResolveReply } from '../protocol/ipc';
import { inPseudoNet, tryParseIPv4 } from '../protocol/ipc';
import { tryMatchName, tryMatchRule, type ForwardRule } from '../protocol/forward-rules';
import { formatHostPort, tryNormalizeHostname, tryParsePseudoName } from '../protocol/names';
import type { PseudoAddressTable } from './pseudo-table';

/** Where a forwarded connect goes: the destination, and the pseudo address its listener holds. */
export interface ForwardTarget {
  /** What the server dials: a name, or an IPv4 address. */
  host: string;
  /** The pseudo address of the destination's listener. */
  address: string;
  /** True when `address` stands in for an address outside the pseudo network (the reply's `via`). */
  standIn: boolean;
}

/** What the user is told to do about a destination the redirector does not forward on that port. */
const NOT_ON_FORWARD = "add it to the redirector's --forward (a name, .suffix or CIDR, with its port or none)";
/** … and about one the tunnel server refused. */
export const SERVER_REFUSED_FORWARD =
  "check the destination and its port, or ask the tunnel server's operator whether it should dial it";

export class HookForwarding {
  constructor(
    private readonly rules: readonly ForwardRule[],
    private readonly table: PseudoAddressTable,
    private readonly zone: () => string,
  ) {}

  /** The hello reply's `forward`: absent when there is nothing to hand over. */
  hello(): { forward?: HelloForward } {
    if (this.rules.length === 0) return {};
    const names: HelloForward['names'] = [];
    const nets: HelloForward['nets'] = [];
    for (const rule of this.rules) {
      if (rule.kind === 'name') names.push({ name: rule.name, suffix: rule.suffix });
      // IPv6 networks stay with the SOCKS5 and HTTP listeners: the hook catches IPv4 destinations only.
      else if (rule.family === 4)
        nets.push({
          address: rule.address,
          prefix: rule.prefix,
          ...(rule.ports === null ? {} : { ports: rule.ports }),
        });
    }
    return { forward: { names, nets } };
  }

  /** A hooked app's lookup of a forwarded name: its pseudo address; null for any other name. */
  tryResolve(name: string): ResolveReply | null {
    const host = tryNormalizeHostname(name);
    if (host === null || tryParsePseudoName(host, this.zone()) !== null || tryMatchName(this.rules, host) === null)
      return null;
    return { ok: true, name: host, address: this.table.addressOf(host), forward: true };
  }

  /** Whether a pseudo address's name (from the table) is a forwarded destination's. */
  isForwarded(name: string): boolean {
    return tryParsePseudoName(name, this.zone()) === null && this.rules.length > 0;
  }

  /**
   * Where a connect to `address:port` is forwarded: null when it is no forwarded destination (a
   * publication's pseudo address, or one the table does not know), an error reply when it is one but
   * not on this port.
   */
  tryTarget(address: string, port: number): ForwardTarget | ErrorReply | null {
    const value = tryParseIPv4(address);
    if (value === null) return null;
    const pseudo = inPseudoNet(value, this.table.base, this.table.prefix);
    const host = pseudo ? this.table.tryNameOf(address) : address;
    if (host === null || !this.isForwarded(host)) return null;
    if (tryMatchRule(this.rules, host, port) === null)
      return {
        ok: false,
        code: 'REFUSED',
        message: `${formatHostPort({ host, port })} is not a forwarding destination of this redirector`,
        fix: NOT_ON_FORWARD,
      };
    // A stand-in's own "name" is the address it stands for: a connect to it is one to that address.
    if (pseudo) return { host, address, standIn: false };
    return { host, address: this.table.addressOf(host), standIn: true };
  }
}
