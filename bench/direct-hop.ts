/**
 * The bench's direct-hop section (issue 16): one iperf3 connection through a chain whose proxy runs
 * `--direct-listen`, so the redirector's tunnel goes straight to the proxy and the server carries none of
 * it, against the OpenSSH chain in the same interleaved rounds; and each daemon's CPU per MB of those
 * runs, the server's ≈ 0 being the proof that its bytes did not pass there. Its rows and bar for the
 * report are here too, so the section is one file.
 */
import { freePort } from '../cli/chain';
import { BenchChain } from './chain';
import { measureIperf } from './iperf';
import { CpuTally } from './proc';
import type { Bar, BenchResults } from './results';
import { SshChain } from './ssh-chain';
import { fmt, gbps, median } from './stats';

export type DirectHopSection = NonNullable<BenchResults['directHop']>;

export interface DirectHopRun {
  quick: boolean;
  nodeArgs: string[];
  progress: (line: string) => void;
  errorLine: (e: unknown) => string;
}

export async function benchDirectHop(run: DirectHopRun): Promise<DirectHopSection> {
  const seconds = run.quick ? 2 : 3;
  const rounds = run.quick ? 1 : 3;
  const section: DirectHopSection = {
    seconds,
    rounds,
    directHop: null,
    ssh: null,
    samples: { directHop: [], ssh: [] },
    cpuMsPerMB: null,
    errors: [],
  };
  const iperfPort = await freePort();
  const directPort = await freePort();
  const chain = new BenchChain({
    publish: [`iperf=127.0.0.1:${iperfPort}`],
    nodeArgs: run.nodeArgs,
    proxyArgs: ['--direct-listen', `127.0.0.1:${directPort}`],
  });
  let ssh: SshChain | null = null;
  try {
    run.progress('direct hop: starting a chain whose proxy listens for direct tunnels, and the OpenSSH chain');
    await chain.start();
    ssh = await new SshChain({ host: '127.0.0.1', port: iperfPort }).start();
    const pseudo = await chain.pseudoAddress('iperf');
    const cpu = new CpuTally(chain.pids());
    const variants: Array<['directHop' | 'ssh', () => Promise<number>]> = [
      [
        'directHop',
        async () =>
          (
            await cpu.around(
              () => measureIperf(iperfPort, { host: pseudo, port: iperfPort }, seconds, 1),
              (r) => (r.bytesPerSecond * seconds) / 1e6,
            )
          ).bytesPerSecond,
      ],
      [
        'ssh',
        async () =>
          (await measureIperf(iperfPort, { host: '127.0.0.1', port: ssh!.localPort }, seconds, 1)).bytesPerSecond,
      ],
    ];
    for (let round = 1; round <= rounds; round++)
      for (const [name, measure] of variants) {
        run.progress(
          `direct hop: 1 connection, ${name === 'ssh' ? 'OpenSSH' : 'direct hop'} (${seconds} s, round ${round} of ${rounds})`,
        );
        try {
          const bps = await measure();
          section.samples[name].push(bps);
          run.progress(`  ${gbps(bps).toFixed(2)} Gbit/s`);
        } catch (e) {
          section.errors.push(`${name}: ${run.errorLine(e)}`);
        }
      }
    for (const name of ['directHop', 'ssh'] as const)
      if (section.samples[name].length > 0) section[name] = median(section.samples[name]);
    section.cpuMsPerMB = cpu.perUnit();
  } catch (e) {
    section.errors.push(run.errorLine(e));
    run.progress(`  direct hop failed: ${run.errorLine(e)}`);
  } finally {
    await ssh?.stop();
    await chain.stop();
  }
  return section;
}

const ratio = (a: number | null, b: number | null): number | null =>
  a === null || b === null || b === 0 ? null : a / b;
const g = (bps: number | null): string => (bps === null ? '—' : `${gbps(bps).toFixed(2)} Gbit/s`);

/** The direct hop's row in the figures table. */
export function directHopRows(results: BenchResults): string[][] {
  const d = results.directHop;
  if (!d) return [];
  const c = d.cpuMsPerMB;
  const r = ratio(d.directHop, d.ssh);
  return [
    [
      'throughput, 1 connection, direct hop (`--direct-listen`)',
      g(d.directHop),
      `OpenSSH ${g(d.ssh)}`,
      r === null ? '—' : `${r.toFixed(2)}× ssh`,
    ],
    [
      'daemon CPU per MB, direct hop',
      c ? `server ${fmt(c.server, 3)}, proxy ${fmt(c.proxy, 2)}, redirector ${fmt(c.redirector, 2)} ms` : '—',
      '—',
      c ? `server ${fmt(c.server, 3)} ms (≈ 0: no byte through it)` : '—',
    ],
  ];
}

/** Issue 16's direct-hop bar. */
export function directHopBars(results: BenchResults): Bar[] {
  const d = results.directHop;
  if (!d) return [];
  const r = ratio(d.directHop, d.ssh);
  const server = d.cpuMsPerMB?.server ?? null;
  return [
    {
      figure: 'single-connection throughput, direct hop',
      measured: `${g(d.directHop)} = ${r === null ? '—' : `${r.toFixed(2)}×`} OpenSSH (${g(d.ssh)}); server CPU ${fmt(server, 3)} ms/MB`,
      bar: '≥ 1.5× OpenSSH, server CPU ≈ 0',
      // ≈ 0: under a hundredth of what a relaying server spends per MB here (a few ms).
      met: r === null || server === null ? null : r >= 1.5 && server < 0.05,
    },
  ];
}
