/**
 * What an idle tunnel costs in a daemon's heap, from two V8 heap snapshots (taken before and after
 * opening N tunnels, e.g. with `node --heapsnapshot-signal=SIGUSR2` on the daemon). Prints the self size
 * per type:name, after − before, divided by N; with `--owned Name,…`, also the size each instance of those
 * constructors holds on its own (itself plus what is retained only through it). A snapshot includes the
 * native sizes Node reports (Http2Stream, nghttp2_memory), not malloc's overhead or V8's free pages.
 *
 *   node dist/bench/heap-diff.js before.heapsnapshot after.heapsnapshot 2000 [--owned ResumableStream,Splice]
 */
import fs from 'node:fs';

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[]]; edge_fields: string[]; edge_types: [string[]] } };
  nodes: number[];
  edges: number[];
  strings: string[];
}

/** Node types whose names are contents (strings, code), not constructors: grouped by type alone. */
const ANONYMOUS = new Set(['string', 'concatenated string', 'sliced string', 'code', 'number']);
/** Shared by every object of a kind: never counted as one instance's own. */
const SHARED = new Set(['code', 'object shape', 'synthetic']);

class Heap {
  readonly count: number;
  private readonly s: Snapshot;
  private readonly nl: number;
  private readonly el: number;
  private readonly f: { type: number; name: number; size: number; edges: number; eType: number; eTo: number };
  private readonly first: Uint32Array;

  constructor(file: string) {
    this.s = JSON.parse(fs.readFileSync(file, 'utf8')) as Snapshot;
    const meta = this.s.snapshot.meta;
    this.nl = meta.node_fields.length;
    this.el = meta.edge_fields.length;
    this.f = {
      type: meta.node_fields.indexOf('type'),
      name: meta.node_fields.indexOf('name'),
      size: meta.node_fields.indexOf('self_size'),
      edges: meta.node_fields.indexOf('edge_count'),
      eType: meta.edge_fields.indexOf('type'),
      eTo: meta.edge_fields.indexOf('to_node'),
    };
    this.count = this.s.nodes.length / this.nl;
    this.first = new Uint32Array(this.count + 1);
    let e = 0;
    for (let k = 0; k < this.count; k += 1) {
      this.first[k] = e;
      e += this.s.nodes[k * this.nl + this.f.edges]! * this.el;
    }
    this.first[this.count] = e;
  }

  type(k: number): string {
    return this.s.snapshot.meta.node_types[0][this.s.nodes[k * this.nl + this.f.type]!]!;
  }

  name(k: number): string {
    return this.s.strings[this.s.nodes[k * this.nl + this.f.name]!]!;
  }

  size(k: number): number {
    return this.s.nodes[k * this.nl + this.f.size]!;
  }

  /** Targets of k's strong edges. */
  *children(k: number): Generator<number> {
    const weak = this.s.snapshot.meta.edge_types[0].indexOf('weak');
    for (let e = this.first[k]!; e < this.first[k + 1]!; e += this.el) {
      if (this.s.edges[e + this.f.eType] !== weak) yield this.s.edges[e + this.f.eTo]! / this.nl;
    }
  }

  key(k: number): string {
    const type = this.type(k);
    return ANONYMOUS.has(type) ? type : `${type}:${this.name(k).slice(0, 50)}`;
  }

  /** Self size and count per key. */
  totals(): Map<string, { n: number; bytes: number }> {
    const totals = new Map<string, { n: number; bytes: number }>();
    for (let k = 0; k < this.count; k += 1) {
      const t = totals.get(this.key(k)) ?? { n: 0, bytes: 0 };
      t.n += 1;
      t.bytes += this.size(k);
      totals.set(this.key(k), t);
    }
    return totals;
  }

  /** Per instance of `ctor`: bytes held only through it (approximate dominator tree, 6 levels deep). */
  owned(ctor: string): { instances: number; parts: Map<string, number> } {
    const retainers = new Uint32Array(this.count);
    for (let k = 0; k < this.count; k += 1) for (const c of this.children(k)) retainers[c]! += 1;
    const parts = new Map<string, number>();
    let instances = 0;
    for (let k = 0; k < this.count; k += 1) {
      if (this.type(k) !== 'object' || this.name(k) !== ctor) continue;
      instances += 1;
      const mine = new Set([k]);
      const seen = new Map<number, number>();
      let frontier = [k];
      for (let depth = 0; depth < 6 && frontier.length > 0; depth += 1) {
        const next: number[] = [];
        for (const p of frontier) {
          for (const c of this.children(p)) {
            if (mine.has(c) || SHARED.has(this.type(c))) continue;
            const n = (seen.get(c) ?? 0) + 1;
            seen.set(c, n);
            if (n === retainers[c]) {
              mine.add(c);
              next.push(c);
            }
          }
        }
        frontier = next;
      }
      for (const c of mine) {
        const key = c === k ? `${ctor} itself` : this.key(c);
        parts.set(key, (parts.get(key) ?? 0) + this.size(c));
      }
    }
    return { instances, parts };
  }
}

function main(): void {
  const args = process.argv.slice(2);
  const ownedAt = args.indexOf('--owned');
  const owned = ownedAt >= 0 ? (args.splice(ownedAt, 2)[1] ?? '').split(',').filter(Boolean) : [];
  const [beforeFile, afterFile, nText] = args;
  const n = Number(nText);
  if (beforeFile === undefined || afterFile === undefined || !(n > 0)) {
    process.stderr.write('usage: heap-diff BEFORE.heapsnapshot AFTER.heapsnapshot N [--owned Ctor,…]\n');
    process.exitCode = 2;
    return;
  }
  const before = new Heap(beforeFile).totals();
  const afterHeap = new Heap(afterFile);
  const after = afterHeap.totals();
  const rows = [...new Set([...before.keys(), ...after.keys()])].map((key) => {
    const b = before.get(key) ?? { n: 0, bytes: 0 };
    const a = after.get(key) ?? { n: 0, bytes: 0 };
    return { key, count: (a.n - b.n) / n, bytes: (a.bytes - b.bytes) / n };
  });
  rows.sort((x, y) => y.bytes - x.bytes);
  const total = rows.reduce((sum, r) => sum + r.bytes, 0);
  process.stdout.write(`self size, after − before, per unit: ${total.toFixed(0)} B\n`);
  for (const r of rows.filter((r) => Math.abs(r.bytes) >= 8))
    process.stdout.write(`${r.bytes.toFixed(0).padStart(7)} B ${r.count.toFixed(2).padStart(7)} ×  ${r.key}\n`);
  for (const ctor of owned) {
    const { instances, parts } = afterHeap.owned(ctor);
    const sum = [...parts.values()].reduce((a, b) => a + b, 0);
    process.stdout.write(
      `\n${ctor}: ${instances} instances, ${instances > 0 ? (sum / instances).toFixed(0) : 0} B each on its own\n`,
    );
    for (const [key, bytes] of [...parts].sort((x, y) => y[1] - x[1]))
      process.stdout.write(`${(bytes / instances).toFixed(0).padStart(7)} B  ${key}\n`);
  }
}

main();
