/**
 * What a controller of the hook is: the thing that loads dist/hook/agent.js into a command (and every
 * process it forks or execs) or into a running process, calls the agent's `init({ipcPath})`, and reports
 * the exit status. Two implement it, sharing one agent: the Node `frida` binding (frida-binding-controller.ts),
 * preferred when it loads, and hook/sidecar.py, a Python controller on the `frida` wheel in the project's
 * `.venv` (sidecar-controller.ts), for where the binding cannot be installed (its install step downloads a
 * native build). pick-controller.ts chooses.
 */
import path from 'node:path';
import { projectRoot } from '../runtime/paths';

/** What `hook-run --publish [NAME] [--json]` asks: the command's listening socket published as NAME. */
export interface PublishOption {
  name: string;
  json: boolean;
}

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
