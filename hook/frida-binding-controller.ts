/**
 * The controller on the Node `frida` binding (frida 17), typed by the package's own published
 * declarations, also where it did not install (hook/frida-types.mjs keeps them for tsc then), and loaded
 * with import(): frida 17 is an ES module.
 */
import type * as Frida from 'frida' with { 'resolution-mode': 'import' };
import { readFileSync } from 'node:fs';
import { AgentInitResult, AgentMessage, publicationLine } from './agent-messages';
import { HookRunError } from './controller';
import type { HookController, HookPaths, PublishOption } from './controller';

/** The binding's module namespace. */
type FridaModule = typeof Frida;

/** UNDERPASS_HOOK_DEBUG=1: one line per hooked process, as the sidecar prints. */
const DEBUG = !['', '0', undefined].includes(process.env.UNDERPASS_HOOK_DEBUG);

/** The `frida` package, or null when it is not installed or its native part does not load. */
export async function tryLoadFridaBinding(): Promise<FridaModule | null> {
  if (process.env.UNDERPASS_HOOK_CONTROLLER === 'sidecar') return null;
  try {
    return await import('frida');
  } catch {
    // import() ignores NODE_PATH, where bin/hook-run also looks for the binding; require() honours it.
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      return require('frida') as FridaModule;
    } catch {
      return null;
    }
  }
}

export class FridaBindingController implements HookController {
  readonly kind = 'frida-binding' as const;
  private readonly sessions: Frida.Session[] = [];
  private source: string | null = null;
  /**
   * The command's process and what its sessions' detach calls: the command may exec, and then its pid
   * gets a new session (hooked as a gated exec child), whose end is the command's end.
   */
  private main: { pid: number; onDetached: (reason: Frida.SessionDetachReason) => void } | null = null;

  constructor(
    private readonly frida: FridaModule,
    private readonly paths: HookPaths,
    private readonly ipcPath: string,
    private readonly publish?: PublishOption,
  ) {}

  async run(command: string[]): Promise<number> {
    const device = await this.frida.getLocalDevice();
    let pid: number;
    try {
      pid = await device.spawn(command, { stdio: this.frida.Stdio.Inherit });
    } catch (error) {
      throw new HookRunError(`${command[0]}: cannot run: ${messageOf(error)}`, 127);
    }
    // Taken now, while the process surely is ours: what tells its zombie from a later process with its pid.
    const startTime = tryProcessStartTime(pid);
    const exited = new Promise<number>((resolve) => {
      this.main = {
        pid,
        // process-replaced is an exec: the gated child handler hooks the new image in a new session.
        onDetached: (reason) => {
          if (reason === this.frida.SessionDetachReason.ProcessTerminated) resolve(exitCodeOfZombie(pid, startTime));
        },
      };
    });
    device.childAdded.connect((child) => void this.hookChild(device, child));
    try {
      await this.hook(device, pid, true);
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
    let session: Frida.Session;
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
        void callExport(script, 'dispose')
          .then(() => script.unload())
          .catch(() => undefined)
          .then(() => session.detach().catch(() => undefined))
          .then(() => {
            process.stderr.write(`hook-run: hook removed from process ${pid}\n`);
            resolve(0);
          });
      };
      const onDetached = (reason: Frida.SessionDetachReason): void => {
        if (reason === this.frida.SessionDetachReason.ApplicationRequested) return;
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

  private async hook(device: Frida.Device, pid: number, gateChildren: boolean): Promise<Frida.Session> {
    let session: Frida.Session;
    try {
      session = await device.attach(pid);
    } catch (error) {
      throw attachError(pid, error);
    }
    if (this.main?.pid === pid) session.detached.connect(this.main.onDetached);
    if (gateChildren) await session.enableChildGating();
    await this.loadAgent(session, pid);
    this.sessions.push(session);
    return session;
  }

  private async loadAgent(session: Frida.Session, pid: number): Promise<Frida.Script> {
    this.source ??= readFileSync(this.paths.agent, 'utf8');
    const script = await session.createScript(this.source, { name: 'underpass-hook' });
    script.message.connect((message) => {
      if (message.type === this.frida.MessageType.Error) {
        process.stderr.write(`hook-run: process ${pid}: hook error: ${message.description}\n`);
        return;
      }
      const parsed = AgentMessage.safeParse(message.payload);
      if (!parsed.success) return;
      if (parsed.data.type === 'warning') process.stderr.write(`hook-run: process ${pid}: ${parsed.data.message}\n`);
      else process.stderr.write(publicationLine(parsed.data, pid, this.publish?.json === true) + '\n');
    });
    await script.load();
    let result: unknown;
    try {
      result = await callExport(script, 'init', {
        ipcPath: this.ipcPath,
        ...(this.publish !== undefined ? { publish: this.publish } : {}),
      });
    } catch (error) {
      await session.detach().catch(() => undefined);
      const text = messageOf(error);
      if (text.includes('no redirector at ')) throw noRedirector(this.ipcPath);
      throw new HookRunError(`hook failed in process ${pid}: ${text}`);
    }
    const init = AgentInitResult.safeParse(result);
    if (!init.success) {
      await session.detach().catch(() => undefined);
      throw new HookRunError(`hook failed in process ${pid}: the agent's init answered ${JSON.stringify(result)}`);
    }
    if (!init.data.hooked)
      process.stderr.write(`hook-run: process ${pid}: ${init.data.notice ?? 'cannot be hooked'}; it runs unhooked\n`);
    else if (DEBUG) process.stderr.write(`hook-run: hooked process ${pid} (${init.data.hooks.join(', ')})\n`);
    return script;
  }

  /** Hooks a gated child; whatever happens, the child is resumed, never left suspended. */
  private async hookChild(device: Frida.Device, child: Frida.Child): Promise<void> {
    try {
      await this.hook(device, child.pid, true);
    } catch (error) {
      process.stderr.write(`hook-run: child ${child.pid} (${child.origin}) runs unhooked: ${messageOf(error)}\n`);
    } finally {
      await device.resume(child.pid).catch(() => undefined);
    }
  }
}

/** Calls one of the agent's RPC exports; what it answers is unknown until checked. */
async function callExport(script: Frida.Script, name: 'init' | 'dispose', ...args: unknown[]): Promise<unknown> {
  const result: unknown = await script.exports[name]!(...args);
  return result;
}

/**
 * Exit status of a terminated child still in zombie state, from /proc/PID/stat field 52 (exit_code, a
 * waitpid status); Node cannot waitpid, and the binding reports an exit only as the session's detach
 * reason (frida's Session `detached(reason, crash)` carries no status). Frida reaps the processes it
 * spawns itself, so the zombie may be gone: then 1 is reported, with a line saying so. `startTime`
 * (field 22, taken at spawn) makes sure the zombie read is that process, never a later one given the
 * same pid.
 */
function exitCodeOfZombie(pid: number, startTime: string | null): number {
  const fields = tryStatFields(pid);
  const status = Number(fields?.[52 - 3]);
  if (
    fields === null ||
    fields[0] !== 'Z' ||
    startTime === null ||
    fields[22 - 3] !== startTime ||
    !Number.isInteger(status)
  ) {
    process.stderr.write(`hook-run: the exit status of process ${pid} was lost (reaped by frida); reporting 1\n`);
    return 1;
  }
  const signal = status & 0x7f;
  return signal === 0 ? (status >> 8) & 0xff : 128 + signal;
}

/** Field 22 of /proc/PID/stat (start time in clock ticks after boot), or null. */
function tryProcessStartTime(pid: number): string | null {
  return tryStatFields(pid)?.[22 - 3] ?? null;
}

/** The fields of /proc/PID/stat from field 3 (state) on, or null when the process is gone. */
function tryStatFields(pid: number): string[] | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // After the parenthesised command name, which may itself contain spaces or parentheses.
    return stat
      .slice(stat.lastIndexOf(')') + 2)
      .trim()
      .split(' ');
  } catch {
    return null;
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
  return new HookRunError(
    `no redirector at ${ipcPath}: start one with 'underpass redirector ... --ipc ${ipcPath}' or pass --ipc PATH of a running one`,
  );
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
