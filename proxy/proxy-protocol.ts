/**
 * The PROXY protocol header a publication may ask for (`--proxy-protocol v1|v2`): the first bytes the
 * target reads tell it who the client is, as the tunnel server saw it, since the connection itself
 * comes from the proxy. Built with proxy-protocol-js (HAProxy's spec, both versions).
 *
 * Version 2 also carries two TLVs: PP2_TYPE_AUTHORITY (0x02) with the pseudo name the client asked for,
 * and 0xE0 (the first of the spec's custom types) with the client's account. proxy-protocol-js writes
 * extra bytes after the addresses but leaves them out of the header's length field, so the length is
 * set here to cover them: then they are TLVs, not payload.
 */
import net from 'node:net';
import {
  Command,
  INETProtocol,
  IPv4Address,
  IPv4ProxyAddress,
  IPv6Address,
  IPv6ProxyAddress,
  Peer,
  TransportProtocol,
  UnspecProxyAddress,
  V1ProxyProtocol,
  V2ProxyProtocol,
} from 'proxy-protocol-js';

export const PROXY_PROTOCOL_VERSIONS = ['v1', 'v2'] as const;
export type ProxyProtocolVersion = (typeof PROXY_PROTOCOL_VERSIONS)[number];

/** PP2_TYPE_AUTHORITY: the host name the client used. */
export const PP2_TYPE_AUTHORITY = 0x02;
/** Our custom TLV: the client's account. */
export const PP2_TYPE_UNDERPASS_ACCOUNT = 0xe0;

/** Who asks, as the server tells the proxy. */
export interface ProxyClient {
  address?: string;
  port?: number;
  account: string;
  host: string;
}

/** Where the proxy reached the target: the header's destination. */
export interface ProxyDestination {
  address: string;
  port: number;
}

function tlv(type: number, value: string): Buffer {
  const bytes = Buffer.from(value, 'utf8');
  const head = Buffer.alloc(3);
  head.writeUInt8(type, 0);
  head.writeUInt16BE(bytes.length, 1);
  return Buffer.concat([head, bytes]);
}

function v6Words(address: string): number[] {
  // node:net's SocketAddress gives the canonical form; expand it to 16 bytes.
  const [head = '', tail = ''] = address.split('::');
  const words = (part: string): number[] => (part === '' ? [] : part.split(':').map((w) => parseInt(w, 16)));
  const h = words(head);
  const t = words(tail);
  const all = address.includes('::') ? [...h, ...Array<number>(8 - h.length - t.length).fill(0), ...t] : h;
  return all.flatMap((w) => [w >> 8, w & 0xff]);
}

/** The header for one tunnel: v1 text or v2 bytes. A client of unknown address gets UNKNOWN / LOCAL. */
export function proxyHeader(version: ProxyProtocolVersion, client: ProxyClient, destination: ProxyDestination): Buffer {
  const source = client.address;
  const family = source !== undefined && net.isIP(source) === net.isIP(destination.address) ? net.isIP(source) : 0;
  if (version === 'v1') {
    if (family === 0 || source === undefined) return Buffer.from('PROXY UNKNOWN\r\n', 'latin1');
    const header = new V1ProxyProtocol(
      family === 4 ? INETProtocol.TCP4 : INETProtocol.TCP6,
      new Peer(source, client.port ?? 0),
      new Peer(destination.address, destination.port),
    ).build();
    return Buffer.from(header, 'latin1');
  }
  const tlvs = Buffer.concat([tlv(PP2_TYPE_AUTHORITY, client.host), tlv(PP2_TYPE_UNDERPASS_ACCOUNT, client.account)]);
  const address =
    family === 4 && source !== undefined
      ? new IPv4ProxyAddress(
          IPv4Address.createFrom(source.split('.').map(Number)),
          client.port ?? 0,
          IPv4Address.createFrom(destination.address.split('.').map(Number)),
          destination.port,
        )
      : family === 6 && source !== undefined
        ? new IPv6ProxyAddress(
            IPv6Address.createFrom(v6Words(source)),
            client.port ?? 0,
            IPv6Address.createFrom(v6Words(destination.address)),
            destination.port,
          )
        : new UnspecProxyAddress();
  const header = Buffer.from(
    new V2ProxyProtocol(
      family === 0 ? Command.LOCAL : Command.PROXY,
      family === 0 ? TransportProtocol.UNSPEC : TransportProtocol.STREAM,
      address,
      tlvs,
    ).build(),
  );
  // Bytes 14–15: the length of what follows the 16-byte fixed part, addresses and TLVs together.
  header.writeUInt16BE(header.length - 16, 14);
  return header;
}
