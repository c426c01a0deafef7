/**
 * Where a publication's listener goes on its pseudo address (issue 12, "a local server on the same
 * port").
 *
 * The listener normally sits on the published port itself (127.77.0.5:5432 for a PostgreSQL published on
 * 5432), so that an app's sockaddr needs no rewriting and programs the hook never entered reach it too.
 * But a local program that listens on the wildcard address on that port (a developer's own PostgreSQL on
 * `*:5432`, `iperf3 -s`) holds it on every local address, pseudo ones included, and a port below
 * net.ipv4.ip_unprivileged_port_start is closed to a redirector without root. Then the listener takes
 * another port of the same pseudo address, chosen by the kernel, and the hook sends the app's connect()
 * there (hook/agent/listen-ports.ts), so a hooked app reaches the publication whatever listens locally.
 * Only programs without the hook, which connect to the published port themselves, cannot be served: the
 * kernel gives their connections to the local program (so the DNS responder does not answer such a name).
 * `movedListenerWarning` says so, in one line that names the holder and the fixes; `underpass forward`
 * serves them meanwhile, since it reads the listener's port from the resolve reply like the hook.
 */
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { tryParseProcTcpRow, type ProcTcpRow } from './peer-owner';

/** Why a listener could not take its published port. */
export type MoveReason = 'in-use' | 'privileged';

export interface PseudoBinding {
  /** The port the listener holds: the published one, or the kernel's choice when `moved` is set. */
  listenPort: number;
  moved: MoveReason | null;
}

/** Listens on `address:port`, or on another port of `address` when that one is taken or privileged. */
export async function listenOnPseudo(server: net.Server, address: string, port: number): Promise<PseudoBinding> {
  try {
    return { listenPort: await listen(server, address, port), moved: null };
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== 'EADDRINUSE' && code !== 'EACCES') throw error;
    return { listenPort: await listen(server, address, 0), moved: code === 'EACCES' ? 'privileged' : 'in-use' };
  }
}

function listen(server: net.Server, address: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (error: Error): void => reject(error);
    server.once('error', onError);
    server.listen({ host: address, port, exclusive: true }, () => {
      server.off('error', onError);
      resolve((server.address() as net.AddressInfo).port);
    });
  });
}

/**
 * The one line the redirector logs when a listener moved: what programs without the hook will meet, and
 * how to give the port back. Reads /proc to name the program that holds the port (best effort).
 */
export async function movedListenerWarning(
  host: string,
  address: string,
  port: number,
  binding: PseudoBinding,
): Promise<string> {
  const served = `hooked apps reach ${host}:${port} through ${address}:${binding.listenPort}`;
  if (binding.moved === 'privileged') {
    return (
      `port ${port} is privileged and the redirector is not root: ${served}; programs without the hook ` +
      `cannot reach ${address}:${port} — run 'sysctl net.ipv4.ip_unprivileged_port_start=${port}' (or give the ` +
      `redirector CAP_NET_BIND_SERVICE) and restart it, or give them 'underpass forward LOCAL_PORT ${host}:${port}'`
    );
  }
  const holder = await tryDescribeHolder(port);
  return (
    `port ${port} is held ${holder ?? 'by another program on every local address'}: ${served}; a program ` +
    `without the hook that connects to ${address}:${port} reaches that program instead (the DNS responder ` +
    `answers SERVFAIL for it) — make it listen on 127.0.0.1 only (or stop it) and restart the redirector, or ` +
    `give those programs 'underpass forward LOCAL_PORT ${host}:${port}'`
  );
}

/** `by iperf3 (pid 812, uid 1000) on every local address`, from /proc; null when nothing is found. */
async function tryDescribeHolder(port: number): Promise<string | null> {
  let row: ProcTcpRow | null = null;
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    const text = await fs.readFile(file, 'utf8').catch(() => '');
    for (const line of text.split('\n')) {
      const candidate = tryParseProcTcpRow(line);
      if (candidate !== null && candidate.state === LISTEN && candidate.local.port === port) {
        row = candidate;
        if (isWildcard(candidate.local.address)) break;
      }
    }
    if (row !== null && isWildcard(row.local.address)) break;
  }
  if (row === null) return null;
  const where = isWildcard(row.local.address) ? 'on every local address' : `on ${row.local.address}`;
  const program = await tryProgramOfSocket(row.inode);
  const who = program === null ? `a program (uid ${row.uid})` : `${program.name} (pid ${program.pid}, uid ${row.uid})`;
  return `by ${who} ${where}`;
}

/** The kernel's TCP_LISTEN state number, as /proc/net/tcp prints it. */
const LISTEN = 10;

function isWildcard(address: string): boolean {
  return address === '0.0.0.0' || address === '::';
}

/** The process holding socket `inode`, when this user may look at its descriptors; else null. */
async function tryProgramOfSocket(inode: number): Promise<{ name: string; pid: string } | null> {
  if (inode === 0) return null;
  const link = `socket:[${inode}]`;
  const pids = (await fs.readdir('/proc').catch(() => [])).filter((name) => /^\d+$/.test(name));
  for (const pid of pids) {
    const fds = await fs.readdir(path.join('/proc', pid, 'fd')).catch(() => []);
    for (const fd of fds) {
      if ((await fs.readlink(path.join('/proc', pid, 'fd', fd)).catch(() => '')) !== link) continue;
      const name = (await fs.readFile(path.join('/proc', pid, 'comm'), 'utf8').catch(() => '')).trim();
      return { name: name === '' ? 'a program' : name, pid };
    }
  }
  return null;
}
