// CLIP's towers and OWL-ViT's image and text graphs exported and run in onnxruntime-node (CPU):
// the same outputs as ovgpu within 1e-4 of their scale, at the exported batch and another one.
import { afterAll, describe, expect, it } from 'vitest';
import { ClipModel, GraphBuilder, OwlVitDetector, exportOnnx } from '../../src/index.js';
import { useGpu } from '../util/gpu.js';
import { fixturePath } from '../util/fixtures.js';
import { expectClose } from '../util/check.js';
import { randomArray, rng } from '../util/random.js';
import { runOrt } from '../util/ort.js';

const getGpu = useGpu();
const closers: (() => void)[] = [];
afterAll(() => closers.forEach((c) => c()));

const ids = (rows: number, length: number, vocab: number, seed: number) => {
  const r = rng(seed);
  return Int32Array.from({ length: rows * length }, () => Math.floor(r() * vocab));
};

/** Builds the graph at `exportBatch`, exports it, then compares ORT and ovgpu at every batch of `runBatches`. */
async function compareAtBatches(build: (g: GraphBuilder, batch: number) => void, feeds: (batch: number) => Record<string, { data: Float32Array | Int32Array; shape: number[]; dtype?: 'i32' }>, exportBatch: number, runBatches: number[]) {
  const gpu = await getGpu();
  const g0 = new GraphBuilder();
  build(g0, exportBatch);
  const bytes = await exportOnnx(g0);
  for (const b of runBatches) {
    const g = new GraphBuilder();
    build(g, b);
    const plan = await g.compile(gpu);
    const f = feeds(b);
    const ours = (await plan.run(Object.fromEntries(Object.entries(f).map(([k, v]) => [k, v.data])))).outputs;
    const theirs = await runOrt(bytes, f);
    for (const name of g.outputs.keys()) {
      const report = expectClose(theirs[name]!.data as Float32Array, ours[name]!, { scaleTol: 1e-4, label: `${name} at batch ${b}` });
      console.log(report.message);
    }
    plan.dispose();
  }
  return bytes;
}

describe('exportOnnx round trip of the models', () => {
  it("CLIP (clip_tiny, OpenAI weights): image and text towers, dense map and intermediates", async () => {
    const gpu = await getGpu();
    const model = await ClipModel.load(gpu, fixturePath('clip_tiny', 'weights_openai.safetensors'), { heads: { vision: 2, text: 4 } });
    closers.push(() => model.dispose());
    const size = model.config.vision!.imageSize;
    await compareAtBatches(
      (g, b) => {
        const out = model.buildVision(g, g.input('pixels', [b, 3, size, size]), { dense: true });
        g.output('embeds', out.embeds);
        g.output('dense', out.dense!);
        g.output('block0', out.intermediates.block0_out!);
      },
      (b) => ({ pixels: { data: randomArray(b * 3 * size * size, 10 + b), shape: [b, 3, size, size] } }),
      2,
      [2, 3],
    );
    const t = model.config.text!;
    await compareAtBatches(
      (g, b) => {
        const out = model.buildText(g, g.input('ids', [b, t.contextLength], 'i32'), g.input('pool', [b], 'i32'));
        g.output('embeds', out.embeds);
      },
      (b) => ({
        ids: { data: ids(b, t.contextLength, t.vocabSize, b), shape: [b, t.contextLength], dtype: 'i32' },
        pool: { data: Int32Array.from({ length: b }, (_, r) => r * t.contextLength + ((5 * r + 3) % t.contextLength)), shape: [b], dtype: 'i32' },
      }),
      2,
      [2, 5],
    );
  });

  it('OWL-ViT (owlvit_tiny): the image side (boxes, embeddings, class-head inputs) and the text queries', async () => {
    const gpu = await getGpu();
    const det = await OwlVitDetector.load(gpu, fixturePath('owlvit_tiny'));
    closers.push(() => det.dispose());
    const size = det.config.vision.imageSize;
    const bytes = await compareAtBatches(
      (g, b) => {
        const out = det.buildImage(g, g.input('pixels', [b, 3, size, size]));
        for (const [name, v] of Object.entries(out)) if (v) g.output(name, v);
      },
      (b) => ({ pixels: { data: randomArray(b * 3 * size * size, 20 + b), shape: [b, 3, size, size] } }),
      1,
      [1, 2],
    );
    expect(bytes.length).toBeGreaterThan(1000);
    const t = det.config.text;
    await compareAtBatches(
      (g, b) => g.output('textEmbeds', det.buildText(g, g.input('ids', [b, t.contextLength], 'i32'), g.input('pool', [b], 'i32'))),
      (b) => ({
        ids: { data: ids(b, t.contextLength, t.vocabSize, 30 + b), shape: [b, t.contextLength], dtype: 'i32' },
        pool: { data: Int32Array.from({ length: b }, (_, r) => r * t.contextLength + t.contextLength - 1), shape: [b], dtype: 'i32' },
      }),
      4,
      [4, 3],
    );
  });
});
