// `owlvit` and `owlv2` suites: an OWL-ViT B/32-shaped detector at 768 px (577 tokens) or an OWLv2
// B/16-shaped one at 960 px (3 601 tokens, objectness head) with random weights written to a
// temporary folder, f32 and f16: image → detections latency split into its stages (ms, GFLOP/s of
// the stage's graph), the image plan's peak intermediate memory, and the latency of new queries
// against a cached image embedding (the vision tower is not run again).
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { OwlVitDetector, type OwlVitImageEmbedding } from '../../src/models/owlvit/index.js';
import { preprocessOwlVit, preprocessOwlv2 } from '../../src/models/preprocess/index.js';
import { TINY_OWLVIT, owlv2B16, vitB32, writeRandomModel } from '../../src/models/random.js';
import { matches, timeAsync, type BenchRow, type Timing } from '../harness.js';
import type { Suite, SuiteContext } from '../main.js';
import { callRow, failedRow, flopsOf, modelPeers, onceRow } from './common.js';
import { GraphBuilder } from '../../src/graph/builder.js';
import { imagePlanReport } from '../../test/util/image-plan.js';
import { randomIds } from './clip.js';

/** Text queries per detect call, as the end-to-end row: 10. */
const QUERIES = 10;

const MiB = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

export const owlvitSuite: Suite = (ctx) => owlSuite(ctx, 'owlvit');
export const owlv2Suite: Suite = (ctx) => owlSuite(ctx, 'owlv2');

async function owlSuite(ctx: SuiteContext, kind: 'owlvit' | 'owlv2') {
  const { gpu, log } = ctx;
  const config = ctx.quick ? TINY_OWLVIT : kind === 'owlv2' ? owlv2B16() : vitB32('owlvit');
  const v = config.vision!;
  const t = config.text!;
  const model = kind === 'owlv2' ? 'OWLv2' : 'OWL-ViT';
  const name = ctx.quick ? `tiny ${model} ${v.imageSize} px (quick)` : `${model} B/${v.patchSize} ${v.imageSize} px`;
  const preprocess = kind === 'owlv2' ? preprocessOwlv2 : preprocessOwlVit;
  const want = (label: string) => matches(ctx.filter, kind, label);
  const dir = mkdtempSync(join(tmpdir(), `ovgpu-bench-${kind}-`));
  // Rows that run the vision tower take one trial: a 768-px forward takes tens of seconds on a CPU
  // adapter (the image → detections row comes after the vision row, which compiled the pipelines).
  const heavy = { ...ctx.settings, trials: 1 };
  const rows: BenchRow[] = [];
  const notes: string[] = [];
  const add = (label: string, timing: Timing | number, extra: Partial<BenchRow> = {}) => {
    const row = typeof timing === 'number' ? onceRow(kind, label, timing, extra) : callRow(kind, label, timing, extra);
    rows.push(row);
    log(`${label}: ${row.wallMs.toFixed(2)} ms`);
    return row;
  };
  try {
    writeRandomModel(dir, kind, config, 1);
    const mb = (statSync(join(dir, 'model.safetensors')).size / 1e6).toFixed(0);
    // A 640×480 photo-sized input: decoding and the bicubic resize to the model's side are part of the latency.
    const image = await sharp({ create: { width: 640, height: 480, channels: 3, background: { r: 90, g: 140, b: 200 } } }).jpeg().toBuffer();
    const sizes: [number, number][] = [[480, 640]];
    const resize = kind === 'owlv2' ? 'pad to square with 0.5, gaussian + bilinear zoom' : 'bicubic resize';
    const pre = `${name}: preprocess 640×480 JPEG (sharp decode, ${resize}, normalise)`;
    if (want(pre)) add(pre, await timeAsync(() => preprocess(image, { size: v.imageSize }), ctx.settings));
    const { data: pixels, shape } = await preprocess(image, { size: v.imageSize });
    let serial = 0;
    // Fresh ids per call (a new query set each time, so the text cache does not answer).
    const freshIds = () => {
      const ids = randomIds(QUERIES, t.contextLength, t.vocabSize, 11 + serial++);
      return { inputIds: ids, idsShape: [QUERIES, t.contextLength] };
    };
    const dtypes = gpu.features.has('shader-f16') ? (['f32', 'f16'] as const) : (['f32'] as const);
    if (dtypes.length === 1) notes.push('no shader-f16 on this adapter: f32 rows only');
    for (const dtype of dtypes) {
      const label = (s: string) => `${name} ${dtype}: ${s}`;
      let det: OwlVitDetector | undefined;
      let cached: OwlVitImageEmbedding | undefined;
      try {
        const t0 = performance.now();
        det = await OwlVitDetector.load(gpu, dir, { dtype });
        const loadLabel = label(`load ${mb} MB safetensors`);
        if (want(loadLabel)) add(loadLabel, performance.now() - t0);
        const d = det;
        const query = freshIds();
        const vis = label('stage: vision tower + box head + class-head inputs (embedImage)');
        // The image graph (tower, box head, class-head inputs, objectness) and the text graph, for FLOPs and the ORT peers.
        const buildImage = (g: GraphBuilder) => Object.entries(d.buildImage(g, g.input('pixels', shape, dtype))).forEach(([k, val]) => val && g.output(k, val));
        const buildText = (g: GraphBuilder) => g.output('textEmbeds', d.buildText(g, g.input('ids', [QUERIES, t.contextLength], 'i32'), g.input('pool', [QUERIES], 'i32')));
        const report = await imagePlanReport(d);
        notes.push(
          `${dtype} image plan (1 image, ${report.tokens} tokens): peak intermediates ${MiB(report.memory.intermediateBytes)} in ${report.memory.intermediateBuffers} shared buffers (${MiB(report.memory.unsharedBytes)} unshared), largest value ${MiB(report.memory.largestBytes)}, weights ${MiB(report.memory.constantBytes)}; attention fused (no [.., L, .., L] value): ${report.squareValues.length === 0}`,
        );
        if (want(vis)) {
          const timing = await timeAsync(async () => (await d.embedImage(pixels, shape)).dispose(), heavy);
          const row = add(vis, timing, flopsOf(gpu, ctx.peak, buildImage, timing.wallMs));
          // ORT runs the identical image graph, exported (f32 only).
          if (dtype === 'f32') row.peers = await modelPeers(ctx, buildImage, { pixels: { data: pixels, shape, dtype: 'f32' } }, row.wallMs, heavy);
        }
        const e2e = label(`image → detections (${QUERIES} new text queries)`);
        if (want(e2e)) {
          // detect()'s stages, with fresh token ids (no tokenizer files for the random 49 408-id vocabulary).
          const timing = await timeAsync(async () => {
            const p = await preprocess(image, { size: v.imageSize });
            const emb = await d.embedImage(p.data, p.shape);
            const scored = await d.queryText(emb, freshIds());
            d.postProcess({ logits: scored.logits, predBoxes: emb.predBoxes, objectnessLogits: emb.objectnessLogits }, { threshold: 0.1, targetSizes: sizes });
            emb.dispose();
          }, { ...heavy, warmup: 0 });
          const both = (g: GraphBuilder) => (buildImage(g), buildText(g));
          add(e2e, timing, flopsOf(gpu, ctx.peak, both, timing.wallMs));
        }
        cached = await d.embedImage(pixels, shape);
        const emb = cached;
        const text = label(`stage: text tower, ${QUERIES} new queries (embedText)`);
        if (want(text)) {
          const timing = await timeAsync(() => { const q = freshIds(); return d.embedText(q.inputIds, q.idsShape); }, ctx.settings);
          add(text, timing, flopsOf(gpu, ctx.peak, buildText, timing.wallMs));
        }
        await d.embedText(query.inputIds, query.idsShape);
        const heads = label(`stage: class head scoring, ${QUERIES} cached queries (queryText)`);
        if (want(heads)) add(heads, await timeAsync(() => d.queryText(emb, query), ctx.settings));
        const scored = await d.queryText(emb, query);
        const post = label('stage: post-processing (threshold 0.1, boxes to 640×480)');
        if (want(post)) add(post, await timeAsync(() => d.postProcess({ logits: scored.logits, predBoxes: emb.predBoxes, objectnessLogits: emb.objectnessLogits }, { threshold: 0.1, targetSizes: sizes }), ctx.settings));
        const requery = label(`re-query a cached image embedding: ${QUERIES} new text queries → detections`);
        if (want(requery)) {
          add(
            requery,
            await timeAsync(async () => {
              const s = await d.queryText(emb, freshIds());
              d.postProcess({ logits: s.logits, predBoxes: emb.predBoxes, objectnessLogits: emb.objectnessLogits }, { threshold: 0.1, targetSizes: sizes });
            }, ctx.settings),
          );
        }
        const again = label(`re-query a cached image embedding: ${QUERIES} cached text queries → detections`);
        if (want(again)) {
          add(
            again,
            await timeAsync(async () => {
              const s = await d.queryText(emb, query);
              d.postProcess({ logits: s.logits, predBoxes: emb.predBoxes, objectnessLogits: emb.objectnessLogits }, { threshold: 0.1, targetSizes: sizes });
            }, ctx.settings),
          );
        }
      } catch (err) {
        rows.push(failedRow(kind, label('run'), err));
        log(`${label('run')}: FAILED ${(err as Error).message}`);
      } finally {
        cached?.dispose();
        det?.dispose();
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  notes.push('rows running the vision tower: a single trial after one warm-up call; the others: the median of the usual trials');
  notes.push('ms: wall time per call, each awaited (host data in, results read back); "stage" rows add up to roughly the image → detections row; random weights, so the number of detections (post-processing work) is arbitrary');
  return { rows, notes };
}
