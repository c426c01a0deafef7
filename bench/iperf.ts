/**
 * iperf3 as the unmodified client and server of the throughput figures. A fresh one-shot server
 * (`iperf3 -s -1`) per measurement, so a run that broke mid-way can never leave the next one facing a
 * "server busy" iperf3.
 */
import { exec, Proc, type ExecResult } from './proc';

export interface IperfResult {
  /** Bytes per second the receiver counted (the sum over all parallel streams). */
  bytesPerSecond: number;
  /** Retransmits the sender saw, when iperf3 reports them. */
  retransmits?: number;
  /** CPU utilisation iperf3 reports for the sending host (%). */
  senderCpu?: number;
}

interface IperfJson {
  error?: string;
  end?: {
    sum_received?: { bits_per_second?: number };
    sum_sent?: { bits_per_second?: number; retransmits?: number };
    cpu_utilization_percent?: { host_total?: number };
  };
}

/** Starts `iperf3 -s -1 -p port` and waits until it listens. */
export async function startIperfServer(port: number): Promise<Proc> {
  // --forceflush: iperf3's stdout is a pipe here, and without it "Server listening" sits in its buffer.
  const server = new Proc('iperf3 -s', 'iperf3', ['-s', '-1', '--forceflush', '-B', '127.0.0.1', '-p', String(port)]);
  try {
    await server.waitFor(/Server listening/, 10_000);
  } catch (e) {
    await server.stop();
    throw e;
  }
  return server;
}

/**
 * One measurement: starts the server on `serverPort`, runs `client(args)` (plain iperf3, or iperf3 under
 * hook-run) with `-c host -p port -t seconds -P parallel -J`, and parses the receiver's figure.
 */
export async function measureIperf(
  serverPort: number,
  target: { host: string; port: number },
  seconds: number,
  parallel: number,
  client: (args: string[], timeoutMs: number) => Promise<ExecResult> = (args, timeoutMs) =>
    exec('iperf3', args, { timeoutMs }),
): Promise<IperfResult> {
  const server = await startIperfServer(serverPort);
  try {
    const args = ['-c', target.host, '-p', String(target.port), '-t', String(seconds), '-J'];
    if (parallel > 1) args.push('-P', String(parallel));
    const r = await client(args, seconds * 1000 + 30_000);
    return parseIperf(r);
  } finally {
    await server.stop();
  }
}

export function parseIperf(r: ExecResult): IperfResult {
  const start = r.stdout.indexOf('{');
  let json: IperfJson;
  try {
    json = JSON.parse(r.stdout.slice(start)) as IperfJson;
  } catch {
    throw new Error(`iperf3 printed no JSON (exit ${r.code}):\n${r.stderr}${r.stdout.slice(0, 2000)}`);
  }
  if (json.error !== undefined) throw new Error(`iperf3: ${json.error}${r.stderr ? `\n${r.stderr}` : ''}`);
  const bps = json.end?.sum_received?.bits_per_second;
  if (bps === undefined) throw new Error(`iperf3 reported no received total (exit ${r.code}):\n${r.stderr}`);
  return {
    bytesPerSecond: bps / 8,
    retransmits: json.end?.sum_sent?.retransmits,
    senderCpu: json.end?.cpu_utilization_percent?.host_total,
  };
}
