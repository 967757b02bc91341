// Memory of a training step: a ViT-B/32-shaped vision tower, loss = mean(embeds²), gradients of
// every weight, compiled as one plan and run for a number of steps. Reports the plan's memory plan,
// what compiling allocated, the live GPU bytes and buffers after every step (flat when nothing
// leaks: every buffer the library makes is counted by Gpu.createBuffer) and what is left after
// dispose(). Used by the grad-memory test (which asserts) and the grad bench (which records).
import { GraphBuilder } from '../../src/graph/builder.js';
import type { GraphPlan, MemoryReport } from '../../src/graph/plan.js';
import type { Gpu, GpuStats } from '../../src/gpu/gpu.js';
import { Tensor } from '../../src/tensor.js';
import type { VisionConfig } from '../../src/models/clip/config.js';
import { visionTower } from '../../src/models/clip/towers.js';
import { towerShapes } from '../../src/models/clip/weights.js';
import { randomArray } from './random.js';

/**
 * The training graph. One random tensor per weight shape, shared by the layers (each use is its own
 * parameter): the graph and its memory plan are the model's without uploading all its weights.
 */
export function trainingGraph(gpu: Gpu, cfg: VisionConfig, batch: number, backward: boolean): { g: GraphBuilder; weights: Tensor[] } {
  const byShape = new Map<string, Tensor>();
  const shapes = towerShapes('vision', cfg, 32, 'NK');
  const g = new GraphBuilder();
  const w = (name: string) => {
    const shape = shapes.get(name)!;
    let t = byShape.get(shape.join('x'));
    if (!t) byShape.set(shape.join('x'), (t = Tensor.from(gpu, randomArray(shape.reduce((a, b) => a * b, 1), byShape.size + 1, 0.05), shape)));
    return g.parameter(t, name);
  };
  const { embeds } = visionTower(g, w, cfg, 'NK', g.input('pixels', [batch, 3, cfg.imageSize, cfg.imageSize]));
  const loss = g.mean(g.mul(embeds, embeds), [0, 1]);
  g.output('loss', loss);
  if (backward) g.gradients(loss, [...g.parameters.values()]).forEach((d, i) => g.output(`grad${i}`, d));
  return { g, weights: [...byShape.values()] };
}

export interface TrainingMemory {
  /** The plan's memory report as compiled (before any run made staging buffers). */
  memory: MemoryReport;
  nodes: number;
  /** Bytes of the weight gradients (outputs of the plan, alive to its end: as large as the weights). */
  gradientBytes: number;
  /** Live GPU bytes that compiling the plan added (weights excluded): memory.ownedBytes when counted right. */
  compiledBytes: number;
  /** What the plan's owned bytes grew by over the steps: the staging of the outputs read (loss, grad0). */
  stagingBytes: number;
  /** Bytes of the outputs each step reads: the loss (one f32) and grad0 (the first parameter's gradient). */
  readBytes: number;
  /** Live bytes and buffers after each step (the first step makes the staging of the outputs it reads). */
  liveBytes: number[];
  liveBuffers: number[];
  /** Submits per step (1: forward + backward in one). */
  submitsPerStep: number[];
  /** The loss of each step: the same inputs and weights give the same loss. */
  losses: number[];
  msPerStep: number;
  /** Live bytes and buffers after dispose() of the plan and the weights, minus those before building. */
  leftBytes: number;
  leftBuffers: number;
}

/**
 * Builds and compiles the training plan, runs `steps` steps (reading back the loss and one
 * gradient, as a training loop would), disposes the plan and the weights, and reports.
 */
export async function trainingMemory(gpu: Gpu, cfg: VisionConfig, batch: number, steps: number): Promise<TrainingMemory> {
  const before = gpu.stats();
  const { g, weights } = trainingGraph(gpu, cfg, batch, true);
  const afterWeights = gpu.stats().liveBytes;
  let plan: GraphPlan | undefined;
  let compiledBytes = NaN;
  let memory: MemoryReport | undefined;
  let compiled: GpuStats | undefined;
  const live: GpuStats[] = [];
  const losses: number[] = [];
  const pixels = randomArray(batch * 3 * cfg.imageSize ** 2, 5);
  let msPerStep = NaN;
  try {
    plan = await g.compile(gpu);
    compiledBytes = gpu.stats().liveBytes - afterWeights;
    memory = { ...plan.memory };
    compiled = gpu.stats();
    const started = performance.now();
    for (let step = 0; step < steps; step++) {
      const { outputs } = await plan.run({ pixels }, { outputs: ['loss', 'grad0'] });
      losses.push(outputs.loss![0]!);
      live.push(gpu.stats());
    }
    msPerStep = (performance.now() - started) / steps;
  } finally {
    plan?.dispose();
    for (const t of weights) t.dispose();
  }
  const after = gpu.stats();
  return {
    memory: memory!,
    nodes: g.nodes.length,
    gradientBytes: [...g.parameters.values()].reduce((s, p) => s + 4 * p.shape.reduce((a, b) => a * b, 1), 0),
    compiledBytes,
    stagingBytes: plan!.memory.ownedBytes - memory!.ownedBytes,
    readBytes: 4 + 4 * [...g.parameters.values()][0]!.shape.reduce((a, b) => a * b, 1),
    liveBytes: live.map((s) => s.liveBytes),
    liveBuffers: live.map((s) => s.liveBuffers),
    submitsPerStep: live.map((s, i) => s.submits - (i === 0 ? compiled! : live[i - 1]!).submits),
    losses,
    msPerStep,
    leftBytes: after.liveBytes - before.liveBytes,
    leftBuffers: after.liveBuffers - before.liveBuffers,
  };
}
