/**
 * The shape of `bench/results/*.json`: definitions only. Throughputs are bytes per second, latencies
 * microseconds, memory KiB, times milliseconds. A figure that could not be measured is null, and the
 * section's `error` says why.
 */

export interface Throughput {
  parallel: number;
  direct: number | null;
  ssh: number | null;
  /** Client connects to the pseudo address directly: the tunnel without the hook. */
  tunnel: number | null;
  /** iperf3 under hook-run, connecting to NAME.default.underpass.internal: the whole chain. */
  hooked: number | null;
  /** The floor chain with TLS (floor.ts): three Node relays and Node's TLS, nothing of Underpass's protocol. */
  floor?: number | null;
  /** rathole (rathole-chain.ts) in its own shape: its server exposes the port, one hop fewer than ours. */
  rathole?: number | null;
  /** Every round's figure; the fields above are their medians. */
  samples?: Partial<Record<'direct' | 'ssh' | 'tunnel' | 'hooked' | 'floor' | 'rathole', number[]>>;
}

/** CPU time each daemon spent on a measured figure, per unit (MB moved, or tunnel opened), in ms. */
export interface DaemonCpu {
  server: number | null;
  proxy: number | null;
  redirector: number | null;
}

export interface LatencySummary {
  p50: number;
  p99: number;
  mean: number;
  samples: number;
}

export interface ProcessMemory {
  beforeKiB: number | null;
  afterKiB: number | null;
  perConnectionKiB: number | null;
  /** RSS with half the connections open, and what each of the second half added: no one-off growth in it. */
  midKiB?: number | null;
  marginalKiB?: number | null;
}

export interface BenchResults {
  version: 1;
  date: string;
  quick: boolean;
  durationSeconds: number;
  machine: {
    cpus: number;
    cpuModel: string;
    memoryMiB: number;
    kernel: string;
    node: string;
    iperf3: string;
    openssh: string;
    fileLimit: number;
    loadAverageAtStart: number[];
    git: string;
    stealPercent?: number;
  };
  throughput?: {
    /** Seconds per iperf3 run, and runs per figure (interleaved; the figure is their median). */
    seconds: number;
    rounds?: number;
    sshCipher: string;
    rows: Throughput[];
    /** CPU ms per MB carried, one connection without the hook. */
    cpuMsPerMB: DaemonCpu | null;
    /** The same for the floor chain's three relays together. */
    floorCpuMsPerMB?: number | null;
    errors: string[];
  };
  latency?: {
    /** Iterations per variant, over `rounds` interleaved runs. */
    iterations: number;
    rounds?: number;
    direct: LatencySummary | null;
    tunnel: LatencySummary | null;
    hooked: LatencySummary | null;
    /** The floor chain without TLS (floor.ts): three Node relays that only accept, dial on and carry. */
    floor?: LatencySummary | null;
    /** CPU ms per tunnel opened (connect + 1 byte each way + close), without the hook. */
    cpuMsPerTunnel: DaemonCpu | null;
    errors: string[];
  };
  memory?: {
    target: number;
    opened: number;
    failed: number;
    firstError?: string;
    openSeconds: number;
    server: ProcessMemory;
    proxy: ProcessMemory;
    redirector: ProcessMemory;
    errors: string[];
  };
  hook?: {
    available: boolean;
    unavailableReason?: string;
    startup: { runs: number; trueMs: number | null; hookRunMs: number | null };
    ordinary: {
      iterations: number;
      /**
       * Runs alternate plain, hooked, plain, … and end plain: the hooked ones are judged against the
       * median of the plain ones, and how far the plain ones stray from it is the noise floor.
       */
      plain: OrdinarySample[];
      hooked: OrdinarySample[];
    };
    errors: string[];
  };
  /**
   * Issue 14 (bench/cross-node.ts): a tunnel across two cluster nodes (redirector → B → A → proxy)
   * against one on node A alone, in the same interleaved rounds.
   */
  crossNode?: {
    seconds: number;
    rounds: number;
    /** Connect + 1-byte round trips per way, over all rounds. */
    iterations: number;
    throughput: { oneNode: number | null; crossNode: number | null };
    latency: { oneNode: LatencySummary | null; crossNode: LatencySummary | null };
    /** Every round's throughput; the figures above are their medians. */
    samples: { oneNode: number[]; crossNode: number[] };
    errors: string[];
  };
  /** One connection through the direct hop (issue 16, bench/direct-hop.ts), OpenSSH in the same rounds. */
  directHop?: {
    seconds: number;
    rounds: number;
    directHop: number | null;
    ssh: number | null;
    samples: { directHop: number[]; ssh: number[] };
    /** CPU ms per MB of the direct-hop runs: the server's is ≈ 0 when no byte passed through it. */
    cpuMsPerMB: DaemonCpu | null;
    errors: string[];
  };
  bars: Bar[];
}

/** Per-call cost inside one probe run (µs). */
export interface OrdinarySample {
  getaddrinfo_us: number;
  connect_us: number;
}

/** One bar from issue 5 and whether this run met it. */
export interface Bar {
  figure: string;
  measured: string;
  bar: string;
  met: boolean | null;
}
