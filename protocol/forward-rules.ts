/**
 * Forwarding rules, one grammar for both ends: the redirector's `--forward PATTERN` (which destinations go
 * through the tunnel server as plain connections) and the server's `--forward-allow RULE` (which ones the
 * server will dial). A rule is a host-name suffix (`.corp.example`: that name and every name under it; a
 * name without the dot matches only itself), an IPv4/IPv6 address or CIDR, each optionally followed by
 * `:PORT` or `:LOW-HIGH` (an IPv6 address in brackets then: `[2001:db8::]/32:443`).
 *
 * Host names go through tldts (protocol/names.ts); addresses and CIDRs through node:net's BlockList.
 */
import net from 'node:net';
import { ConfigError } from './errors';
import { tryNormalizeHostname } from './names';

export type ForwardRule =
  | { kind: 'name'; name: string; suffix: boolean; ports: PortRange | null; text: string }
  | {
      kind: 'net';
      list: net.BlockList;
      /** The network's address and prefix length, as given (what a hook's native gate compares). */
      address: string;
      prefix: number;
      family: 4 | 6;
      ports: PortRange | null;
      text: string;
    };

export interface PortRange {
  low: number;
  high: number;
}

function parsePorts(text: string, rule: string): PortRange {
  const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(text);
  const low = m ? Number(m[1]) : NaN;
  const high = m ? Number(m[2] ?? m[1]) : NaN;
  if (!(low >= 1 && high <= 65535 && low <= high))
    throw new ConfigError(`forward rule '${rule}': '${text}' is not a port or a range LOW-HIGH of ports`);
  return { low, high };
}

/** Parses one rule; throws ConfigError saying what forms there are. */
export function parseForwardRule(rule: string): ForwardRule {
  const fail = (why: string): never => {
    throw new ConfigError(
      `forward rule '${rule}': ${why} (use .suffix.example, a name, an address or CIDR, each with an optional :PORT or :LOW-HIGH)`,
    );
  };
  let body = rule.trim();
  let ports: PortRange | null = null;
  if (body.startsWith('[')) {
    // [v6 address or CIDR]:ports
    const close = body.indexOf(']');
    if (close < 0) fail('an opening [ with no ]');
    // The prefix may stand inside the brackets or after them: [2001:db8::/32]:443, [2001:db8::]/32:443.
    const after = /^(\/\d+)?(?::(.*))?$/.exec(body.slice(close + 1));
    if (after === null) fail('text after ]');
    if (after?.[2] !== undefined) ports = parsePorts(after[2], rule);
    body = body.slice(1, close) + (after?.[1] ?? '');
  } else {
    const colons = body.split(':').length - 1;
    // One colon: a name or IPv4 with a port. More: a bare IPv6 address or CIDR (no port).
    if (colons === 1) {
      const at = body.lastIndexOf(':');
      ports = parsePorts(body.slice(at + 1), rule);
      body = body.slice(0, at);
    }
  }
  const [address, prefixText, extra] = body.split('/');
  if (extra !== undefined) fail('more than one /');
  const family = net.isIP(address ?? '');
  if (family !== 0) {
    const bits = family === 4 ? 32 : 128;
    const prefix = prefixText === undefined ? bits : Number(prefixText);
    if (!Number.isInteger(prefix) || prefix < 0 || prefix > bits) fail(`/${prefixText ?? ''} is not a prefix length`);
    const list = new net.BlockList();
    list.addSubnet(address!, prefix, family === 4 ? 'ipv4' : 'ipv6');
    return { kind: 'net', list, address: address!, prefix, family: family === 4 ? 4 : 6, ports, text: rule };
  }
  if (prefixText !== undefined) fail(`'${address ?? ''}' is not an address`);
  const suffix = body.startsWith('.');
  const name = tryNormalizeHostname(suffix ? body.slice(1) : body);
  if (name === null) fail(`'${body}' is not a host name`);
  return { kind: 'name', name: name!, suffix, ports, text: rule };
}

function portMatches(ports: PortRange | null, port: number): boolean {
  return ports === null || (port >= ports.low && port <= ports.high);
}

/** Whether `host:port` (a host name, or an IP literal) matches the rule. */
export function ruleMatches(rule: ForwardRule, host: string, port: number): boolean {
  if (!portMatches(rule.ports, port)) return false;
  const family = net.isIP(host);
  if (rule.kind === 'net') return family !== 0 && rule.list.check(host, family === 4 ? 'ipv4' : 'ipv6');
  if (family !== 0) return false;
  const name = tryNormalizeHostname(host);
  if (name === null) return false;
  return name === rule.name || (rule.suffix && name.endsWith(`.${rule.name}`));
}

/** The first rule `host:port` matches, or null. */
export function tryMatchRule(rules: readonly ForwardRule[], host: string, port: number): ForwardRule | null {
  return rules.find((r) => ruleMatches(r, host, port)) ?? null;
}

/**
 * The first name rule `host` matches on some port, or null: a hooked app's lookup, which knows no port
 * yet, is answered for such a name, and its connect checks the port (tryMatchRule).
 */
export function tryMatchName(rules: readonly ForwardRule[], host: string): ForwardRule | null {
  return rules.find((r) => r.kind === 'name' && ruleMatches({ ...r, ports: null }, host, 1)) ?? null;
}

/**
 * Addresses the server never dials unless an address rule names them: its own loopback, link-local
 * (which holds the cloud metadata service, 169.254.169.254), and the unspecified address.
 */
const GUARDED = (() => {
  const list = new net.BlockList();
  list.addSubnet('127.0.0.0', 8, 'ipv4');
  list.addSubnet('169.254.0.0', 16, 'ipv4');
  list.addSubnet('0.0.0.0', 8, 'ipv4');
  list.addAddress('::1', 'ipv6');
  list.addAddress('::', 'ipv6');
  list.addSubnet('fe80::', 10, 'ipv6');
  return list;
})();

/** Whether the address is one the server guards (see GUARDED). */
export function isGuardedAddress(address: string): boolean {
  const family = net.isIP(address);
  return family !== 0 && GUARDED.check(address, family === 4 ? 'ipv4' : 'ipv6');
}
