// What a detector's image plan for one image needs, compiled but never run: its memory plan (peak
// intermediate bytes, the largest single buffer, scratch included) and whether attention stays
// fused: the attention nodes and their token count, and every value shaped [..., L, ..., L] (an
// unfused attention's [B, H, L, L] scores would be one). Used by the OWLv2 scale test and the bench.
import { GraphBuilder } from '../../src/graph/builder.js';
import type { MemoryReport } from '../../src/graph/plan.js';
import type { OwlVitDetector } from '../../src/index.js';

export interface ImagePlanReport {
  memory: MemoryReport;
  /** Tokens of the vision tower: (image / patch)² + 1. */
  tokens: number;
  /** Token counts of the attention nodes' inputs. */
  attentionTokens: number[];
  /** Values with two dimensions of `tokens` each, as "label [shape]". */
  squareValues: string[];
}

export async function imagePlanReport(det: OwlVitDetector): Promise<ImagePlanReport> {
  const { imageSize, patchSize } = det.config.vision;
  const tokens = (imageSize / patchSize) ** 2 + 1;
  const g = new GraphBuilder();
  for (const [name, v] of Object.entries(det.buildImage(g, g.input('pixels', [1, 3, imageSize, imageSize], det.dtype)))) if (v) g.output(name, v);
  const attention = g.nodes.filter((n) => n.kernel.name === 'attention');
  const squareValues = g.nodes.flatMap((n) => n.outputs.filter((v) => v.shape.filter((d) => d === tokens).length >= 2).map((v) => `${n.label} [${v.shape.join(', ')}]`));
  const plan = await g.compile(det.gpu);
  try {
    return { memory: plan.memory, tokens, attentionTokens: attention.map((n) => n.inputs[0]!.shape[1]!), squareValues };
  } finally {
    plan.dispose();
  }
}
