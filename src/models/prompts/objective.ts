// The prompt-learning objective on fixed region (or image) embeddings, as one graph per batch size:
// CLIP logits exp(logitScale) · cos(region, prompt features) for categories and attributes;
// softmax cross-entropy over categories and sigmoid binary cross-entropy over the annotated
// attributes, both written as −Σ w ⊙ logSoftmax so that unlabelled boxes, unknown attributes (−1)
// and a positive weight are just weights (log σ(x) and log(1 − σ(x)) are the log-softmax of
// [x, 0]); gradients to the context vectors and the optimizer update in the same plan, so a
// training step is one submit.
import type { GraphBuilder, Value } from '../../graph/builder.js';
import { PlanCache } from '../../graph/cache.js';
import type { GraphInput } from '../../graph/plan.js';
import { Adam, type Optimizer } from '../../optim.js';
import type { Tensor } from '../../tensor.js';
import type { ClipModel } from '../clip/model.js';
import { InputError, checkFinite } from '../inputs.js';
import type { PromptLearner } from './learner.js';

/** Labels of a batch of regions. */
export interface PromptLabels {
  /** [B] category index per region; −1: none (the region adds no category loss). */
  categories?: Int32Array;
  /** [B, attributes] row-major: 1 present, 0 absent, −1 unknown (ignored, as OVAD / VAW). */
  attributes?: Int8Array | Int32Array;
}

export interface PromptObjectiveOptions {
  categories?: PromptLearner;
  attributes?: PromptLearner;
  /** The optimizer over the learners' context tensors (default Adam, lr 2e-3 as CoOp). */
  optimizer?: (params: Tensor[]) => Optimizer;
  /** Factor of the attribute loss in the total (default 1). */
  attributeWeight?: number;
  /** Weight of positive attribute labels (PyTorch's pos_weight; default 1). */
  positiveWeight?: number;
}

export interface PromptStepResult {
  /** categoryLoss + attributeWeight · attributeLoss, before the update. */
  loss: number;
  /** Mean cross-entropy over the regions with a category (0 when none has one). */
  categoryLoss: number;
  /** Mean (positive-weighted) binary cross-entropy over the known attribute labels (0 when none). */
  attributeLoss: number;
  /** [B, categories] logits. */
  categoryLogits?: Float32Array;
  /** [B, attributes] logits. */
  attributeLogits?: Float32Array;
}

/**
 * Trains the context vectors of a category and/or an attribute PromptLearner on fixed region
 * embeddings: `step` runs forward, backward and the update in one submit; `evaluate` the forward.
 */
export class PromptObjective {
  readonly clip: ClipModel;
  readonly categories?: PromptLearner;
  readonly attributes?: PromptLearner;
  readonly optimizer: Optimizer;
  readonly attributeWeight: number;
  readonly positiveWeight: number;
  readonly #plans: PlanCache;

  constructor(options: PromptObjectiveOptions) {
    const op = 'PromptObjective';
    const { categories, attributes } = options;
    if (!categories && !attributes) throw new InputError(op, 'give a categories or an attributes PromptLearner (or both)');
    if (categories && attributes && categories.clip !== attributes.clip) throw new InputError(op, 'the categories and attributes learners must share one ClipModel');
    this.clip = (categories ?? attributes)!.clip;
    const weight = (name: string, v: number | undefined) => {
      if (v !== undefined && !(Number.isFinite(v) && v >= 0)) throw new InputError(op, `${name} must be a finite number ≥ 0, got ${v}`);
      return v ?? 1;
    };
    this.attributeWeight = weight('attributeWeight', options.attributeWeight);
    this.positiveWeight = weight('positiveWeight', options.positiveWeight);
    this.categories = categories;
    this.attributes = attributes;
    const params = [categories?.ctx, attributes?.ctx].filter((t): t is Tensor => !!t);
    this.optimizer = options.optimizer ? options.optimizer(params) : new Adam(this.clip.gpu, params, { lr: 2e-3 });
    this.#plans = new PlanCache(this.clip.gpu, op);
  }

  /** One training step on a batch: loss and logits before the update, then the update (one submit). */
  step(regions: Float32Array, labels: PromptLabels): Promise<PromptStepResult> {
    return this.#run('PromptObjective.step', true, regions, labels);
  }

  /** The losses and logits on a batch without updating anything. */
  evaluate(regions: Float32Array, labels: PromptLabels = {}): Promise<PromptStepResult> {
    return this.#run('PromptObjective.evaluate', false, regions, labels);
  }

  async #run(op: string, train: boolean, regions: Float32Array, labels: PromptLabels): Promise<PromptStepResult> {
    const e = this.clip.config.embedDim;
    if (!(regions instanceof Float32Array) || regions.length === 0 || regions.length % e !== 0) {
      throw new InputError(op, `regions must be a non-empty Float32Array [B, ${e}], got ${regions?.length} values`);
    }
    checkFinite(op, 'regions', regions);
    const b = regions.length / e;
    const nc = this.categories?.names.length ?? 0;
    const na = this.attributes?.names.length ?? 0;
    const inputs: Record<string, GraphInput> = { regions: unitRows(regions, e) };
    const counts = { categories: 0, attributes: 0 };
    if (nc) inputs.categoryWeights = categoryWeights(op, labels.categories, b, nc, counts);
    else if (labels.categories) throw new InputError(op, 'labels.categories given, but there is no categories learner');
    if (na) inputs.attributeWeights = attributeWeights(op, labels.attributes, b, na, this.positiveWeight, counts);
    else if (labels.attributes) throw new InputError(op, 'labels.attributes given, but there is no attributes learner');
    if (train && counts.categories + counts.attributes === 0) throw new InputError(op, 'the batch has no labels: no region has a category or a known attribute');
    const outputs = ['loss', ...(nc ? ['categoryLoss', 'categoryLogits'] : []), ...(na ? ['attributeLoss', 'attributeLogits'] : [])];
    const r = await this.#plans.use(`${train}:${b}`, (g) => this.#build(g, b, train), (plan) => plan.run(inputs, { outputs }));
    const o = r.outputs as Record<string, Float32Array>;
    return {
      loss: o.loss![0]!,
      categoryLoss: o.categoryLoss?.[0] ?? 0,
      attributeLoss: o.attributeLoss?.[0] ?? 0,
      categoryLogits: o.categoryLogits,
      attributeLogits: o.attributeLogits,
    };
  }

  #build(g: GraphBuilder, b: number, train: boolean): void {
    const e = this.clip.config.embedDim;
    const regions = g.input('regions', [b, e]);
    const scale = Math.exp(this.clip.logitScale);
    const logitsOf = (learner: PromptLearner, name: string) => {
      const { features, ctx } = learner.build(g, `${name}.ctx`);
      const text = g.l2Normalize(g.cast(features, 'f32'), 0, `${name}.normalize`);
      return { ctx, logits: g.scale(g.matmul(regions, text, { transposeB: true }, `${name}.cosine`), scale, `${name}.logits`) };
    };
    // −Σ w ⊙ logSoftmax(x): the weights carry the labels, the mask and the normalisation.
    const weighted = (x: Value, w: string, name: string) => g.scale(g.sum(g.mul(g.logSoftmax(x, `${name}.logSoftmax`), g.input(w, x.shape)), x.shape.map((_, i) => i)), -1, name);
    const ctxs: Value[] = [];
    const losses: Value[] = [];
    if (this.categories) {
      const { ctx, logits } = logitsOf(this.categories, 'categories');
      const loss = weighted(logits, 'categoryWeights', 'categoryLoss');
      ctxs.push(ctx);
      losses.push(loss);
      g.output('categoryLogits', logits);
      g.output('categoryLoss', loss);
    }
    if (this.attributes) {
      const { ctx, logits } = logitsOf(this.attributes, 'attributes');
      const na = this.attributes.names.length;
      const pair = g.concat([g.reshape(logits, [b, na, 1]), g.fill([b, na, 1], 0)], 2, 'attributes.pair');
      const loss = weighted(pair, 'attributeWeights', 'attributeLoss');
      ctxs.push(ctx);
      losses.push(this.attributeWeight === 1 ? loss : g.scale(loss, this.attributeWeight));
      g.output('attributeLogits', logits);
      g.output('attributeLoss', loss);
    }
    const loss = losses.length === 1 ? losses[0]! : g.add(losses[0]!, losses[1]!, 'loss');
    g.output('loss', loss);
    if (train) g.optimizerStep(this.optimizer, ctxs, g.gradients(loss, ctxs));
  }

  /** Frees the plans and the optimizer state (not the learners). */
  dispose(): void {
    this.#plans.dispose();
    this.optimizer.dispose();
  }
}

/** Rows scaled to unit length (zero rows stay zero). */
function unitRows(x: Float32Array, d: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let r = 0; r < x.length / d; r++) {
    const row = x.subarray(r * d, (r + 1) * d);
    const norm = Math.hypot(...row);
    if (norm > 0) for (let k = 0; k < d; k++) out[r * d + k] = row[k]! / norm;
  }
  return out;
}

/** One-hot rows over the labelled regions, divided by their count (mean cross-entropy). */
function categoryWeights(op: string, labels: Int32Array | undefined, b: number, n: number, counts: { categories: number }): Float32Array {
  const w = new Float32Array(b * n);
  if (!labels) return w;
  if (!(labels instanceof Int32Array) || labels.length !== b) throw new InputError(op, `labels.categories must be an Int32Array of ${b} (one per region), got ${labels?.length}`);
  labels.forEach((c, r) => {
    if (!(Number.isInteger(c) && c >= -1 && c < n)) throw new InputError(op, `labels.categories[${r}] is ${c}: expected a category index in [0, ${n}) or -1 (none)`);
  });
  counts.categories = labels.filter((c) => c >= 0).length;
  labels.forEach((c, r) => c >= 0 && (w[r * n + c] = 1 / counts.categories));
  return w;
}

/** [B, A, 2] weights of (log σ(x), log(1 − σ(x))): positives and negatives over the known labels. */
function attributeWeights(op: string, labels: Int8Array | Int32Array | undefined, b: number, n: number, positive: number, counts: { attributes: number }): Float32Array {
  const w = new Float32Array(b * n * 2);
  if (!labels) return w;
  if (!(labels instanceof Int8Array || labels instanceof Int32Array) || labels.length !== b * n) {
    throw new InputError(op, `labels.attributes must be an Int8Array or Int32Array [${b}, ${n}] (regions × attributes), got ${labels?.length} values`);
  }
  labels.forEach((v, i) => {
    if (v !== 1 && v !== 0 && v !== -1) throw new InputError(op, `labels.attributes[${Math.floor(i / n)}, ${i % n}] is ${v}: expected 1, 0 or -1 (unknown)`);
  });
  counts.attributes = labels.filter((v) => v >= 0).length;
  labels.forEach((v, i) => {
    if (v === 1) w[2 * i] = positive / counts.attributes;
    else if (v === 0) w[2 * i + 1] = 1 / counts.attributes;
  });
  return w;
}
