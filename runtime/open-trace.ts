/**
 * Where the time to open a tunnel goes, across the three daemons: with UNDERPASS_OPEN_TRACE=FILE in
 * their environment, the redirector, the server and the proxy each append one line per step of every
 * tunnel's opening to FILE (`ROLE STEP ID MS`, tab-separated), and bench/timeline.ts lines them up by
 * tunnel id. Unset (always, outside the bench), `openTrace()` is null and nothing is measured.
 *
 * Times are CLOCK_MONOTONIC in ms (`process.hrtime`), one clock for every process on the machine,
 * Python's `time.monotonic_ns()` in the probe included. Lines are kept in memory and appended every
 * FLUSH_MS without blocking, so the trace itself adds no file write to the path it measures.
 */
import fs from 'node:fs';
import type { Readable } from 'node:stream';

/** How often the kept lines are appended to the trace file (ms). */
const FLUSH_MS = 200;

/** The monotonic clock every trace line uses (ms). */
export function monotonicMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

export class OpenTrace {
  private lines: string[] = [];
  /** Steps of a tunnel not yet named by its id (a socket, a stream), kept until it is. */
  private readonly unnamed = new WeakMap<object, Array<[string, number]>>();
  private readonly names = new WeakMap<object, string>();

  constructor(
    private readonly file: string,
    private readonly role: string,
  ) {
    setInterval(() => this.flush(), FLUSH_MS).unref();
    process.once('exit', () => {
      if (this.lines.length > 0) fs.appendFileSync(this.file, this.lines.join(''));
    });
  }

  /** Step `step` of tunnel `id` happens now (or at `at`). */
  markId(id: string, step: string, at = monotonicMs()): void {
    this.lines.push(`${this.role}\t${step}\t${id}\t${at.toFixed(4)}\n`);
  }

  /** Step `step` of the tunnel `key` stands for (before its id is known, or after) happens now. */
  mark(key: object, step: string, at = monotonicMs()): void {
    const id = this.names.get(key);
    if (id !== undefined) {
      this.markId(id, step, at);
      return;
    }
    const steps = this.unnamed.get(key);
    if (steps === undefined) this.unnamed.set(key, [[step, at]]);
    else steps.push([step, at]);
  }

  /** `key`'s tunnel is `id`: the steps marked under it so far and from now on are that tunnel's. */
  name(key: object, id: string): void {
    this.names.set(key, id);
    for (const [step, at] of this.unnamed.get(key) ?? []) this.markId(id, step, at);
    this.unnamed.delete(key);
  }

  /** Marks `step` when `stream`'s first chunk is read. */
  markFirstData(stream: Readable, key: object | string, step: string): void {
    stream.once('data', () => (typeof key === 'string' ? this.markId(key, step) : this.mark(key, step)));
  }

  private flush(): void {
    if (this.lines.length === 0) return;
    const text = this.lines.join('');
    this.lines = [];
    fs.appendFile(this.file, text, () => undefined);
  }
}

const traces = new Map<string, OpenTrace>();

/**
 * The trace of daemon `role`'s steps, or null when UNDERPASS_OPEN_TRACE is not set. One per role: a
 * program loads every daemon's modules, and each marks its own steps.
 */
export function openTrace(role: string): OpenTrace | null {
  const file = process.env.UNDERPASS_OPEN_TRACE;
  if (file === undefined || file === '') return null;
  let trace = traces.get(role);
  if (trace === undefined) {
    trace = new OpenTrace(file, role);
    traces.set(role, trace);
  }
  return trace;
}
