/**
 * Controllers of the hook: what loads dist/hook/agent.js into a command (and every process it forks or
 * execs) or into a running process, calls the agent's `init({ipcPath})`, and reports the exit status.
 *
 * Two implementations share one interface and one agent. The Node `frida` binding is preferred when it
 * loads; it often cannot be installed (its install step downloads a native build), so the fallback is
 * hook/sidecar.py, a small Python controller on the `frida` wheel in the project's `.venv`, created by
 * `npm run setup`. The binding's types are declared here, minimal and local, describing exactly the calls
 * made, so this file type-checks where the package is absent.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import path from 'node:path';
import { projectRoot } from '../runtime/paths';

/** Runs a command with the hook, or hooks a running process; resolves to the exit status to report. */
export interface HookController {
  readonly kind: 'frida-binding' | 'python-sidecar';
  /** Runs `command` (argv) hooked, with stdio inherited; resolves to its exit status (128+N for signal N). */
  run(command: string[]): Promise<number>;
  /** Hooks process `pid` until SIGINT/SIGTERM (hook removed, 0) or until the process exits (0). */
  attach(pid: number): Promise<number>;
}

export interface HookPaths {
  /** The compiled agent (dist/hook/agent.js). */
  agent: string;
  /** hook/sidecar.py. */
  sidecar: string;
  /** .venv/bin/python with the frida wheel. */
  venvPython: string;
}

/** An expected failure: the message is the one line `hook-run` prints. */
export class HookRunError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode = 1) {
    super(message);
    this.name = 'HookRunError';
    this.exitCode = exitCode;
  }
}

export function defaultHookPaths(): HookPaths {
  const root = projectRoot();
  return {
    agent: path.join(root, 'dist', 'hook', 'agent.js'),
    sidecar: path.join(root, 'hook', 'sidecar.py'),
    venvPython: path.join(root, '.venv', 'bin', 'python'),
  };
}

/**
 * The Node binding's controller when `frida` loads, else the sidecar's; throws HookRunError (telling
 * the user to run `npm run setup` or `npm run build`) when neither can run.
 */
export function pickController(ipcPath: string, paths: HookPaths = defaultHookPaths()): HookController {
  if (!existsSync(paths.agent)) throw new HookRunError(`the hook agent ${paths.agent} is missing: run 'npm run build'`);
  const binding = tryLoadFridaBinding();
  if (binding !== null) return new FridaBindingController(binding, paths, ipcPath);
  if (existsSync(paths.venvPython) && existsSync(paths.sidecar)) return new SidecarController(paths, ipcPath);
  throw new HookRunError("no hook controller: the Node 'frida' binding does not load and .venv is missing: run 'npm run setup'");
}

// ---------------------------------------------------------------------------------------------------
// Python sidecar

class SidecarController implements HookController {
  readonly kind = 'python-sidecar' as const;

  constructor(
    private readonly paths: HookPaths,
    private readonly ipcPath: string,
  ) {}

  run(command: string[]): Promise<number> {
    // The terminal's SIGINT/SIGQUIT reach the command directly (same process group); we outlive it to
    // report its status. SIGTERM/SIGHUP sent to us go to the sidecar, which passes them on.
    return this.runSidecar(['--', ...command], ['SIGTERM', 'SIGHUP'], ['SIGINT', 'SIGQUIT']);
  }

  attach(pid: number): Promise<number> {
    return this.runSidecar(['--pid', String(pid)], ['SIGINT', 'SIGTERM', 'SIGHUP'], []);
  }

  private runSidecar(tail: string[], forwarded: NodeJS.Signals[], ignored: NodeJS.Signals[]): Promise<number> {
    // -S: the sidecar puts its .venv's site-packages on sys.path itself, sparing site.py's start-up.
    const args = ['-S', this.paths.sidecar, '--agent', this.paths.agent, '--ipc', this.ipcPath, ...tail];
    return new Promise((resolve, reject) => {
      const child = spawn(this.paths.venvPython, args, { stdio: 'inherit' });
      const handlers = new Map<NodeJS.Signals, () => void>();
      for (const signal of forwarded) handlers.set(signal, () => child.kill(signal));
      for (const signal of ignored) handlers.set(signal, () => undefined);
      for (const [signal, handler] of handlers) process.on(signal, handler);
      const cleanUp = (): void => {
        for (const [signal, handler] of handlers) process.off(signal, handler);
      };
      child.once('error', (error) => {
        cleanUp();
        reject(new HookRunError(`cannot start the hook sidecar ${this.paths.venvPython}: ${error.message}: run 'npm run setup'`));
      });
      child.once('exit', (code, signal) => {
        cleanUp();
        resolve(code ?? 128 + (signal === null ? 0 : (osConstants.signals[signal] ?? 0)));
      });
    });
  }
}

// ---------------------------------------------------------------------------------------------------
// Node frida binding (frida 17). Only what is called here is declared.

interface FridaSignal<Args extends unknown[]> {
  connect(handler: (...args: Args) => void): void;
  disconnect(handler: (...args: Args) => void): void;
}

interface FridaChild {
  pid: number;
  origin: 'fork' | 'exec' | 'spawn';
}

interface FridaDevice {
  spawn(program: string | string[], options?: { argv?: string[]; stdio?: 'inherit' | 'pipe' }): Promise<number>;
  attach(pid: number): Promise<FridaSession>;
  resume(pid: number): Promise<void>;
  kill(pid: number): Promise<void>;
  readonly childAdded: FridaSignal<[FridaChild]>;
}

interface FridaSession {
  enableChildGating(): Promise<void>;
  createScript(source: string, options?: { name?: string }): Promise<FridaScript>;
  detach(): Promise<void>;
  readonly detached: FridaSignal<[reason: string, crash: unknown]>;
}

interface AgentInitResult {
  hooked: boolean;
  hooks: string[];
  notice?: string;
}

interface FridaScript {
  load(): Promise<void>;
  unload(): Promise<void>;
  readonly exports: {
    init(options: { ipcPath: string }): Promise<AgentInitResult>;
    dispose(): Promise<void>;
  };
  readonly message: FridaSignal<[message: { type: string; payload?: unknown; description?: string }, data: Buffer | null]>;
}

interface FridaModule {
  getLocalDevice(): Promise<FridaDevice>;
}

/** The `frida` package, or null when it is not installed or its native part does not load. */
function tryLoadFridaBinding(): FridaModule | null {
  if (process.env.UNDERPASS_HOOK_CONTROLLER === 'sidecar') return null;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require('frida') as FridaModule;
  } catch {
    return null;
  }
}

class FridaBindingController implements HookController {
  readonly kind = 'frida-binding' as const;
  private readonly sessions: FridaSession[] = [];
  private source: string | null = null;

  constructor(
    private readonly frida: FridaModule,
    private readonly paths: HookPaths,
    private readonly ipcPath: string,
  ) {}

  async run(command: string[]): Promise<number> {
    const device = await this.frida.getLocalDevice();
    let pid: number;
    try {
      pid = await device.spawn(command, { stdio: 'inherit' });
    } catch (error) {
      throw new HookRunError(`${command[0]}: cannot run: ${messageOf(error)}`, 127);
    }
    device.childAdded.connect((child) => void this.hookChild(device, child));
    let session: FridaSession;
    try {
      session = await this.hook(device, pid, true);
    } catch (error) {
      await device.kill(pid).catch(() => undefined);
      throw error;
    }
    const ignore = (): void => undefined;
    const forward = (signal: NodeJS.Signals) => (): void => void safeKill(pid, signal);
    const onTerm = forward('SIGTERM');
    const onHup = forward('SIGHUP');
    process.on('SIGINT', ignore);
    process.on('SIGTERM', onTerm);
    process.on('SIGHUP', onHup);
    const exited = new Promise<number>((resolve) => {
      session.detached.connect((reason) => {
        if (reason !== 'process-terminated' && reason !== 'process-replaced') return;
        if (reason === 'process-replaced') return; // exec: the gated child handler re-hooks it
        resolve(exitCodeOfZombie(pid));
      });
    });
    await device.resume(pid);
    try {
      return await exited;
    } finally {
      process.off('SIGINT', ignore);
      process.off('SIGTERM', onTerm);
      process.off('SIGHUP', onHup);
    }
  }

  async attach(pid: number): Promise<number> {
    const device = await this.frida.getLocalDevice();
    let session: FridaSession;
    try {
      session = await device.attach(pid);
    } catch (error) {
      throw attachError(pid, error);
    }
    const script = await this.loadAgent(session, pid);
    process.stderr.write(`hook-run: hooked process ${pid}; Ctrl-C removes the hook and leaves it running\n`);
    return new Promise<number>((resolve) => {
      const stop = (): void => {
        cleanUp();
        void script.exports
          .dispose()
          .then(() => script.unload())
          .catch(() => undefined)
          .then(() => session.detach().catch(() => undefined))
          .then(() => {
            process.stderr.write(`hook-run: hook removed from process ${pid}\n`);
            resolve(0);
          });
      };
      const onDetached = (reason: string): void => {
        if (reason === 'application-requested') return;
        cleanUp();
        process.stderr.write(`hook-run: process ${pid} exited\n`);
        resolve(0);
      };
      const cleanUp = (): void => {
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
        session.detached.disconnect(onDetached);
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
      session.detached.connect(onDetached);
    });
  }

  private async hook(device: FridaDevice, pid: number, gateChildren: boolean): Promise<FridaSession> {
    let session: FridaSession;
    try {
      session = await device.attach(pid);
    } catch (error) {
      throw attachError(pid, error);
    }
    if (gateChildren) await session.enableChildGating();
    await this.loadAgent(session, pid);
    this.sessions.push(session);
    return session;
  }

  private async loadAgent(session: FridaSession, pid: number): Promise<FridaScript> {
    this.source ??= readFileSync(this.paths.agent, 'utf8');
    const script = await session.createScript(this.source, { name: 'underpass-hook' });
    script.message.connect((message) => {
      const payload = message.payload as { type?: string; message?: string } | undefined;
      if (message.type === 'send' && payload?.type === 'warning') process.stderr.write(`hook-run: process ${pid}: ${payload.message}\n`);
      else if (message.type === 'error') process.stderr.write(`hook-run: process ${pid}: hook error: ${message.description}\n`);
    });
    await script.load();
    let result: AgentInitResult;
    try {
      result = await script.exports.init({ ipcPath: this.ipcPath });
    } catch (error) {
      await session.detach().catch(() => undefined);
      const text = messageOf(error);
      if (text.includes('no redirector at ')) throw noRedirector(this.ipcPath);
      throw new HookRunError(`hook failed in process ${pid}: ${text}`);
    }
    if (!result.hooked) process.stderr.write(`hook-run: process ${pid}: ${result.notice ?? 'cannot be hooked'}; it runs unhooked\n`);
    return script;
  }

  /** Hooks a gated child; whatever happens, the child is resumed, never left suspended. */
  private async hookChild(device: FridaDevice, child: FridaChild): Promise<void> {
    try {
      await this.hook(device, child.pid, true);
    } catch (error) {
      process.stderr.write(`hook-run: child ${child.pid} (${child.origin}) runs unhooked: ${messageOf(error)}\n`);
    } finally {
      await device.resume(child.pid).catch(() => undefined);
    }
  }
}

/**
 * Exit status of a terminated child still in zombie state, from /proc/PID/stat field 52 (exit_code, a
 * waitpid status); Node cannot waitpid. Frida may reap the process first, then 1 is reported.
 */
function exitCodeOfZombie(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the parenthesised command name (which may itself contain spaces or parentheses).
    const fields = stat.slice(stat.lastIndexOf(')') + 2).trim().split(' ');
    const status = Number(fields[52 - 3]);
    if (!Number.isInteger(status)) return 1;
    const signal = status & 0x7f;
    return signal === 0 ? (status >> 8) & 0xff : 128 + signal;
  } catch {
    process.stderr.write(`hook-run: the exit status of process ${pid} was lost; reporting 1\n`);
    return 1;
  }
}

function attachError(pid: number, error: unknown): HookRunError {
  const text = messageOf(error);
  if (/permission|ptrace|not permitted|system restrictions/i.test(text)) {
    return new HookRunError(
      `not allowed to attach to process ${pid} (ptrace is restricted): run hook-run as the same user after 'sudo sysctl kernel.yama.ptrace_scope=0', or as root`,
    );
  }
  if (/unable to find process|not found/i.test(text)) return new HookRunError(`no process with pid ${pid}`);
  return new HookRunError(`cannot attach to process ${pid}: ${text}`);
}

function noRedirector(ipcPath: string): HookRunError {
  return new HookRunError(`no redirector at ${ipcPath}: start one with 'underpass redirector ... --ipc ${ipcPath}' or pass --ipc PATH of a running one`);
}

function safeKill(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // Already gone.
  }
}

function messageOf(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).split('\n')[0] ?? '';
}
