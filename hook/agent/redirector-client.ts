/**
 * The questions the hooks ask the redirector, with its replies and transport failures folded into the
 * small set of outcomes each hook maps to a C error (EAI_*, h_errno, errno); and the one thing they tell
 * it, a claim, whose failure the app never sees.
 */
import { trySockaddrIPv4 } from '../../protocol/ipc-wire';
import type { ErrorReply, HelloReply, IPv4Endpoint } from '../../protocol/ipc';
import { ipcNotify, IpcTransportError, ipcRequest } from './ipc-client';
import { ECONNREFUSED, EINPROGRESS, EINTR, ETIMEDOUT, getLibc, libcFunctions } from './libc';
import { noteForwarded, noteStandIn } from './forwarding';
import { isKnown, noteListener } from './listen-ports';

export type ResolveOutcome = { kind: 'ok'; name: string; address: string } | { kind: 'not-found' } | { kind: 'again' };

export function resolvePseudoName(name: string): ResolveOutcome {
  try {
    const reply = ipcRequest('resolve', { name });
    if (reply.ok) {
      noteListener(reply.address, reply.moved);
      noteForwarded(reply.address, reply.forward);
      return { kind: 'ok', name: reply.name, address: reply.address };
    }
    reportRefusal(reply);
    return reply.code === 'NOT_FOUND' || reply.code === 'BAD_REQUEST' ? { kind: 'not-found' } : { kind: 'again' };
  } catch (error) {
    warnOnce(error);
    return { kind: 'again' };
  }
}

/**
 * 0 when the redirector holds a tunnel for `address:port`, else the errno connect() must fail with. The
 * reply also says where the listener is (listen-ports.ts), and for a forwarded address outside the pseudo
 * network which pseudo address stands in for it (forwarding.ts).
 */
export function requestConnect(address: string, port: number): number {
  try {
    const reply = ipcRequest('connect', { address, port });
    if (!reply.ok) {
      reportRefusal(reply);
      return ECONNREFUSED;
    }
    if (reply.via !== undefined) noteStandIn(reply.via, address);
    noteListener(reply.via ?? address, reply.moved);
    return 0;
  } catch (error) {
    warnOnce(error);
    return error instanceof IpcTransportError && error.failure === 'TIMEOUT' ? ETIMEDOUT : ECONNREFUSED;
  }
}

/** The pseudo name of a pseudo address, or null when the redirector knows none. */
export function tryReverse(address: string): string | null {
  try {
    const reply = ipcRequest('reverse', { address });
    if (!reply.ok) return null;
    noteListener(address, reply.moved);
    noteForwarded(address, reply.forward);
    return reply.name;
  } catch (error) {
    warnOnce(error);
    return null;
  }
}

/**
 * Makes sure listen-ports.ts knows where `address`'s listener is before a connect that asks nothing
 * else (non-blocking, or one the redirector could not be asked about): one reverse request, the first
 * time only. Left unknown when the redirector cannot tell; the connect then keeps the app's port.
 */
export function learnListener(address: string): void {
  if (!isKnown(address)) tryReverse(address);
}

/**
 * How long sending a claim may hold the app's thread (ms): normally microseconds, longer only when the
 * redirector stopped accepting IPC connections. A claim that late would miss the redirector's 200 ms
 * wait for it anyway, and the connection is then checked through /proc.
 */
const CLAIM_SEND_TIMEOUT_MS = 100;

let claims = false;
let getsockname: NativeFunction<number, [number, NativePointerValue, NativePointerValue]> | null = null;

/** Claims go only to a redirector whose hello announced them: an older one would do nothing with them. */
export function enableClaims(hello: HelloReply): void {
  claims = hello.features?.includes('claim') === true;
}

/**
 * Tells the redirector that the connection `fd` is opening to the pseudo `destination` is this process's,
 * so its listener admits it at once instead of looking the client up in /proc. Call it after the original
 * connect()/sendto()/sendmsg() returned `result` with `errno`: only then has the kernel chosen the source
 * port. Sent for a call that succeeded or is under way (EINPROGRESS; EINTR, after which the kernel carries
 * on with the handshake). A claim has no reply: an answer would change nothing for the app, and waiting
 * for one would make every connect, non-blocking ones too, wait for the redirector's event loop (measured in a
 * burst of 1 000 non-blocking connects: the connect() call took 1.6-1.8 ms at the median waiting for
 * the reply, 0.3 ms without, 0.07 ms with no claim at all). Whatever happens here, the caller's errno
 * is left as it was and nothing is thrown: without a claim the redirector still admits the connection,
 * more slowly.
 */
export function claimConnection(fd: number, destination: IPv4Endpoint, result: number | Int64, errno: number): void {
  if (!claims) return;
  if ((typeof result === 'number' ? result : result.toNumber()) < 0 && errno !== EINPROGRESS && errno !== EINTR) return;
  const errnoAt = libcFunctions().errnoLocation();
  const saved = errnoAt.readS32();
  try {
    const local = tryLocalEndpoint(fd);
    if (local === null || local.port === 0) return;
    ipcNotify(
      'claim',
      { address: destination.address, port: destination.port, localAddress: local.address, localPort: local.port },
      CLAIM_SEND_TIMEOUT_MS,
    );
  } catch (error) {
    warnOnce(error);
  } finally {
    errnoAt.writeS32(saved);
  }
}

/** The IPv4 source of socket `fd` (a v4-mapped one as plain IPv4), or null. */
function tryLocalEndpoint(fd: number): IPv4Endpoint | null {
  getsockname ??= new NativeFunction(getLibc().getExportByName('getsockname'), 'int', ['int', 'pointer', 'pointer']);
  const SOCKADDR_STORAGE = 128;
  const address = Memory.alloc(SOCKADDR_STORAGE);
  const length = Memory.alloc(4);
  length.writeU32(SOCKADDR_STORAGE);
  if (getsockname(fd, address, length) !== 0) return null;
  const bytes = address.readByteArray(Math.min(length.readU32(), SOCKADDR_STORAGE));
  return bytes === null ? null : trySockaddrIPv4(address.readU16(), new Uint8Array(bytes));
}

let warned = false;

/** One line to the controller the first time the redirector cannot be reached, not one per call. */
function warnOnce(error: unknown): void {
  if (warned) return;
  warned = true;
  send({
    type: 'warning',
    message: `redirector unreachable: ${error instanceof Error ? error.message : String(error)}`,
  });
}

/** What to do about a refusal, by its code: the redirector's message says what happened. */
const REMEDY: Record<ErrorReply['code'], string> = {
  NOT_FOUND: "check the name: 'underpass ls' lists the publications this redirector may use",
  REFUSED: "a publication answers on its own port only, while its service runs; 'underpass ls' shows both",
  UNAVAILABLE: "the redirector cannot serve it now: 'underpass status' and the redirector's log say why",
  BAD_REQUEST: 'the hook and the redirector disagree on the IPC protocol: run the same version of both',
};

const reported = new Set<string>();

/**
 * One line to the controller (hook-run prints it on the app's stderr) for each distinct refusal the hook
 * turns into an error code (EAI_NONAME, EAI_AGAIN, ECONNREFUSED), so the user learns why, not just that,
 * a lookup or connect failed; once per cause in this process, never on every call of an app that retries.
 */
function reportRefusal(reply: ErrorReply): void {
  const key = `${reply.code}\0${reply.message}`;
  if (reported.has(key) || reported.size >= 100) return;
  reported.add(key);
  send({ type: 'warning', message: `${reply.message}: ${reply.fix ?? REMEDY[reply.code]}` });
}
