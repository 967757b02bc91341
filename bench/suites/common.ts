// Helpers for the model-level suites (graph, clip, owlvit): rows from whole-call timings, random
// tower weights, and the eager replay of a graph that the graph suite compares against.
import type { Gpu } from '../../src/gpu/gpu.js';
import { Tensor } from '../../src/tensor.js';
import type { DType } from '../../src/dtype.js';
import { GraphBuilder, type Value } from '../../src/graph/builder.js';
import { exportOnnx } from '../../src/onnx/export.js';
import { runKernel } from '../../src/kernels/runtime.js';
import type { VisionConfig } from '../../src/models/clip/config.js';
import { towerShapes } from '../../src/models/clip/weights.js';
import { randomArray } from '../../test/util/random.js';
import { firstLine, type BenchRow, type PeerTime, type Timing, type TimingSettings } from '../harness.js';
import type { SuiteContext } from '../main.js';
import { timeOnPeers, type OrtFeed } from '../ort.js';
import type { Peak } from '../peak.js';

/** A row for a whole call (model forward, load, post-processing): wall ms per call. */
export function callRow(kernel: string, label: string, t: Timing, extra: Partial<BenchRow> = {}): BenchRow {
  return { kernel, label, shape: '', ms: t.ms, source: t.source, wallMs: t.wallMs, reps: t.reps, ...extra };
}

/** A row for something timed once (e.g. loading weights). */
export function onceRow(kernel: string, label: string, ms: number, extra: Partial<BenchRow> = {}): BenchRow {
  return { kernel, label, shape: '', ms, source: 'wall', wallMs: ms, reps: 1, ...extra };
}

export function failedRow(kernel: string, label: string, err: unknown): BenchRow {
  return { kernel, label, shape: '', ms: NaN, source: 'wall', wallMs: NaN, reps: 0, error: firstLine(err) };
}

/** The smoke-run stand-in for ViT-B/32: same structure, tiny sizes. */
export const QUICK_VISION: VisionConfig = { width: 64, layers: 2, heads: 2, mlpWidth: 128, activation: 'quick_gelu', eps: 1e-5, imageSize: 64, patchSize: 32 };

/** Random weights under canonical names (nn.Linear layout, as towerShapes gives them), in `dtype`. */
export function randomWeights(gpu: Gpu, shapes: ReadonlyMap<string, number[]>, dtype: DType): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  let seed = 1;
  for (const [name, shape] of shapes) {
    const n = shape.reduce((a, b) => a * b, 1);
    const scale = name.endsWith('.weight') && shape.length === 2 ? Math.sqrt(3 / shape[1]!) : 0.5;
    const data = randomArray(n, seed++, scale);
    if (/ln.*\.weight$/.test(name)) for (let i = 0; i < n; i++) data[i] = 1 + 0.1 * data[i]!;
    out.set(name, Tensor.from(gpu, data, shape, dtype));
  }
  return out;
}

/** Random vision-tower weights (randomWeights of the tower's shapes). */
export function randomVisionWeights(gpu: Gpu, v: VisionConfig, embedDim: number, dtype: DType): Map<string, Tensor> {
  return randomWeights(gpu, towerShapes('vision', v, embedDim, 'NK'), dtype);
}

/** Sum of the nominal FLOPs of a profiled run's nodes. */
export function profileFlops(nodes: readonly { flops?: number }[]): number {
  return nodes.reduce((s, n) => s + (n.flops ?? 0), 0);
}

/**
 * Runs a built graph's nodes one by one through the eager path (`runKernel`: outputs allocated
 * per op, one submit per op), freeing each intermediate after its last use, as an eager framework
 * does; reads back `output`. Views must start at offset 0 (true for the CLIP towers).
 */
export async function replayEager(gpu: Gpu, g: GraphBuilder, inputs: Record<string, Tensor>, output: string): Promise<Float32Array> {
  const owned = new Map<number, Tensor>();
  const root = (v: Value) => v.root();
  const lastUse = new Map<number, number>();
  g.nodes.forEach((n, i) => n.inputs.forEach((v) => lastUse.set(root(v).value.id, i)));
  const resolve = (v: Value): Tensor => {
    const { value, offset } = root(v);
    if (offset !== 0) throw new Error(`replayEager: view of ${value} at offset ${offset}`);
    const s = value.source;
    const base = s.kind === 'input' ? inputs[s.name]! : s.kind === 'constant' ? s.tensor : owned.get(value.id)!;
    if (value === v) return base;
    // The same buffer under the view's shape (what runKernel reads of a tensor).
    return { gpu, shape: v.shape, dtype: v.dtype, size: base.size, byteLength: base.byteLength, disposed: false, buffer: base.buffer } as unknown as Tensor;
  };
  const out = root(g.outputs.get(output)!).value;
  try {
    for (const [i, node] of g.nodes.entries()) {
      const results = await runKernel(gpu, node.kernel, node.inputs.map(resolve), node.options);
      node.outputs.forEach((o, k) => owned.set(o.id, results[k]!));
      for (const v of node.inputs) {
        const id = root(v).value.id;
        if (lastUse.get(id) === i && id !== out.id) {
          owned.get(id)?.dispose();
          owned.delete(id);
        }
      }
    }
    return (await resolve(g.outputs.get(output)!).read()) as Float32Array;
  } finally {
    for (const t of owned.values()) t.dispose();
  }
}

/** Nominal FLOPs of a built graph: the sum of its nodes' kernel plans. */
export function graphFlops(gpu: Gpu, g: GraphBuilder): number {
  return g.nodes.reduce((sum, n) => sum + (n.kernel.plan(gpu, n.inputs, n.outputs, n.options).flops ?? 0), 0);
}

/** A model row's GFLOP/s and % of the measured FMA peak, from the nominal FLOPs of the graph `build` makes. */
export function flopsOf(gpu: Gpu, peak: Peak, build: (g: GraphBuilder) => void, wallMs: number): Partial<BenchRow> {
  const g = new GraphBuilder();
  build(g);
  const gflops = graphFlops(gpu, g) / (wallMs * 1e6);
  return { gflops, peak: { fraction: gflops / peak.gflops, of: 'fma' } };
}

/**
 * The ORT peers of a model row: the graph `build` makes, exported once with exportOnnx, timed on
 * every ORT peer with these feeds (bench/ort.ts); `wallMs` is ours, for the ratio.
 */
export async function modelPeers(ctx: SuiteContext, build: (g: GraphBuilder) => void, feeds: Record<string, OrtFeed>, wallMs: number, settings: TimingSettings): Promise<Record<string, PeerTime> | undefined> {
  if (!ctx.ort?.length) return undefined;
  const exported = async () => {
    const g = new GraphBuilder();
    build(g);
    return { bytes: await exportOnnx(g, { gpu: ctx.gpu }), feeds };
  };
  return timeOnPeers(ctx.ort, exported, wallMs, settings, ctx.log);
}
