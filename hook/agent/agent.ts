/**
 * The Underpass hook: a Frida agent loaded into an unmodified glibc process (before its first
 * instruction under `hook-run -- CMD`, or into a running one under `hook-run --pid`).
 *
 * It exists to make two things true for that process without changing its code:
 * - a lookup of a pseudo name (a name under one of the redirector's zones) answers the pseudo address the
 *   redirector assigned, without asking real DNS, and
 * - a blocking connect to a pseudo address returns only once the redirector's tunnel reached the real
 *   server (or fails with ECONNREFUSED).
 *
 * So it hooks the entry points through which glibc programs resolve and connect: getaddrinfo and the
 * gethostbyname family (the _r forms too, since Python and others use them), the reverse lookups
 * getnameinfo and gethostbyaddr[_r], connect, sendto/sendmsg for MSG_FASTOPEN, which connect without
 * calling connect(), and getpeername, for a listener that had to move off the published port
 * (listen-ports.ts). freeaddrinfo is deliberately NOT hooked: a pseudo answer is produced by calling the
 * real getaddrinfo with the numeric pseudo address, so the list is glibc's own memory, freed correctly by
 * the real freeaddrinfo and never by Frida's GC. Every other name and address goes to the original
 * function untouched and costs no IPC.
 *
 * The hook is thin: what is pseudo, which address a name gets, and whether a tunnel can be opened are
 * the redirector's decisions, asked over a synchronous per-call IPC (ipc-client.ts). Whether a call is
 * pseudo at all is decided first in C by a native gate (gates.ts), so ordinary calls never enter
 * JavaScript. It also keeps Frida's own descriptors out of reach of the app's close() sweeps (fd-guard.ts),
 * without which a program that closes every descriptor, as ssh does, never exits. `dispose()` reverts
 * every replacement, leaving the process as it was.
 *
 * RPC: `init({ipcPath})` says hello to the redirector, learns zones and pseudo network, installs the
 * hooks and returns what it did; it throws when the redirector cannot be reached. `dispose()` reverts.
 */
import { IPC_VERSION } from '../../protocol/ipc-wire';
import type { HelloReply } from '../../protocol/ipc';
import { installConnectHooks } from './connect-hooks';
import { installListenHook, revertListenHook } from './listen-hook';
import { installFdGuard, revertFdGuard } from './fd-guard';
import { configureGates } from './gates';
import { installedHookNames, revertAll } from './hooks';
import { exitWithController } from './lifetime';
import { ipcRequest, setIpcPath } from './ipc-client';
import { tryGetLibc } from './libc';
import { PseudoSpace } from './pseudo-space';
import { enableClaims } from './redirector-client';
import { installResolveHooks } from './resolve-hooks';

/** What `init` reports to the controller. */
export interface InitResult {
  /** False when this process cannot be served (then `notice` says why, in one line). */
  hooked: boolean;
  hooks: string[];
  notice?: string;
}

export interface InitOptions {
  ipcPath: string;
  /** Set for the command `hook-run` started: its pid, which this process must not outlive (lifetime.ts). */
  controllerPid?: number;
  /** `hook-run --publish NAME`: publish the process's listening socket as NAME (listen-hook.ts). */
  publish?: { name: string; json: boolean };
}

let initialised = false;
/** The functions the descriptor guard replaced (fd-guard.ts). */
let guarded: string[] = [];

function init(options: InitOptions): InitResult {
  if (initialised) return { hooked: true, hooks: [...installedHookNames(), ...guarded] };
  if (options.controllerPid !== undefined) exitWithController(options.controllerPid);
  const unhookable = tryUnhookableReason();
  if (unhookable !== null) return { hooked: false, hooks: [], notice: unhookable };
  const libc = tryGetLibc();
  if (libc === null) return { hooked: false, hooks: [], notice: 'no glibc (libc.so.6) in this process' };

  // First: even a hook that fails below must not leave the process unable to exit after a closefrom().
  guarded = installFdGuard(libc);
  setIpcPath(options.ipcPath);
  const hello = sayHello(options.ipcPath);
  enableClaims(hello);
  const space = new PseudoSpace(hello);
  configureGates(space.gatedNames(), space.base, space.prefix, space.forwardNets);
  installResolveHooks(libc, space);
  installConnectHooks(libc, space);
  if (options.publish !== undefined) installListenHook(libc, options.publish.name);
  initialised = true;
  return { hooked: true, hooks: [...installedHookNames(), ...guarded] };
}

function sayHello(ipcPath: string): HelloReply {
  let reply;
  try {
    reply = ipcRequest('hello', { v: IPC_VERSION, pid: Process.id });
  } catch (error) {
    throw new Error(`no redirector at ${ipcPath}: ${error instanceof Error ? error.message : String(error)}`);
  }
  if (!reply.ok) throw new Error(`redirector at ${ipcPath} refused the hook: ${reply.message}`);
  if (reply.v !== IPC_VERSION)
    throw new Error(`redirector at ${ipcPath} speaks IPC version ${reply.v}, the hook ${IPC_VERSION}`);
  return reply;
}

/**
 * Why this process's lookups and connects cannot be hooked, or null when they can: a program linked
 * statically or without glibc, or a Go program (its resolver and connect are raw system calls).
 */
function tryUnhookableReason(): string | null {
  const main = Process.mainModule;
  let sections: ModuleSectionDetails[] = [];
  try {
    sections = main.enumerateSections();
  } catch {
    // No section table readable: judge by libc alone.
  }
  if (sections.some((section) => section.name === '.go.buildinfo' || section.name === '.gopclntab')) {
    return `${main.name} is a Go program: it resolves and connects with its own code, which the hook cannot see`;
  }
  if (Process.findModuleByName('libc.so.6') === null) {
    return `${main.name} does not use glibc (statically linked or another C library): its lookups and connects cannot be hooked`;
  }
  return null;
}

function dispose(): void {
  revertListenHook();
  revertAll();
  revertFdGuard();
  guarded = [];
  initialised = false;
}

rpc.exports = { init, dispose };
