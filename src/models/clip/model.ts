import type { Gpu } from '../../gpu/gpu.js';
import { GpuError } from '../../gpu/errors.js';
import type { DType, ReadArray } from '../../dtype.js';
import { bucket, firstRows, padRows } from '../buckets.js';
import { GraphBuilder, Value } from '../../graph/builder.js';
import type { GraphPlan } from '../../graph/plan.js';
import { PlanCache, type PlanCacheLimits } from '../../graph/cache.js';
import { SafetensorsError } from '../../io/safetensors.js';
import { hasFile, locate, readFile, type Location, type ModelSource } from '../../io/source.js';
import { Tensor, maxTensorBytes } from '../../tensor.js';
import { checkClipConfig, clipConfigFromHf, clipConfigFromOpenAi, clipOrigin, hfOrigin, type ClipConfig, type ConfigOrigin } from './config.js';
import { detectConvention, type Convention } from './names.js';
import { loadError, planTower, readLogitScale, uploadPlanned, type LoadContext, type WeightReader } from './weights.js';
import { poolIndices, textFromEmbeddings, textTower, visionTower, type TowerOutputs, type Weights } from './towers.js';
import type { VisionConfig } from './config.js';
import { openWeightReader } from './reader.js';
import { ClipTokenizer, TOKENIZER_FILES } from '../tokenizer/index.js';
import { preprocessClipBatch, preprocessClipResized, type ImageInput } from '../preprocess/index.js';
import { resizePositionEmbedding, type PositionEmbeddingOptions } from './position.js';
import { ensembleTextFeatures, gradCamGraph, scaledCam, type GradCamOptions, type GradCamResult } from './gradcam.js';
import { InputError, checkFinite, checkInput, encodeQuery } from '../inputs.js';
import { ModelLifetime } from '../lifetime.js';

export interface ClipLoadOptions {
  /** A ClipConfig, or an HF config.json object; default: the folder's config.json, else inferred (OpenAI). */
  config?: ClipConfig | Record<string, unknown>;
  /** Weight and activation storage; f16 needs shader-f16 (compute accumulates in f32). */
  dtype?: 'f32' | 'f16';
  /** Heads for configs inferred from OpenAI names (default width / 64, as OpenAI's build_model). */
  heads?: { vision?: number; text?: number };
  /** Checkpoint name convention; default: detected from the names. */
  convention?: Convention;
  /** Tokenizer for string inputs (a ClipTokenizer, or where its files are); default: the folder's tokenizer files. */
  tokenizer?: ClipTokenizer | ModelSource;
  /** Accept weights holding NaN or ±Inf (default: the load fails, naming the tensor). */
  allowNonFinite?: boolean;
  /** Bounds on the compiled plans kept (per tower and batch-size bucket); see PlanCache. */
  plans?: PlanCacheLimits;
}

export interface ImageRunOptions {
  /** Also return the dense token map [B, T, embed] (ln_post on every token, then the projection). */
  dense?: boolean;
  /** Also return named intermediates (ln_pre_out, block{i}_out, tokens_pre_ln_post, …). */
  intermediates?: boolean;
  /**
   * The position embedding for the pixels' grid (see visionPositionEmbedding). Default: the
   * checkpoint's at the native size; at other sizes resized bilinearly and rounded to fp16, as CaR.
   */
  position?: PositionEmbeddingOptions;
}

export interface TowerResult {
  embeds: Float32Array;
  dense?: Float32Array;
  intermediates?: Record<string, Float32Array>;
}

function isClipConfig(c: unknown): c is ClipConfig {
  return typeof c === 'object' && c !== null && 'embedDim' in c;
}

/**
 * CLIP image and text towers from a local checkpoint (Hugging Face folder or OpenAI-named
 * .safetensors), run on the graph executor. Plans are compiled per batch-size bucket (a power of
 * two, zero-padded) and cached.
 */
export class ClipModel {
  readonly gpu: Gpu;
  readonly config: ClipConfig;
  readonly dtype: DType;
  readonly convention: Convention;
  /** log of the logit scale as stored in the checkpoint (logits use exp of it). */
  readonly logitScale: number;
  /** Checkpoint tensors that no part of the model used. */
  readonly unusedWeights: readonly string[];
  readonly weights: { vision?: ReadonlyMap<string, Tensor>; text?: ReadonlyMap<string, Tensor> };
  /** Tokenizes string inputs of encodeText, when the folder has tokenizer files (or one was given). */
  readonly tokenizer?: ClipTokenizer;
  readonly #plans: PlanCache;
  readonly #life: ModelLifetime;
  /** Resized position embeddings by grid and options (see visionPositionEmbedding). */
  readonly #positions = new Map<string, Promise<Tensor>>();

  private constructor(gpu: Gpu, init: { config: ClipConfig; dtype: DType; convention: Convention; logitScale: number; unused: string[]; vision?: Map<string, Tensor>; text?: Map<string, Tensor>; tokenizer?: ClipTokenizer; plans?: PlanCacheLimits }) {
    this.gpu = gpu;
    this.config = init.config;
    this.dtype = init.dtype;
    this.convention = init.convention;
    this.logitScale = init.logitScale;
    this.unusedWeights = init.unused;
    this.weights = { vision: init.vision, text: init.text };
    this.tokenizer = init.tokenizer;
    this.#plans = new PlanCache(gpu, 'ClipModel', init.plans);
    this.#life = new ModelLifetime(gpu, 'model');
  }

  /**
   * Loads a checkpoint: a folder (config.json + model.safetensors or shards) or a .safetensors file,
   * given as a path (Node), a URL (a folder's ends with '/') or files by name (see ModelSource).
   * The config is checked against the tensors' headers before anything is read or allocated; every
   * failure is a GpuError (a SafetensorsError for the checkpoint itself) naming the file and tensor.
   */
  static async load(gpu: Gpu, source: ModelSource, options: ClipLoadOptions = {}): Promise<ClipModel> {
    const op = 'ClipModel.load';
    const dtype = options.dtype ?? 'f32';
    checkInput(dtype === 'f32' || dtype === 'f16', op, `dtype must be f32 or f16, got ${JSON.stringify(dtype)}`);
    checkInput(dtype !== 'f16' || gpu.features.has('shader-f16'), op, 'dtype f16 needs the shader-f16 feature, which this adapter lacks');
    let reader: (WeightReader & { close(): void }) | undefined;
    try {
      const where = await locate(source);
      const tokenizer = await loadTokenizer(where, options.tokenizer);
      reader = await openWeightReader(where, { allowNonFinite: options.allowNonFinite });
      const names = reader.names();
      const convention = options.convention ?? detectConvention(names, reader.path);
      const { config, origin } = await resolveConfig(where, reader, convention, options);
      const ctx: LoadContext = { op, reader, conv: convention, origin, dtype, maxBytes: maxTensorBytes(gpu) };
      // Every tensor of both towers is checked before the first is read.
      const visionPlan = config.vision && planTower(ctx, 'vision', config.vision, config.embedDim);
      const textPlan = config.text && planTower(ctx, 'text', config.text, config.embedDim);
      const used = new Set<string>();
      const logitScale = await readLogitScale(reader, convention, used, !!(visionPlan && textPlan));
      const vision = visionPlan && (await uploadPlanned(gpu, reader, visionPlan, dtype, used));
      let text: Map<string, Tensor> | undefined;
      try {
        text = textPlan && (await uploadPlanned(gpu, reader, textPlan, dtype, used));
      } catch (err) {
        for (const t of vision?.values() ?? []) t.dispose();
        throw err;
      }
      const unused = names.filter((n) => !used.has(n));
      if (unused.length) console.warn(`ovgpu: ${unused.length} tensor(s) in ${reader.path} not used by CLIP: ${unused.slice(0, 5).join(', ')}${unused.length > 5 ? ', …' : ''}`);
      return new ClipModel(gpu, { config, dtype, convention, logitScale: logitScale ?? Math.log(1 / 0.07), unused, vision, text, tokenizer, plans: options.plans });
    } catch (err) {
      throw loadError(op, err);
    } finally {
      reader?.close();
    }
  }

  #weights(tower: 'vision' | 'text', g: GraphBuilder): Weights {
    const map = this.weights[tower];
    if (!map) throw new GpuError('ClipModel', `this checkpoint has no ${tower} tower`);
    const values = new Map<string, Value>();
    return (name) => {
      let v = values.get(name);
      if (!v) {
        const t = map.get(name);
        if (!t) throw new GpuError('ClipModel', `no ${tower} weight ${name}`);
        if (t.disposed) throw new GpuError('ClipModel', 'the model was disposed');
        values.set(name, (v = g.constant(t)));
      }
      return v;
    };
  }

  /** The vision weights of a graph, the position embedding replaced by `position` when given. */
  #visionWeights(g: GraphBuilder, position?: Tensor): Weights {
    const w = this.#weights('vision', g);
    const pos = position && g.constant(position);
    return pos ? (name) => (name === 'pos' ? pos : w(name)) : w;
  }

  /**
   * Adds the vision tower to a graph (for models built on CLIP's dense map, e.g. region heads).
   * Pixels at another size than the config's need the position embedding for their grid
   * (`positionEmbedding`, from visionPositionEmbedding).
   */
  buildVision(g: GraphBuilder, pixels: Value, options: { dense?: boolean; positionEmbedding?: Tensor } = {}): TowerOutputs {
    return visionTower(g, this.#visionWeights(g, options.positionEmbedding), this.config.vision!, this.convention.projectionLayout, pixels, options);
  }

  /**
   * The vision position embedding [1 + gh·gw, width] for a grid of gh × gw patches, from the
   * checkpoint's as CaR's upsample_position_embedding: the class row kept, the patch rows resized
   * (bilinear, align_corners=False; or bicubic), everything rounded to fp16 unless `half: false`
   * (even at the native grid, where the resize is the identity). Cached per grid and options; the
   * model owns the tensor (freed by dispose).
   */
  visionPositionEmbedding(grid: readonly [number, number], options: PositionEmbeddingOptions = {}): Promise<Tensor> {
    return this.#life.call('ClipModel.visionPositionEmbedding', () => this.#visionPositionEmbedding(grid, options));
  }

  #visionPositionEmbedding(grid: readonly [number, number], options: PositionEmbeddingOptions = {}): Promise<Tensor> {
    const op = 'ClipModel.visionPositionEmbedding';
    const v = this.#visionConfig(op);
    const { mode = 'bilinear', half = true } = options;
    if (mode !== 'bilinear' && mode !== 'bicubic') throw new InputError(op, `position mode must be 'bilinear' or 'bicubic', got ${JSON.stringify(mode)}`);
    if (typeof half !== 'boolean') throw new InputError(op, `position half must be a boolean, got ${JSON.stringify(half)}`);
    if (!Array.isArray(grid) || grid.length !== 2 || !grid.every((n) => Number.isInteger(n) && n >= 1)) throw new InputError(op, `grid must be [gh, gw] of positive integers, got ${JSON.stringify(grid)}`);
    const key = `${grid[0]}x${grid[1]}:${mode}:${half}`;
    let pending = this.#positions.get(key);
    if (!pending) {
      pending = (async () => {
        const native = v.imageSize / v.patchSize;
        const source = (await this.weights.vision!.get('pos')!.read()) as Float32Array;
        const data = resizePositionEmbedding(source, v.width, [native, native], grid, { mode, half });
        return Tensor.from(this.gpu, data, [data.length / v.width, v.width], this.dtype);
      })();
      this.#positions.set(key, pending);
      pending.catch(() => this.#positions.delete(key));
    }
    return pending;
  }

  #visionConfig(op: string): VisionConfig {
    const v = this.config.vision;
    if (!v) throw new InputError(op, 'this checkpoint has no vision tower');
    return v;
  }

  /** The position embedding a run at height × width uses: undefined for the checkpoint's own. */
  async #positionFor(op: string, height: number, width: number, options: PositionEmbeddingOptions | undefined): Promise<Tensor | undefined> {
    const v = this.#visionConfig(op);
    if (options === undefined && height === v.imageSize && width === v.imageSize) return undefined;
    return this.#visionPositionEmbedding([height / v.patchSize, width / v.patchSize], options);
  }

  /** Adds the text tower to a graph; `poolIndex` holds flat b·L + t positions (see poolIndices). */
  buildText(g: GraphBuilder, ids: Value, poolIndex: Value): TowerOutputs {
    return textTower(g, this.#weights('text', g), this.config.text!, this.convention.projectionLayout, ids, poolIndex);
  }

  /** Token embeddings [..., width] of i32 ids (CLIP's token_embedding lookup) in a graph. */
  buildTokenEmbeddings(g: GraphBuilder, ids: Value): Value {
    return g.gather(this.#weights('text', g)('tok'), ids, 'text.tokens');
  }

  /**
   * The text tower from token embeddings [B, L, width] instead of ids (CoOp's TextEncoder):
   * position embedding, causal blocks, ln_final, the row at each prompt's end token, projection.
   * `eotIndex` is a graph value of flat b·L + t positions (as buildText's poolIndex), or the end
   * token's position t in each row (uploaded as a constant). Gradients flow back to `embeds`.
   */
  buildTextFromEmbeddings(g: GraphBuilder, embeds: Value, eotIndex: Value | ArrayLike<number>): TowerOutputs {
    const op = 'ClipModel.buildTextFromEmbeddings';
    const t = this.#textConfig(op);
    const [b, l, d] = embeds.shape;
    if (embeds.shape.length !== 3 || d !== t.width || l! < 1 || l! > t.contextLength) throw new InputError(op, `embeds must be [B, L, ${t.width}] with 1 ≤ L ≤ ${t.contextLength}, got ${embeds}`);
    let pool: Value;
    if (eotIndex instanceof Value) {
      if (eotIndex.dtype !== 'i32' || eotIndex.shape.length !== 1 || eotIndex.shape[0] !== b) throw new InputError(op, `eotIndex must be i32 [${b}] (flat b·L + t positions), got ${eotIndex}`);
      pool = eotIndex;
    } else {
      pool = g.constant(Tensor.from(this.gpu, flatEotIndex(op, eotIndex, b!, l!), [b!], 'i32'), { owned: true });
    }
    return textFromEmbeddings(g, this.#weights('text', g), t, this.convention.projectionLayout, g.cast(embeds, this.dtype as 'f32' | 'f16'), pool);
  }

  #textConfig(op: string) {
    const t = this.config.text;
    if (!t) throw new InputError(op, 'this checkpoint has no text tower');
    return t;
  }

  /**
   * Text embeddings [B, embed] (unnormalised) from token embeddings `embeds` [B, L, width]
   * (row-major, L ≤ the context length) and each row's end-token position `eotIndex` [B]: the
   * text tower without the token lookup, for learned prompt vectors (see buildTextFromEmbeddings).
   */
  encodeTextEmbeddings(embeds: Float32Array, eotIndex: ArrayLike<number>): Promise<Float32Array> {
    return this.#life.call('ClipModel.encodeTextEmbeddings', () => this.#encodeTextEmbeddings(embeds, eotIndex));
  }

  async #encodeTextEmbeddings(embeds: Float32Array, eotIndex: ArrayLike<number>): Promise<Float32Array> {
    const op = 'ClipModel.encodeTextEmbeddings';
    const t = this.#textConfig(op);
    if (!(embeds instanceof Float32Array)) throw new InputError(op, `embeds must be a Float32Array [B, L, ${t.width}], got ${describeInput(embeds)}`);
    const b = eotIndex?.length;
    if (!Number.isInteger(b)) throw new InputError(op, `eotIndex must be an array of positions, one per row, got ${describeInput(eotIndex)}`);
    if (b === 0) return new Float32Array(0);
    const l = embeds.length / (b * t.width);
    if (!Number.isInteger(l) || l < 1 || l > t.contextLength) {
      throw new InputError(op, `embeds must be [B, L, ${t.width}] with B = ${b} (eotIndex's length) and 1 ≤ L ≤ ${t.contextLength}: ${embeds.length} values is not B·L·${t.width}`);
    }
    checkFinite(op, 'embeds', embeds);
    const flat = flatEotIndex(op, eotIndex, b, l);
    const padded = bucket(b);
    const build = (g: GraphBuilder) => {
      const out = this.buildTextFromEmbeddings(g, g.input('embeds', [padded, l, t.width], this.dtype), g.input('pool', [padded], 'i32'));
      g.output('embeds', out.embeds);
    };
    // Padded rows pool their own first position.
    const pool = Int32Array.from({ length: padded }, (_, r) => (r < b ? flat[r]! : r * l));
    return collect(await this.#plans.use(`textEmbeds:${padded}:${l}`, build, (plan) => plan.run({ embeds: padRows(embeds, b, padded), pool }, { outputs: ['embeds'] })), b, padded).embeds;
  }

  /**
   * Image embeddings [B, embed] (unnormalised, as HF get_image_features) from normalised NCHW
   * pixels with their shape, or from images (paths or encoded bytes), preprocessed as CLIP does.
   */
  encodeImage(input: Float32Array | ImageInput | readonly ImageInput[], shape?: readonly [number, number, number, number]): Promise<Float32Array> {
    return this.#life.call('ClipModel.encodeImage', () => this.#encodeImage(input, shape));
  }

  async #encodeImage(input: Float32Array | ImageInput | readonly ImageInput[], shape?: readonly [number, number, number, number]): Promise<Float32Array> {
    if (input instanceof Float32Array) {
      if (!shape) throw new InputError('ClipModel.encodeImage', 'pixels need their shape [B, 3, H, W]');
      return (await this.#runVision(input, shape)).embeds;
    }
    const images = Array.isArray(input) ? input : [input as ImageInput];
    if (images.length === 0) return new Float32Array(0);
    const size = this.config.vision?.imageSize ?? 224;
    const batch = await preprocessClipBatch(images, { size });
    return (await this.#runVision(batch.data, batch.shape)).embeds;
  }

  /**
   * The vision tower with optional dense map and intermediates, at any input size whose sides are
   * multiples of the patch size (see `options.position` for the position embedding).
   */
  runVision(pixels: Float32Array, shape: readonly number[], options: ImageRunOptions = {}): Promise<TowerResult> {
    return this.#life.call('ClipModel.runVision', () => this.#runVision(pixels, shape, options));
  }

  async #runVision(pixels: Float32Array, shape: readonly number[], options: ImageRunOptions = {}): Promise<TowerResult> {
    const op = 'ClipModel.encodeImage';
    const v = this.#visionConfig(op);
    checkPixels(op, pixels, shape, v, true);
    const [b, , h, w] = shape as [number, number, number, number];
    // An empty batch has nothing to run (and WebGPU cannot bind an empty buffer).
    if (b === 0) return { embeds: new Float32Array(0), dense: options.dense ? new Float32Array(0) : undefined };
    const padded = bucket(b);
    const { key, build } = await this.#visionPlan(op, padded, h, w, options);
    const run = (plan: GraphPlan) => plan.run({ pixels: padRows(pixels, b, padded) }, { outputs: wanted(plan, options) });
    return collect(await this.#plans.use(key, build, run), b, padded);
  }

  /** The vision plan's cache key and graph for `padded` images of h × w. */
  async #visionPlan(op: string, padded: number, h: number, w: number, options: ImageRunOptions): Promise<{ key: string; build: (g: GraphBuilder) => void }> {
    const position = await this.#positionFor(op, h, w, options.position);
    const build = (g: GraphBuilder) => {
      const out = this.buildVision(g, g.input('pixels', [padded, 3, h, w], this.dtype), { dense: options.dense, positionEmbedding: position });
      g.output('embeds', out.embeds);
      if (out.dense) g.output('dense', out.dense);
      for (const [k, val] of Object.entries(out.intermediates)) g.output(k, val);
    };
    return { key: `vision:${padded}:${!!options.dense}:${h}x${w}:${position ? positionKey(options.position) : 'native'}`, build };
  }

  /**
   * Text embeddings [B, embed] from token ids [B, L] (L ≤ the context length) with their shape, or
   * from strings, tokenized with the model's tokenizer (over-long text is an error unless
   * `truncate`, as the reference).
   */
  encodeText(input: Int32Array | readonly number[] | string | readonly string[], shape?: readonly [number, number], options: { truncate?: boolean } = {}): Promise<Float32Array> {
    return this.#life.call('ClipModel.encodeText', () => this.#encodeText(input, shape, options));
  }

  async #encodeText(input: Int32Array | readonly number[] | string | readonly string[], shape?: readonly [number, number], options: { truncate?: boolean } = {}): Promise<Float32Array> {
    const op = 'ClipModel.encodeText';
    const isIds = input instanceof Int32Array || (Array.isArray(input) && input.length > 0 && input.every((v) => typeof v === 'number'));
    const isText = typeof input === 'string' || (Array.isArray(input) && input.every((v) => typeof v === 'string'));
    // Token ids are never tokenized as text: numbers go to the tower as ids (with their shape) or are refused.
    if (isIds) {
      if (!shape) throw new InputError(op, 'input: token ids need their shape [B, L] (the second argument)');
      const list = input as ArrayLike<number>;
      for (let i = 0; i < list.length; i++) if (!Number.isInteger(list[i])) throw new InputError(op, `input: token id ${i} is ${list[i]}, not an integer`);
      return (await this.#runText(input instanceof Int32Array ? input : Int32Array.from(list), shape)).embeds;
    }
    if (!isText) throw new InputError(op, `input must be a string, an array of strings, or token ids (an Int32Array or an array of integers) with their shape; got ${describeInput(input)}`);
    if (shape !== undefined) throw new InputError(op, 'shape is for token ids: strings are tokenized to the model\'s context length');
    const texts = typeof input === 'string' ? [input] : (input as readonly string[]);
    if (texts.length === 0) return new Float32Array(0);
    if (!this.tokenizer) throw new InputError(op, `strings need a tokenizer: the model folder has none of ${TOKENIZER_FILES.join(', ')} (pass { tokenizer } to load)`);
    const l = this.config.text?.contextLength;
    if (!l) throw new InputError(op, 'this checkpoint has no text tower');
    const ids = new Int32Array(texts.length * l);
    texts.forEach((t, i) => ids.set(encodeQuery(op, this.tokenizer!, t, l, options.truncate), i * l));
    return (await this.#runText(ids, [texts.length, l])).embeds;
  }

  runText(ids: Int32Array, shape: readonly number[], options: { intermediates?: boolean } = {}): Promise<TowerResult> {
    return this.#life.call('ClipModel.runText', () => this.#runText(ids, shape, options));
  }

  async #runText(ids: Int32Array, shape: readonly number[], options: { intermediates?: boolean } = {}): Promise<TowerResult> {
    const t = this.config.text;
    if (!t) throw new InputError('ClipModel.encodeText', 'this checkpoint has no text tower');
    if (!Array.isArray(shape) || shape.length !== 2 || !shape.every((d) => Number.isInteger(d) && d >= 0) || shape[1]! > t.contextLength || shape[1]! < 1 || ids.length !== shape[0]! * shape[1]!) {
      throw new InputError('ClipModel.encodeText', `ids must be [B, L] with 1 ≤ L ≤ ${t.contextLength} and B·L elements, got shape [${shape?.join?.(', ')}] with ${ids.length} ids`);
    }
    if (shape[0] === 0) return { embeds: new Float32Array(0) };
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= t.vocabSize) throw new InputError('ClipModel.encodeText', `token id ${id} outside the vocabulary [0, ${t.vocabSize})`);
    }
    const [b, l] = shape as [number, number];
    const padded = bucket(b);
    const { key, build } = this.#textPlan(padded, l);
    const paddedIds = padRows(ids, b, padded);
    const pool = poolIndices(paddedIds, padded, l, t.eosTokenId);
    return collect(await this.#plans.use(key, build, (plan) => plan.run({ ids: paddedIds, pool }, { outputs: wanted(plan, options) })), b, padded);
  }

  /** The text plan's cache key and graph for `padded` rows of l token ids. */
  #textPlan(padded: number, l: number): { key: string; build: (g: GraphBuilder) => void } {
    const build = (g: GraphBuilder) => {
      const out = this.buildText(g, g.input('ids', [padded, l], 'i32'), g.input('pool', [padded], 'i32'));
      g.output('embeds', out.embeds);
      for (const [k, val] of Object.entries(out.intermediates)) g.output(k, val);
    };
    return { key: `text:${padded}:${l}`, build };
  }

  /**
   * Compiles, without running them, the plans that encodeImage (`images` at the model's size) and
   * encodeText (`texts` strings at the context length) will use, every pipeline of them at once
   * (createComputePipelineAsync): the first real call then starts at once. Worth it where shader
   * compilation is slow (seconds per kernel in a browser on a software adapter).
   */
  warmUp(options: { images?: number; texts?: number } = {}): Promise<void> {
    return this.#life.call('ClipModel.warmUp', async () => {
      const { images = 1, texts = 1 } = options;
      for (const [name, n] of [['images', images], ['texts', texts]] as const) {
        if (!Number.isInteger(n) || n < 0) throw new InputError('ClipModel.warmUp', `${name} must be a non-negative integer, got ${n}`);
      }
      const { vision, text } = this.config;
      const plans = [
        ...(vision && images > 0 ? [await this.#visionPlan('ClipModel.warmUp', bucket(images), vision.imageSize, vision.imageSize, {})] : []),
        ...(text && texts > 0 ? [this.#textPlan(bucket(texts), text.contextLength)] : []),
      ];
      await Promise.all(plans.map(({ key, build }) => this.#plans.use(key, build, async () => undefined)));
    });
  }

  /** logits_per_image [Ni, Nt] = exp(logitScale) · cosine(image, text), as the reference (no clamp). */
  similarity(imageEmbeds: Float32Array, textEmbeds: Float32Array): Float32Array {
    return clipLogits(imageEmbeds, textEmbeds, this.config.embedDim, Math.exp(this.logitScale));
  }

  /**
   * gradCAM as CaR computes it (see GradCamOptions / GradCamResult and gradcam.ts): `image` is a
   * file path, encoded bytes (resized whole to `options.size`, default the config's image size) or
   * model-ready pixels `{ data, shape: [1, 3, H, W] }`, H and W multiples of the patch size; `texts`
   * are strings (tokenized; `options.templates` ensembled), token ids `{ ids, shape: [T, L] }`, or
   * text embeddings [T, embed] as a Float32Array (used after normalisation). The image's tower, the
   * texts' tower and every target's map run in one submit.
   */
  gradCam(image: ImageInput | { data: Float32Array; shape: readonly number[] }, texts: readonly string[] | Float32Array | { ids: Int32Array; shape: readonly [number, number] }, options: GradCamOptions = {}): Promise<GradCamResult> {
    return this.#life.call('ClipModel.gradCam', () => this.#gradCam(image, texts, options));
  }

  async #gradCam(image: ImageInput | { data: Float32Array; shape: readonly number[] }, texts: readonly string[] | Float32Array | { ids: Int32Array; shape: readonly [number, number] }, options: GradCamOptions = {}): Promise<GradCamResult> {
    const op = 'ClipModel.gradCam';
    const v = this.#visionConfig(op);
    const pixels = await gradCamPixels(op, image, v, options.size);
    const [, , h, w] = pixels.shape;
    const grid: [number, number] = [h / v.patchSize, w / v.patchSize];
    const text = this.#gradCamTexts(op, texts, options.templates);
    const t = text.count;
    const targets = options.targets === undefined ? Array.from({ length: t }, (_, i) => i) : [...options.targets];
    if (!Array.isArray(options.targets ?? []) || targets.length === 0 || !targets.every((k) => Number.isInteger(k) && k >= 0 && k < t)) {
      throw new InputError(op, `options.targets must be a non-empty array of text indices in [0, ${t}), got ${JSON.stringify(options.targets)}`);
    }
    const logitScale = options.logitScale ?? this.logitScale;
    if (typeof logitScale !== 'number' || !Number.isFinite(logitScale)) throw new InputError(op, `options.logitScale must be a finite number (log-space), got ${logitScale}`);
    const attention = options.attention !== false;
    const positionOptions = { mode: options.position?.mode, half: options.position?.half };
    const position = await this.#visionPositionEmbedding(grid, positionOptions);
    const k = targets.length;
    const seed = new Float32Array(k * t);
    targets.forEach((target, row) => (seed[row * t + target] = 1));
    const build = (g: GraphBuilder) => {
      const features = text.build(g);
      const inputs = { pixels: g.input('pixels', pixels.shape, this.dtype), text: features, scale: g.input('scale', [1], this.dtype), seed: g.input('seed', [k, t], this.dtype) };
      const out = gradCamGraph(g, this.#visionWeights(g, position), v, this.convention.projectionLayout, inputs, { classToken: options.classToken, attention });
      for (const [name, val] of Object.entries(out)) g.output(name, val);
    };
    const wanted = ['raw', 'logits', 'probs', ...(attention ? ['attention'] : []), ...(options.intermediates ? ['activations', 'gradients'] : [])];
    const key = `gradcam:${h}x${w}:${positionKey(positionOptions)}:${text.key}:${k}:${!!options.classToken}:${attention}`;
    const r = await this.#plans.use(key, build, (plan) => plan.run({ pixels: pixels.data, scale: new Float32Array([Math.exp(logitScale)]), seed, ...text.inputs }, { outputs: wanted }));
    const out = r.outputs as Record<string, Float32Array>;
    const raw = out.raw!;
    return {
      grid,
      targets,
      raw,
      cam: scaledCam(raw, grid[0] * grid[1]),
      logits: out.logits!.slice(0, t),
      probs: out.probs!.slice(0, t),
      attention: out.attention,
      activations: out.activations,
      gradients: out.gradients,
    };
  }

  /** gradCam's texts as a graph part giving [T, embed] features, with its run-time inputs and a plan key. */
  #gradCamTexts(op: string, texts: unknown, templates: readonly string[] | undefined): { count: number; key: string; inputs: Record<string, Float32Array | Int32Array>; build: (g: GraphBuilder) => Value } {
    const e = this.config.embedDim;
    if (texts instanceof Float32Array) {
      if (templates !== undefined) throw new InputError(op, 'options.templates apply to string texts, not to embeddings');
      if (texts.length === 0 || texts.length % e !== 0) throw new InputError(op, `text embeddings must be a Float32Array of [T, ${e}] values, got ${texts.length} values`);
      checkFinite(op, 'text embeddings', texts);
      const count = texts.length / e;
      return { count, key: `embeds${count}`, inputs: { text: texts }, build: (g) => g.input('text', [count, e], this.dtype) };
    }
    const c = this.config.text;
    if (!c) throw new InputError(op, 'this checkpoint has no text tower: pass text embeddings [T, embed] as a Float32Array');
    let ids: Int32Array;
    let rows: number;
    let length: number;
    let perText = 1;
    if (texts && typeof texts === 'object' && 'ids' in texts) {
      if (templates !== undefined) throw new InputError(op, 'options.templates apply to string texts, not to token ids');
      const { ids: given, shape } = texts as { ids: Int32Array; shape: readonly number[] };
      if (!(given instanceof Int32Array) || !Array.isArray(shape) || shape.length !== 2 || !shape.every((d) => Number.isInteger(d) && d >= 1) || shape[1]! > c.contextLength || given.length !== shape[0]! * shape[1]!) {
        throw new InputError(op, `token ids must be { ids: Int32Array, shape: [T, L] } with 1 ≤ L ≤ ${c.contextLength}, got shape ${JSON.stringify(shape)} with ${given?.length} ids`);
      }
      for (const id of given) if (id < 0 || id >= c.vocabSize) throw new InputError(op, `token id ${id} outside the vocabulary [0, ${c.vocabSize})`);
      [ids, rows, length] = [given, shape[0]!, shape[1]!];
    } else {
      if (!Array.isArray(texts) || texts.length === 0 || !texts.every((x) => typeof x === 'string')) throw new InputError(op, `texts must be a non-empty array of strings, token ids { ids, shape } or a Float32Array of embeddings, got ${describeInput(texts)}`);
      if (!this.tokenizer) throw new InputError(op, `strings need a tokenizer: the model folder has none of ${TOKENIZER_FILES.join(', ')} (pass { tokenizer } to load)`);
      const forms = templates ?? ['{}'];
      if (!Array.isArray(forms) || forms.length === 0 || !forms.every((f) => typeof f === 'string' && f.includes('{}'))) throw new InputError(op, `options.templates must be a non-empty array of strings holding {}, got ${JSON.stringify(templates)}`);
      perText = forms.length;
      [rows, length] = [texts.length * perText, c.contextLength];
      ids = new Int32Array(rows * length);
      texts.forEach((text, i) => forms.forEach((f, j) => ids.set(encodeQuery(op, this.tokenizer!, f.replaceAll('{}', text), length), (i * perText + j) * length)));
    }
    const count = rows / perText;
    const pool = poolIndices(ids, rows, length, c.eosTokenId);
    return {
      count,
      key: `ids${count}x${perText}x${length}`,
      inputs: { ids, pool },
      build: (g) => ensembleTextFeatures(g, this.buildText(g, g.input('ids', [rows, length], 'i32'), g.input('pool', [rows], 'i32')).embeds, count, perText),
    };
  }

  /**
   * Frees plans, weights and resized position embeddings. New calls are refused at once; calls in
   * flight finish first (their results are whole), and what they read is freed when the last one
   * settles.
   */
  dispose(): void {
    this.#life.dispose(() => {
      this.#plans.dispose();
      for (const p of this.#positions.values()) p.then((t) => t.dispose(), () => undefined);
      for (const m of [this.weights.vision, this.weights.text]) for (const t of m?.values() ?? []) t.dispose();
    });
  }
}

/** Per-row end-token positions t ∈ [0, L) → flat b·L + t, refusing anything else with its row. */
function flatEotIndex(op: string, eotIndex: ArrayLike<number>, b: number, l: number): Int32Array {
  if (eotIndex.length !== b) throw new InputError(op, `eotIndex must hold ${b} positions (one per row), got ${eotIndex.length}`);
  return Int32Array.from({ length: b }, (_, r) => {
    const t = eotIndex[r]!;
    if (!Number.isInteger(t) || t < 0 || t >= l) throw new InputError(op, `eotIndex[${r}] is ${t}: each must be an integer position in [0, ${l})`);
    return r * l + t;
  });
}

/** A key naming the position embedding options in plan keys. */
function positionKey(o: PositionEmbeddingOptions | undefined): string {
  return `${o?.mode ?? 'bilinear'}:${o?.half ?? true}`;
}

/** Checks NCHW pixels for the vision tower: [B, 3, H, W] (B = 1 unless `batch`), sides positive multiples of the patch size, finite. */
function checkPixels(op: string, pixels: unknown, shape: unknown, v: VisionConfig, batch: boolean): void {
  const s = shape as number[];
  const side = (n: unknown) => Number.isInteger(n) && (n as number) >= v.patchSize && (n as number) % v.patchSize === 0;
  if (!Array.isArray(s) || s.length !== 4 || !Number.isInteger(s[0]) || s[0]! < 0 || (!batch && s[0] !== 1) || s[1] !== 3 || !side(s[2]) || !side(s[3])) {
    throw new InputError(op, `pixels must be [${batch ? 'B' : '1'}, 3, H, W] with H and W positive multiples of the patch size ${v.patchSize} (the config's size is ${v.imageSize}), got [${(s as unknown[])?.join?.(', ')}]`);
  }
  const n = s[0]! * 3 * s[2]! * s[3]!;
  if (!(pixels instanceof Float32Array) || pixels.length !== n) throw new InputError(op, `pixels must be a Float32Array of ${n} values for [${s.join(', ')}], got ${describeInput(pixels)}${pixels instanceof Float32Array ? ` of ${pixels.length} values` : ''}`);
  checkFinite(op, 'pixels', pixels);
}

/** gradCam's image as [1, 3, H, W] pixels: given, or decoded and resized whole to options.size. */
async function gradCamPixels(op: string, image: unknown, v: VisionConfig, size: GradCamOptions['size']): Promise<{ data: Float32Array; shape: [1, 3, number, number] }> {
  if (image && typeof image === 'object' && !(image instanceof Uint8Array) && 'data' in image) {
    const { data, shape } = image as { data: Float32Array; shape: readonly number[] };
    checkPixels(op, data, shape, v, false);
    return { data, shape: [1, 3, shape[2]!, shape[3]!] };
  }
  const [h, w] = typeof size === 'number' ? [size, size] : size === undefined ? [v.imageSize, v.imageSize] : size;
  if (![h, w].every((n) => Number.isInteger(n) && n! >= v.patchSize && n! % v.patchSize === 0) || (Array.isArray(size) && size.length !== 2)) {
    throw new InputError(op, `options.size must be a side or [height, width], positive multiples of the patch size ${v.patchSize}, got ${JSON.stringify(size)}`);
  }
  const batch = await preprocessClipResized(image as ImageInput, h!, w!);
  return { data: batch.data, shape: [1, 3, h!, w!] };
}

/** A short description of an unexpected argument for error messages. */
function describeInput(v: unknown): string {
  if (v === null || typeof v !== 'object') return typeof v === 'string' ? 'a string' : String(v);
  if (Array.isArray(v)) return `an array of ${[...new Set(v.map((x) => (x === null ? 'null' : Array.isArray(x) ? 'array' : typeof x)))].join(' and ') || 'nothing'}`;
  return `a ${v.constructor?.name ?? 'object'}`;
}

function wanted(plan: GraphPlan, options: ImageRunOptions): string[] {
  const names = [...plan.outputInfos.keys()];
  return names.filter((n) => n === 'embeds' || (n === 'dense' && options.dense) || (options.intermediates && n !== 'dense'));
}

/** The outputs of a run on `padded` images or texts, trimmed to the first `b` (every output is batch-major). */
function collect(r: { outputs: Record<string, ReadArray> }, b: number, padded: number): TowerResult {
  const trimmed = Object.fromEntries(Object.entries(r.outputs).map(([k, v]) => [k, firstRows(v as Float32Array, b, padded)]));
  const { embeds, dense, ...rest } = trimmed;
  return { embeds: embeds!, dense, intermediates: Object.keys(rest).length ? rest : undefined };
}

/** CLIP logits: scale · (a/‖a‖) · (b/‖b‖)ᵀ for row-major a [Na, d], b [Nb, d], in float64. */
export function clipLogits(a: Float32Array, b: Float32Array, d: number, scale: number): Float32Array {
  const norm = (x: Float32Array, r: number) => Math.hypot(...x.subarray(r * d, (r + 1) * d));
  const na = a.length / d;
  const nb = b.length / d;
  const out = new Float32Array(na * nb);
  for (let i = 0; i < na; i++) {
    const ni = norm(a, i);
    for (let j = 0; j < nb; j++) {
      let dot = 0;
      for (let k = 0; k < d; k++) dot += a[i * d + k]! * b[j * d + k]!;
      out[i * nb + j] = (scale * dot) / (ni * norm(b, j));
    }
  }
  return out;
}

/** The given tokenizer, else the folder's tokenizer files if it has any. */
export async function loadTokenizer(where: Location, given: ClipTokenizer | ModelSource | undefined): Promise<ClipTokenizer | undefined> {
  if (given instanceof ClipTokenizer) return given;
  if (given !== undefined) return ClipTokenizer.load(given);
  if (where.file !== undefined) return undefined;
  for (const f of TOKENIZER_FILES) if (await hasFile(where.files, f)) return ClipTokenizer.load(where.files);
  return undefined;
}

/** The config and where it came from: options.config, the folder's config.json, or the OpenAI tensors. */
async function resolveConfig(where: Location, reader: WeightReader, convention: Convention, options: ClipLoadOptions): Promise<{ config: ClipConfig; origin: ConfigOrigin }> {
  const given = options.config;
  const configPath = where.file === undefined ? where.files.path('config.json') : undefined;
  const configBytes = !given && configPath !== undefined ? await readFile(where.files, 'config.json') : undefined;
  const source = given ? 'options.config' : configBytes ? configPath : undefined;
  if (!source) {
    // Only OpenAI's names let the config be inferred (as build_model does).
    if (convention.name !== 'openai') throw new SafetensorsError(reader.path, `Hugging Face-named weights need a config: no config.json ${configPath ? 'in the folder' : 'beside a single file'} and no options.config`);
    try {
      return { config: clipConfigFromOpenAi((n) => reader.shape(n), reader.names(), options.heads), origin: clipOrigin('the config inferred from the tensors') };
    } catch (err) {
      throw new SafetensorsError(reader.path, `cannot infer the config: ${(err as Error).message}`, { cause: err });
    }
  }
  try {
    if (isClipConfig(given)) {
      checkClipConfig(given);
      return { config: given, origin: clipOrigin(source) };
    }
    const json = given ?? (JSON.parse(new TextDecoder().decode(configBytes)) as Record<string, unknown>);
    return { config: clipConfigFromHf(json), origin: hfOrigin(source, json) };
  } catch (err) {
    throw new InputError('ClipModel.load', `${source}: ${(err as Error).message}`, { cause: err });
  }
}
