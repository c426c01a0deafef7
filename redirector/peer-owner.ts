/**
 * Who connects to the redirector's listeners (README "Security"). The listeners sit on loopback pseudo
 * addresses that every local user can reach, and TCP tells a listener nothing about who is on the other
 * end (SO_PEERCRED is for Unix sockets). Linux does keep, for each socket, the uid that created it, and
 * shows it in /proc/net/tcp and /proc/net/tcp6: the client's row is the one whose local address is the
 * peer's address:port and whose remote address is our listener's. So an accepted socket stays paused
 * (pauseOnConnect: its first bytes wait in the kernel, nothing is lost or forwarded) until that row says
 * who owns the client; only the redirector's own user and root get through.
 *
 * Why root too: the redirector's other door, its 0600 IPC socket, does not bind root either, and root can
 * read the redirector's memory and token anyway; refusing it would protect nothing and break `sudo APP`.
 *
 * Cost: reading /proc/net/tcp walks every TCP socket in the network namespace (about 3 µs a row on this
 * machine, in the kernel), and no maintained npm package speaks sock_diag netlink, whose exact lookup
 * would be O(1). So lookups are batched: while one pass over the file runs, new accepts queue, and the
 * next pass serves them all; a pass stops as soon as every wanted row was seen; the reading happens in
 * libuv's thread pool, off the event loop.
 *
 * A client that already closed its socket is refused: its row then has no inode, and for a time-wait
 * entry the kernel prints uid 0 whoever owned it, so its owner can no longer be told.
 */
import type { FileHandle } from 'node:fs/promises';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import { unmapIPv4 } from '../protocol/ipc-wire';

/** An address and port as /proc/net/tcp{,6} print them, decoded. */
export interface ProcEndpoint {
  address: string;
  port: number;
}

/** The fields of one /proc/net/tcp or /proc/net/tcp6 row that the owner check reads. */
export interface ProcTcpRow {
  local: ProcEndpoint;
  remote: ProcEndpoint;
  /** The kernel's TCP state number (1 ESTABLISHED, 5 FIN_WAIT2, 6 TIME_WAIT, 10 LISTEN). */
  state: number;
  /** Owner of the socket; meaningless (0) when `inode` is 0. */
  uid: number;
  /** 0 when no process holds the socket any more (closed, or a time-wait entry). */
  inode: number;
}

export type Endianness = 'BE' | 'LE';

/**
 * The kernel prints an address as 32-bit words in host byte order, each `%08X`: 127.0.0.1 is `0100007F`
 * on a little-endian machine; an IPv6 address is four such words. Ports are plain `%04X`.
 */
function wordsToBytes(hex: string, endianness: Endianness): Buffer | null {
  if (!/^[0-9A-Fa-f]+$/.test(hex) || (hex.length !== 8 && hex.length !== 32)) return null;
  const bytes = Buffer.alloc(hex.length / 2);
  for (let i = 0; i < hex.length / 8; i++) {
    const word = parseInt(hex.slice(i * 8, i * 8 + 8), 16);
    if (endianness === 'LE') bytes.writeUInt32LE(word, i * 4);
    else bytes.writeUInt32BE(word, i * 4);
  }
  return bytes;
}

function bytesToWords(bytes: Buffer, endianness: Endianness): string {
  let hex = '';
  for (let i = 0; i < bytes.length; i += 4) {
    const word = endianness === 'LE' ? bytes.readUInt32LE(i) : bytes.readUInt32BE(i);
    hex += word.toString(16).toUpperCase().padStart(8, '0');
  }
  return hex;
}

function tryParseEndpoint(field: string, endianness: Endianness): ProcEndpoint | null {
  const colon = field.indexOf(':');
  const bytes = wordsToBytes(field.slice(0, colon), endianness);
  const portHex = field.slice(colon + 1);
  if (bytes === null || !/^[0-9A-Fa-f]{4}$/.test(portHex)) return null;
  if (bytes.length === 4) return { address: Array.from(bytes).join('.'), port: parseInt(portHex, 16) };
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i).toString(16));
  // inet_ntop's canonical text (`::ffff:127.0.0.1`, `::1`), the same Node reports for sockets.
  return {
    address: new net.SocketAddress({ address: groups.join(':'), family: 'ipv6' }).address,
    port: parseInt(portHex, 16),
  };
}

/** Parses one row of /proc/net/tcp or /proc/net/tcp6; null for the header or anything malformed. */
export function tryParseProcTcpRow(line: string, endianness: Endianness = os.endianness()): ProcTcpRow | null {
  // sl: local remote st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ...
  const fields = line.trim().split(/\s+/);
  if (fields.length < 10 || !/^\d+:$/.test(fields[0]!)) return null;
  const local = tryParseEndpoint(fields[1]!, endianness);
  const remote = tryParseEndpoint(fields[2]!, endianness);
  if (
    local === null ||
    remote === null ||
    !/^[0-9A-Fa-f]{2}$/.test(fields[3]!) ||
    !/^\d+$/.test(fields[7]!) ||
    !/^\d+$/.test(fields[9]!)
  )
    return null;
  return { local, remote, state: parseInt(fields[3]!, 16), uid: Number(fields[7]), inode: Number(fields[9]) };
}

/** IPv4 text, or IPv4-mapped IPv6 text (`::ffff:1.2.3.4`), to its four bytes; null for anything else. */
function tryIpv4Bytes(address: string): Buffer | null {
  const v4 = unmapIPv4(address);
  return net.isIPv4(v4) ? Buffer.from(v4.split('.').map(Number)) : null;
}

/**
 * How /proc/net/tcp (`family` 4) or /proc/net/tcp6 (`family` 6, the IPv4-mapped form, as an AF_INET6
 * client connected to an IPv4 listener shows) prints an IPv4 endpoint: `0100007F:1F90`. Null when the
 * address is not IPv4: the pseudo addresses are IPv4 loopback, so nothing else is looked up.
 */
export function tryProcEndpointText(
  address: string,
  port: number,
  family: 4 | 6,
  endianness: Endianness = os.endianness(),
): string | null {
  const v4 = tryIpv4Bytes(address);
  if (v4 === null || !Number.isInteger(port) || port < 0 || port > 0xffff) return null;
  const bytes = family === 4 ? v4 : Buffer.concat([Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]), v4]);
  return `${bytesToWords(bytes, endianness)}:${port.toString(16).toUpperCase().padStart(4, '0')}`;
}

/** The two ends of an accepted connection, as the listener sees them. */
export interface ConnectionEnds {
  /** The client's end: the row looked up is the client's socket. */
  peerAddress: string;
  peerPort: number;
  /** The listener's end. */
  localAddress: string;
  localPort: number;
}

/**
 * The text a client's row starts with after `sl:` in the given file: its local address (the peer) and
 * remote address (our listener). Null when the ends are not IPv4.
 */
export function tryClientRowKey(
  ends: ConnectionEnds,
  family: 4 | 6,
  endianness: Endianness = os.endianness(),
): string | null {
  const peer = tryProcEndpointText(ends.peerAddress, ends.peerPort, family, endianness);
  const ours = tryProcEndpointText(ends.localAddress, ends.localPort, family, endianness);
  return peer === null || ours === null ? null : `${peer} ${ours}`;
}

/**
 * Finds the rows of `wanted` keys (see tryClientRowKey) in complete lines of a /proc/net/tcp{,6} text,
 * adds them to `found`, and returns how many were new. Each line costs an indexOf and a set lookup; only
 * matches are parsed.
 */
export function findRows(
  text: string,
  wanted: ReadonlySet<string>,
  found: Map<string, ProcTcpRow>,
  endianness: Endianness = os.endianness(),
): number {
  // The keys of one file all have one length: 27 characters in tcp, 75 in tcp6.
  const keyLength = wanted.values().next().value?.length ?? 0;
  let added = 0;
  let start = 0;
  while (start < text.length) {
    let end = text.indexOf('\n', start);
    if (end < 0) end = text.length;
    const colon = text.indexOf(': ', start);
    if (colon >= 0 && colon < end) {
      const key = text.slice(colon + 2, colon + 2 + keyLength);
      if (wanted.has(key) && !found.has(key)) {
        const row = tryParseProcTcpRow(text.slice(start, end), endianness);
        if (row !== null) {
          found.set(key, row);
          added += 1;
        }
      }
    }
    start = end + 1;
  }
  return added;
}

interface Pending {
  key4: string;
  key6: string;
  resolve: (uid: number | null) => void;
  reject: (error: Error) => void;
}

/** What a refusal is logged to: the programs' winston logger, or anything with these three methods. */
export type RefusalLog = Record<'warn' | 'info' | 'error', (message: string) => unknown>;

export interface PeerOwnersOptions {
  /** The files to read; tests give literal ones. */
  tcpPath?: string;
  tcp6Path?: string;
  /** The redirector's user (default: this process's uid); it and root are let through. */
  uid?: number;
}

/** Room for one read of /proc/net/tcp{,6}: the kernel hands out about a page at a time. */
const CHUNK_BYTES = 64 * 1024;

/** Looks up the owners of connecting clients in batches, and admits those of the redirector's user and root. */
export class PeerOwners {
  /** Passes over a /proc file so far: a batching figure for tests and benchmarks. */
  passes = 0;
  private queue: Pending[] = [];
  private draining = false;
  private readonly tcpPath: string;
  private readonly tcp6Path: string;
  private readonly uid: number;

  constructor(options: PeerOwnersOptions = {}) {
    this.tcpPath = options.tcpPath ?? '/proc/net/tcp';
    this.tcp6Path = options.tcp6Path ?? '/proc/net/tcp6';
    this.uid = options.uid ?? process.getuid?.() ?? 0;
  }

  /**
   * The uid owning the client end of a connection, or null when no process holds it any more (it
   * closed) or its ends are not IPv4. Rejects when /proc cannot be read.
   */
  ownerOf(ends: ConnectionEnds): Promise<number | null> {
    const key4 = tryClientRowKey(ends, 4);
    const key6 = tryClientRowKey(ends, 6);
    if (key4 === null || key6 === null) return Promise.resolve(null);
    return new Promise((resolve, reject) => {
      this.queue.push({ key4, key6, resolve, reject });
      if (!this.draining) {
        this.draining = true;
        // Every socket accepted in this turn of the event loop joins the first pass.
        setImmediate(() => void this.drain());
      }
    });
  }

  /**
   * Runs `onAdmitted` once the client end of a paused, just-accepted socket proves to belong to the
   * redirector's user or root; otherwise resets the connection with one log line. Nothing is read from
   * the socket here, so its first bytes wait for whoever resumes it. When `undecided` answers false by
   * the time the owner is known, something else (a claim) decided meanwhile, and this check does nothing.
   */
  admit(socket: net.Socket, log: RefusalLog, onAdmitted: () => void, undecided: () => boolean = () => true): void {
    const ends = {
      peerAddress: socket.remoteAddress ?? '',
      peerPort: socket.remotePort ?? -1,
      localAddress: socket.localAddress ?? '',
      localPort: socket.localPort ?? -1,
    };
    const refuse = (level: 'warn' | 'info' | 'error', why: string): void => {
      log[level](
        `refused a connection to ${ends.localAddress}:${ends.localPort} from ${ends.peerAddress}:${ends.peerPort}: ${why}`,
      );
      socket.resetAndDestroy();
    };
    this.ownerOf(ends).then(
      (uid) => {
        if (socket.destroyed || !undecided()) return; // the redirector stopped, or a claim came, meanwhile
        if (uid === null) refuse('info', 'its client closed before its owner could be checked');
        else if (uid !== this.uid && uid !== 0)
          refuse('warn', `its socket belongs to uid ${uid}, not to this redirector's user (uid ${this.uid}) or root`);
        else onAdmitted();
      },
      (e: unknown) => {
        if (!socket.destroyed && undecided())
          refuse('error', `cannot tell who connects: ${e instanceof Error ? e.message : String(e)}`);
      },
    );
  }

  private async drain(): Promise<void> {
    try {
      while (this.queue.length > 0) {
        const batch = this.queue;
        this.queue = [];
        try {
          const found = new Map<string, ProcTcpRow>();
          // Most clients are AF_INET; an AF_INET6 one reaching an IPv4 listener shows in tcp6, mapped.
          await this.scan(this.tcpPath, new Set(batch.map((p) => p.key4)), found);
          const missing = batch.filter((p) => !found.has(p.key4));
          if (missing.length > 0) await this.scan(this.tcp6Path, new Set(missing.map((p) => p.key6)), found);
          for (const p of batch) {
            const row = found.get(p.key4) ?? found.get(p.key6);
            p.resolve(row === undefined || row.inode === 0 ? null : row.uid);
          }
        } catch (e) {
          const error = e as NodeJS.ErrnoException;
          for (const p of batch)
            p.reject(new Error(`cannot read ${error.path ?? '/proc/net/tcp'} (${error.code ?? error.message})`));
        }
      }
    } finally {
      this.draining = false;
    }
  }

  /**
   * One pass over a file, stopping once every wanted row was seen. The kernel returns about one page
   * (some 27 rows) a read, whatever the buffer; each read is one trip to the thread pool.
   */
  private async scan(file: string, wanted: ReadonlySet<string>, found: Map<string, ProcTcpRow>): Promise<void> {
    this.passes += 1;
    let remaining = wanted.size;
    let handle: FileHandle | null = null;
    try {
      handle = await fs.open(file, 'r');
      const buffer = Buffer.allocUnsafe(CHUNK_BYTES);
      let carry = '';
      for (;;) {
        const { bytesRead } = await handle.read(buffer, 0, buffer.length, null);
        if (bytesRead === 0) break;
        const text = carry + buffer.toString('latin1', 0, bytesRead);
        const lastNewline = text.lastIndexOf('\n');
        remaining -= findRows(text.slice(0, lastNewline + 1), wanted, found);
        carry = text.slice(lastNewline + 1);
        if (remaining === 0) return;
      }
      findRows(carry, wanted, found);
    } finally {
      await handle?.close();
    }
  }
}
