// Where benchmark results go: bench/results/<suite>-<adapter>.json (machine-readable) and one
// section per suite and adapter in bench/RESULTS.md, replaced when that pair is re-run.
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { GpuInfo } from '../src/gpu/gpu.js';
import type { BenchRow } from './harness.js';
import type { Peak } from './peak.js';

export interface SuiteResult {
  suite: string;
  adapter: GpuInfo;
  /** ISO date of the run. */
  date: string;
  /** pollSleepMs: openGpu's in a Node run (absent in a page, and in Node results from before it existed, which polled busily). */
  timing: { source: 'timestamp' | 'wall'; minSeconds: number; trials: number; pollSleepMs?: number };
  peak?: Peak;
  /** e.g. 'TF.js 4.22.0 (tfjs-backend-webgpu) on the same GPUDevice'; absent with --no-peers. */
  peer?: string;
  /** The other peers' descriptions by name (see BenchRow.peers), e.g. ORT's WebGPU and CPU providers. */
  peers?: Record<string, string>;
  rows: BenchRow[];
  notes?: string[];
  /** Markdown lines after the table (e.g. a profile). */
  appendix?: string[];
}

const HEADER = `# Benchmark results

Written by \`npm run bench -- <suite>\` (bench/main.ts): one section per suite and adapter, replaced
when that suite runs again on the same adapter. Machine-readable rows are in
\`bench/results/<suite>-<adapter>.json\`; how things are timed is described in bench/harness.ts and
bench/peers.ts.
`;

/** A file-name-safe name for an adapter, e.g. 'llvmpipe-mesa-25-0-7-llvm-15-0-6'. */
export function adapterSlug(info: Pick<GpuInfo, 'description' | 'vendor' | 'device' | 'architecture'>): string {
  const name = info.description || [info.vendor, info.architecture, info.device].filter(Boolean).join(' ') || 'unknown';
  return name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 60).replace(/-$/, '');
}

/** Three significant digits, without exponent notation for the usual ranges. */
export function fmt(x: number | undefined): string {
  if (x === undefined || !Number.isFinite(x)) return '';
  const a = Math.abs(x);
  if (a >= 100) return x.toFixed(0);
  if (a >= 10) return x.toFixed(1);
  if (a >= 1) return x.toFixed(2);
  return x.toPrecision(3);
}

const when = (iso: string) => iso.replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
const cell = (s: string) => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');

/**
 * A peer's failure as a table cell. Kernels that exportOnnx cannot write (backward ops, nms, …)
 * are expected to have no ORT peer: a short 'n/a' says so; any other failure stays in full.
 */
function peerFailure(error: string): string {
  return /has no ONNX form/.test(error) ? 'n/a: no ONNX form' : `failed: ${cell(error)}`;
}

export function renderSection(r: SuiteResult): string {
  const a = r.adapter;
  const lines: string[] = [];
  const key = `${r.suite} ${adapterSlug(a)}`;
  lines.push(`<!-- bench ${key} -->`, `## ${r.suite} · ${a.description || a.device || a.vendor}`, '');
  lines.push(`- adapter: vendor \`${a.vendor}\`, architecture \`${a.architecture}\`, device \`${a.device}\`${a.isFallbackAdapter ? ' (fallback adapter)' : ''}`);
  lines.push(`- run: ${when(r.date)}; median of ${r.timing.trials} trial(s) of ≥ ${r.timing.minSeconds} s each${r.timing.pollSleepMs !== undefined ? `; waits for the GPU slept ${r.timing.pollSleepMs} ms between polls (pollSleepMs)` : ''}${r.rows.some((row) => row.date) ? '; rows marked (run …) were kept from an earlier run' : ''}`);
  lines.push(
    r.timing.source === 'timestamp'
      ? '- ms: GPU time per run from timestamp queries around n back-to-back runs in one compute pass; wall ms: the same n runs from encoding to completion, per run'
      : '- ms: wall time per run (no timestamp queries on this adapter): n back-to-back runs in one submit, from encoding to completion',
  );
  if (r.peak) {
    lines.push(
      `- peak (${r.peak.remeasured ? "measured by bench/peak.ts before and after the run's rows, the better of each" : 'measured, bench/peak.ts'}): f32 FMA ${fmt(r.peak.gflops)} GFLOP/s; copy ${fmt(r.peak.gbps)} GB/s ` +
        `(compute shader ${fmt(r.peak.shaderCopyGbps)}, copyBufferToBuffer ${fmt(r.peak.bufferCopyGbps)}); ` +
        '% of peak is the larger of GFLOP/s ÷ FMA peak and GB/s ÷ copy peak',
    );
  }
  if (r.peer) lines.push(`- peer: ${r.peer}; peer ms is wall time per call (n calls, then one fence); ours/peer = wall ms ÷ peer ms (below 1: we are faster)`);
  const others = [...new Set(r.rows.flatMap((row) => Object.keys(row.peers ?? {})))];
  for (const name of others) lines.push(`- ${name}: ${r.peers?.[name] ?? name}, the identical graph exported by exportOnnx; ms per awaited session.run, host input and output included (bench/ort.ts); ours/${name} = wall ms ÷ its ms`);
  for (const n of r.notes ?? []) lines.push(`- ${n}`);
  const head = others.flatMap((name) => [`${name} ms`, `ours/${name}`]);
  lines.push('', `| kernel | case | ms | wall ms | GFLOP/s | GB/s | % of peak | TF.js ms | ours/TF.js |${head.map((h) => ` ${h} |`).join('')}`, `|---|---|--:|--:|--:|--:|--:|--:|--:|${head.map(() => '--:|').join('')}`);
  for (const row of r.rows) {
    const label = cell(row.label) + (row.date ? ` (run ${when(row.date).slice(0, 16)})` : '');
    if (row.error) {
      lines.push(`| ${cell(row.kernel)} | ${label} | failed: ${cell(row.error)} | | | | | | |${head.map(() => ' |').join('')}`);
      continue;
    }
    const other = others.map((name) => {
      const p = row.peers?.[name];
      return p?.ms !== undefined ? ` ${fmt(p.ms)} | ${fmt(p.ratio)} |` : p?.error ? ` ${peerFailure(p.error)} | |` : ' | |';
    });
    const peak = row.peak ? `${(row.peak.fraction * 100).toFixed(1)}% ${row.peak.of === 'fma' ? 'FMA' : 'BW'}` : '';
    const peer = row.peerMs !== undefined ? fmt(row.peerMs) : row.peerError ? `failed: ${cell(row.peerError)}` : '';
    lines.push(
      `| ${cell(row.kernel)} | ${label} | ${fmt(row.ms)} | ${fmt(row.wallMs)} | ${fmt(row.gflops)} | ${fmt(row.gbps)} | ${peak} | ${peer} | ${fmt(row.ratio)} |${other.join('')}`,
    );
  }
  if (r.appendix?.length) lines.push('', ...r.appendix);
  lines.push(`<!-- /bench ${key} -->`);
  return lines.join('\n') + '\n';
}

/** `md` with the section marked `key` replaced by `section`, or `section` appended. */
export function replaceSection(md: string, key: string, section: string): string {
  const begin = `<!-- bench ${key} -->`;
  const end = `<!-- /bench ${key} -->`;
  const i = md.indexOf(begin);
  const j = i < 0 ? -1 : md.indexOf(end, i);
  if (i >= 0 && j >= 0) return md.slice(0, i) + section + md.slice(j + end.length).replace(/^\n/, '');
  return md.replace(/\n*$/, '\n\n') + section;
}

const rowKey = (r: BenchRow) => `${r.kernel}\u0000${r.label}`;

/**
 * A filtered run's rows over the previous run's: rows it did not measure are kept with their own run
 * date, and so are the section's peak, peers, notes and appendix where the filtered run has none.
 */
export function mergeResults(previous: SuiteResult, fresh: SuiteResult): SuiteResult {
  const dated = (r: BenchRow): BenchRow => (r.date || previous.date === fresh.date ? r : { ...r, date: previous.date });
  const byKey = new Map(fresh.rows.map((r) => [rowKey(r), r]));
  const rows = previous.rows.map((r) => byKey.get(rowKey(r)) ?? dated(r));
  const kept = new Set(rows.map(rowKey));
  const notes = [...new Set([...(previous.notes ?? []), ...(fresh.notes ?? [])])];
  return {
    ...fresh,
    peak: fresh.peak ?? previous.peak,
    peer: fresh.peer ?? previous.peer,
    peers: { ...previous.peers, ...fresh.peers },
    notes: notes.length ? notes : undefined,
    appendix: fresh.appendix?.length ? fresh.appendix : previous.appendix,
    rows: [...rows, ...fresh.rows.filter((r) => !kept.has(rowKey(r)))],
  };
}

/**
 * Writes the JSON and replaces the RESULTS.md section under `dir` (bench/ of the repository).
 * With `merge` (a filtered run), rows of the previous JSON that this run did not measure are kept.
 * Returns the paths written.
 */
export function writeResults(dir: string, result: SuiteResult, options: { merge?: boolean } = {}): { json: string; markdown: string } {
  const slug = adapterSlug(result.adapter);
  const json = join(dir, 'results', `${result.suite}-${slug}.json`);
  const markdown = join(dir, 'RESULTS.md');
  const merged = options.merge && existsSync(json) ? mergeResults(JSON.parse(readFileSync(json, 'utf8')) as SuiteResult, result) : result;
  mkdirSync(join(dir, 'results'), { recursive: true });
  writeFileSync(json, JSON.stringify(merged, null, 2) + '\n');
  const md = existsSync(markdown) ? readFileSync(markdown, 'utf8') : HEADER;
  writeFileSync(markdown, replaceSection(md, `${result.suite} ${slug}`, renderSection(merged)));
  return { json, markdown };
}

/**
 * Re-renders every RESULTS.md section from bench/results/*.json under `dir` (after a change to how
 * sections are rendered), without running anything. Returns the number of sections written.
 */
export function renderAll(dir: string): number {
  const markdown = join(dir, 'RESULTS.md');
  let md = existsSync(markdown) ? readFileSync(markdown, 'utf8') : HEADER;
  const files = existsSync(join(dir, 'results')) ? readdirSync(join(dir, 'results')).filter((f) => f.endsWith('.json')).sort() : [];
  for (const f of files) {
    const result = JSON.parse(readFileSync(join(dir, 'results', f), 'utf8')) as SuiteResult;
    md = replaceSection(md, `${result.suite} ${adapterSlug(result.adapter)}`, renderSection(result));
  }
  writeFileSync(markdown, md);
  return files.length;
}
