/**
 * Processes the benchmark starts, and the promise that it stops every one of them.
 *
 * Each program runs in its own process group (detached), so stopping it also stops what it started —
 * `hook-run` → Python sidecar → the hooked command, `sshd` → its per-connection children. Every live
 * group is in one registry; `stopAll()` runs on normal completion, on failure, and on SIGINT/SIGTERM, and
 * an `exit` hook SIGKILLs whatever is left, so an interrupted bench leaves nothing behind.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const live = new Set<Proc>();
const cleanups: Array<() => void> = [];

/** Registers a synchronous cleanup (e.g. removing a temp dir) run by `stopAll()` and at exit. */
export function onCleanup(fn: () => void): void {
  cleanups.push(fn);
}

/** A started program: output collected, a way to wait for a line, and a group-wide stop. */
export class Proc {
  readonly child: ChildProcess;
  stdout = '';
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private done = false;

  constructor(
    readonly label: string,
    command: string,
    args: string[],
    options: { env?: NodeJS.ProcessEnv; cwd?: string; keepOutput?: boolean } = {},
  ) {
    this.child = spawn(command, args, {
      cwd: options.cwd,
      env: { ...process.env, ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    const keep = options.keepOutput ?? true;
    // Programs that log per event would otherwise grow these strings without bound: keep the tail.
    const append =
      (which: 'stdout' | 'stderr') =>
      (d: string): void => {
        this[which] += d;
        if (!keep && this[which].length > 64 * 1024) this[which] = this[which].slice(-32 * 1024);
      };
    this.child.stdout!.setEncoding('utf8').on('data', append('stdout'));
    this.child.stderr!.setEncoding('utf8').on('data', append('stderr'));
    this.child.once('error', (e) => (this.stderr += `\nspawn failed: ${e.message}`));
    live.add(this);
    this.exited = new Promise((resolve) =>
      this.child.once('close', (code, signal) => {
        this.done = true;
        live.delete(this);
        resolve({ code, signal });
      }),
    );
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get running(): boolean {
    return !this.done;
  }

  /** Resolves with the first match of `pattern` in stdout+stderr; rejects if the program ends first. */
  async waitFor(pattern: RegExp, timeoutMs = 20_000): Promise<RegExpMatchArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = (this.stdout + this.stderr).match(pattern);
      if (m) return m;
      if (this.done)
        throw new Error(`${this.label} exited before printing ${pattern}:\n${tail(this.stderr + this.stdout)}`);
      if (Date.now() > deadline)
        throw new Error(
          `${this.label} did not print ${pattern} within ${timeoutMs} ms:\n${tail(this.stderr + this.stdout)}`,
        );
      await sleep(20);
    }
  }

  /** SIGTERM to the whole group, SIGKILL after `graceMs`. */
  async stop(graceMs = 3000): Promise<void> {
    if (this.done) return;
    killGroup(this.pid, 'SIGTERM');
    const timer = setTimeout(() => killGroup(this.pid, 'SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
    // A group member that outlived its leader (a sidecar's child, an sshd session) goes too.
    killGroup(this.pid, 'SIGKILL');
  }
}

function killGroup(pid: number, signal: NodeJS.Signals): void {
  if (pid <= 0) return;
  try {
    process.kill(-pid, signal);
  } catch {
    // already gone
  }
}

export interface ExecResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Wall time from spawn to exit (ms). */
  ms: number;
}

/** Runs a command to completion in its own group; kills the group after `timeoutMs`. */
export async function exec(
  command: string,
  args: string[],
  options: { env?: NodeJS.ProcessEnv; timeoutMs?: number; cwd?: string } = {},
): Promise<ExecResult> {
  const started = process.hrtime.bigint();
  const p = new Proc(command, command, args, options);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    killGroup(p.pid, 'SIGKILL');
  }, options.timeoutMs ?? 60_000);
  const { code, signal } = await p.exited;
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  clearTimeout(timer);
  killGroup(p.pid, 'SIGKILL');
  if (timedOut)
    throw new Error(
      `${command} ${args.join(' ')} timed out after ${options.timeoutMs ?? 60_000} ms:\n${tail(p.stderr + p.stdout)}`,
    );
  return { code, signal, stdout: p.stdout, stderr: p.stderr, ms };
}

/** Stops every live program (SIGTERM, then SIGKILL) and runs the registered cleanups. */
export async function stopAll(): Promise<void> {
  await Promise.all([...live].map((p) => p.stop(2000)));
  runCleanups();
}

function runCleanups(): void {
  for (const fn of cleanups.splice(0)) {
    try {
      fn();
    } catch {
      // best effort
    }
  }
}

process.on('exit', () => {
  for (const p of live) killGroup(p.pid, 'SIGKILL');
  runCleanups();
});

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export function tail(text: string, lines = 15): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

/** Resident set size of a process (KiB), from /proc/PID/status; null once it is gone. */
export function rssKiB(pid: number): number | null {
  try {
    const m = fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(/^VmRSS:\s+(\d+)\s+kB/m);
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/** CPU time (user + system) a process has used so far (ms), from /proc/PID/stat; null once it is gone. */
export function cpuMs(pid: number): number | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // After "(comm) ", field 3 (state) is index 0: utime and stime are fields 14 and 15.
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
  } catch {
    return null;
  }
}

/**
 * The CPU time named processes spend over some measured runs, summed, then divided by the units (MB
 * carried, tunnels opened) those runs did. A process that could not be read voids the figure.
 */
export class CpuTally<K extends string> {
  private readonly spent = new Map<K, number>();
  private units = 0;
  private readable = true;

  constructor(private readonly pids: Record<K, number>) {}

  /** Runs `run` and adds the CPU each process used meanwhile, and `units(result)`. */
  async around<T>(run: () => Promise<T>, units: (result: T) => number): Promise<T> {
    const names = Object.keys(this.pids) as K[];
    const before = names.map((n) => cpuMs(this.pids[n]));
    const result = await run();
    names.forEach((n, i) => {
      const after = cpuMs(this.pids[n]);
      if (after === null || before[i] === null) this.readable = false;
      else this.spent.set(n, (this.spent.get(n) ?? 0) + after - before[i]!);
    });
    this.units += units(result);
    return result;
  }

  /** ms per unit for each process; null when nothing was measured or a reading failed. */
  perUnit(): Record<K, number> | null {
    if (!this.readable || this.units <= 0) return null;
    const out = {} as Record<K, number>;
    for (const n of Object.keys(this.pids) as K[]) out[n] = (this.spent.get(n) ?? 0) / this.units;
    return out;
  }
}

/**
 * CPU time the hypervisor gave to others while this machine's vCPUs wanted to run ("steal"), and all
 * CPU time, in clock ticks since boot, from /proc/stat. Null where the kernel does not say.
 */
export function cpuTicks(): { steal: number; total: number } | null {
  try {
    const fields = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal …; guest time is already inside user.
    return { steal: fields[7] ?? 0, total: fields.slice(0, 8).reduce((a, b) => a + b, 0) };
  } catch {
    return null;
  }
}

/** The soft and hard open-file limits of this process. */
export function fileLimits(): { soft: number; hard: number } {
  const m = fs.readFileSync('/proc/self/limits', 'utf8').match(/^Max open files\s+(\S+)\s+(\S+)/m);
  const parse = (s: string | undefined): number =>
    s === undefined || s === 'unlimited' ? Number.MAX_SAFE_INTEGER : Number(s);
  return { soft: parse(m?.[1]), hard: parse(m?.[2]) };
}

/**
 * Node cannot call setrlimit, so when the open-file limit is below `wanted` the bench re-executes
 * itself under `sh -c 'ulimit -n …'` (raising the hard limit too when running as root) and returns the
 * child's exit status; every program the bench starts inherits the raised limit. Returns null when the
 * limit already suffices (or a re-exec already happened).
 */
export function reexecWithFileLimit(wanted: number): Promise<number> | null {
  if (fileLimits().soft >= wanted || process.env.UNDERPASS_BENCH_REEXEC === '1') return null;
  const script = `ulimit -Hn ${wanted} 2>/dev/null; ulimit -n ${wanted} 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$@"`;
  const child = spawn(
    'sh',
    [
      '-c',
      script,
      'sh',
      process.execPath,
      ...process.execArgv,
      path.resolve(process.argv[1]!),
      ...process.argv.slice(2),
    ],
    {
      stdio: 'inherit',
      env: { ...process.env, UNDERPASS_BENCH_REEXEC: '1' },
    },
  );
  const forward = (signal: NodeJS.Signals) => (): void => void child.kill(signal);
  process.on('SIGINT', forward('SIGINT'));
  process.on('SIGTERM', forward('SIGTERM'));
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve(code ?? (signal ? 1 : 0))));
}
