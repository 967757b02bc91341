// `graph` suite: a ViT-B/32 image tower (random weights) as one graph run (one submit, planned
// memory, prebuilt bind groups) against the same nodes called eagerly (runKernel per node: one
// submit and fresh buffers per op), batch 1 and 8; plus the per-node profile of the graph run.
import { GraphBuilder } from '../../src/graph/builder.js';
import { formatProfile } from '../../src/graph/profile.js';
import { Tensor } from '../../src/tensor.js';
import { visionTower } from '../../src/models/clip/towers.js';
import { vitB32 } from '../../src/models/random.js';
import { randomArray } from '../../test/util/random.js';
import { matches, timeAsync } from '../harness.js';
import type { Suite } from '../main.js';
import { callRow, failedRow, profileFlops, QUICK_VISION, randomVisionWeights, replayEager } from './common.js';

export const graphSuite: Suite = async (ctx) => {
  const { gpu, log } = ctx;
  const v = ctx.quick ? QUICK_VISION : vitB32('clip').vision!;
  const name = ctx.quick ? 'tiny ViT (quick)' : 'ViT-B/32 image tower 224 px';
  const weights = randomVisionWeights(gpu, v, 512, 'f32');
  const rows = [];
  const notes: string[] = [];
  const appendix: string[] = [];
  try {
    for (const b of [1, 8]) {
      const label = `${name} b${b}`;
      if (matches(ctx.filter, 'graph', label)) {
        const g = new GraphBuilder();
        const pixels = g.input('pixels', [b, 3, v.imageSize, v.imageSize]);
        const constants = new Map([...weights].map(([k, t]) => [k, g.constant(t)]));
        g.output('embeds', visionTower(g, (n) => constants.get(n)!, v, 'NK', pixels).embeds);
        const data = randomArray(b * 3 * v.imageSize * v.imageSize, 7);
        const input = Tensor.from(gpu, data, [b, 3, v.imageSize, v.imageSize]);
        const plan = await g.compile(gpu);
        try {
          const { profile } = await plan.run({ pixels: data }, { profile: true });
          const flops = profileFlops(profile!.nodes);
          const graph = await timeAsync(() => plan.run({ pixels: input }), ctx.settings);
          const eager = await timeAsync(() => replayEager(gpu, g, { pixels: input }, 'embeds'), ctx.settings);
          const ratio = graph.wallMs / eager.wallMs;
          rows.push(
            callRow('graph', `${label}: graph (1 submit)`, graph, { shape: `[${b}, 512]`, gflops: flops / (graph.ms * 1e6) }),
            callRow('graph', `${label}: eager (${g.nodes.length} submits)`, eager, { shape: `[${b}, 512]`, gflops: flops / (eager.ms * 1e6), ratio }),
          );
          notes.push(`${label}: graph ${graph.wallMs.toFixed(1)} ms vs eager ${eager.wallMs.toFixed(1)} ms per forward (graph ÷ eager = ${ratio.toFixed(3)}, in the eager row's ours/peer column); ${g.nodes.length} nodes, intermediates ${(plan.memory.intermediateBytes / 1e6).toFixed(1)} MB planned vs ${(plan.memory.unsharedBytes / 1e6).toFixed(1)} MB unshared`);
          const table = formatProfile(profile!);
          appendix.push(`Per-node profile of one graph run, ${label}:`, '', '```', table, '```', '');
          log(`${rows.at(-2)!.label}: ${graph.wallMs.toFixed(2)} ms; ${rows.at(-1)!.label}: ${eager.wallMs.toFixed(2)} ms; graph/eager ${ratio.toFixed(3)}`);
          log(table);
        } catch (err) {
          rows.push(failedRow('graph', label, err));
          log(`${label}: FAILED ${(err as Error).message}`);
        } finally {
          plan.dispose();
          input.dispose();
        }
      }
    }
  } finally {
    for (const t of weights.values()) t.dispose();
  }
  notes.push('ms: wall time per forward (host pixels in, embeddings read back), each call awaited; eager frees each intermediate after its last use');
  return { rows, notes, appendix };
};
