/**
 * The controller that runs hook/sidecar.py (the Python controller on the `frida` wheel in .venv) and
 * stands between it and the user: stdio inherited, the sidecar's exit status passed through, signals
 * passed on, and the sidecar told to die with us (`--exit-with-parent`), so that a killed `underpass run`
 * never leaves the sidecar, or through it the command, running on.
 */
import { spawn } from 'node:child_process';
import { constants as osConstants } from 'node:os';
import { HookRunError } from './controller';
import type { HookController, HookPaths, PublishOption } from './controller';

/** What hook-run passes on to its command. */
const RELAYED: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT'];

export class SidecarController implements HookController {
  readonly kind = 'python-sidecar' as const;

  constructor(
    private readonly paths: HookPaths,
    private readonly ipcPath: string,
    private readonly publish?: PublishOption,
  ) {}

  run(command: string[]): Promise<number> {
    return this.runSidecar(['--', ...command]);
  }

  attach(pid: number): Promise<number> {
    return this.runSidecar(['--pid', String(pid)]);
  }

  private runSidecar(tail: string[]): Promise<number> {
    // -S: the sidecar puts its .venv's site-packages on sys.path itself, sparing site.py's start-up.
    const args = ['-S', this.paths.sidecar, '--agent', this.paths.agent, '--ipc', this.ipcPath, '--exit-with-parent'];
    if (this.publish !== undefined) {
      args.push('--publish', this.publish.name);
      if (this.publish.json) args.push('--json');
    }
    return new Promise((resolve, reject) => {
      const child = spawn(this.paths.venvPython, args.concat(tail), { stdio: 'inherit' });
      // The sidecar passes every one of these on (hook/signal_relay.py), except what the terminal sent,
      // which reached the command directly. Node cannot tell who sent a signal, so on a terminal SIGINT
      // and SIGQUIT are not passed (the terminal sent them to the sidecar and the command as well); the
      // rest, and everything when stdin is no terminal, is.
      const fromTerminal: NodeJS.Signals[] = process.stdin.isTTY ? ['SIGINT', 'SIGQUIT'] : [];
      const handlers = new Map<NodeJS.Signals, () => void>();
      for (const signal of RELAYED) {
        handlers.set(signal, fromTerminal.includes(signal) ? () => undefined : () => child.kill(signal));
      }
      for (const [signal, handler] of handlers) process.on(signal, handler);
      const cleanUp = (): void => {
        for (const [signal, handler] of handlers) process.off(signal, handler);
      };
      child.once('error', (error) => {
        cleanUp();
        reject(
          new HookRunError(
            `cannot start the hook sidecar ${this.paths.venvPython}: ${error.message}: run 'npm run setup'`,
          ),
        );
      });
      child.once('exit', (code, signal) => {
        cleanUp();
        resolve(code ?? 128 + (signal === null ? 0 : (osConstants.signals[signal] ?? 0)));
      });
    });
  }
}
