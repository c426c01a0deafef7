/**
 * The results chart: four panels of grouped bars (throughput, connect latency, memory per connection,
 * start-up), drawn as SVG by hand and rasterised by `rsvg-convert` (Debian `librsvg2-bin`), so the bench
 * needs no plotting library. Without rsvg-convert it keeps the SVG and says so.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import type { BenchResults } from './results';
import { gbps } from './stats';

interface Series {
  name: string;
  color: string;
  values: Array<number | null>;
}

interface Panel {
  title: string;
  unit: string;
  groups: string[];
  series: Series[];
  /** A dashed line for issue 5's bar. */
  bar?: { value: number; label: string };
}

const COLORS = {
  reference: '#9e9e9e',
  floor: '#c7c7c7',
  ssh: '#e08a2c',
  rathole: '#8a6d3b',
  tunnel: '#7fb3e6',
  hooked: '#1f5fa8',
  server: '#1f5fa8',
  proxy: '#4f8fd1',
  redirector: '#7fb3e6',
};

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

function niceMax(v: number): number {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function label(v: number): string {
  return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
}

function drawPanel(p: Panel, x0: number, y0: number, w: number, h: number): string {
  const out: string[] = [];
  const left = x0 + 60;
  const top = y0 + 40;
  const plotW = w - 80;
  const plotH = h - 110;
  const values = p.series.flatMap((s) => s.values.filter((v): v is number => v !== null));
  const max = niceMax(Math.max(...values, p.bar?.value ?? 0) * 1.08);
  const y = (v: number): number => top + plotH - (v / max) * plotH;
  out.push(
    `<text x="${x0 + w / 2}" y="${y0 + 22}" font-size="16" font-weight="bold" text-anchor="middle">${esc(p.title)}</text>`,
  );
  for (let i = 0; i <= 4; i++) {
    const v = (max / 4) * i;
    out.push(`<line x1="${left}" x2="${left + plotW}" y1="${y(v)}" y2="${y(v)}" stroke="#e4e4e4"/>`);
    out.push(`<text x="${left - 6}" y="${y(v) + 4}" font-size="11" text-anchor="end">${label(v)}</text>`);
  }
  out.push(
    `<text x="${x0 + 14}" y="${top + plotH / 2}" font-size="12" text-anchor="middle" transform="rotate(-90 ${x0 + 14} ${top + plotH / 2})">${esc(p.unit)}</text>`,
  );
  const groupW = plotW / p.groups.length;
  const barW = Math.min(48, (groupW * 0.8) / p.series.length);
  p.groups.forEach((g, gi) => {
    const gx = left + gi * groupW + (groupW - barW * p.series.length) / 2;
    p.series.forEach((s, si) => {
      const v = s.values[gi];
      const bx = gx + si * barW;
      if (v === null || v === undefined) {
        out.push(
          `<text x="${bx + barW / 2}" y="${top + plotH - 4}" font-size="10" text-anchor="middle" fill="#999">n/a</text>`,
        );
        return;
      }
      out.push(
        `<rect x="${bx + 1}" y="${y(v)}" width="${barW - 2}" height="${top + plotH - y(v)}" fill="${s.color}"/>`,
      );
      out.push(`<text x="${bx + barW / 2}" y="${y(v) - 3}" font-size="10" text-anchor="middle">${label(v)}</text>`);
    });
    out.push(
      `<text x="${left + gi * groupW + groupW / 2}" y="${top + plotH + 16}" font-size="12" text-anchor="middle">${esc(g)}</text>`,
    );
  });
  out.push(`<line x1="${left}" x2="${left + plotW}" y1="${top + plotH}" y2="${top + plotH}" stroke="#333"/>`);
  if (p.bar) {
    out.push(
      `<line x1="${left}" x2="${left + plotW}" y1="${y(p.bar.value)}" y2="${y(p.bar.value)}" stroke="#c62828" stroke-dasharray="6 4" stroke-width="1.5"/>`,
    );
    out.push(
      `<text x="${left + plotW}" y="${y(p.bar.value) - 4}" font-size="11" text-anchor="end" fill="#c62828">${esc(p.bar.label)}</text>`,
    );
  }
  let lx = left;
  const ly = top + plotH + 36;
  for (const s of p.series) {
    out.push(`<rect x="${lx}" y="${ly - 10}" width="12" height="12" fill="${s.color}"/>`);
    out.push(`<text x="${lx + 16}" y="${ly}" font-size="11">${esc(s.name)}</text>`);
    lx += 22 + s.name.length * 6.3;
  }
  return out.join('\n');
}

export function panels(r: BenchResults): Panel[] {
  const list: Panel[] = [];
  const rows = r.throughput?.rows ?? [];
  if (rows.length > 0) {
    const pick = (k: 'direct' | 'ssh' | 'tunnel' | 'hooked' | 'floor' | 'rathole'): Array<number | null> =>
      rows.map((row) => (row[k] == null ? null : gbps(row[k] as number)));
    // Direct loopback is an order of magnitude above both tunnels: it goes in the group labels, not as a bar.
    const direct = pick('direct');
    list.push({
      title: 'Throughput (iperf3)',
      unit: 'Gbit/s',
      groups: rows.map(
        (row, i) =>
          `${row.parallel} conn${row.parallel > 1 ? 's' : ''} (direct ${direct[i] === null ? 'n/a' : direct[i]!.toFixed(1)})`,
      ),
      series: [
        { name: 'OpenSSH -R/-L', color: COLORS.ssh, values: pick('ssh') },
        ...(rows.some((row) => row.floor != null)
          ? [{ name: 'Node floor (3 TLS relays)', color: COLORS.floor, values: pick('floor') }]
          : []),
        ...(rows.some((row) => row.rathole != null)
          ? [{ name: 'rathole (one hop fewer)', color: COLORS.rathole, values: pick('rathole') }]
          : []),
        { name: 'Underpass, no hook', color: COLORS.tunnel, values: pick('tunnel') },
        { name: 'Underpass, hook-run', color: COLORS.hooked, values: pick('hooked') },
      ],
    });
  }
  const l = r.latency;
  if (l) {
    const v = (s: typeof l.direct, q: 'p50' | 'p99'): number | null => (s === null ? null : s[q] / 1000);
    list.push({
      title: 'Connect + 1-byte round trip',
      unit: 'ms',
      groups: ['p50', 'p99'],
      series: [
        { name: 'direct', color: COLORS.reference, values: [v(l.direct, 'p50'), v(l.direct, 'p99')] },
        ...(l.floor
          ? [
              {
                name: 'Node floor (3 plain relays)',
                color: COLORS.floor,
                values: [v(l.floor, 'p50'), v(l.floor, 'p99')],
              },
            ]
          : []),
        { name: 'Underpass, no hook', color: COLORS.tunnel, values: [v(l.tunnel, 'p50'), v(l.tunnel, 'p99')] },
        { name: 'Underpass, hook-run', color: COLORS.hooked, values: [v(l.hooked, 'p50'), v(l.hooked, 'p99')] },
      ],
      ...(l.direct ? { bar: { value: l.direct.p50 / 1000 + 0.5, label: 'bar: direct p50 + 0.5 ms' } } : {}),
    });
  }
  const m = r.memory;
  if (m) {
    list.push({
      title: `Memory per idle connection (${m.opened} open)`,
      unit: 'KiB RSS per connection',
      groups: ['server', 'proxy', 'redirector'],
      series: [
        {
          name: 'Underpass',
          color: COLORS.server,
          values: [m.server.perConnectionKiB, m.proxy.perConnectionKiB, m.redirector.perConnectionKiB],
        },
      ],
      bar: { value: 10, label: 'bar: server < 10 KiB' },
    });
  }
  const h = r.hook;
  if (h) {
    list.push({
      title: 'Start-up, median',
      unit: 'ms',
      groups: ['true', 'hook-run -- true'],
      series: [{ name: 'wall time', color: COLORS.hooked, values: [h.startup.trueMs, h.startup.hookRunMs] }],
      bar: { value: 400, label: 'bar: 400 ms' },
    });
  }
  return list;
}

export function renderSvg(r: BenchResults): string {
  const list = panels(r);
  const W = 600;
  const H = 380;
  const cols = 2;
  const rowsN = Math.max(1, Math.ceil(list.length / cols));
  const width = W * cols;
  const height = H * rowsN + 50;
  const body = list.map((p, i) => drawPanel(p, (i % cols) * W, 40 + Math.floor(i / cols) * H, W, H)).join('\n');
  const title = `Underpass bench ${r.date.slice(0, 16).replace('T', ' ')} UTC — ${r.machine.cpus} × ${r.machine.cpuModel}, Node ${r.machine.node}${r.quick ? ' (quick run)' : ''}`;
  return `<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="DejaVu Sans, sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="${width / 2}" y="26" font-size="15" text-anchor="middle">${esc(title)}</text>
${body}
</svg>
`;
}

/** Writes `pngPath` (via rsvg-convert), or the SVG beside it when rsvg-convert is missing. */
export async function writeChart(
  r: BenchResults,
  pngPath: string,
): Promise<{ ok: boolean; path: string; reason?: string }> {
  const svg = renderSvg(r);
  const converted = spawnSync('rsvg-convert', ['--format', 'png', '--output', pngPath], { input: svg });
  if (converted.error === undefined && converted.status === 0) return { ok: true, path: pngPath };
  const svgPath = pngPath.replace(/\.png$/, '.svg');
  fs.writeFileSync(svgPath, svg);
  const reason = converted.error
    ? 'rsvg-convert not found (Debian: librsvg2-bin); wrote the SVG'
    : `rsvg-convert failed: ${converted.stderr.toString().trim()}`;
  return { ok: false, path: svgPath, reason };
}
