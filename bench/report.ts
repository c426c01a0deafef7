/**
 * Turns a BenchResults into the printed table (Markdown, so it pastes into bench/README.md as is) and
 * into issue 5's and issue 16's bars, each with met / not met. "Zero measurable added cost" is decided against the
 * run's own noise floor: plain and hooked runs alternate, and the hook's extra cost (hooked median over
 * plain median) counts as measurable when it exceeds both the plain runs' largest distance from their
 * median and 5 % of it.
 */
import { crossNodeRows } from './cross-node';
import { directHopBars, directHopRows } from './direct-hop';
import type { Bar, BenchResults, LatencySummary } from './results';
import { fmt, gbps, median } from './stats';

const ms = (us: number | null | undefined): string =>
  us === null || us === undefined ? '—' : `${(us / 1000).toFixed(3)} ms`;
const g = (bps: number | null | undefined): string =>
  bps === null || bps === undefined ? '—' : `${gbps(bps).toFixed(2)} Gbit/s`;
const ratio = (a: number | null | undefined, b: number | null | undefined): number | null =>
  a == null || b == null || b === 0 ? null : a / b;
const x = (r: number | null): string => (r === null ? '—' : `${r.toFixed(2)}×`);

/** The one-connection figure the bar is judged on: the hooked chain when hook-run works, else the tunnel. */
function headline(results: BenchResults): {
  value: number | null;
  label: string;
  ssh: number | null;
  floor: number | null;
} {
  const row = results.throughput?.rows.find((r) => r.parallel === 1);
  if (!row) return { value: null, label: '', ssh: null, floor: null };
  const floor = row.floor ?? null;
  return row.hooked !== null
    ? { value: row.hooked, label: 'hooked iperf3', ssh: row.ssh, floor }
    : { value: row.tunnel, label: 'pseudo address, no hook', ssh: row.ssh, floor };
}

function latencyHeadline(results: BenchResults): { s: LatencySummary | null; label: string } {
  const l = results.latency;
  if (!l) return { s: null, label: '' };
  return l.hooked !== null
    ? { s: l.hooked, label: 'under hook-run' }
    : { s: l.tunnel, label: 'pseudo address, no hook' };
}

/** Added cost of the hook on ordinary names: per-op µs, hooked median over plain median, and the noise floor. */
export function ordinaryCost(
  results: BenchResults,
  op: 'getaddrinfo_us' | 'connect_us',
): { plain: number; hooked: number; added: number; noise: number } | null {
  const o = results.hook?.ordinary;
  if (!o || o.hooked.length === 0 || o.plain.length < 2) return null;
  const plain = median(o.plain.map((p) => p[op]));
  const hooked = median(o.hooked.map((p) => p[op]));
  const noise = Math.max(...o.plain.map((p) => Math.abs(p[op] - plain)), 0.05 * plain);
  return { plain, hooked, added: hooked - plain, noise };
}

/** Issue 16's bars for the relay (frp stcp's figures on this machine: 0.89× OpenSSH, 4.4 ms per MB). */
function issue16Bars(results: BenchResults): Bar[] {
  const bars: Bar[] = [];
  if (results.throughput) {
    const h = headline(results);
    const r = ratio(h.value, h.ssh);
    bars.push({
      figure: `issue 16: relay, 1 connection (${h.label})`,
      measured: `${g(h.value)} = ${x(r)} OpenSSH -N (${g(h.ssh)})`,
      bar: '≥ 1.2× OpenSSH -N',
      met: r === null ? null : r >= 1.2,
    });
    const c = results.throughput.cpuMsPerMB;
    const sum =
      c && c.server !== null && c.proxy !== null && c.redirector !== null ? c.server + c.proxy + c.redirector : null;
    const floor = results.throughput.floorCpuMsPerMB;
    bars.push({
      figure: 'issue 16: daemon CPU per MB, 1 connection (no hook)',
      measured: `${fmt(sum, 2, ' ms')}${floor != null ? `; Node floor ${fmt(floor, 2, ' ms')}` : ''}`,
      bar: '≤ 4.4 ms (frp stcp)',
      met: sum === null ? null : sum <= 4.4,
    });
  }
  if (results.latency) {
    const { s, label } = latencyHeadline(results);
    const floor = results.latency.floor;
    bars.push({
      figure: `issue 16: connect + 1-byte round trip, p50 (${label})`,
      measured: s && floor ? `${ms(s.p50)}; Node floor ${ms(floor.p50)} (+${ms(s.p50 - floor.p50)})` : '—',
      bar: '≤ Node floor + 0.3 ms',
      met: s && floor ? s.p50 <= floor.p50 + 300 : null,
    });
  }
  return bars;
}

export function evaluateBars(results: BenchResults): Bar[] {
  const bars: Bar[] = [];
  if (results.throughput) {
    const h = headline(results);
    const r = ratio(h.value, h.ssh);
    // The floor is context, not the bar: what three Node relays with TLS and no protocol reach here.
    const floor = h.floor !== null ? `; Node floor ${g(h.floor)} = ${x(ratio(h.floor, h.ssh))}` : '';
    bars.push({
      figure: `single-connection throughput (${h.label})`,
      measured: `${g(h.value)} = ${x(r)} OpenSSH (${g(h.ssh)})${floor}`,
      bar: '≥ 1.5× OpenSSH chain',
      met: r === null ? null : r >= 1.5,
    });
  }
  bars.push(...directHopBars(results));
  if (results.latency) {
    const { s, label } = latencyHeadline(results);
    const direct = results.latency.direct;
    const added = s && direct ? s.p50 - direct.p50 : null;
    const floor = results.latency.floor && direct ? `; Node floor +${ms(results.latency.floor.p50 - direct.p50)}` : '';
    bars.push({
      figure: `added connect latency, p50 (${label})`,
      measured: added === null ? '—' : `+${ms(added)}${floor}`,
      bar: '≤ 0.5 ms',
      met: added === null ? null : added <= 500,
    });
  }
  bars.push(...issue16Bars(results));
  if (results.memory) {
    const m = results.memory;
    const per = m.server.perConnectionKiB;
    bars.push({
      figure: 'server memory per idle tunneled connection',
      measured: `${fmt(per, 2, ' KiB')} with ${m.opened} open`,
      bar: '10,000 open, < 10 KiB each',
      met: per === null ? null : m.opened >= m.target && per < 10,
    });
  }
  if (results.hook) {
    const st = results.hook.startup;
    bars.push({
      figure: '`hook-run -- true`, median',
      measured: st.hookRunMs === null ? '—' : `${st.hookRunMs.toFixed(0)} ms`,
      bar: '< 400 ms',
      met: st.hookRunMs === null ? null : st.hookRunMs < 400,
    });
    const costs = (['getaddrinfo_us', 'connect_us'] as const).map((op) => ordinaryCost(results, op));
    const known = costs.every((c) => c !== null);
    bars.push({
      figure: 'hook cost on ordinary names (getaddrinfo / connect)',
      measured: known
        ? costs
            .map((c) => `${c!.added >= 0 ? '+' : ''}${c!.added.toFixed(1)} µs (noise ${c!.noise.toFixed(1)})`)
            .join(' / ')
        : '—',
      bar: 'zero measurable',
      met: known ? costs.every((c) => c!.added <= c!.noise) : null,
    });
  }
  return bars;
}

function markdown(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  return [line(header), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.map(line)].join('\n');
}

/** The figures table: each Underpass figure beside the references measured in the same run. */
export function figuresTable(results: BenchResults): string {
  const rows: string[][] = [];
  for (const r of results.throughput?.rows ?? []) {
    const best = r.hooked ?? r.tunnel;
    const what = r.parallel === 1 ? 'throughput, 1 connection' : `aggregate throughput, ${r.parallel} connections`;
    const floor =
      (r.floor != null ? `; Node floor ${g(r.floor)}` : '') +
      (r.rathole != null ? `; rathole (one hop fewer) ${g(r.rathole)}` : '');
    const ofFloor = r.floor != null ? `, ${x(ratio(best, r.floor))} floor` : '';
    rows.push([
      what,
      `hooked ${g(r.hooked)}; no hook ${g(r.tunnel)}`,
      `direct ${g(r.direct)}; OpenSSH ${g(r.ssh)}${floor}`,
      `${x(ratio(best, r.ssh))} ssh, ${x(ratio(best, r.direct))} direct${ofFloor}`,
    ]);
  }
  const cpu = (
    c: { server: number | null; proxy: number | null; redirector: number | null } | null | undefined,
    unit: string,
  ): string =>
    c ? `server ${fmt(c.server, 2)}, proxy ${fmt(c.proxy, 2)}, redirector ${fmt(c.redirector, 2)} ${unit}` : '—';
  const t = results.throughput;
  if (t?.cpuMsPerMB) {
    const c = t.cpuMsPerMB;
    const total =
      c.server !== null && c.proxy !== null && c.redirector !== null ? c.server + c.proxy + c.redirector : null;
    const floorCpu = t.floorCpuMsPerMB ?? null;
    rows.push([
      'daemon CPU per MB, 1 connection (no hook)',
      cpu(c, 'ms'),
      floorCpu === null ? '—' : `Node floor, three relays: ${fmt(floorCpu, 2)} ms`,
      total === null
        ? '—'
        : `${fmt(total, 2)} ms in all${floorCpu !== null ? ` = ${x(ratio(total, floorCpu))} floor` : ''}`,
    ]);
  }
  rows.push(...directHopRows(results));
  rows.push(...crossNodeRows(results));
  const l = results.latency;
  if (l) {
    for (const q of ['p50', 'p99'] as const) {
      const head = l.hooked ?? l.tunnel;
      const added = head && l.direct ? head[q] - l.direct[q] : null;
      const floor = l.floor ? `; Node floor ${ms(l.floor[q])}` : '';
      const floorAdded = l.floor && l.direct ? ` (floor +${ms(l.floor[q] - l.direct[q])})` : '';
      rows.push([
        `connect + 1-byte round trip, ${q}`,
        `hooked ${ms(l.hooked?.[q])}; no hook ${ms(l.tunnel?.[q])}`,
        `direct ${ms(l.direct?.[q])}${floor}`,
        added === null ? '—' : `+${ms(added)}${floorAdded}`,
      ]);
    }
  }
  if (l?.cpuMsPerTunnel) rows.push(['daemon CPU per tunnel opened (no hook)', cpu(l.cpuMsPerTunnel, 'ms'), '—', '—']);
  const m = results.memory;
  if (m) {
    rows.push([
      `idle tunneled connections held open`,
      `${m.opened} of ${m.target} (${m.failed} failed), opened in ${m.openSeconds.toFixed(1)} s`,
      '—',
      `${(m.opened / Math.max(m.openSeconds, 0.001)).toFixed(0)} tunnels/s`,
    ]);
    for (const n of ['server', 'proxy', 'redirector'] as const) {
      const p = m[n];
      rows.push([
        `RSS of ${n}, before → after`,
        `${fmt(p.beforeKiB === null ? null : p.beforeKiB / 1024, 1)} → ${fmt(p.afterKiB === null ? null : p.afterKiB / 1024, 1)} MiB`,
        '—',
        `${fmt(p.perConnectionKiB, 2)} KiB per connection (second half: ${fmt(p.marginalKiB ?? null, 2)})`,
      ]);
    }
  }
  const h = results.hook;
  if (h) {
    const st = h.startup;
    rows.push([
      'start-up, median',
      `hook-run -- true ${st.hookRunMs === null ? '—' : `${st.hookRunMs.toFixed(0)} ms`}`,
      `true ${fmt(st.trueMs, 1, ' ms')}`,
      st.hookRunMs !== null && st.trueMs !== null ? `+${(st.hookRunMs - st.trueMs).toFixed(0)} ms` : '—',
    ]);
    for (const [op, label] of [
      ['getaddrinfo_us', "getaddrinfo('localhost')"],
      ['connect_us', 'connect 127.0.0.1 + close'],
    ] as const) {
      const c = ordinaryCost(results, op);
      rows.push([
        `${label}, per call (median of ${h.ordinary.hooked.length} / ${h.ordinary.plain.length} runs)`,
        `hooked ${c ? `${c.hooked.toFixed(1)} µs` : '—'}`,
        `plain ${c ? `${c.plain.toFixed(1)} µs` : '—'}`,
        c ? `${c.added >= 0 ? '+' : ''}${c.added.toFixed(1)} µs (noise ${c.noise.toFixed(1)})` : '—',
      ]);
    }
  }
  return markdown(['figure', 'Underpass', 'reference (same run)', 'ratio / added'], rows);
}

export function barsTable(results: BenchResults): string {
  return markdown(
    ['bar (issues 5 and 16)', 'measured', 'bar', 'met'],
    results.bars.map((b) => [b.figure, b.measured, b.bar, b.met === null ? 'not measured' : b.met ? 'met' : 'NOT met']),
  );
}

export function printTable(results: BenchResults): void {
  const m = results.machine;
  const out = [
    '',
    `Underpass bench, ${results.date}, ${results.quick ? 'quick' : 'full'} run, ${results.durationSeconds} s — ${m.cpus} × ${m.cpuModel}, ${m.kernel}, Node ${m.node}`,
    `git ${m.git}; load average at start ${m.loadAverageAtStart.join(' ')}${m.stealPercent !== undefined ? `; CPU stolen by the hypervisor ${m.stealPercent} %` : ''}; iperf3 ${results.throughput ? `${results.throughput.seconds} s${(results.throughput.rounds ?? 1) > 1 ? ` × ${results.throughput.rounds} interleaved runs (median)` : ''}` : '—'} per figure; OpenSSH cipher ${results.throughput?.sshCipher || '—'}; latency ${results.latency ? `${results.latency.iterations} iterations${(results.latency.rounds ?? 1) > 1 ? ` in ${results.latency.rounds} interleaved rounds` : ''}` : '—'}`,
    '',
    figuresTable(results),
    '',
    barsTable(results),
  ];
  const errors = [
    ...(results.throughput?.errors ?? []).map((e) => `throughput: ${e}`),
    ...(results.latency?.errors ?? []).map((e) => `latency: ${e}`),
    ...(results.memory?.errors ?? []).map((e) => `memory: ${e}`),
    ...(results.hook?.errors ?? []).map((e) => `hook: ${e}`),
    ...(results.directHop?.errors ?? []).map((e) => `direct hop: ${e}`),
    ...(results.crossNode?.errors ?? []).map((e) => `cross-node: ${e}`),
    ...(results.hook && !results.hook.available
      ? [`hook: hook-run unavailable: ${results.hook.unavailableReason ?? ''}`]
      : []),
  ];
  if (errors.length > 0) out.push('', 'Not measured:', ...errors.map((e) => `- ${e}`));
  process.stdout.write(out.join('\n') + '\n');
}
