/** Small statistics and unit helpers for the benchmark's figures. */

/** The q-quantile (0..1) of `values` by nearest rank on a sorted copy. */
export function quantile(values: number[], q: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank]!;
}

export function median(values: number[]): number {
  return quantile(values, 0.5);
}

export function mean(values: number[]): number {
  return values.reduce((a, b) => a + b, 0) / values.length;
}

/** Bytes per second as Gbit/s. */
export function gbps(bytesPerSecond: number): number {
  return (bytesPerSecond * 8) / 1e9;
}

export function fmt(value: number | null | undefined, digits = 2, unit = ''): string {
  if (value === null || value === undefined || Number.isNaN(value)) return '—';
  return `${value.toFixed(digits)}${unit}`;
}
