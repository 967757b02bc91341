// CoOp's PromptLearner (KaiyangZhou/CoOp trainers/coop.py) as graph ops: learned context vectors
// spliced into each class's prompt "SOT ctx… name . EOT" (class token at the end, middle or
// front), run through CLIP's frozen text tower. The prompt embeddings are one gather from a table
// of [the prompts' own token embeddings; the context rows], so every layout is two nodes and the
// context's gradient is that gather's scatter-add. Only positions up to the last end token are
// run: the causal mask keeps later positions from reaching any end token.
import { GpuError } from '../../gpu/errors.js';
import { GraphBuilder, type Value } from '../../graph/builder.js';
import { Tensor } from '../../tensor.js';
import type { ClipModel } from '../clip/model.js';
import { poolIndices } from '../clip/towers.js';
import { InputError, checkFinite, encodeQuery, type QueryTokenizer } from '../inputs.js';
import { normal } from '../randomWeights.js';

/** Where the class name sits among the context vectors (CoOp's CLASS_TOKEN_POSITION). */
export type ClassTokenPosition = 'end' | 'middle' | 'front';

export const CLASS_TOKEN_POSITIONS: readonly ClassTokenPosition[] = ['end', 'middle', 'front'];

export interface PromptLearnerOptions {
  /** Context vectors (default 16), drawn from N(0, 0.02²) as CoOp; ignored with `init`. */
  nCtx?: number;
  /** A phrase ("a photo of a") whose token embeddings start the context; its token count is n_ctx. */
  init?: string;
  /** One context per class (CoOp's CSC) instead of one shared by all. */
  classSpecific?: boolean;
  /** Class name at the end (default), in the middle or at the front of the context. */
  position?: ClassTokenPosition;
  /** Initial context values ([nCtx, width], or [classes, nCtx, width] class-specific), e.g. from a prompt file. */
  ctx?: Float32Array;
  /** Seed of the random initialisation (default 1). */
  seed?: number;
  /** Tokenizer for the prompts; default the model's. */
  tokenizer?: QueryTokenizer;
}

/** What a graph gets from a learner: the prompts' text features and the context parameter. */
export interface PromptGraph {
  /** [classes, embed]: text features (unnormalised), as CoOp's TextEncoder. */
  features: Value;
  /** The context parameter value (for gradients and optimizerStep). */
  ctx: Value;
}

/**
 * Learned prompts for one vocabulary on a loaded CLIP: `ctx` (a GPU tensor, the trainable
 * parameter) and the fixed token embeddings of each class's prompt. `build` adds the text side to
 * a graph; `encode` runs it.
 */
export class PromptLearner {
  readonly clip: ClipModel;
  readonly names: readonly string[];
  readonly nCtx: number;
  readonly classSpecific: boolean;
  readonly position: ClassTokenPosition;
  /** The phrase the context started from, if any. */
  readonly init?: string;
  /** Positions run per prompt (up to the last end token). */
  readonly length: number;
  /** Each prompt's end-token position. */
  readonly eot: readonly number[];
  /** The context vectors: [nCtx, width] shared, [classes, nCtx, width] class-specific (f32). */
  readonly ctx: Tensor;
  /** i32 [classes · length]: the prompts' token ids (context slots hold the placeholder's). */
  readonly #ids: Tensor;
  /** i32 [classes, length]: per position, its row in [token embeddings; context rows]. */
  readonly #rows: Tensor;

  private constructor(clip: ClipModel, init: { names: string[]; nCtx: number; classSpecific: boolean; position: ClassTokenPosition; phrase?: string; length: number; eot: number[]; ctx: Tensor; ids: Tensor; rows: Tensor }) {
    this.clip = clip;
    this.names = init.names;
    this.nCtx = init.nCtx;
    this.classSpecific = init.classSpecific;
    this.position = init.position;
    this.init = init.phrase;
    this.length = init.length;
    this.eot = init.eot;
    this.ctx = init.ctx;
    this.#ids = init.ids;
    this.#rows = init.rows;
  }

  /** Tokenizes the prompts and sets up the context (random, from a phrase, or given). */
  static async create(clip: ClipModel, names: readonly string[], options: PromptLearnerOptions = {}): Promise<PromptLearner> {
    const op = 'PromptLearner';
    const text = clip.config.text;
    if (!text) throw new GpuError(op, 'the CLIP checkpoint has no text tower');
    const tokenizer = options.tokenizer ?? clip.tokenizer;
    if (!tokenizer) throw new InputError(op, 'no tokenizer: the CLIP folder has no tokenizer files; pass { tokenizer }');
    if (!Array.isArray(names) || names.length === 0 || !names.every((n) => typeof n === 'string' && n.trim() !== '')) {
      throw new InputError(op, `names must be a non-empty list of non-empty strings, got ${JSON.stringify(names)}`);
    }
    if (new Set(names).size !== names.length) throw new InputError(op, `names repeat: ${JSON.stringify(names.filter((n, i) => names.indexOf(n) !== i))}`);
    const position = options.position ?? 'end';
    if (!CLASS_TOKEN_POSITIONS.includes(position)) throw new InputError(op, `position must be one of ${CLASS_TOKEN_POSITIONS.join(', ')}, got ${JSON.stringify(position)}`);
    const classSpecific = !!options.classSpecific;
    const l = text.contextLength;
    const width = text.width;
    const eotOf = (ids: Int32Array) => poolIndices(ids, 1, l, text.eosTokenId)[0]!;
    // The words between the start and end tokens of a text.
    const tokens = (t: string) => {
      const ids = encodeQuery(op, tokenizer, t, l);
      return Array.from(ids.subarray(1, eotOf(ids)));
    };
    const phrase = options.init?.replaceAll('_', ' ').trim();
    if (options.init !== undefined && !phrase) throw new InputError(op, 'init must be a phrase such as "a photo of a", got an empty string');
    const phraseIds = phrase ? tokens(phrase) : undefined;
    const nCtx = phraseIds ? phraseIds.length : (options.nCtx ?? 16);
    if (!Number.isInteger(nCtx) || nCtx < 1) throw new InputError(op, `nCtx must be a positive integer, got ${nCtx}`);
    const prefix = phrase ?? Array(nCtx).fill('X').join(' ');
    // CoOp's prompts: "<prefix> <name>." tokenized whole; the context takes the n_ctx slots after SOT.
    const classes = names.map((raw) => {
      const name = raw.replaceAll('_', ' ');
      const ids = encodeQuery(op, tokenizer, `${prefix} ${name}.`, l);
      return { ids, eot: eotOf(ids), nameLength: tokens(name).length };
    });
    const length = Math.max(...classes.map((c) => c.eot)) + 1;
    const n = names.length;
    const ids = new Int32Array(n * length);
    const rows = new Int32Array(n * length);
    classes.forEach((c, k) => {
      ids.set(c.ids.subarray(0, length), k * length);
      const ctxRow = (j: number) => n * length + (classSpecific ? k * nCtx : 0) + j;
      const tokenRow = (t: number) => k * length + t;
      // Source order after SOT: ctx…, name…, rest; laid out per CoOp's forward().
      const name = Array.from({ length: c.nameLength }, (_, i) => tokenRow(1 + nCtx + i));
      const ctx = Array.from({ length: nCtx }, (_, j) => ctxRow(j));
      const half = Math.floor(nCtx / 2);
      const body = position === 'end' ? [...ctx, ...name] : position === 'front' ? [...name, ...ctx] : [...ctx.slice(0, half), ...name, ...ctx.slice(half)];
      const layout = [tokenRow(0), ...body];
      for (let t = layout.length; t < length; t++) layout.push(tokenRow(t));
      rows.set(layout.slice(0, length), k * length);
    });
    const ctxShape = classSpecific ? [n, nCtx, width] : [nCtx, width];
    let ctxData = options.ctx;
    if (ctxData !== undefined) {
      if (!(ctxData instanceof Float32Array) || ctxData.length !== ctxShape.reduce((a, b) => a * b, 1)) {
        throw new InputError(op, `ctx must be a Float32Array [${ctxShape.join(', ')}] (${classSpecific ? 'classes, ' : ''}nCtx, width), got ${ctxData?.length} values`);
      }
      checkFinite(op, 'ctx', ctxData);
    } else if (phraseIds) {
      const one = await tokenEmbeddings(clip, phraseIds);
      ctxData = new Float32Array(ctxShape.reduce((a, b) => a * b, 1));
      for (let r = 0; r < ctxData.length; r += one.length) ctxData.set(one, r);
    } else {
      ctxData = normal(ctxShape.reduce((a, b) => a * b, 1), 0.02, options.seed ?? 1);
    }
    const gpu = clip.gpu;
    const made: Tensor[] = [];
    try {
      for (const [data, shape, dtype] of [[ctxData, ctxShape, 'f32'], [ids, [n * length], 'i32'], [rows, [n, length], 'i32']] as const) made.push(Tensor.from(gpu, data, shape, dtype));
    } catch (err) {
      for (const t of made) t.dispose();
      throw err;
    }
    return new PromptLearner(clip, { names: [...names], nCtx, classSpecific, position, phrase, length, eot: classes.map((c) => c.eot), ctx: made[0]!, ids: made[1]!, rows: made[2]! });
  }

  /** Adds the prompts and the text tower to `g`; `ctx` becomes the parameter `name`. */
  build(g: GraphBuilder, name = 'ctx'): PromptGraph {
    const width = this.clip.config.text!.width;
    const n = this.names.length;
    const ctx = g.parameter(this.ctx, name);
    const tokens = g.reshape(this.clip.buildTokenEmbeddings(g, g.constant(this.#ids)), [n * this.length, width]);
    const table = g.concat([tokens, g.cast(g.reshape(ctx, [-1, width]), this.clip.dtype as 'f32' | 'f16')], 0, `${name}.table`);
    const embeds = g.gather(table, g.constant(this.#rows), `${name}.prompts`);
    return { features: this.clip.buildTextFromEmbeddings(g, embeds, this.eot).embeds, ctx };
  }

  /** The prompts' text features [classes, embed] (unnormalised) at the current context. */
  async encode(): Promise<Float32Array> {
    const g = new GraphBuilder();
    g.output('features', this.build(g).features);
    const plan = await g.compile(this.clip.gpu);
    try {
      return (await plan.run({})).outputs.features as Float32Array;
    } finally {
      plan.dispose();
    }
  }

  /** Frees the context and the prompt tables. */
  dispose(): void {
    for (const t of [this.ctx, this.#ids, this.#rows]) t.dispose();
  }
}

/** CLIP's token embeddings of `ids` [n] → [n, width] (f32). */
async function tokenEmbeddings(clip: ClipModel, ids: readonly number[]): Promise<Float32Array> {
  const g = new GraphBuilder();
  const t = Tensor.from(clip.gpu, ids, [ids.length], 'i32');
  g.output('rows', g.cast(clip.buildTokenEmbeddings(g, g.constant(t, { owned: true })), 'f32'));
  const plan = await g.compile(clip.gpu);
  try {
    return (await plan.run({})).outputs.rows as Float32Array;
  } finally {
    plan.dispose();
  }
}
