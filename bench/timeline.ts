/**
 * Where a tunnel's connect + 1-byte round trip goes, step by step across the three daemons (issue 16,
 * "every millisecond accounted for"), and an A/B of two builds' connect latency in one run.
 *
 *   node dist/bench/timeline.js [--n 300] [--rounds 2]
 *       A chain with UNDERPASS_OPEN_TRACE (runtime/open-trace.ts) in the daemons' environment and the
 *       probe's own marks (probe.py, UNDERPASS_PROBE_MARKS): for the unhooked client (pseudo address,
 *       claimed over IPC) and the hooked one, the median time of every step from the probe's start,
 *       in time order, and the median gap to the step before it.
 *   node dist/bench/timeline.js --ab BEFORE_ROOT [--n 500] [--rounds 4]
 *       Two chains, BEFORE_ROOT's build (its bin/underpass.js) and this one, no trace, probed in
 *       interleaved rounds, unhooked and hooked: p50/p99 of each, with the load and the CPU stolen
 *       by the hypervisor meanwhile.
 *
 * Every daemon and the probe read CLOCK_MONOTONIC, so one tunnel's steps line up across processes; a
 * trace's steps are matched to the probe sample whose span holds the redirector's first step.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort, PYTHON, ROOT } from '../cli/chain';
import { BenchChain } from './chain';
import { cpuTicks, CpuTally, exec, Proc, stopAll, sleep, tail, type ExecResult } from './proc';
import { quantile } from './stats';

const PROBE = path.join(ROOT, 'bench', 'probe.py');
const ECHO = path.join(ROOT, 'dist', 'bench', 'echo-server.js');

interface Args {
  n: number;
  rounds: number;
  before: string | null;
}

function parseArgs(argv: string[]): Args {
  const args: Args = { n: 0, rounds: 0, before: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--n') args.n = Number(argv[++i]);
    else if (a === '--rounds') args.rounds = Number(argv[++i]);
    else if (a === '--ab') args.before = path.resolve(argv[++i] ?? '');
    else throw new Error(`unknown argument ${a} (see the header of bench/timeline.ts)`);
  }
  if (args.before !== null && !fs.existsSync(path.join(args.before, 'bin', 'underpass.js')))
    throw new Error(`--ab: no bin/underpass.js under ${args.before}`);
  args.n ||= args.before === null ? 300 : 500;
  args.rounds ||= args.before === null ? 2 : 4;
  return args;
}

function progress(message: string): void {
  process.stderr.write(`[timeline] ${message}\n`);
}

interface ProbeOut {
  samples_us: number[];
  marks_ms?: number[][];
}

type Client = 'no hook' | 'hooked';

/** One probe run of `n` connects through `chain`, unhooked (claimed over IPC) or under hook-run. */
async function probe(
  chain: BenchChain,
  client: Client,
  echoPort: number,
  n: number,
  marks: boolean,
): Promise<ProbeOut> {
  const env = marks ? { UNDERPASS_PROBE_MARKS: '1' } : {};
  const timeoutMs = 180_000;
  const r =
    client === 'hooked'
      ? await chain.hookRun([PYTHON, PROBE, 'latency', chain.host('echo'), String(echoPort), String(n)], {
          timeoutMs,
          env,
        })
      : await exec(
          PYTHON,
          [PROBE, 'latency', await chain.pseudoAddress('echo'), String(echoPort), String(n), chain.ipcPath],
          { timeoutMs, env },
        );
  if (r.code !== 0) throw new Error(`probe (${client}) exited ${r.code}: ${tail(r.stderr, 3)}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as ProbeOut;
}

/** The steps of one tunnel, `ROLE STEP` → monotonic ms. */
type Steps = Map<string, number>;

function readTrace(file: string): Map<string, Steps> {
  const tunnels = new Map<string, Steps>();
  const text = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
  for (const line of text.split('\n')) {
    const [role, step, id, at] = line.split('\t');
    if (at === undefined || id === undefined) continue;
    let steps = tunnels.get(id);
    if (steps === undefined) tunnels.set(id, (steps = new Map()));
    // The first occurrence counts (a first-data step is marked once per stream anyway).
    const key = `${role} ${step}`;
    if (!steps.has(key)) steps.set(key, Number(at));
  }
  return tunnels;
}

/** Each traced tunnel with the probe sample it served: the one whose span holds its earliest step. */
function matchSamples(tunnels: Map<string, Steps>, marks: number[][]): Array<{ steps: Steps; mark: number[] }> {
  const starts = marks.map((m) => m[0]!);
  const out: Array<{ steps: Steps; mark: number[] }> = [];
  for (const steps of tunnels.values()) {
    const first = Math.min(...steps.values());
    // Binary search for the last sample that started before the tunnel's first step.
    let lo = 0;
    let hi = starts.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (starts[mid]! <= first) {
        found = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    if (found >= 0 && first <= marks[found]![3]!) out.push({ steps, mark: marks[found]! });
  }
  return out;
}

const PROBE_STEPS = ['probe connect() returned', 'probe claim sent', 'probe byte back'];

/** The accounting table: each step's median time from the probe's start, in time order. */
function timelineTable(client: Client, matched: Array<{ steps: Steps; mark: number[] }>, e2e: number[]): string {
  const offsets = new Map<string, number[]>();
  const add = (key: string, v: number): void => {
    const list = offsets.get(key) ?? [];
    list.push(v);
    offsets.set(key, list);
  };
  for (const { steps, mark } of matched) {
    const t0 = mark[0]!;
    PROBE_STEPS.forEach((name, i) => {
      // The unhooked probe's claim; the hooked probe's hook sends its own, unseen here.
      if (!(client === 'hooked' && i === 1)) add(name, mark[i + 1]! - t0);
    });
    for (const [key, at] of steps) add(key, at - t0);
  }
  const rows = [...offsets.entries()]
    // A step seen in fewer than half the tunnels is another path's (a refusal, a retry): left out.
    .filter(([, v]) => v.length >= matched.length / 2)
    .map(([key, v]) => ({ key, median: quantile(v, 0.5), p90: quantile(v, 0.9), n: v.length }))
    .sort((a, b) => a.median - b.median);
  const lines = [
    `### ${client}: ${matched.length} tunnels traced, connect + 1-byte round trip p50 ${(quantile(e2e, 0.5) / 1000).toFixed(3)} ms (these traced runs)`,
    '',
    '| step (process, event) | from the probe start, median ms | gap to the row above, ms | p90 ms |',
    '|---|---|---|---|',
  ];
  let previous = 0;
  for (const r of rows) {
    lines.push(`| ${r.key} | ${r.median.toFixed(3)} | +${(r.median - previous).toFixed(3)} | ${r.p90.toFixed(3)} |`);
    previous = r.median;
  }
  return lines.join('\n');
}

interface Machine {
  load: string;
  steal: string;
}

function machineDuring<T>(run: () => Promise<T>): Promise<{ value: T; machine: Machine }> {
  const load = os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');
  const before = cpuTicks();
  return run().then((value) => {
    const after = cpuTicks();
    const steal =
      before !== null && after !== null && after.total > before.total
        ? `${((100 * (after.steal - before.steal)) / (after.total - before.total)).toFixed(1)} %`
        : 'unknown';
    return { value, machine: { load, steal } };
  });
}

async function startEcho(): Promise<{ echo: Proc; port: number }> {
  const port = await freePort();
  const echo = new Proc('echo', process.execPath, [ECHO, String(port)]);
  await echo.waitFor(/echo listening/);
  return { echo, port };
}

async function timeline(args: Args): Promise<string> {
  const { echo, port } = await startEcho();
  const traceFile = path.join(os.tmpdir(), `underpass-open-trace-${process.pid}.tsv`);
  fs.rmSync(traceFile, { force: true });
  const chain = new BenchChain({ publish: [`echo=127.0.0.1:${port}`], env: { UNDERPASS_OPEN_TRACE: traceFile } });
  await chain.start();
  const marks = new Map<Client, number[][]>([
    ['no hook', []],
    ['hooked', []],
  ]);
  const e2e = new Map<Client, number[]>([
    ['no hook', []],
    ['hooked', []],
  ]);
  const { machine } = await machineDuring(async () => {
    for (let round = 1; round <= args.rounds; round++)
      for (const client of ['no hook', 'hooked'] as const) {
        progress(`${client}: ${args.n} connects (round ${round} of ${args.rounds})`);
        const out = await probe(chain, client, port, args.n, true);
        marks.get(client)!.push(...(out.marks_ms ?? []));
        e2e.get(client)!.push(...out.samples_us);
      }
  });
  // The daemons append their lines every 200 ms.
  await sleep(600);
  await chain.stop();
  await echo.stop();
  const tunnels = readTrace(traceFile);
  fs.rmSync(traceFile, { force: true });
  const tables: string[] = [`load ${machine.load} at start, steal ${machine.steal} during the run`];
  for (const client of ['no hook', 'hooked'] as const) {
    // A hooked tunnel's first redirector step is its IPC connect; an unhooked one's, its accept.
    const mine = new Map([...tunnels].filter(([, s]) => s.has('redirector ipc-connect-in') === (client === 'hooked')));
    tables.push(timelineTable(client, matchSamples(mine, marks.get(client)!), e2e.get(client)!));
  }
  return tables.join('\n\n');
}

/** Batches a round's hooked connects are split into, each build's in turn: load that comes and goes spreads over both. */
const HOOKED_BATCHES = 4;

/** The daemons whose CPU per tunnel the A/B reads. */
type Daemon = 'server' | 'proxy' | 'redirector';

async function ab(args: Args): Promise<string> {
  const { echo, port } = await startEcho();
  const labels = ['before', 'after'] as const;
  const program = { before: path.join(args.before!, 'bin', 'underpass.js'), after: undefined };
  const chains = new Map<string, BenchChain>();
  for (const label of labels) {
    const p = program[label];
    const chain = new BenchChain({ publish: [`echo=127.0.0.1:${port}`], ...(p !== undefined ? { program: p } : {}) });
    await chain.start();
    chains.set(label, chain);
  }
  const cpu = new Map(labels.map((l) => [l, new CpuTally<Daemon>(chains.get(l)!.pids())]));
  const samples = new Map<string, number[]>();
  const note = (key: string, got: number[]): void => {
    samples.set(key, [...(samples.get(key) ?? []), ...got]);
    progress(
      `${key}: p50 ${(quantile(got, 0.5) / 1000).toFixed(3)} ms, p99 ${(quantile(got, 0.99) / 1000).toFixed(3)} ms`,
    );
  };
  const warm = Math.max(10, Math.floor(args.n / 20));
  const { machine } = await machineDuring(async () => {
    for (let round = 1; round <= args.rounds; round++) {
      progress(`round ${round} of ${args.rounds}`);
      // Unhooked: one probe taking turns connect by connect, the CPU of both chains read around it.
      const target = async (label: string): Promise<string[]> => {
        const chain = chains.get(label)!;
        return [await chain.pseudoAddress('echo'), String(port), chain.ipcPath];
      };
      const argv = [PROBE, 'latency-ab', String(args.n), ...(await target('before')), ...(await target('after'))];
      const run = (): Promise<ExecResult> => exec(PYTHON, argv, { timeoutMs: 300_000 });
      const r = await cpu.get('before')!.around(
        () => cpu.get('after')!.around(run, () => args.n + warm),
        () => args.n + warm,
      );
      if (r.code !== 0) throw new Error(`probe exited ${r.code}: ${tail(r.stderr, 3)}`);
      const both = (JSON.parse(r.stdout.trim().split('\n').pop()!) as { samples_us: number[][] }).samples_us;
      note('no hook before', both[0]!);
      note('no hook after', both[1]!);
      // Hooked: hook-run attaches to one redirector, so a probe per build, in turn, in short batches.
      for (let batch = 0; batch < HOOKED_BATCHES; batch++)
        for (const label of (round + batch) % 2 === 1 ? labels : [...labels].reverse()) {
          const n = Math.ceil(args.n / HOOKED_BATCHES);
          note(`hooked ${label}`, (await probe(chains.get(label)!, 'hooked', port, n, false)).samples_us);
        }
    }
  });
  for (const chain of chains.values()) await chain.stop();
  await echo.stop();
  const ms = (v: number[], q: number): string => (quantile(v, q) / 1000).toFixed(3);
  const lines = [
    `${args.rounds} rounds of ${args.n} connects per build and client (unhooked: both builds in turn, connect by connect; hooked: a probe per build, in turn, ${HOOKED_BATCHES} batches a round); load ${machine.load} at start, steal ${machine.steal} during the run`,
    '',
    '| client | before p50 | after p50 | before p99 | after p99 | p50 after/before |',
    '|---|---|---|---|---|---|',
  ];
  for (const client of ['no hook', 'hooked'] as const) {
    const b = samples.get(`${client} before`) ?? [];
    const a = samples.get(`${client} after`) ?? [];
    lines.push(
      `| ${client} | ${ms(b, 0.5)} | ${ms(a, 0.5)} | ${ms(b, 0.99)} | ${ms(a, 0.99)} | ${(quantile(a, 0.5) / quantile(b, 0.5)).toFixed(2)} |`,
    );
  }
  lines.push('', '| daemon CPU per unhooked tunnel, ms | server | proxy | redirector |', '|---|---|---|---|');
  for (const label of labels) {
    const per = cpu.get(label)!.perUnit();
    const f = (d: Daemon): string => (per === null ? '—' : per[d].toFixed(3));
    lines.push(`| ${label} | ${f('server')} | ${f('proxy')} | ${f('redirector')} |`);
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  try {
    process.stdout.write((args.before === null ? await timeline(args) : await ab(args)) + '\n');
  } finally {
    await stopAll();
  }
}

main().then(
  () => process.exit(0),
  async (e: unknown) => {
    process.stderr.write(`timeline: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    await stopAll();
    process.exit(1);
  },
);
