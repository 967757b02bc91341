// CoOp on the clip_tiny text tower (../shared/fixtures/coop, see its README): the text tower run
// from prompt embeddings, and the loss and its gradient with respect to the context vectors.
import { readFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { ClipModel, GraphBuilder, InputError } from '../../src/index.js';
import { useGpu } from '../util/gpu.js';
import { expectClose } from '../util/check.js';
import { fixturePath } from '../util/fixtures.js';
import { fixtureTensors } from '../util/grad.js';

const getGpu = useGpu();
const coop = fixtureTensors('coop', 'coop.safetensors');
const f32 = (name: string) => Float32Array.from(coop(name).data);
const manifest = () => JSON.parse(readFileSync(fixturePath('coop', 'manifest.json'), 'utf8')) as { n_ctx: number; n_cls: number; batch: number };

let clip: Promise<ClipModel> | undefined;
const loadClip = async () => (clip ??= getGpu().then((gpu) => ClipModel.load(gpu, fixturePath('clip_tiny', 'weights_openai.safetensors'), { heads: { vision: 2, text: 4 } })));
afterAll(async () => (await clip)?.dispose());

/** Each row's end token: the first argmax of the ids, as CoOp's TextEncoder. */
function eotPositions(): number[] {
  const ids = coop('token_ids_i32');
  const [n, l] = ids.shape as [number, number];
  return Array.from({ length: n }, (_, r) => {
    let best = 0;
    for (let t = 1; t < l; t++) if (ids.data[r * l + t]! > ids.data[r * l + best]!) best = t;
    return best;
  });
}

describe('ClipModel text tower from embeddings (CoOp fixture)', () => {
  it('encodeTextEmbeddings(prompt_embeds_init) equals text_features_init within 1e-4 of scale', async () => {
    const model = await loadClip();
    const got = await model.encodeTextEmbeddings(f32('prompt_embeds_init_f64'), eotPositions());
    const r = expectClose(got, coop('text_features_init_f64').data, { scaleTol: 1e-4, label: 'text_features_init' });
    console.log(r.message);
  });

  it('buildTextFromEmbeddings: loss_init, logits_init and grad_ctx_init through the graph within 1e-4 of scale', async () => {
    const model = await loadClip();
    const { n_ctx: nCtx, n_cls: nCls, batch } = manifest();
    const [, l, d] = coop('prompt_embeds_init_f64').shape as [number, number, number];
    const g = new GraphBuilder();
    const embeds = g.input('embeds', [nCls, l, d]);
    const text = model.buildTextFromEmbeddings(g, embeds, eotPositions()).embeds;
    const logits = g.scale(g.matmul(g.input('image', [batch, model.config.embedDim]), g.l2Normalize(text, 0), { transposeB: true }), Math.exp(model.logitScale));
    const loss = g.crossEntropy(logits, g.input('labels', [batch], 'i32'));
    const [dEmbeds] = g.gradients(loss, [embeds]);
    g.output('logits', logits);
    g.output('loss', loss);
    g.output('dEmbeds', dEmbeds!);
    const plan = await g.compile(model.gpu);
    const { outputs } = await plan.run({ embeds: f32('prompt_embeds_init_f64'), image: f32('image_features'), labels: coop('labels_i32').data as Int32Array });
    plan.dispose();
    // The context is shared by every class: its gradient is the sum over the prompts' context rows 1..n_ctx.
    const grad = new Float64Array(nCtx * d);
    const de = outputs.dEmbeds as Float32Array;
    for (let c = 0; c < nCls; c++) for (let j = 0; j < nCtx * d; j++) grad[j]! += de[(c * l + 1) * d + j]!;
    for (const [got, ref] of [[outputs.logits!, 'logits_init_f64'], [outputs.loss!, 'loss_init_f64'], [grad, 'grad_ctx_init_f64']] as const) {
      console.log(expectClose(got, coop(ref).data, { scaleTol: 1e-4, label: ref }).message);
    }
    // Nothing but the context and class-name rows before each end token moves the loss (causal mask).
    const eot = eotPositions();
    for (let c = 0; c < nCls; c++) for (let t = eot[c]! + 1; t < l; t++) for (let k = 0; k < d; k++) expect(de[(c * l + t) * d + k]).toBe(0);
  });

  it('takes the end positions as a graph value of flat indices too, and refuses bad input naming it', async () => {
    const model = await loadClip();
    const [n, l, d] = coop('prompt_embeds_init_f64').shape as [number, number, number];
    const g = new GraphBuilder();
    const out = model.buildTextFromEmbeddings(g, g.input('embeds', [n, l, d]), g.input('pool', [n], 'i32'));
    g.output('text', out.embeds);
    const plan = await g.compile(model.gpu);
    const pool = Int32Array.from(eotPositions(), (t, r) => r * l + t);
    const { outputs } = await plan.run({ embeds: f32('prompt_embeds_init_f64'), pool });
    plan.dispose();
    expectClose(outputs.text!, coop('text_features_init_f64').data, { scaleTol: 1e-4, label: 'text_features_init (flat pool value)' });

    const embeds = f32('prompt_embeds_init_f64');
    await expect(model.encodeTextEmbeddings(embeds, [1, 2])).rejects.toThrow(/embeds must be \[B, L, 48\] with B = 2.*not B·L·48/);
    await expect(model.encodeTextEmbeddings(embeds, [1, 2, 3, 16, 0])).rejects.toThrow(/eotIndex\[3\] is 16: each must be an integer position in \[0, 16\)/);
    await expect(model.encodeTextEmbeddings(new Float32Array(17 * 48), [0])).rejects.toThrow(InputError);
    await expect(model.encodeTextEmbeddings(Float32Array.from(embeds, (v, i) => (i === 7 ? NaN : v)), [1, 1, 1, 1, 1])).rejects.toThrow(/embeds holds NaN at index 7/);
    expect(await model.encodeTextEmbeddings(new Float32Array(0), [])).toHaveLength(0);
    const h = new GraphBuilder();
    expect(() => model.buildTextFromEmbeddings(h, h.input('e', [2, 16, 32]), [1, 1])).toThrow(/embeds must be \[B, L, 48\] with 1 ≤ L ≤ 16, got value #0 \(f32 \[2, 16, 32\]\)/);
    expect(() => model.buildTextFromEmbeddings(h, h.input('f', [2, 4, 48]), h.input('p', [3], 'i32'))).toThrow(/eotIndex must be i32 \[2\]/);
  });
});
