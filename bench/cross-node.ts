/**
 * The bench's cross-node section (issue 14): what a tunnel pays for crossing two nodes of a cluster,
 * redirector → node B → node A → proxy, against the same tunnel on one node (redirector → node A →
 * proxy), both through the same proxy and node A, in the same interleaved rounds: one iperf3 connection,
 * and connect + 1-byte round trip (probe.py, claimed over IPC as the hook does). Its rows for the report
 * are here too, so the section is one file.
 */
import path from 'node:path';
import { freePort, PYTHON, ROOT } from '../cli/chain';
import { CrossNodeChain } from './chain';
import { measureIperf } from './iperf';
import { exec, type Proc } from './proc';
import type { BenchResults, LatencySummary } from './results';
import { fmt, gbps, mean, median, quantile } from './stats';

export type CrossNodeSection = NonNullable<BenchResults['crossNode']>;

export interface CrossNodeRun {
  quick: boolean;
  progress: (line: string) => void;
  errorLine: (e: unknown) => string;
  startEcho: (port: number) => Promise<Proc>;
}

const PROBE = path.join(ROOT, 'bench', 'probe.py');
const WAYS = ['oneNode', 'crossNode'] as const;
type Way = (typeof WAYS)[number];
const LABEL: Record<Way, string> = { oneNode: 'one node', crossNode: 'across two nodes' };

function summarise(samples: number[]): LatencySummary {
  return { p50: quantile(samples, 0.5), p99: quantile(samples, 0.99), mean: mean(samples), samples: samples.length };
}

export async function benchCrossNode(run: CrossNodeRun): Promise<CrossNodeSection> {
  const seconds = run.quick ? 2 : 3;
  const rounds = run.quick ? 1 : 3;
  const iterations = run.quick ? 500 : 2000;
  const perRound = Math.floor(iterations / rounds);
  const section: CrossNodeSection = {
    seconds,
    rounds,
    iterations: perRound * rounds,
    throughput: { oneNode: null, crossNode: null },
    latency: { oneNode: null, crossNode: null },
    samples: { oneNode: [], crossNode: [] },
    errors: [],
  };
  const iperfPort = await freePort();
  const echoPort = await freePort();
  const echo = await run.startEcho(echoPort);
  const chain = new CrossNodeChain([`iperf=127.0.0.1:${iperfPort}`, `echo=127.0.0.1:${echoPort}`]);
  try {
    run.progress('cross-node: starting redis-server, nodes a and b, a proxy on a, redirectors on a and on b');
    await chain.start();
    const ipc: Record<Way, string> = { oneNode: chain.ipc.near, crossNode: chain.ipc.far };
    const iperfAt: Record<Way, string> = {
      oneNode: await chain.pseudoAddress('near', 'iperf'),
      crossNode: await chain.pseudoAddress('far', 'iperf'),
    };
    const echoAt: Record<Way, string> = {
      oneNode: await chain.pseudoAddress('near', 'echo'),
      crossNode: await chain.pseudoAddress('far', 'echo'),
    };
    const latencies: Record<Way, number[]> = { oneNode: [], crossNode: [] };
    for (let round = 1; round <= rounds; round++)
      for (const way of WAYS) {
        const of = `round ${round} of ${rounds}`;
        run.progress(`cross-node: 1 connection, ${LABEL[way]} (${seconds} s, ${of})`);
        try {
          const r = await measureIperf(iperfPort, { host: iperfAt[way], port: iperfPort }, seconds, 1);
          section.samples[way].push(r.bytesPerSecond);
          run.progress(`  ${gbps(r.bytesPerSecond).toFixed(2)} Gbit/s`);
        } catch (e) {
          section.errors.push(`throughput ${LABEL[way]}: ${run.errorLine(e)}`);
        }
        run.progress(`cross-node: ${perRound} × connect + 1-byte round trip, ${LABEL[way]} (${of})`);
        try {
          const args = [PROBE, 'latency', echoAt[way], String(echoPort), String(perRound), ipc[way]];
          const r = await exec(PYTHON, args, { timeoutMs: 120_000 });
          if (r.code !== 0) throw new Error(`probe exited ${r.code}: ${r.stderr.trim().split('\n').pop() ?? ''}`);
          const got = (JSON.parse(r.stdout.trim().split('\n').pop()!) as { samples_us: number[] }).samples_us;
          latencies[way].push(...got);
          run.progress(
            `  p50 ${(quantile(got, 0.5) / 1000).toFixed(3)} ms, p99 ${(quantile(got, 0.99) / 1000).toFixed(3)} ms`,
          );
        } catch (e) {
          section.errors.push(`latency ${LABEL[way]}: ${run.errorLine(e)}`);
        }
      }
    for (const way of WAYS) {
      if (section.samples[way].length > 0) section.throughput[way] = median(section.samples[way]);
      if (latencies[way].length > 0) section.latency[way] = summarise(latencies[way]);
    }
  } catch (e) {
    section.errors.push(run.errorLine(e));
    run.progress(`  cross-node failed: ${run.errorLine(e)}`);
  } finally {
    await chain.stop();
    await echo.stop();
  }
  return section;
}

const g = (bps: number | null): string => (bps === null ? '—' : `${gbps(bps).toFixed(2)} Gbit/s`);
const ms = (us: number | undefined): string => (us === undefined ? '—' : `${(us / 1000).toFixed(3)} ms`);

/** The cross-node rows of the figures table. */
export function crossNodeRows(results: BenchResults): string[][] {
  const c = results.crossNode;
  if (!c) return [];
  const { oneNode, crossNode } = c.throughput;
  const ratio = oneNode !== null && crossNode !== null && oneNode > 0 ? crossNode / oneNode : null;
  const added = (q: 'p50' | 'p99'): string => {
    const one = c.latency.oneNode?.[q];
    const cross = c.latency.crossNode?.[q];
    return one === undefined || cross === undefined ? '—' : `+${((cross - one) / 1000).toFixed(3)} ms`;
  };
  return [
    [
      'throughput, 1 connection, redirector → B → A → proxy',
      `across two nodes ${g(crossNode)}`,
      `one node ${g(oneNode)}`,
      `${fmt(ratio, 2)}× one node`,
    ],
    ...(['p50', 'p99'] as const).map((q) => [
      `connect + 1-byte round trip across two nodes, ${q}`,
      `across two nodes ${ms(c.latency.crossNode?.[q])}`,
      `one node ${ms(c.latency.oneNode?.[q])}`,
      added(q),
    ]),
  ];
}
