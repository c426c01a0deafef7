/**
 * The name resolution layer for programs the hook cannot enter (seed 000's "name resolution layer"; issue
 * 12): a DNS server for the zone, on UDP and TCP, that answers a pseudo name with its pseudo address from
 * the redirector's one table — the address a hooked process gets for it — and opens the listener there,
 * exactly as a hooked lookup does. A static binary or a Go program resolving by itself then connects to
 * the redirector's listener with no hook at all, and is admitted there by the /proc owner check.
 *
 * Answers: A for a live publication (only what the server says is one); AAAA and other types of such a
 * name: no data (pseudo addresses are IPv4); a name under the zone that is no publication: NXDOMAIN; no
 * session to ask: SERVFAIL; a publication whose listener had to leave its published port (a local program
 * holds that port on every address, pseudo-listener.ts): SERVFAIL too, since a program without the hook
 * would connect to the published port and reach that local program instead; every name outside the zone, and every other opcode or class: REFUSED at
 * once, so that a resolver with this responder first moves on to the system's nameservers.
 *
 * The wire format is dns-packet's (mafintosh/dns-packet, pinned): nothing of DNS is framed here but the
 * two-byte length prefix of DNS over TCP (RFC 1035 4.2.2), whose stream is cut into messages below.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import dnsPacket from 'dns-packet';
import { ConfigError } from '../protocol/errors';
import { formatIPv4, type ErrorReply, type ResolveReply } from '../protocol/ipc';
import { tryNormalizeHostname } from '../protocol/names';
import type { Logger } from '../runtime/log';

/** Time to live of an answer (s): a pseudo address never changes, but a publication may go away. */
export const ANSWER_TTL_S = 10;

/** Largest DNS-over-TCP message taken, and how long an idle TCP client is kept (ms). */
const MAX_TCP_MESSAGE = 4096;
const TCP_IDLE_MS = 10_000;

/** RFC 1035 / 6895 response codes used here. */
const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;

/**
 * The address the responder takes when none is given: the last address of the pseudo range (e.g.
 * 127.77.255.255). resolv.conf names no port, so a responder for it must be on port 53 of an address of
 * its own; this one exists in every range the table accepts (/8 to /30), the table never hands it out
 * (so no publication's listener or reverse lookup shares it), it is loopback (it never leaves the
 * machine), and it is not 127.0.0.53, which systemd-resolved holds on many machines.
 */
export function defaultResponderAddress(base: number, prefix: number): string {
  return formatIPv4((base + 2 ** (32 - prefix) - 1) >>> 0);
}

export interface DnsResponderOptions {
  host: string;
  port: number;
  /** The zone of pseudo names, or null while the redirector has no session yet. */
  zone: () => string | null;
  /** The redirector's resolve (the hook's IPC request): looks the name up, opens its listener. */
  resolve: (name: string) => Promise<ResolveReply | ErrorReply>;
  logger: Logger;
}

/**
 * Builds the answer to one query message; null for what deserves none (a response, or bytes too short
 * to carry an id). Pure apart from `resolve`.
 */
export async function answerQuery(
  message: Buffer,
  zone: string | null,
  resolve: DnsResponderOptions['resolve'],
): Promise<Buffer | null> {
  let query: dnsPacket.DecodedPacket;
  try {
    query = dnsPacket.decode(message);
  } catch {
    // Undecodable: say so to a sender whose header was readable, with nothing else of it echoed.
    return message.length >= 12
      ? dnsPacket.encode({ type: 'response', id: message.readUInt16BE(0), flags: RCODE.FORMERR })
      : null;
  }
  if (query.flag_qr) return null;
  const id = query.id ?? 0;
  const rd = query.flag_rd ? dnsPacket.RECURSION_DESIRED : 0;
  const reply = (rcode: number, extra: Partial<dnsPacket.Packet> = {}, aa = false): Buffer =>
    dnsPacket.encode({
      type: 'response',
      id,
      flags: rcode | rd | (aa ? dnsPacket.AUTHORITATIVE_ANSWER : 0),
      questions: query.questions ?? [],
      ...extra,
    });
  const opcode = (query as { opcode?: string }).opcode;
  if (opcode !== 'QUERY') return reply(RCODE.NOTIMP);
  const question = query.questions?.length === 1 ? query.questions[0]! : null;
  if (question === null) return reply(RCODE.FORMERR);
  const name = tryNormalizeHostname(question.name);
  if (
    zone === null ||
    name === null ||
    (question.class ?? 'IN') !== 'IN' ||
    !(name === zone || name.endsWith(`.${zone}`))
  ) {
    return reply(RCODE.REFUSED);
  }
  const resolved = await resolve(name);
  if (!resolved.ok)
    return reply(resolved.code === 'NOT_FOUND' ? RCODE.NXDOMAIN : RCODE.SERVFAIL, {}, resolved.code === 'NOT_FOUND');
  if (resolved.moved !== undefined) return reply(RCODE.SERVFAIL);
  if (question.type !== 'A') return reply(RCODE.NOERROR, {}, true);
  return reply(
    RCODE.NOERROR,
    { answers: [{ type: 'A', class: 'IN', name: question.name, ttl: ANSWER_TTL_S, data: resolved.address }] },
    true,
  );
}

/** The responder: one UDP socket and one TCP listener on the same HOST:PORT. */
export class DnsResponder {
  private udp: dgram.Socket | null = null;
  private tcp: net.Server | null = null;
  private readonly clients = new Set<net.Socket>();

  constructor(private readonly options: DnsResponderOptions) {}

  get address(): string {
    return `${this.options.host}:${this.options.port}`;
  }

  /** Binds both sockets; rejects with ConfigError naming the address and the fix. */
  async start(): Promise<void> {
    const { host, port } = this.options;
    const failed = (e: NodeJS.ErrnoException, what: string): ConfigError => {
      const why =
        e.code === 'EACCES'
          ? 'EACCES: port 53 needs root, or sysctl net.ipv4.ip_unprivileged_port_start=53'
          : (e.code ?? e.message);
      return new ConfigError(
        `cannot answer DNS on ${what} ${host}:${port} (${why}): choose another --dns HOST:PORT, or --dns off`,
      );
    };
    const udp = dgram.createSocket({ type: net.isIPv6(host) ? 'udp6' : 'udp4' });
    await new Promise<void>((resolve, reject) => {
      udp.once('error', (e) => reject(failed(e, 'UDP')));
      udp.bind({ address: host, port, exclusive: true }, () => resolve());
    });
    udp.on('error', (e) => this.options.logger.warn(`DNS responder: ${e.message}`));
    udp.on('message', (message, peer) => void this.answerUdp(udp, message, peer));
    this.udp = udp;
    const tcp = net.createServer((socket) => this.serveTcp(socket));
    try {
      await new Promise<void>((resolve, reject) => {
        tcp.once('error', (e) => reject(failed(e, 'TCP')));
        tcp.listen({ host, port, exclusive: true }, () => {
          tcp.on('error', (e) => this.options.logger.warn(`DNS responder (TCP): ${e.message}`));
          resolve();
        });
      });
    } catch (e) {
      this.stop();
      throw e;
    }
    this.tcp = tcp;
  }

  stop(): void {
    this.udp?.close();
    this.udp = null;
    this.tcp?.close();
    this.tcp = null;
    for (const client of this.clients) client.destroy();
  }

  private async answerUdp(udp: dgram.Socket, message: Buffer, peer: dgram.RemoteInfo): Promise<void> {
    const answer = await this.answer(message);
    if (answer !== null && this.udp === udp) udp.send(answer, peer.port, peer.address);
  }

  private async answer(message: Buffer): Promise<Buffer | null> {
    try {
      return await answerQuery(message, this.options.zone(), this.options.resolve);
    } catch (e) {
      this.options.logger.warn(`DNS responder: a query failed: ${e instanceof Error ? e.message : String(e)}`);
      return null;
    }
  }

  /** DNS over TCP: messages with a two-byte length in front, answered in order, on one connection. */
  private serveTcp(socket: net.Socket): void {
    this.clients.add(socket);
    socket.once('close', () => this.clients.delete(socket));
    socket.on('error', () => undefined);
    socket.setTimeout(TCP_IDLE_MS, () => socket.destroy());
    let pending = Buffer.alloc(0);
    let queue = Promise.resolve();
    socket.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 2) {
        const length = pending.readUInt16BE(0);
        if (length > MAX_TCP_MESSAGE) {
          socket.destroy();
          return;
        }
        if (pending.length < 2 + length) return;
        const message = pending.subarray(2, 2 + length);
        pending = pending.subarray(2 + length);
        queue = queue.then(async () => {
          const answer = await this.answer(message);
          if (answer === null || socket.destroyed) return;
          const prefix = Buffer.alloc(2);
          prefix.writeUInt16BE(answer.length);
          socket.write(Buffer.concat([prefix, answer]));
        });
      }
    });
  }
}
