/**
 * Starts the whole chain on one machine as separate processes, the way a user would: `underpass server`,
 * `underpass proxy`, `underpass redirector`, and `hook-run` for clients. `npm run demo` runs it, and the
 * end-to-end tests and the bench build on it. Nothing here stands in for one of our programs; it only
 * starts, waits for and stops them.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { projectRoot } from '../runtime/paths';

export const ROOT = projectRoot();
export const UNDERPASS = path.join(ROOT, 'bin', 'underpass.js');
/** The Node entry of hook-run (also `underpass run`): run it as `node HOOK_RUN ...`. */
export const HOOK_RUN = path.join(ROOT, 'bin', 'hook-run.js');
/** hook-run as npm installs it (package.json "bin"): a shell launcher that goes straight to the sidecar. */
export const HOOK_RUN_LAUNCHER = path.join(ROOT, 'bin', 'hook-run');

/**
 * The real python3 binary. Under pyenv, `python3` is a shell shim that forks and execs a dozen helpers,
 * each of which hook-run would hook in turn; tests that are about something else run the interpreter.
 */
export const PYTHON =
  spawnSync('python3', ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8' }).stdout.trim() || 'python3';

export function tmpDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `underpass-${prefix}-`));
}

export async function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, host, () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** A started program whose output is collected, with a way to wait for a line in it. */
export class Program {
  readonly child: ChildProcess;
  stdout = '';
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(
    readonly label: string,
    command: string,
    args: string[],
    options: { env?: NodeJS.ProcessEnv; cwd?: string } = {},
  ) {
    this.child = spawn(command, args, {
      cwd: options.cwd ?? ROOT,
      env: { ...process.env, ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child.stdout!.setEncoding('utf8').on('data', (d: string) => (this.stdout += d));
    this.child.stderr!.setEncoding('utf8').on('data', (d: string) => (this.stderr += d));
    this.exited = new Promise((resolve) => this.child.once('exit', (code, signal) => resolve({ code, signal })));
    // A daemon that dies in the middle of a test otherwise shows only as a later, puzzling failure.
    this.child.once('exit', (code, signal) => {
      if (!this.stopping && (signal !== null || code !== 0)) {
        process.stderr.write(
          `[chain] ${label} exited unexpectedly (${signal ?? `code ${String(code)}`}):\n${this.stderr.slice(-4000)}\n`,
        );
      }
    });
  }

  private stopping = false;

  /** Resolves with the first match of `pattern` in stdout+stderr; rejects if the program exits first. */
  async waitFor(
    pattern: RegExp,
    timeoutMs = 20_000,
    stream: 'stdout' | 'stderr' | 'both' = 'both',
  ): Promise<RegExpMatchArray> {
    const deadline = Date.now() + timeoutMs;
    let exited = false;
    void this.exited.then(() => (exited = true));
    for (;;) {
      const text = stream === 'stdout' ? this.stdout : stream === 'stderr' ? this.stderr : this.stdout + this.stderr;
      const m = text.match(pattern);
      if (m) return m;
      if (exited) throw new Error(`${this.label} exited before printing ${pattern}:\n${this.stderr}${this.stdout}`);
      if (Date.now() > deadline)
        throw new Error(`${this.label} did not print ${pattern} within ${timeoutMs} ms:\n${this.stderr}${this.stdout}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    this.stopping = true;
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    const result = await this.exited;
    clearTimeout(timer);
    return result;
  }
}

/** The proxy's `--json` line for a publication the server accepted, as the chain reads it. */
const Published = z.object({
  event: z.literal('published'),
  name: z.string(),
  host: z.string(),
  key: z.string(),
  target: z.string(),
});
export type Published = z.infer<typeof Published>;

/**
 * Runs a command to completion, collecting its output. With `processGroup`, the command leads its own
 * process group and a timeout kills the whole group: what a hung `hook-run` leaves behind (the sidecar,
 * the command and its children, some of them spinning) does not outlive the test.
 */
export function run(
  command: string,
  args: string[],
  options: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number; cwd?: string; processGroup?: boolean } = {},
): Promise<{
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  stdoutBuffer: Buffer;
}> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd ?? ROOT,
      env: { ...process.env, ...options.env },
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: options.processGroup === true,
    });
    const out: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      if (options.processGroup === true && child.pid !== undefined) {
        try {
          process.kill(-child.pid, 'SIGKILL');
        } catch {
          // The group is gone already.
        }
      } else {
        child.kill('SIGKILL');
      }
      reject(new Error(`${command} ${args.join(' ')} timed out:\n${stderr}`));
    }, options.timeoutMs ?? 60_000);
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      const stdoutBuffer = Buffer.concat(out);
      resolve({ code, signal, stdout: stdoutBuffer.toString('utf8'), stderr, stdoutBuffer });
    });
    // A command that exits without reading its input (`id`, `true`) closes the pipe first: EPIPE then
    // says nothing about the command, whose exit status and output are what the caller checks.
    child.stdin.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code !== 'EPIPE') reject(error);
    });
    child.stdin.end(options.input ?? '');
  });
}

let pseudoNetCounter = 0;

export interface ChainOptions {
  /** Address the server listens on and endpoints dial (default 127.0.0.1). */
  serverHost?: string;
  /** More flags for each program. */
  serverArgs?: string[];
  proxyArgs?: string[];
  redirectorArgs?: string[];
  /** Run the redirector (and hookRun's clients) inside this network namespace. */
  clientNetns?: string;
  /** Run the service proxy inside this network namespace. */
  proxyNetns?: string;
  /** Environment of the redirector (e.g. HTTPS_PROXY). */
  redirectorEnv?: NodeJS.ProcessEnv;
  /** Ports on the server's host the proxy and the redirector dial instead of the server's (a relay). */
  proxyVia?: number;
  redirectorVia?: number;
}

/** `command args` as run inside `netns`, or as is. */
export function inNetns(netns: string | undefined, command: string, args: string[]): [string, string[]] {
  return netns ? ['ip', ['netns', 'exec', netns, command, ...args]] : [command, args];
}

/** The whole chain: tunnel server, one service proxy publishing `publish`, one redirector. */
/** A real web server (Python's http.server) serving `dir` on 127.0.0.1:`port`. */
export function httpServer(port: number, dir: string, label = 'web'): Program {
  return new Program(label, PYTHON, ['-m', 'http.server', String(port), '--bind', '127.0.0.1', '--directory', dir]);
}

export class Chain {
  server!: Program;
  proxy!: Program;
  redirector!: Program;
  readonly dir = tmpDir('chain');
  readonly dataDir = path.join(this.dir, 'data');
  readonly ipcPath = path.join(this.dir, 'redirector.sock');
  readonly pseudoNet = `127.${78 + (pseudoNetCounter++ % 100)}.0.0/16`;
  serverPort = 0;
  token = '';
  published = new Map<string, Published>();
  private readonly extra: Program[] = [];

  constructor(
    private readonly publish: string[],
    readonly options: ChainOptions = {},
  ) {}

  get serverHost(): string {
    return this.options.serverHost ?? '127.0.0.1';
  }

  get ca(): string {
    return path.join(this.dataDir, 'tls', 'cert.pem');
  }

  async startServer(): Promise<void> {
    if (this.serverPort === 0) this.serverPort = await freePort();
    this.server = new Program('server', process.execPath, [
      UNDERPASS,
      'server',
      '--listen',
      `${this.serverHost}:${this.serverPort}`,
      '--data-dir',
      this.dataDir,
      ...(this.options.serverArgs ?? []),
    ]);
    await this.server.waitFor(/listening on/);
    this.token = fs.readFileSync(path.join(this.dataDir, 'token'), 'utf8').trim();
  }

  endpointArgs(via?: number): string[] {
    return ['--server', `${this.serverHost}:${via ?? this.serverPort}`, '--ca', this.ca, '--token', this.token];
  }

  async startProxy(): Promise<void> {
    const args = [
      UNDERPASS,
      'proxy',
      ...this.endpointArgs(this.options.proxyVia),
      '--json',
      ...(this.options.proxyArgs ?? []),
    ];
    for (const p of this.publish) args.push('--publish', p);
    const [command, inside] = inNetns(this.options.proxyNetns, process.execPath, args);
    this.proxy = new Program('proxy', command, inside);
    for (const spec of this.publish) {
      const name = spec.split('=')[0]!;
      const m = await this.proxy.waitFor(
        new RegExp(`^(\\{"event":"published","name":"${name}".*\\})$`, 'm'),
        20_000,
        'stdout',
      );
      this.published.set(name, Published.parse(JSON.parse(m[1]!)));
    }
  }

  async startRedirector(): Promise<void> {
    const [command, args] = inNetns(this.options.clientNetns, process.execPath, [
      UNDERPASS,
      'redirector',
      ...this.endpointArgs(this.options.redirectorVia),
      '--ipc',
      this.ipcPath,
      '--pseudo-net',
      this.pseudoNet,
      ...(this.options.redirectorArgs ?? []),
    ]);
    this.redirector = new Program('redirector', command, args, { env: this.options.redirectorEnv ?? {} });
    await this.redirector.waitFor(/serving hooks on/);
  }

  async start(): Promise<this> {
    await this.startServer();
    await this.startProxy();
    await this.startRedirector();
    return this;
  }

  host(name: string): string {
    const p = this.published.get(name);
    if (!p) throw new Error(`${name} was not published`);
    return p.host;
  }

  /** `hook-run --ipc <ours> -- command args…` as a user runs it (the npm launcher), to completion; a timeout kills all it started. */
  hookRun(
    command: string[],
    options: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number } = {},
  ): ReturnType<typeof run> {
    const [cmd, args] = inNetns(this.options.clientNetns, HOOK_RUN_LAUNCHER, ['--ipc', this.ipcPath, '--', ...command]);
    return run(cmd, args, { ...options, processGroup: true });
  }

  /** Keeps a program running until the chain stops. */
  adopt(program: Program): Program {
    this.extra.push(program);
    return program;
  }

  async stop(): Promise<void> {
    await Promise.all([...this.extra, this.redirector, this.proxy, this.server].filter(Boolean).map((p) => p.stop()));
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
