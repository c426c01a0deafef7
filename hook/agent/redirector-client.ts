/**
 * The three questions the hooks ask the redirector, with its replies and transport failures folded into
 * the small set of outcomes each hook maps to a C error (EAI_*, h_errno, errno).
 */
import type { ConnectReply, ResolveReply, ReverseReply } from '../../protocol/ipc';
import { IpcTransportError, ipcRequest } from './ipc-client';
import { ECONNREFUSED, ETIMEDOUT } from './libc';

export type ResolveOutcome = { kind: 'ok'; name: string; address: string } | { kind: 'not-found' } | { kind: 'again' };

export function resolvePseudoName(name: string): ResolveOutcome {
  try {
    const reply = ipcRequest<ResolveReply>('resolve', { name });
    if (reply.ok) return { kind: 'ok', name: reply.name, address: reply.address };
    return reply.code === 'NOT_FOUND' || reply.code === 'BAD_REQUEST' ? { kind: 'not-found' } : { kind: 'again' };
  } catch (error) {
    warnOnce(error);
    return { kind: 'again' };
  }
}

/** 0 when the redirector holds a tunnel for `address:port`, else the errno connect() must fail with. */
export function requestConnect(address: string, port: number): number {
  try {
    const reply = ipcRequest<ConnectReply>('connect', { address, port });
    return reply.ok ? 0 : ECONNREFUSED;
  } catch (error) {
    warnOnce(error);
    return error instanceof IpcTransportError && error.failure === 'TIMEOUT' ? ETIMEDOUT : ECONNREFUSED;
  }
}

/** The pseudo name of a pseudo address, or null when the redirector knows none. */
export function tryReverse(address: string): string | null {
  try {
    const reply = ipcRequest<ReverseReply>('reverse', { address });
    return reply.ok ? reply.name : null;
  } catch (error) {
    warnOnce(error);
    return null;
  }
}

let warned = false;

/** One line to the controller the first time the redirector cannot be reached, not one per call. */
function warnOnce(error: unknown): void {
  if (warned) return;
  warned = true;
  send({ type: 'warning', message: `redirector unreachable: ${error instanceof Error ? error.message : String(error)}` });
}
