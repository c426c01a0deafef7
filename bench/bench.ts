/**
 * `npm run bench`: Underpass measured on loopback against references run in the same process tree and
 * the same minutes. It starts every program it measures — the three daemons, iperf3, an echo
 * server, an sshd with two ssh clients — stops them all even when a step fails or the run is
 * interrupted, prints progress lines on stderr and a table on stdout, and writes JSON and a PNG chart
 * under bench/results/. It never asserts: a figure that cannot be measured is reported as missing.
 *
 *   node dist/bench/bench.js [--quick] [--only throughput,direct,cross,latency,memory,hook] [--profile DIR] [--out NAME]
 *
 * --quick     about a minute: shorter iperf3 runs, fewer iterations (writes results/quick.*)
 * --only      run some sections
 * --profile   run the daemons with node --cpu-prof into DIR and print their top self-time functions
 * --out       base name of the result files (default latest, or quick with --quick)
 *
 * Length: about 650 lines, over the ~350 the house aims at: this is the run's script — one section per
 * figure (throughput, latency, memory, hook), each a sequence of start, interleave rounds, stop — and the
 * measuring parts it strings together are their own files (chain.ts, iperf.ts, ssh-chain.ts, floor.ts,
 * proc.ts, idle.ts, results.ts, report.ts, chart.ts; direct-hop.ts and cross-node.ts are whole sections).
 * Splitting the sections would scatter one run's order across files.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import type net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { freePort, PYTHON, ROOT } from '../cli/chain';
import { BenchChain } from './chain';
import { FloorChain } from './floor';
import { writeChart } from './chart';
import { openIdle } from './idle';
import { measureIperf, type IperfResult } from './iperf';
import {
  cpuTicks,
  CpuTally,
  exec,
  fileLimits,
  Proc,
  reexecWithFileLimit,
  rssKiB,
  sleep,
  stopAll,
  tail,
  type ExecResult,
} from './proc';
import { summariseProfiles } from './profile-summary';
import { evaluateBars, printTable } from './report';
import type { BenchResults, LatencySummary, OrdinarySample, ProcessMemory, Throughput } from './results';
import { mean, quantile, median } from './stats';
import { RatholeChain } from './rathole-chain';
import { SshChain } from './ssh-chain';
import { benchCrossNode } from './cross-node';
import { benchDirectHop } from './direct-hop';

const SECTIONS = ['throughput', 'direct', 'cross', 'latency', 'memory', 'hook'] as const;
type Section = (typeof SECTIONS)[number];

interface Options {
  quick: boolean;
  only: Set<Section>;
  profileDir: string | null;
  out: string;
}

const PROBE = path.join(ROOT, 'bench', 'probe.py');
const ECHO = path.join(ROOT, 'dist', 'bench', 'echo-server.js');
const t0 = Date.now();

function progress(message: string): void {
  const s = Math.round((Date.now() - t0) / 1000);
  process.stderr.write(`[bench ${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}] ${message}\n`);
}

function parseArgs(argv: string[]): Options {
  const options: Options = { quick: false, only: new Set(SECTIONS), profileDir: null, out: '' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--quick') options.quick = true;
    else if (a === '--only') {
      const list = (argv[++i] ?? '').split(',').filter(Boolean);
      for (const s of list)
        if (!(SECTIONS as readonly string[]).includes(s))
          throw new Error(`--only: unknown section '${s}' (known: ${SECTIONS.join(', ')})`);
      options.only = new Set(list as Section[]);
    } else if (a === '--profile') options.profileDir = path.resolve(argv[++i] ?? 'bench-profile');
    else if (a === '--out') options.out = argv[++i] ?? '';
    else if (a === '--help' || a === '-h') {
      process.stdout.write(
        'usage: npm run bench -- [--quick] [--only throughput,direct,cross,latency,memory,hook] [--profile DIR] [--out NAME]\n',
      );
      process.exit(0);
    } else throw new Error(`unknown argument ${a} (try --help)`);
  }
  if (options.out === '') options.out = options.quick ? 'quick' : 'latest';
  return options;
}

function version(command: string, args: string[]): string {
  try {
    const out = execFileSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    return out.split('\n')[0]!.trim();
  } catch (e) {
    const err = e as { stderr?: string };
    return (err.stderr ?? '').split('\n')[0]!.trim() || 'not installed';
  }
}

/** The commit measured, and whether the working tree differed from it (other work in progress). */
function gitState(): string {
  try {
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], {
      cwd: ROOT,
      encoding: 'utf8',
    })
      .trim()
      .split('\n')
      .filter(Boolean).length;
    return dirty > 0 ? `${head} + ${dirty} modified files` : head;
  } catch {
    return 'unknown';
  }
}

/** Node flags for the daemons: --cpu-prof into DIR/<label> when profiling (NODE_OPTIONS may not carry it). */
function daemonArgs(options: Options, label: string): string[] {
  if (options.profileDir === null) return [];
  const dir = path.join(options.profileDir, label);
  fs.mkdirSync(dir, { recursive: true });
  return ['--cpu-prof', `--cpu-prof-dir=${dir}`];
}

function recordPids(options: Options, label: string, chain: BenchChain): void {
  if (options.profileDir === null) return;
  fs.writeFileSync(path.join(options.profileDir, label, 'pids.json'), JSON.stringify(chain.pids()));
}

async function startEcho(port: number): Promise<Proc> {
  const echo = new Proc('echo', process.execPath, [ECHO, String(port)]);
  await echo.waitFor(/echo listening/);
  return echo;
}

function summarise(samples: number[]): LatencySummary {
  return { p50: quantile(samples, 0.5), p99: quantile(samples, 0.99), mean: mean(samples), samples: samples.length };
}

function errorLine(e: unknown): string {
  return e instanceof Error ? tail(e.message, 4).replace(/\s*\n\s*/g, ' | ') : String(e);
}

/** Checks that hook-run works against this chain; returns null when it does, else why not. */
async function hookProblem(chain: BenchChain): Promise<string | null> {
  try {
    const r = await chain.hookRun(['true'], { timeoutMs: 60_000 });
    if (r.code === 0) return null;
    const lines = (r.stderr + r.stdout)
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean);
    const telling = lines.find((l) => /^hook-run:|Error|error:/.test(l));
    return `exit ${r.code}: ${telling ?? lines.slice(-2).join(' | ')}`;
  } catch (e) {
    return errorLine(e);
  }
}

type ThroughputVariant = 'direct' | 'tunnel' | 'ssh' | 'floor' | 'hooked' | 'rathole';

/**
 * Sections 1 and 2: one connection, then 8 and 64 in parallel. A full run measures each variant in three
 * rounds, interleaved (direct, tunnel, ssh, floor, hooked, then again), and reports each one's median:
 * on a shared VM a neighbour's burst then falls on one sample of each kind, not on one kind's only one.
 */
async function benchThroughput(
  options: Options,
  chain: BenchChain,
  iperfPort: number,
  hookOk: boolean,
  results: BenchResults,
): Promise<void> {
  const seconds = options.quick ? 2 : 3;
  const rounds = options.quick ? 1 : 3;
  const section: NonNullable<BenchResults['throughput']> = {
    seconds,
    rounds,
    sshCipher: '',
    rows: [],
    cpuMsPerMB: null,
    floorCpuMsPerMB: null,
    errors: [],
  };
  results.throughput = section;
  let ssh: SshChain | null = null;
  try {
    ssh = await new SshChain({ host: '127.0.0.1', port: iperfPort }).start();
    section.sshCipher = ssh.cipher;
  } catch (e) {
    section.errors.push(`OpenSSH chain: ${errorLine(e)}`);
  }
  let rathole: RatholeChain | null = null;
  try {
    rathole = await new RatholeChain({ host: '127.0.0.1', port: iperfPort }).start(progress);
  } catch (e) {
    section.errors.push(`rathole (skipped): ${errorLine(e)}`);
  }
  let floor: FloorChain | null = null;
  try {
    floor = await new FloorChain({ targetPort: iperfPort, tls: chain.identity }).start();
  } catch (e) {
    section.errors.push(`floor chain: ${errorLine(e)}`);
  }
  // CPU of the one-connection runs over all rounds, per MB they carried.
  const tunnelCpu = new CpuTally(chain.pids());
  const floorCpu = floor ? new CpuTally(floor.pids()) : null;
  const megabytes = (r: IperfResult): number => (r.bytesPerSecond * seconds) / 1e6;
  try {
    const pseudo = await chain.pseudoAddress('iperf');
    for (const parallel of [1, 8, 64]) {
      const row: Throughput = {
        parallel,
        direct: null,
        ssh: null,
        tunnel: null,
        hooked: null,
        floor: null,
        rathole: null,
        samples: {},
      };
      section.rows.push(row);
      const iperf = (port: number, host = '127.0.0.1'): Promise<IperfResult> =>
        measureIperf(iperfPort, { host, port }, seconds, parallel);
      const variants: Array<[ThroughputVariant, () => Promise<number>]> = [
        ['direct', async () => (await iperf(iperfPort)).bytesPerSecond],
        [
          'tunnel',
          async () =>
            (
              await (parallel === 1
                ? tunnelCpu.around(() => iperf(iperfPort, pseudo), megabytes)
                : iperf(iperfPort, pseudo))
            ).bytesPerSecond,
        ],
      ];
      if (ssh) {
        const port = ssh.localPort;
        variants.push(['ssh', async () => (await iperf(port)).bytesPerSecond]);
      }
      if (rathole) {
        const port = rathole.port;
        variants.push(['rathole', async () => (await iperf(port)).bytesPerSecond]);
      }
      if (floor && floorCpu) {
        const port = floor.port;
        variants.push([
          'floor',
          async () =>
            (await (parallel === 1 ? floorCpu.around(() => iperf(port), megabytes) : iperf(port))).bytesPerSecond,
        ]);
      }
      if (hookOk) {
        variants.push([
          'hooked',
          async () =>
            (
              await measureIperf(
                iperfPort,
                { host: chain.host('iperf'), port: iperfPort },
                seconds,
                parallel,
                (args, timeoutMs) => chain.hookRun(['iperf3', ...args], { timeoutMs }),
              )
            ).bytesPerSecond,
        ]);
      }
      const samples = row.samples!;
      for (let round = 1; round <= rounds; round++) {
        for (const [name, measure] of variants) {
          progress(
            `throughput: ${parallel} connection${parallel > 1 ? 's' : ''}, ${name} (${seconds} s${rounds > 1 ? `, round ${round} of ${rounds}` : ''})`,
          );
          try {
            const bps = await measure();
            (samples[name] ??= []).push(bps);
            progress(`  ${name}: ${((bps * 8) / 1e9).toFixed(2)} Gbit/s`);
          } catch (e) {
            section.errors.push(`${name} ×${parallel}: ${errorLine(e)}`);
            progress(`  ${name} failed: ${errorLine(e)}`);
          }
        }
      }
      for (const [name] of variants) {
        const list = samples[name];
        if (list !== undefined && list.length > 0) row[name] = median(list);
      }
    }
    section.cpuMsPerMB = tunnelCpu.perUnit();
    const relays = floorCpu?.perUnit();
    if (relays) section.floorCpuMsPerMB = Object.values<number>(relays).reduce((a, b) => a + b, 0);
  } finally {
    await ssh?.stop();
    await rathole?.stop();
    await floor?.stop();
  }
}

/**
 * Section 3: connect + 1-byte round trip, p50/p99, warm session. A full run splits each variant's
 * iterations into four rounds in which the variants take turns, so that load that comes and goes on
 * this shared machine falls on all of them alike; the quantiles are over all rounds' samples.
 */
async function benchLatency(
  options: Options,
  chain: BenchChain,
  echoPort: number,
  hookOk: boolean,
  results: BenchResults,
): Promise<void> {
  const iterations = options.quick ? 500 : 2000;
  const rounds = options.quick ? 1 : 4;
  const perRound = Math.floor(iterations / rounds);
  const section: NonNullable<BenchResults['latency']> = {
    iterations: perRound * rounds,
    rounds,
    direct: null,
    tunnel: null,
    hooked: null,
    floor: null,
    cpuMsPerTunnel: null,
    errors: [],
  };
  results.latency = section;
  const timeoutMs = 120_000;
  let floor: FloorChain | null = null;
  try {
    floor = await new FloorChain({ targetPort: echoPort, tls: null }).start();
  } catch (e) {
    section.errors.push(`floor chain: ${errorLine(e)}`);
  }
  try {
    const pseudo = await chain.pseudoAddress('echo');
    const n = String(perRound);
    type Variant = 'direct' | 'floor' | 'tunnel' | 'hooked';
    const variants: Array<[Variant, string, () => Promise<ExecResult>]> = [
      ['direct', 'direct', () => exec(PYTHON, [PROBE, 'latency', '127.0.0.1', String(echoPort), n], { timeoutMs })],
    ];
    if (floor) {
      const port = String(floor.port);
      variants.push([
        'floor',
        'floor (three plain Node relays)',
        () => exec(PYTHON, [PROBE, 'latency', '127.0.0.1', port, n], { timeoutMs }),
      ]);
    }
    // CPU of the unhooked tunnel runs, per tunnel opened (the probe's warm-up connections included).
    const tunnelCpu = new CpuTally(chain.pids());
    const tunnelsOpened = (r: ExecResult): number =>
      r.code === 0 ? perRound + Math.max(10, Math.floor(perRound / 20)) : 0;
    variants.push([
      'tunnel',
      'tunnel (pseudo address, no hook)',
      () =>
        tunnelCpu.around(
          () => exec(PYTHON, [PROBE, 'latency', pseudo, String(echoPort), n, chain.ipcPath], { timeoutMs }),
          tunnelsOpened,
        ),
    ]);
    if (hookOk)
      variants.push([
        'hooked',
        'tunnel under hook-run',
        () => chain.hookRun([PYTHON, PROBE, 'latency', chain.host('echo'), String(echoPort), n], { timeoutMs }),
      ]);

    const samples = new Map<Variant, number[]>();
    const failed = new Set<Variant>();
    for (let round = 1; round <= rounds; round++) {
      for (const [name, label, run] of variants) {
        if (failed.has(name)) continue;
        progress(
          `latency: ${label}, ${perRound} × connect + 1-byte round trip${rounds > 1 ? ` (round ${round} of ${rounds})` : ''}`,
        );
        try {
          const r = await run();
          if (r.code !== 0) throw new Error(`probe exited ${r.code}: ${tail(r.stderr, 3)}`);
          const got = (JSON.parse(r.stdout.trim().split('\n').pop()!) as { samples_us: number[] }).samples_us;
          const all = samples.get(name) ?? [];
          all.push(...got);
          samples.set(name, all);
          const s = summarise(got);
          progress(`  ${label}: p50 ${(s.p50 / 1000).toFixed(3)} ms, p99 ${(s.p99 / 1000).toFixed(3)} ms`);
        } catch (e) {
          // One failure drops the variant: quantiles over some rounds only would not be comparable.
          failed.add(name);
          samples.delete(name);
          section.errors.push(`${label}: ${errorLine(e)}`);
          progress(`  ${label} failed: ${errorLine(e)}`);
        }
      }
    }
    for (const [name, list] of samples) section[name] = summarise(list);
    if (section.tunnel !== null) section.cpuMsPerTunnel = tunnelCpu.perUnit();
  } finally {
    await floor?.stop();
  }
}

/** Section 5: hook start-up and the hook's cost on ordinary names. */
async function benchHook(
  options: Options,
  chain: BenchChain,
  echoPort: number,
  hookProblemText: string | null,
  results: BenchResults,
): Promise<void> {
  const runs = options.quick ? 5 : 11;
  const iterations = options.quick ? 500 : 2000;
  const section: NonNullable<BenchResults['hook']> = {
    available: hookProblemText === null,
    ...(hookProblemText !== null ? { unavailableReason: hookProblemText } : {}),
    startup: { runs, trueMs: null, hookRunMs: null },
    ordinary: { iterations, plain: [], hooked: [] },
    errors: [],
  };
  results.hook = section;
  progress(`hook: start-up, median of ${runs} × true and hook-run -- true`);
  const plainTimes: number[] = [];
  for (let i = 0; i < runs; i++) plainTimes.push((await exec('true', [])).ms);
  section.startup.trueMs = median(plainTimes);
  if (hookProblemText === null) {
    const hookTimes: number[] = [];
    try {
      for (let i = 0; i < runs; i++) {
        const r = await chain.hookRun(['true'], { timeoutMs: 30_000 });
        if (r.code !== 0) throw new Error(`hook-run -- true exited ${r.code}: ${tail(r.stderr, 2)}`);
        hookTimes.push(r.ms);
      }
      section.startup.hookRunMs = median(hookTimes);
      progress(
        `  true ${section.startup.trueMs.toFixed(1)} ms, hook-run -- true ${section.startup.hookRunMs.toFixed(0)} ms (min ${Math.min(...hookTimes).toFixed(0)}, max ${Math.max(...hookTimes).toFixed(0)})`,
      );
    } catch (e) {
      section.errors.push(`start-up: ${errorLine(e)}`);
    }
  }
  const rounds = options.quick ? 3 : 5;
  progress(
    `hook: ordinary names, ${iterations} × getaddrinfo('localhost') and connect, ${rounds} hooked runs between ${rounds + 1} plain ones`,
  );
  const ordinary = async (hooked: boolean): Promise<{ getaddrinfo_us: number; connect_us: number }> => {
    const args = [PROBE, 'ordinary', String(echoPort), String(iterations)];
    const r = hooked
      ? await chain.hookRun([PYTHON, ...args], { timeoutMs: 120_000 })
      : await exec(PYTHON, args, { timeoutMs: 120_000 });
    if (r.code !== 0) throw new Error(`probe exited ${r.code}: ${tail(r.stderr, 3)}`);
    return JSON.parse(r.stdout.trim().split('\n').pop()!) as { getaddrinfo_us: number; connect_us: number };
  };
  try {
    // Interleaved, so that a change in the machine's load falls on both kinds of run alike.
    section.ordinary.plain.push(await ordinary(false));
    for (let i = 0; i < (hookProblemText === null ? rounds : 1); i++) {
      if (hookProblemText === null) section.ordinary.hooked.push(await ordinary(true));
      section.ordinary.plain.push(await ordinary(false));
    }
    const list = (runs: OrdinarySample[], op: keyof OrdinarySample): string =>
      runs.length > 0 ? runs.map((x) => x[op].toFixed(1)).join('/') : '—';
    const p = section.ordinary.plain;
    const h = section.ordinary.hooked;
    progress(
      `  getaddrinfo: plain ${list(p, 'getaddrinfo_us')} µs, hooked ${list(h, 'getaddrinfo_us')} µs; connect: plain ${list(p, 'connect_us')} µs, hooked ${list(h, 'connect_us')} µs`,
    );
  } catch (e) {
    section.errors.push(`ordinary names: ${errorLine(e)}`);
  }
}

/** Section 4: 10,000 idle tunneled connections, RSS of each daemon before and after. */
async function benchMemory(options: Options, results: BenchResults): Promise<void> {
  const target = 10_000;
  const section: NonNullable<BenchResults['memory']> = {
    target,
    opened: 0,
    failed: 0,
    openSeconds: 0,
    server: { beforeKiB: null, afterKiB: null, perConnectionKiB: null },
    proxy: { beforeKiB: null, afterKiB: null, perConnectionKiB: null },
    redirector: { beforeKiB: null, afterKiB: null, perConnectionKiB: null },
    errors: [],
  };
  results.memory = section;
  const limit = fileLimits().soft;
  if (limit < target + 1000)
    section.errors.push(`open-file limit ${limit} is below ${target + 1000}: run as root or raise ulimit -n`);
  const echoPort = await freePort();
  const echo = await startEcho(echoPort);
  const chain = new BenchChain({ publish: [`idle=127.0.0.1:${echoPort}`], nodeArgs: daemonArgs(options, 'memory') });
  try {
    progress('memory: starting a fresh chain');
    await chain.start();
    recordPids(options, 'memory', chain);
    const pseudo = await chain.pseudoAddress('idle');
    // Warm-up: the first tunnels load code and grow pools that every later one shares.
    const claim = (socket: net.Socket): Promise<void> => chain.claim(socket);
    const warm = await openIdle(pseudo, echoPort, 200, 50, 30_000, undefined, claim);
    await warm.close();
    await sleep(1000);
    const pids = chain.pids();
    const names = ['server', 'proxy', 'redirector'] as const;
    for (const n of names) section[n].beforeKiB = rssKiB(pids[n]);
    progress(
      `memory: opening ${target} idle tunneled connections (RSS before: ${names.map((n) => `${n} ${section[n].beforeKiB} KiB`).join(', ')})`,
    );
    // In two halves, read 2 s after each: the second half's growth is what one more connection costs,
    // without what the first thousands grow once (V8's young generation above all).
    const count = Math.min(target, limit - 500);
    const deadlineMs = options.quick ? 60_000 : 120_000;
    const first = await openIdle(
      pseudo,
      echoPort,
      Math.floor(count / 2),
      256,
      deadlineMs,
      (n) => progress(`  ${n} open`),
      claim,
    );
    await sleep(2000);
    for (const n of names) section[n].midKiB = rssKiB(pids[n]);
    const second = await openIdle(
      pseudo,
      echoPort,
      count - Math.floor(count / 2),
      256,
      deadlineMs,
      (n) => progress(`  ${first.opened + n} open`),
      claim,
    );
    section.opened = first.opened + second.opened;
    section.failed = first.failed + second.failed;
    section.openSeconds = first.seconds + second.seconds;
    const firstError = first.firstError ?? second.firstError;
    if (firstError !== undefined) section.firstError = firstError;
    await sleep(2000);
    for (const n of names) {
      const m: ProcessMemory = section[n];
      m.afterKiB = rssKiB(pids[n]);
      if (m.afterKiB !== null && m.beforeKiB !== null && section.opened > 0)
        m.perConnectionKiB = (m.afterKiB - m.beforeKiB) / section.opened;
      if (m.afterKiB !== null && m.midKiB != null && second.opened > 0)
        m.marginalKiB = (m.afterKiB - m.midKiB) / second.opened;
    }
    progress(
      `  ${section.opened} open (${section.failed} failed) in ${section.openSeconds.toFixed(1)} s; per connection: ${names.map((n) => `${n} ${section[n].perConnectionKiB?.toFixed(2)} KiB (marginal ${section[n].marginalKiB?.toFixed(2) ?? '—'})`).join(', ')}`,
    );
    await first.close();
    await second.close();
  } catch (e) {
    section.errors.push(errorLine(e));
    progress(`  memory failed: ${errorLine(e)}`);
  } finally {
    await chain.stop();
    await echo.stop();
  }
}

async function main(): Promise<number> {
  const options = parseArgs(process.argv.slice(2));
  const reexec = reexecWithFileLimit(20_000 + 4096);
  if (reexec) return reexec;

  const results: BenchResults = {
    version: 1,
    date: new Date().toISOString(),
    quick: options.quick,
    durationSeconds: 0,
    machine: {
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model ?? 'unknown',
      memoryMiB: Math.round(os.totalmem() / 1024 / 1024),
      kernel: `${os.type()} ${os.release()}`,
      node: process.version,
      iperf3: version('iperf3', ['--version']),
      openssh: version('ssh', ['-V']),
      fileLimit: fileLimits().soft,
      git: gitState(),
      loadAverageAtStart: os.loadavg().map((l) => Math.round(l * 100) / 100),
    },
    bars: [],
  };
  const ticksAtStart = cpuTicks();
  if (os.loadavg()[0]! > 0.5)
    progress(
      `warning: load average ${os.loadavg()[0]!.toFixed(2)} before the run: other work on this machine will perturb the figures`,
    );
  progress(
    `${options.quick ? 'quick' : 'full'} run on ${results.machine.cpus} × ${results.machine.cpuModel}; sections: ${[...options.only].join(', ')}`,
  );

  const stopOnSignal = (signal: NodeJS.Signals): void => {
    progress(`${signal}: stopping everything the bench started`);
    void stopAll().finally(() => process.exit(130));
  };
  process.on('SIGINT', stopOnSignal);
  process.on('SIGTERM', stopOnSignal);

  try {
    const needsChain = options.only.has('throughput') || options.only.has('latency') || options.only.has('hook');
    if (needsChain) {
      const iperfPort = await freePort();
      const echoPort = await freePort();
      const echo = await startEcho(echoPort);
      const chain = new BenchChain({
        publish: [`iperf=127.0.0.1:${iperfPort}`, `echo=127.0.0.1:${echoPort}`],
        nodeArgs: daemonArgs(options, 'chain'),
      });
      try {
        progress('starting server, proxy and redirector');
        await chain.start();
        recordPids(options, 'chain', chain);
        const problem = await hookProblem(chain);
        progress(
          problem === null
            ? 'hook-run works: hooked figures included'
            : `hook-run does not work yet, hooked figures skipped: ${problem}`,
        );
        if (options.only.has('throughput')) await benchThroughput(options, chain, iperfPort, problem === null, results);
        if (options.only.has('latency')) await benchLatency(options, chain, echoPort, problem === null, results);
        if (options.only.has('hook')) await benchHook(options, chain, echoPort, problem, results);
      } finally {
        await chain.stop();
        await echo.stop();
      }
    }
    if (options.only.has('direct'))
      results.directHop = await benchDirectHop({
        quick: options.quick,
        nodeArgs: daemonArgs(options, 'direct'),
        progress,
        errorLine,
      });
    if (options.only.has('cross'))
      results.crossNode = await benchCrossNode({ quick: options.quick, progress, errorLine, startEcho });
    if (options.only.has('memory')) await benchMemory(options, results);
  } finally {
    await stopAll();
  }

  results.durationSeconds = Math.round((Date.now() - t0) / 1000);
  const ticksAtEnd = cpuTicks();
  if (ticksAtStart !== null && ticksAtEnd !== null && ticksAtEnd.total > ticksAtStart.total) {
    results.machine.stealPercent =
      Math.round((1000 * (ticksAtEnd.steal - ticksAtStart.steal)) / (ticksAtEnd.total - ticksAtStart.total)) / 10;
    if (results.machine.stealPercent >= 5)
      progress(
        `warning: the hypervisor took ${results.machine.stealPercent} % of this machine's CPU time during the run (steal): the figures are perturbed`,
      );
  }
  results.bars = evaluateBars(results);
  printTable(results);
  const dir = path.join(ROOT, 'bench', 'results');
  fs.mkdirSync(dir, { recursive: true });
  const jsonPath = path.join(dir, `${options.out}.json`);
  fs.writeFileSync(jsonPath, JSON.stringify(results, null, 2) + '\n');
  const png = await writeChart(results, path.join(dir, `${options.out}.png`));
  progress(
    `wrote ${path.relative(ROOT, jsonPath)}${png.ok ? ` and ${path.relative(ROOT, png.path)}` : ` (no chart: ${png.reason})`} in ${results.durationSeconds} s`,
  );
  if (options.profileDir !== null) process.stdout.write('\n' + summariseProfiles(options.profileDir, 15) + '\n');
  return 0;
}

main().then(
  (code) => process.exit(code),
  async (e: unknown) => {
    process.stderr.write(`bench: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    await stopAll();
    process.exit(1);
  },
);
