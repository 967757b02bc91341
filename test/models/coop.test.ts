// CoOp on the clip_tiny text tower (../shared/fixtures/coop, see its README): the text tower run
// from prompt embeddings, and the loss and its gradient with respect to the context vectors.
import { readFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { Adam, ClipModel, GraphBuilder, InputError, PromptLearner, PromptObjective, Sgd, type PromptTokenizer } from '../../src/index.js';
import { requireF16, useGpu } from '../util/gpu.js';
import { expectClose } from '../util/check.js';
import { fixturePath } from '../util/fixtures.js';
import { fixtureTensors } from '../util/grad.js';

const getGpu = useGpu();
const coop = fixtureTensors('coop', 'coop.safetensors');
const f32 = (name: string) => Float32Array.from(coop(name).data);
interface Manifest {
  n_ctx: number;
  n_cls: number;
  batch: number;
  classnames: string[];
  class_name_token_ids: Record<string, number[]>;
  x_token_id: number;
  dot_token_id: number;
  sot: number;
  eot: number;
}
const manifest = () => JSON.parse(readFileSync(fixturePath('coop', 'manifest.json'), 'utf8')) as Manifest;

/** The fixture's tokenization as a tokenizer: words (and '.') to the manifest's ids, SOT … EOT, zeros. */
function fixtureTokenizer(): PromptTokenizer {
  const m = manifest();
  const words = new Map<string, number[]>([['X', [m.x_token_id]], ['.', [m.dot_token_id]], ...Object.entries(m.class_name_token_ids)]);
  return {
    encode(text, options = {}) {
      const ids = [m.sot, ...text.replace(/\./g, ' . ').split(/\s+/).filter(Boolean).flatMap((w) => words.get(w) ?? [...'?'].map(() => { throw new Error(`fixture tokenizer: no ids for ${w}`); })), m.eot];
      const row = new Int32Array(options.contextLength ?? 16);
      if (ids.length > row.length) throw new Error(`${text} is too long`);
      row.set(ids);
      return row;
    },
  };
}

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

describe('PromptLearner and PromptObjective (CoOp fixture: generic context, class token at the end)', () => {
  it('tokenizes the prompts as CoOp and encodes them as text_features_init', async () => {
    const model = await loadClip();
    const m = manifest();
    const learner = await PromptLearner.create(model, m.classnames, { nCtx: m.n_ctx, ctx: f32('ctx_init'), tokenizer: fixtureTokenizer() });
    expect(learner.eot).toEqual(eotPositions());
    expect(learner.length).toBe(Math.max(...eotPositions()) + 1);
    console.log(expectClose(await learner.encode(), coop('text_features_init_f64').data, { scaleTol: 1e-4, label: 'PromptLearner text features' }).message);
    learner.dispose();
  });

  it('starts the context from a phrase: "X X X X" gives the token embeddings, so CLIP.encode_text of the prompt ids', async () => {
    const model = await loadClip();
    const m = manifest();
    const learner = await PromptLearner.create(model, m.classnames, { init: 'X X X X', tokenizer: fixtureTokenizer() });
    expect(learner.nCtx).toBe(4);
    const ids = coop('token_ids_i32').data as Int32Array;
    expectClose(await learner.encode(), await model.encodeText(ids, [m.n_cls, 16]), { scaleTol: 1e-5, label: 'phrase-initialised prompts' });
    learner.dispose();
    const tokenizer = fixtureTokenizer();
    await expect(PromptLearner.create(model, [], { tokenizer })).rejects.toThrow(/names must be a non-empty list/);
    await expect(PromptLearner.create(model, ['class0', 'class0'], { tokenizer })).rejects.toThrow(/names repeat: \["class0"\]/);
    await expect(PromptLearner.create(model, ['class0'], { tokenizer, nCtx: 0 })).rejects.toThrow(/nCtx must be a positive integer, got 0/);
    await expect(PromptLearner.create(model, ['class0'], { tokenizer, position: 'left' as 'end' })).rejects.toThrow(/position must be one of end, middle, front/);
    await expect(PromptLearner.create(model, ['class0'], { tokenizer, nCtx: 4, ctx: new Float32Array(3) })).rejects.toThrow(/ctx must be a Float32Array \[4, 48\]/);
    await expect(PromptLearner.create(model, ['class0'], { tokenizer, nCtx: 14 })).rejects.toThrow(/PromptLearner: query "X X X X X X X X X X X X X X class0.".*too long/);
    await expect(PromptLearner.create(model, ['class0'])).rejects.toThrow(/no tokenizer/);
  });

  it('attribute loss: masked, positive-weighted binary cross-entropy equals a float64 host computation', async () => {
    const model = await loadClip();
    const m = manifest();
    const tokenizer = fixtureTokenizer();
    const categories = await PromptLearner.create(model, m.classnames, { nCtx: m.n_ctx, ctx: f32('ctx_init'), tokenizer });
    const attributes = await PromptLearner.create(model, m.classnames.slice(1), { nCtx: 2, position: 'front', tokenizer, seed: 9 });
    const objective = new PromptObjective({ categories, attributes, positiveWeight: 2.5, attributeWeight: 0.5 });
    const image = f32('image_features');
    const na = attributes.names.length;
    const labels = Int8Array.from({ length: m.batch * na }, (_, i) => [1, 0, -1, 0, 1, 0, 0][i % 7]!);
    const cats = Int32Array.from(coop('labels_i32').data, (c, i) => (i === 3 ? -1 : c));
    const r = await objective.evaluate(image, { categories: cats, attributes: labels });
    // Host: logits = exp(logitScale)·cos from the learners' own text features; BCE over the known labels.
    const text = await attributes.encode();
    const e = model.config.embedDim;
    const norm = (x: Float32Array, row: number) => Math.hypot(...x.subarray(row * e, (row + 1) * e));
    let sum = 0;
    let known = 0;
    for (let b = 0; b < m.batch; b++) for (let a = 0; a < na; a++) {
      const t = labels[b * na + a]!;
      if (t < 0) continue;
      let dot = 0;
      for (let k = 0; k < e; k++) dot += image[b * e + k]! * text[a * e + k]!;
      const x = (Math.exp(model.logitScale) * dot) / (norm(image, b) * norm(text, a));
      const logSig = -Math.log1p(Math.exp(-x));
      const logOneMinus = -x + logSig;
      sum -= t === 1 ? 2.5 * logSig : logOneMinus;
      known++;
    }
    expect(r.attributeLoss).toBeCloseTo(sum / known, 4);
    // The category loss over the 7 labelled regions, from the logits it returned.
    let ce = 0;
    cats.forEach((c, b) => {
      if (c < 0) return;
      const row = Array.from(r.categoryLogits!.subarray(b * m.n_cls, (b + 1) * m.n_cls));
      const mx = Math.max(...row);
      ce += mx + Math.log(row.reduce((s2, v) => s2 + Math.exp(v - mx), 0)) - row[c]!;
    });
    expect(r.categoryLoss).toBeCloseTo(ce / 7, 4);
    expect(r.loss).toBeCloseTo(r.categoryLoss + 0.5 * r.attributeLoss, 5);
    await expect(objective.step(image, { categories: new Int32Array(8).fill(-1), attributes: new Int8Array(8 * na).fill(-1) })).rejects.toThrow(/the batch has no labels/);
    await expect(objective.step(image, { categories: Int32Array.from([0, 1, 2, 3, 4, 5, 0, 0]) })).rejects.toThrow(/labels\.categories\[5\] is 5: expected a category index in \[0, 5\) or -1/);
    await expect(objective.step(image, { attributes: new Int8Array(3) })).rejects.toThrow(/labels\.attributes must be an Int8Array or Int32Array \[8, 4\]/);
    await expect(objective.step(new Float32Array(7), {})).rejects.toThrow(/regions must be a non-empty Float32Array \[B, 32\]/);
    objective.dispose();
    categories.dispose();
    attributes.dispose();
  });

  it('runs on f16 weights: the context stays f32, features within 2e-2 of the f32 model, a step lowers the loss', async (ctx) => {
    const model = await loadClip();
    requireF16(ctx, model.gpu);
    const m = manifest();
    const half = await ClipModel.load(model.gpu, fixturePath('clip_tiny', 'weights_openai.safetensors'), { heads: { vision: 2, text: 4 }, dtype: 'f16' });
    const learner = await PromptLearner.create(half, m.classnames, { nCtx: m.n_ctx, ctx: f32('ctx_init'), tokenizer: fixtureTokenizer() });
    expect(learner.ctx.dtype).toBe('f32');
    expectClose(await learner.encode(), coop('text_features_init_f64').data, { scaleTol: 2e-2, label: 'f16 text features' });
    const objective = new PromptObjective({ categories: learner, optimizer: (p) => new Sgd(half.gpu, p, { lr: 0.1, momentum: 0.9 }) });
    const labels = { categories: coop('labels_i32').data as Int32Array };
    const first = await objective.step(f32('image_features'), labels);
    expect(first.loss).toBeCloseTo(coop('loss_init_f64').data[0]!, 2);
    await objective.step(f32('image_features'), labels);
    expect((await objective.evaluate(f32('image_features'), labels)).loss).toBeLessThan(first.loss);
    objective.dispose();
    learner.dispose();
    half.dispose();
  });

  for (const opt of ['adam', 'sgd'] as const) {
    it(`3 ${opt} steps, one submit each: loss before each step and ctx after it (≤ 1e-5 relative)`, async () => {
      const model = await loadClip();
      const gpu = model.gpu;
      const m = manifest();
      const learner = await PromptLearner.create(model, m.classnames, { nCtx: m.n_ctx, ctx: f32('ctx_init'), tokenizer: fixtureTokenizer() });
      const objective = new PromptObjective({
        categories: learner,
        optimizer: (params) => (opt === 'adam' ? new Adam(gpu, params, { lr: 2e-3 }) : new Sgd(gpu, params, { lr: 0.1, momentum: 0.9 })),
      });
      const image = f32('image_features');
      const labels = coop('labels_i32').data as Int32Array;
      await objective.evaluate(image, { categories: labels }); // compiles the forward plan; the steps compile theirs on first use
      for (let k = 1; k <= 3; k++) {
        const submits = gpu.stats().submits;
        const r = await objective.step(image, { categories: labels });
        if (k > 1) expect(gpu.stats().submits).toBe(submits + 1);
        console.log(expectClose([r.loss], coop(`${opt}_loss_before_step${k}_f64`).data, { scaleTol: 1e-5, label: `${opt} loss before step ${k}` }).message);
        const ctx = await learner.ctx.read();
        console.log(expectClose(ctx, coop(`${opt}_ctx_after_step${k}_f64`).data, { scaleTol: 1e-5, label: `${opt} ctx after step ${k}` }).message);
      }
      const after = await objective.evaluate(image, { categories: labels });
      console.log(expectClose([after.loss], coop(`${opt}_loss_after_step3_f64`).data, { scaleTol: 1e-5, label: `${opt} loss after step 3` }).message);
      objective.dispose();
      learner.dispose();
    });
  }
});

describe('PromptLearner layouts (class token end / middle / front, shared or class-specific) against CoOp forward() on the host', () => {
  /** CoOp's prompts [n_cls, 16, 48] from its token_prefix / token_suffix buffers and a context. */
  function coopPrompts(ctx: Float32Array, classSpecific: boolean, position: 'end' | 'middle' | 'front'): { embeds: Float32Array; ctxRow: (c: number, t: number) => number } {
    const m = manifest();
    const [, l, d] = coop('prompt_embeds_init_f64').shape as [number, number, number];
    const prefix = f32('token_prefix');
    const suffix = f32('token_suffix');
    const s = l - 1 - m.n_ctx;
    const embeds = new Float32Array(m.n_cls * l * d);
    // For each output position, the context row it holds (−1: a fixed token).
    const where: number[][] = [];
    for (let c = 0; c < m.n_cls; c++) {
      const nl = m.class_name_token_ids[m.classnames[c]!]!.length;
      const half = Math.floor(m.n_ctx / 2);
      const ctxRows = Array.from({ length: m.n_ctx }, (_, j) => ({ ctx: (classSpecific ? c * m.n_ctx : 0) + j }));
      const suf = Array.from({ length: s }, (_, i) => ({ suffix: i }));
      const order = position === 'end' ? [...ctxRows, ...suf] : position === 'front' ? [...suf.slice(0, nl), ...ctxRows, ...suf.slice(nl)] : [...ctxRows.slice(0, half), ...suf.slice(0, nl), ...ctxRows.slice(half), ...suf.slice(nl)];
      embeds.set(prefix.subarray(c * d, (c + 1) * d), c * l * d);
      where.push([-1]);
      order.forEach((o, i) => {
        const src = 'ctx' in o ? ctx.subarray(o.ctx * d, (o.ctx + 1) * d) : suffix.subarray((c * s + o.suffix) * d, (c * s + o.suffix + 1) * d);
        embeds.set(src, (c * l + 1 + i) * d);
        where[c]!.push('ctx' in o ? o.ctx : -1);
      });
    }
    return { embeds, ctxRow: (c, t) => where[c]![t]! };
  }

  for (const classSpecific of [false, true]) {
    for (const position of ['end', 'middle', 'front'] as const) {
      it(`${classSpecific ? 'class-specific' : 'shared'} context, class token ${position}: text features and the context gradient`, async () => {
        const model = await loadClip();
        const m = manifest();
        const [, l, d] = coop('prompt_embeds_init_f64').shape as [number, number, number];
        const rows = (classSpecific ? m.n_cls : 1) * m.n_ctx;
        const ctx = Float32Array.from({ length: rows * d }, (_, i) => 0.05 * Math.sin(i * 0.37 + 1));
        const { embeds, ctxRow } = coopPrompts(ctx, classSpecific, position);
        const learner = await PromptLearner.create(model, m.classnames, { nCtx: m.n_ctx, ctx, classSpecific, position, tokenizer: fixtureTokenizer() });
        const eot = eotPositions();
        expectClose(await learner.encode(), await model.encodeTextEmbeddings(embeds, eot), { scaleTol: 1e-5, label: 'text features' });

        // Reference gradient: d loss / d embeds through the verified tower, gathered back into the context rows.
        const g = new GraphBuilder();
        const input = g.input('embeds', [m.n_cls, l, d]);
        const text = model.buildTextFromEmbeddings(g, input, eot).embeds;
        const loss = g.crossEntropy(g.scale(g.matmul(g.input('image', [m.batch, model.config.embedDim]), g.l2Normalize(text, 0), { transposeB: true }), Math.exp(model.logitScale)), g.input('labels', [m.batch], 'i32'));
        g.output('d', g.gradients(loss, [input])[0]!);
        const plan = await g.compile(model.gpu);
        const image = f32('image_features');
        const labels = coop('labels_i32').data as Int32Array;
        const de = (await plan.run({ embeds, image, labels })).outputs.d as Float32Array;
        plan.dispose();
        const want = new Float64Array(rows * d);
        for (let c = 0; c < m.n_cls; c++) for (let t = 0; t < l; t++) {
          const r = ctxRow(c, t);
          if (r >= 0) for (let k = 0; k < d; k++) want[r * d + k]! += de[(c * l + t) * d + k]!;
        }
        // SGD with lr 1: the step subtracts exactly the gradient.
        const objective = new PromptObjective({ categories: learner, optimizer: (p) => new Sgd(model.gpu, p, { lr: 1 }) });
        await objective.step(image, { categories: labels });
        const after = await learner.ctx.read();
        expectClose(Float64Array.from(ctx, (v, i) => v - after[i]!), want, { scaleTol: 1e-4, label: 'context gradient' });
        objective.dispose();
        learner.dispose();
      });
    }
  }
});
