// Smoke test of the benchmark harness (bench/): it runs, produces sane rows and frees what it
// allocates. No speed assertions: CI machines are shared and slow.
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openGpu } from '../src/index.js';
import { elementwiseKernel } from '../src/kernels/elementwise.js';
import { inputData, matches, peakFraction, QUICK, runCases, timeAsync, type BenchRow } from '../bench/harness.js';
import { measurePeak, PEAK_QUICK, remeasurePeak } from '../bench/peak.js';
import { loadTfjs } from '../bench/peers.js';
import { loadOrt, ORT_PEERS } from '../bench/ort.js';
import { adapterSlug, renderAll, renderSection, replaceSection, writeResults, type SuiteResult } from '../bench/results.js';
import { softmaxBackwardKernel } from '../src/kernels/softmaxBackward.js';
import { sequenceKernel } from '../bench/sequence.js';
import type { KernelBenchCase } from '../bench/types.js';
import { attentionReference } from '../src/kernels/attention.js';
import { matmulKernel } from '../src/kernels/matmul.js';
import { softmaxKernel } from '../src/kernels/softmax.js';
import { runKernel } from '../src/kernels/runtime.js';
import { Tensor } from '../src/tensor.js';
import { useGpu } from './util/gpu.js';
import { findChromium, NO_CHROMIUM } from './util/chromium.js';
import { kernelsInChromium } from '../bench/chromium.js';
import * as registry from '../bench/kernels/index.js';
import { expectClose } from './util/check.js';
import { randomArray } from './util/random.js';

const getGpu = useGpu();

const tiny: KernelBenchCase = {
  kernel: elementwiseKernel,
  label: 'tiny quick_gelu 8x64',
  inputs: [{ shape: [8, 64] }],
  options: { op: 'quick_gelu' },
  tfjs: (tf, [x]) => tf.mul(x, tf.sigmoid(tf.mul(x, 1.702))),
};

const positive = (x: number | undefined) => expect(Number.isFinite(x) && x! > 0, `${x} should be a positive finite number`).toBe(true);

describe('bench harness', () => {
  it('times a tiny case against the measured peak and its TF.js peer, and frees everything', async () => {
    const gpu = await getGpu();
    const before = gpu.stats();
    const peak = await measurePeak(gpu, QUICK, PEAK_QUICK);
    for (const x of [peak.gflops, peak.gbps, peak.shaderCopyGbps, peak.bufferCopyGbps]) positive(x);
    const tfjs = await loadTfjs(gpu);
    expect(tfjs.version).toMatch(/^\d+\.\d+\.\d+/);
    const asyncPeer: KernelBenchCase = { ...tiny, label: 'async peer', tfjs: async (tf, [x]) => tf.neg(x) };
    const [row, asyncRow] = await runCases(gpu, [tiny, asyncPeer], { settings: QUICK, peak, tfjs });
    positive(asyncRow!.peerMs);
    expect(row!.error).toBeUndefined();
    expect(row!.peerError).toBeUndefined();
    expect(row!.source).toBe(gpu.features.has('timestamp-query') ? 'timestamp' : 'wall');
    expect(row!.shape).toBe('[8, 64]');
    for (const x of [row!.ms, row!.wallMs, row!.reps, row!.gflops, row!.gbps, row!.peak?.fraction, row!.peerMs, row!.ratio]) positive(x);
    expect(gpu.stats().liveBuffers).toBe(before.liveBuffers);
    expect(gpu.stats().liveBytes).toBe(before.liveBytes);
  });

  it('remeasures the peak keeping the better of each rate, and rescales a row against it', async () => {
    const gpu = await getGpu();
    const first = await measurePeak(gpu, QUICK, PEAK_QUICK);
    const best = await remeasurePeak(gpu, QUICK, PEAK_QUICK);
    for (const key of ['gflops', 'gbps', 'shaderCopyGbps', 'bufferCopyGbps'] as const) expect(best[key]).toBeGreaterThanOrEqual(first[key]);
    expect(best.gbps).toBe(Math.max(best.shaderCopyGbps, best.bufferCopyGbps));
    // Later measurements of the same sizes are the best so far.
    expect(await measurePeak(gpu, QUICK, PEAK_QUICK)).toEqual(best);
    // The section says how its peak was measured: once, or again after the rows.
    expect(first.remeasured).toBeUndefined();
    expect(best.remeasured).toBe(true);
    const section = (p: typeof best) => renderSection({ suite: 'kernels', adapter: gpu.info, date: new Date().toISOString(), timing: { source: 'wall', minSeconds: 0, trials: 1 }, peak: p, rows: [] });
    expect(section(first)).toMatch(/^- peak \(measured, bench\/peak\.ts\): f32 FMA /m);
    expect(section(best)).toMatch(/^- peak \(measured by bench\/peak\.ts before and after the run's rows, the better of each\): f32 FMA /m);
    const peak = { ...best, gflops: 10, gbps: 100 };
    expect(peakFraction(4, 20, peak)).toEqual({ fraction: 0.4, of: 'fma' });
    expect(peakFraction(1, 50, peak)).toEqual({ fraction: 0.5, of: 'bandwidth' });
    expect(peakFraction(undefined, undefined, peak)).toBeUndefined();
  });

  it('runs the identical graph in every ONNX Runtime peer (native WebGPU EP, CPU EP, ORT-web WebGPU EP on our device), and says why a kernel has none', async () => {
    const gpu = await getGpu();
    const before = gpu.stats();
    const ort = await Promise.all(ORT_PEERS.map((name) => loadOrt(name, gpu)));
    const mm: KernelBenchCase = { kernel: matmulKernel, label: 'tiny linear 4x16x8', inputs: [{ shape: [4, 16] }, { shape: [8, 16] }, { shape: [8] }], options: { transposeB: true, hasBias: true, activation: 'gelu' } };
    const noOnnx: KernelBenchCase = { kernel: softmaxBackwardKernel, label: 'backward: no ONNX form', inputs: [{ shape: [2, 8] }, { shape: [2, 8] }], options: {} };
    const [row, tinyRow] = await runCases(gpu, [mm, { ...tiny, tfjs: undefined }], { settings: QUICK, ort });
    for (const r of [row!, tinyRow!]) {
      for (const name of ORT_PEERS) {
        expect(r.peers?.[name]?.error, `${r.label} ${name}`).toBeUndefined();
        positive(r.peers?.[name]?.ms);
        positive(r.peers?.[name]?.ratio);
      }
    }
    const section = renderSection({ suite: 'kernels', adapter: gpu.info, date: new Date().toISOString(), timing: { source: 'wall', minSeconds: 0, trials: 1 }, rows: [row!], peers: { 'ort-webgpu': 'ORT WebGPU', 'ort-cpu': 'ORT CPU' } });
    expect(section).toMatch(/\| ort-webgpu ms \| ours\/ort-webgpu \| ort-cpu ms \| ours\/ort-cpu \|/);
    const [failed] = await runCases(gpu, [noOnnx], { settings: QUICK, ort });
    expect(failed!.error).toBeUndefined();
    for (const name of ORT_PEERS) expect(failed!.peers?.[name]?.error).toMatch(/softmaxBackward.*has no ONNX form/);
    expect(gpu.stats().liveBuffers).toBe(before.liveBuffers);
  });

  it('falls back to wall time without timestamp queries', async () => {
    const gpu = await openGpu({ disableFeatures: ['timestamp-query'] });
    try {
      const [row] = await runCases(gpu, [{ ...tiny, tfjs: undefined }], { settings: QUICK });
      expect(row!.source).toBe('wall');
      expect(row!.ms).toBe(row!.wallMs);
      positive(row!.ms);
      expect(row!.peak).toBeUndefined();
      expect(row!.peerMs).toBeUndefined();
    } finally {
      gpu.close();
    }
  });

  it('turns a failing case into an error row and keeps going', async () => {
    const gpu = await getGpu();
    const before = gpu.stats();
    const broken: KernelBenchCase = { ...tiny, label: 'bad bias', inputs: [{ shape: [4, 6] }, { shape: [5] }], options: { op: 'add' } };
    const rows = await runCases(gpu, [broken, { ...tiny, tfjs: undefined }], { settings: QUICK });
    expect(rows[0]!.error).toMatch(/^elementwise\.add: b of shape \[5\]/);
    expect(rows[1]!.error).toBeUndefined();
    expect(gpu.stats().liveBuffers).toBe(before.liveBuffers);
  });

  it('refuses integer inputs without data, naming the case', () => {
    const c: KernelBenchCase = { ...tiny, inputs: [{ shape: [3], dtype: 'i32' }] };
    expect(() => inputData(c, 0)).toThrow(/elementwise 'tiny quick_gelu 8x64': i32 input 0 needs explicit data/);
    expect(Array.from(inputData({ ...c, inputs: [{ shape: [3], dtype: 'i32', data: [4, 5, 6] }] }, 0))).toEqual([4, 5, 6]);
  });

  it('timeAsync measures the time per awaited call', async () => {
    // A target of 0.2 s: one 3 ms timer that a loaded machine delays past half of it (which stops the
    // doubling at 1 rep) would take 100 ms.
    const t = await timeAsync(() => new Promise((resolve) => setTimeout(resolve, 3)), { minSeconds: 0.2, trials: 2 });
    expect(t.source).toBe('wall');
    expect(t.reps).toBeGreaterThan(1);
    expect(t.ms).toBeGreaterThanOrEqual(2.5);
  });
});

describe('bench in Chromium (--browser --quick)', () => {
  it("runs the kernels suite's cases in a page: the Node suite's row labels, timed, no errors", async (ctx) => {
    ctx.skip(!findChromium(), NO_CHROMIUM);
    const filter = 'CLIP B/32 b1 softmax|CLIP B/32 b1 visual projection';
    const expected = Object.values(registry).flat().filter((c) => matches(filter, c.kernel.name, c.label)).map((c) => `${c.kernel.name} ${c.label}`);
    expect(expected.length).toBe(2);
    const lines: string[] = [];
    const r = await kernelsInChromium({ settings: QUICK, quick: true, filter }, (l) => lines.push(l));
    expect(r.browser).toMatch(/Chrome/);
    expect(lines.find((l) => l.startsWith('adapter:'))).toBeDefined();
    for (const x of [r.peak.gflops, r.peak.gbps]) positive(x);
    expect(r.rows.map((row) => `${row.kernel} ${row.label}`)).toEqual(expected);
    for (const row of r.rows) {
      expect(row.error, row.label).toBeUndefined();
      expect(row.source).toBe(r.source);
      for (const x of [row.ms, row.wallMs, row.gflops]) positive(x);
    }
  }, 180_000);
});

describe('bench sequences', () => {
  // Unfused attention with one head, so [B·H, L, Dh] is the reference's [B, L, H·Dh].
  const scale = 0.3;
  const steps = [
    { kernel: elementwiseKernel, inputs: [0], options: { op: 'scale', scalar: scale } },
    { kernel: matmulKernel, inputs: [{ step: 0 }, 1], options: { transposeB: true } },
    { kernel: softmaxKernel, inputs: [{ step: 1 }], options: {} },
    { kernel: matmulKernel, inputs: [{ step: 2 }, 2], options: {} },
  ];

  it('runs its steps as one kernel, intermediates as scratch, flops and bytes summed', async () => {
    const gpu = await getGpu();
    const [B, L, D] = [3, 7, 5];
    const seq = sequenceKernel('attention', steps);
    const info = { shape: [B, L, D], dtype: 'f32' as const };
    expect(seq.outputs([info, info, info], {})).toEqual([info]);
    const plan = seq.plan(gpu, [info, info, info], [info], {});
    expect(plan.dispatches).toHaveLength(4);
    expect(plan.scratch).toEqual([info, { shape: [B, L, L], dtype: 'f32' }, { shape: [B, L, L], dtype: 'f32' }]);
    // [q, k, v, out, scaled q, logits, probabilities]: each step reads the previous step's output.
    expect(plan.dispatches.map((d) => d.tensors.filter((_, i) => d.program.bindings[i] === 'write'))).toEqual([[4], [5], [6], [3]]);
    expect(plan.flops).toBeGreaterThan(2 * 2 * B * L * L * D);
    const before = gpu.stats();
    const data = [1, 2, 3].map((seed) => randomArray(B * L * D, seed));
    const [q, k, v] = data.map((d) => Tensor.from(gpu, d, [B, L, D]));
    const [out] = await runKernel(gpu, seq, [q!, k!, v!], {});
    expectClose(await out!.read(), attentionReference(data[0]!, data[1]!, data[2]!, { batch: B, length: L, heads: 1, headDim: D, scale }), { scaleTol: 1e-5 });
    for (const t of [q, k, v, out]) t!.dispose();
    expect(gpu.stats().liveBuffers).toBe(before.liveBuffers);
  });

  it('rejects a step that refers to a later step or a missing input, and shapes its kernels reject', () => {
    const info = { shape: [2, 4, 3], dtype: 'f32' as const };
    expect(() => sequenceKernel('bad', [{ ...steps[1]!, inputs: [{ step: 1 }, 1] }, steps[2]!]).outputs([info, info], {})).toThrow(
      /^sequence bad: step 0 \(matmul\) refers to \{"step":1\}, which does not exist before it$/,
    );
    expect(() => sequenceKernel('bad', [{ ...steps[1]!, inputs: [0, 5] }]).outputs([info, info], {})).toThrow(/^sequence bad: step 0 \(matmul\) refers to 5/);
    expect(() => sequenceKernel('bad', steps).outputs([info, info, { shape: [2, 5, 3], dtype: 'f32' }], {})).toThrow(/^matmul: b of shape \[2, 5, 3\]/);
    expect(() => sequenceKernel('bad', [])).toThrow(/^sequence bad: no steps$/);
  });
});

describe('bench results', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ovgpu-bench-test-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const adapter = { vendor: 'v', architecture: 'a', device: 'd', description: 'Some GPU (driver 1.2)', isFallbackAdapter: false };
  const row = (label: string, ms: number): BenchRow => ({ kernel: 'k', label, shape: '[2]', ms, source: 'timestamp', wallMs: ms, reps: 1, gbps: 1 });
  const result = (suite: string, rows: BenchRow[]): SuiteResult => ({
    suite,
    adapter,
    date: '2025-01-02T03:04:05.000Z',
    timing: { source: 'timestamp', minSeconds: 0.3, trials: 3 },
    rows,
  });

  it('filters rows by case-insensitive substrings, any of several separated by |', () => {
    expect(matches(undefined, 'matmul', 'b8')).toBe(true);
    expect(matches('MATMUL', 'matmul', 'b8')).toBe(true);
    expect(matches('nms|softmax', 'softmax', '96x50x50')).toBe(true);
    expect(matches('nms|softmax', 'matmul', 'b8')).toBe(false);
  });

  it('slugs adapter names for file names', () => {
    expect(adapterSlug(adapter)).toBe('some-gpu-driver-1-2');
    expect(adapterSlug({ ...adapter, description: '' })).toBe('v-a-d');
  });

  it('keeps one section per suite and adapter, replaced on re-run; filtered runs merge rows', () => {
    writeResults(dir, result('kernels', [row('first', 1), row('second', 2)]));
    writeResults(dir, result('graph', [row('g', 5)]));
    writeResults(dir, result('kernels', [row('first', 1.5)]));
    let md = readFileSync(join(dir, 'RESULTS.md'), 'utf8');
    expect(md.match(/^## kernels · Some GPU/gm)).toHaveLength(1);
    expect(md.match(/^## graph · Some GPU/gm)).toHaveLength(1);
    expect(md).toContain('| k | first | 1.50 |');
    expect(md).not.toContain('| second |');
    expect(md.indexOf('## kernels')).toBeLessThan(md.indexOf('## graph'));

    writeResults(dir, result('kernels', [row('second', 3), row('third', 4)]), { merge: true });
    const json = JSON.parse(readFileSync(join(dir, 'results', 'kernels-some-gpu-driver-1-2.json'), 'utf8')) as SuiteResult;
    expect(json.rows.map((r) => [r.label, r.ms])).toEqual([['first', 1.5], ['second', 3], ['third', 4]]);
    md = readFileSync(join(dir, 'RESULTS.md'), 'utf8');
    expect(md.match(/^## kernels/gm)).toHaveLength(1);
    expect(md).toContain('| k | third | 4.00 |');
  });

  it("a filtered run keeps the section's peak, peers, notes and appendix and dates the rows it kept", () => {
    const peak = { gflops: 30, gbps: 10, shaderCopyGbps: 9, bufferCopyGbps: 10 } as SuiteResult['peak'];
    const withPeer = (r: BenchRow): BenchRow => ({ ...r, peers: { 'ort-cpu': { ms: 1, ratio: r.ms } } });
    const full = { ...result('merge', [row('a', 1), row('b', 2)].map(withPeer)), peak, peers: { 'ort-cpu': 'ORT CPU' }, notes: ['full run'], appendix: ['profile'] };
    writeResults(dir, full);
    writeResults(dir, { ...result('merge', [row('b', 3)]), date: '2025-02-03T04:05:06.000Z', notes: ['filtered run'] }, { merge: true });
    const md = readFileSync(join(dir, 'RESULTS.md'), 'utf8');
    const section = md.slice(md.indexOf('<!-- bench merge'), md.indexOf('<!-- /bench merge'));
    expect(section).toContain('f32 FMA 30.0 GFLOP/s');
    expect(section).toContain('- ort-cpu: ORT CPU');
    expect(section).toContain('- full run\n- filtered run');
    expect(section).toContain('profile');
    expect(section).toContain('- run: 2025-02-03 04:05:06 UTC');
    expect(section).toContain('| k | a (run 2025-01-02 03:04) | 1.00 |');
    expect(section).toContain('| k | b | 3.00 |');
  });

  it('re-renders every section from the JSON files (--render)', () => {
    writeResults(dir, result('render', [row('r', 7)]));
    writeFileSync(join(dir, 'RESULTS.md'), '# Results\n');
    expect(renderAll(dir)).toBe(readdirSync(join(dir, 'results')).length);
    const md = readFileSync(join(dir, 'RESULTS.md'), 'utf8');
    expect(md.startsWith('# Results\n')).toBe(true);
    expect(md).toContain('| k | r | 7.00 |');
    expect(md.match(/^## render · Some GPU/gm)).toHaveLength(1);
  });

  it('shows a short n/a for a peer that cannot run a kernel with no ONNX form, and other peer failures in full', () => {
    const noForm = 'exportOnnx: node nms (kernel nms) has no ONNX form (exportOnnx writes the inference ops; backward kernels, nms, box IoU and optimizer steps have none)';
    const peers = { 'ort-webgpu': { error: noForm }, 'ort-cpu': { error: 'session.run: out of memory' } };
    const section = renderSection({ ...result('kernels', [{ ...row('nms', 2), peers }]), peers: { 'ort-webgpu': 'ORT WebGPU', 'ort-cpu': 'ORT CPU' } });
    const line = section.split('\n').find((l) => l.startsWith('| k | nms |'))!;
    expect(line).toContain('| n/a: no ONNX form | | failed: session.run: out of memory | |');
    expect(line).not.toContain('exportOnnx');
  });

  it('appends a section that is not there yet', () => {
    expect(replaceSection('# T\n', 'x y', 'S\n')).toBe('# T\n\nS\n');
    expect(replaceSection('# T\n\n<!-- bench x y -->\nold\n<!-- /bench x y -->\nafter\n', 'x y', 'new\n')).toBe('# T\n\nnew\nafter\n');
  });
});
