/**
 * Summarises the `.cpuprofile` files `node --cpu-prof` wrote for the daemons (bench --profile DIR): per
 * process, the share of wall time it was busy and its top functions by self time. Also a CLI:
 * `node dist/bench/profile-summary.js DIR [TOP]`.
 *
 * Self time is hitCount × the sampling interval, aggregated by function name and source location, so
 * the same function reached from many call sites counts once. `(idle)` is time the event loop waited.
 */
import fs from 'node:fs';
import path from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
}

export interface ProfileSummary {
  process: string;
  file: string;
  wallMs: number;
  busyMs: number;
  top: Array<{ fn: string; where: string; selfMs: number; busyShare: number }>;
}

function where(url: string, line: number): string {
  if (url === '') return '';
  const short = url
    .replace(/^file:\/\//, '')
    .replace(/^.*\/(node_modules\/)/, '$1')
    .replace(/^.*\/dist\//, 'dist/');
  return `${short}:${line + 1}`;
}

export function summariseProfile(file: string, top: number, processName = path.basename(file)): ProfileSummary {
  const profile = JSON.parse(fs.readFileSync(file, 'utf8')) as CpuProfile;
  const wallMs = (profile.endTime - profile.startTime) / 1000;
  const totalHits = profile.samples.length || 1;
  const msPerHit = wallMs / totalHits;
  const byFn = new Map<string, { fn: string; where: string; hits: number }>();
  let idleHits = 0;
  for (const node of profile.nodes) {
    const hits = node.hitCount ?? 0;
    if (hits === 0) continue;
    const fn = node.callFrame.functionName || '(anonymous)';
    if (fn === '(idle)') {
      idleHits += hits;
      continue;
    }
    const loc = where(node.callFrame.url, node.callFrame.lineNumber);
    const key = `${fn}@${loc}`;
    const entry = byFn.get(key) ?? { fn, where: loc, hits: 0 };
    entry.hits += hits;
    byFn.set(key, entry);
  }
  const busyHits = totalHits - idleHits;
  const sorted = [...byFn.values()].sort((a, b) => b.hits - a.hits).slice(0, top);
  return {
    process: processName,
    file,
    wallMs,
    busyMs: busyHits * msPerHit,
    top: sorted.map((e) => ({
      fn: e.fn,
      where: e.where,
      selfMs: e.hits * msPerHit,
      busyShare: busyHits > 0 ? e.hits / busyHits : 0,
    })),
  };
}

/** Finds the profiles under `dir` (one folder per chain, with pids.json naming the processes). */
export function summariseProfiles(dir: string, top = 15): string {
  const out: string[] = [];
  const folders = fs.existsSync(dir)
    ? fs
        .readdirSync(dir, { withFileTypes: true })
        .filter((d) => d.isDirectory())
        .map((d) => path.join(dir, d.name))
    : [];
  for (const folder of [dir, ...folders]) {
    const pidsFile = path.join(folder, 'pids.json');
    const names = new Map<number, string>();
    if (fs.existsSync(pidsFile))
      for (const [n, pid] of Object.entries(JSON.parse(fs.readFileSync(pidsFile, 'utf8')) as Record<string, number>))
        names.set(pid, n);
    for (const f of fs.readdirSync(folder).filter((f) => f.endsWith('.cpuprofile'))) {
      const pid = Number(f.split('.')[3]);
      const name = `${path.basename(folder)}/${names.get(pid) ?? `pid ${pid}`}`;
      const s = summariseProfile(path.join(folder, f), top, name);
      out.push(`## ${s.process}: busy ${(s.busyMs / 1000).toFixed(1)} s of ${(s.wallMs / 1000).toFixed(1)} s (${f})`);
      out.push('| self ms | % of busy | function | where |', '|---:|---:|---|---|');
      for (const t of s.top)
        out.push(`| ${t.selfMs.toFixed(0)} | ${(t.busyShare * 100).toFixed(1)} | ${t.fn} | ${t.where} |`);
      out.push('');
    }
  }
  return out.length > 0 ? out.join('\n') : `no .cpuprofile files under ${dir}`;
}

if (require.main === module) {
  const dir = process.argv[2];
  if (dir === undefined) {
    process.stderr.write('usage: node dist/bench/profile-summary.js DIR [TOP]\n');
    process.exit(2);
  }
  process.stdout.write(summariseProfiles(path.resolve(dir), Number(process.argv[3] ?? 15)) + '\n');
}
