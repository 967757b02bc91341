import type { RunProfile } from './plan.js';

/** A plain-text table of a profiled run: op, shape, time, GFLOP/s and share of the total. */
export function formatProfile(profile: RunProfile): string {
  if (profile.source === 'wall') return `whole run: ${profile.totalMs.toFixed(3)} ms (wall clock; the adapter has no timestamp queries)`;
  const rows = profile.nodes.map((n) => [
    n.label,
    n.kernel,
    n.shape,
    n.ms.toFixed(3),
    n.flops && n.ms > 0 ? (n.flops / n.ms / 1e6).toFixed(2) : '',
    profile.totalMs > 0 ? ((100 * n.ms) / profile.totalMs).toFixed(1) : '',
  ]);
  const header = ['node', 'kernel', 'output shape', 'ms', 'GFLOP/s', '%'];
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c]!.length)));
  const line = (r: string[]) => r.map((cell, c) => (c >= 3 ? cell.padStart(widths[c]!) : cell.padEnd(widths[c]!))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line), `total GPU time ${profile.totalMs.toFixed(3)} ms over ${profile.nodes.length} nodes`].join('\n');
}
