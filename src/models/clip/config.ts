// CLIP configuration: from a Hugging Face config.json (CLIPConfig, CLIPVisionConfig alone, or the
// towers of an OwlViTConfig), or inferred from an OpenAI-named state dict as OpenAI's build_model does.
export type Activation = 'quick_gelu' | 'gelu';

export interface TowerConfig {
  width: number;
  layers: number;
  heads: number;
  mlpWidth: number;
  activation: Activation;
  eps: number;
}

export interface VisionConfig extends TowerConfig {
  imageSize: number;
  patchSize: number;
}

export interface TextConfig extends TowerConfig {
  contextLength: number;
  vocabSize: number;
  /** Pool at the first occurrence of this id; undefined: at the argmax of the ids (OpenAI). */
  eosTokenId?: number;
}

export interface ClipConfig {
  vision?: VisionConfig;
  text?: TextConfig;
  /** Width of the joint embedding (projection output). */
  embedDim: number;
}

type Json = Record<string, unknown>;
type Tower = 'vision' | 'text';

/** A config key of either tower, or the joint embedding width. */
export type ConfigKey = Exclude<keyof VisionConfig | keyof TextConfig, 'eosTokenId'> | 'embedDim';

/** The Hugging Face config.json name of each ClipConfig key. */
const HF_FIELDS: Record<ConfigKey, string> = {
  width: 'hidden_size',
  layers: 'num_hidden_layers',
  heads: 'num_attention_heads',
  mlpWidth: 'intermediate_size',
  activation: 'hidden_act',
  eps: 'layer_norm_eps',
  imageSize: 'image_size',
  patchSize: 'patch_size',
  contextLength: 'max_position_embeddings',
  vocabSize: 'vocab_size',
  embedDim: 'projection_dim',
};

/**
 * Where a config came from and how its fields are spelled there, for messages: the config.json
 * path (or `options.config`) and field names such as `vision_config.hidden_size`.
 */
export interface ConfigOrigin {
  readonly source: string;
  field(tower: Tower | undefined, key: ConfigKey): string;
}

/** Field names of a Hugging Face config object; a CLIPVisionConfig alone has no vision_config level. */
export function hfOrigin(source: string, o: Json): ConfigOrigin {
  const visionOnly = isVisionOnly(o);
  return { source, field: (tower, key) => (tower && !visionOnly && key !== 'embedDim' ? `${tower}_config.` : '') + HF_FIELDS[key] };
}

/** Field names of a ClipConfig object (`vision.width`, `embedDim`). */
export function clipOrigin(source: string): ConfigOrigin {
  return { source, field: (tower, key) => (tower && key !== 'embedDim' ? `${tower}.${key}` : key) };
}

function isVisionOnly(o: Json): boolean {
  return o.model_type === 'clip_vision_model' || (o.vision_config === undefined && o.text_config === undefined && o.hidden_size !== undefined);
}

/** A positive integer field; absent means the library's default (as in transformers). */
function int(o: Json, key: string, fallback: number, where: string): number {
  const v = o[key];
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) throw new Error(`${where}${key} must be a positive integer, got ${JSON.stringify(v)}`);
  return v;
}

function positive(o: Json, key: string, fallback: number, where: string): number {
  const v = o[key];
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !(v > 0) || !Number.isFinite(v)) throw new Error(`${where}${key} must be a positive number, got ${JSON.stringify(v)}`);
  return v;
}

function activationOf(o: Json, where: string): Activation {
  const act = o.hidden_act ?? 'quick_gelu';
  if (act === 'quick_gelu' || act === 'gelu') return act;
  throw new Error(`${where}hidden_act is ${JSON.stringify(act)}, expected "quick_gelu" or "gelu"`);
}

function object(o: Json, key: string): Json | undefined {
  const v = o[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`${key} must be an object, got ${JSON.stringify(v)}`);
  return v as Json;
}

/** HF CLIPVisionConfig, with the library's defaults for missing fields (ViT-B/32). `where` prefixes field names. */
function visionConfigFromHf(o: Json, where = ''): VisionConfig {
  return {
    width: int(o, 'hidden_size', 768, where),
    layers: int(o, 'num_hidden_layers', 12, where),
    heads: int(o, 'num_attention_heads', 12, where),
    mlpWidth: int(o, 'intermediate_size', 3072, where),
    activation: activationOf(o, where),
    eps: positive(o, 'layer_norm_eps', 1e-5, where),
    imageSize: int(o, 'image_size', 224, where),
    patchSize: int(o, 'patch_size', 32, where),
  };
}

/**
 * HF CLIPTextConfig. `pooling` follows the model class: CLIP (transformers ≥ 4.31) pools at the
 * first eos_token_id unless that is the legacy 2; OWL-ViT and OWLv2 always pool at the argmax of the ids.
 */
function textConfigFromHf(o: Json, pooling: 'clip' | 'argmax' = 'clip', where = ''): TextConfig {
  const eos = o.eos_token_id ?? 2;
  if (typeof eos !== 'number' || !Number.isSafeInteger(eos) || eos < 0) throw new Error(`${where}eos_token_id must be a non-negative integer, got ${JSON.stringify(eos)}`);
  return {
    width: int(o, 'hidden_size', 512, where),
    layers: int(o, 'num_hidden_layers', 12, where),
    heads: int(o, 'num_attention_heads', 8, where),
    mlpWidth: int(o, 'intermediate_size', 2048, where),
    activation: activationOf(o, where),
    eps: positive(o, 'layer_norm_eps', 1e-5, where),
    contextLength: int(o, 'max_position_embeddings', 77, where),
    vocabSize: int(o, 'vocab_size', 49408, where),
    eosTokenId: pooling === 'clip' && eos !== 2 ? eos : undefined,
  };
}

/**
 * A config.json object: CLIPConfig / OwlViTConfig (both towers) or a CLIPVisionConfig alone. Absent
 * fields take the defaults; present ones of the wrong type, or sizes that cannot fit together
 * (heads not dividing the width, an image size that is not a whole number of patches), are errors.
 */
export function clipConfigFromHf(o: Json): ClipConfig {
  if (typeof o !== 'object' || o === null || Array.isArray(o)) throw new Error(`config must be a JSON object, got ${JSON.stringify(o)}`);
  const type = o.model_type;
  const pooling = type === 'owlvit' || type === 'owlv2' ? 'argmax' : 'clip';
  const embedDim = int(o, 'projection_dim', 512, '');
  let config: ClipConfig;
  if (isVisionOnly(o)) {
    config = { vision: visionConfigFromHf(o), embedDim };
  } else {
    const v = object(o, 'vision_config');
    const t = object(o, 'text_config');
    if (!v && !t) throw new Error('config has neither vision_config nor text_config');
    config = { vision: v && visionConfigFromHf(v, 'vision_config.'), text: t && textConfigFromHf(t, pooling, 'text_config.'), embedDim };
  }
  checkClipConfig(config, hfOrigin('', o));
  return config;
}

/**
 * Checks a ClipConfig's values (types, and sizes that must fit together), naming fields as `origin`
 * spells them. Throws an Error whose message starts with the field.
 */
export function checkClipConfig(c: ClipConfig, origin: ConfigOrigin = clipOrigin('config')): void {
  if (typeof c !== 'object' || c === null) throw new Error(`config must be an object, got ${JSON.stringify(c)}`);
  const bad = (tower: Tower | undefined, key: ConfigKey, what: string, v: unknown) => new Error(`${origin.field(tower, key)} ${what}, got ${JSON.stringify(v)}`);
  const isInt = (v: unknown) => typeof v === 'number' && Number.isSafeInteger(v) && v > 0;
  if (!isInt(c.embedDim)) throw bad(undefined, 'embedDim', 'must be a positive integer', c.embedDim);
  if (!c.vision && !c.text) throw new Error('config has neither a vision nor a text tower');
  for (const tower of ['vision', 'text'] as const) {
    const t = c[tower] as (Partial<VisionConfig> & Partial<TextConfig>) | undefined;
    if (t === undefined) continue;
    if (typeof t !== 'object' || t === null) throw new Error(`${tower} must be an object, got ${JSON.stringify(t)}`);
    const keys: ConfigKey[] = ['width', 'layers', 'heads', 'mlpWidth', ...(tower === 'vision' ? (['imageSize', 'patchSize'] as const) : (['contextLength', 'vocabSize'] as const))];
    for (const key of keys) if (!isInt(t[key as keyof typeof t])) throw bad(tower, key, 'must be a positive integer', t[key as keyof typeof t]);
    if (t.activation !== 'quick_gelu' && t.activation !== 'gelu') throw bad(tower, 'activation', 'must be "quick_gelu" or "gelu"', t.activation);
    if (typeof t.eps !== 'number' || !(t.eps > 0) || !Number.isFinite(t.eps)) throw bad(tower, 'eps', 'must be a positive number', t.eps);
    if (t.width! % t.heads! !== 0) throw new Error(`${origin.field(tower, 'heads')} ${t.heads} does not divide ${origin.field(tower, 'width')} ${t.width}`);
    if (t.eosTokenId !== undefined && !(Number.isSafeInteger(t.eosTokenId) && t.eosTokenId >= 0)) throw new Error(`${tower}.eosTokenId must be a non-negative integer, got ${JSON.stringify(t.eosTokenId)}`);
    if (tower === 'vision' && t.imageSize! % t.patchSize! !== 0) throw new Error(`${origin.field(tower, 'imageSize')} ${t.imageSize} is not a multiple of ${origin.field(tower, 'patchSize')} ${t.patchSize}`);
  }
}

/**
 * Infers the config from OpenAI state-dict shapes, as clip/model.py build_model does; heads are
 * width / 64 there, which `heads` may override (small or unusual checkpoints). A tensor it needs
 * that is missing or of the wrong rank is an error naming the tensor.
 */
export function clipConfigFromOpenAi(shapes: (name: string) => readonly number[] | undefined, names: readonly string[], heads: { vision?: number; text?: number } = {}): ClipConfig {
  const dims = (name: string, rank: number, purpose: string): number[] => {
    const s = shapes(name);
    if (!s) throw new Error(`no tensor ${JSON.stringify(name)}, which gives ${purpose}`);
    if (s.length !== rank || s.some((d) => d <= 0)) throw new Error(`tensor ${JSON.stringify(name)} has shape [${s.join(', ')}], expected ${rank} positive dimensions (it gives ${purpose})`);
    return [...s];
  };
  // Layers: the highest index of any tensor under the prefix, plus one (a missing one is named later).
  const layers = (prefix: string) => {
    const re = new RegExp(`^${prefix.replaceAll('.', '\\.')}(\\d+)\\.`);
    const n = Math.max(0, ...names.map((name) => Number(re.exec(name)?.[1] ?? -1) + 1));
    if (n === 0) throw new Error(`no tensor ${JSON.stringify(`${prefix}0.attn.in_proj_weight`)}: no transformer layers`);
    return n;
  };
  const headsOf = (tower: 'vision' | 'text', width: number) => {
    const h = heads[tower] ?? Math.floor(width / 64);
    if (h === 0) throw new Error(`cannot infer the ${tower} heads: width ${width} is under 64 (pass heads.${tower})`);
    return h;
  };
  // A tower is present when any of its tensors is: one missing tensor must not drop a tower.
  const hasVision = names.some((n) => n.startsWith('visual.'));
  const hasText = names.some((n) => ['token_embedding.weight', 'positional_embedding', 'ln_final.weight', 'text_projection'].includes(n) || n.startsWith('transformer.'));
  let vision: VisionConfig | undefined;
  if (hasVision) {
    const [width, , , patch] = dims('visual.conv1.weight', 4, 'the vision width and patch size') as [number, number, number, number];
    const tokens = dims('visual.positional_embedding', 2, 'the image size')[0]!;
    const grid = Math.round(Math.sqrt(tokens - 1));
    if (grid * grid + 1 !== tokens) throw new Error(`tensor "visual.positional_embedding" has ${tokens} positions, expected 1 + a square number of patches`);
    vision = {
      width,
      layers: layers('visual.transformer.resblocks.'),
      heads: headsOf('vision', width),
      mlpWidth: dims('visual.transformer.resblocks.0.mlp.c_fc.weight', 2, 'the vision MLP width')[0]!,
      activation: 'quick_gelu',
      eps: 1e-5,
      imageSize: patch * grid,
      patchSize: patch,
    };
  }
  let text: TextConfig | undefined;
  if (hasText) {
    const width = dims('ln_final.weight', 1, 'the text width')[0]!;
    text = {
      width,
      layers: layers('transformer.resblocks.'),
      heads: headsOf('text', width),
      mlpWidth: dims('transformer.resblocks.0.mlp.c_fc.weight', 2, 'the text MLP width')[0]!,
      activation: 'quick_gelu',
      eps: 1e-5,
      contextLength: dims('positional_embedding', 2, 'the context length')[0]!,
      vocabSize: dims('token_embedding.weight', 2, 'the vocabulary size')[0]!,
    };
  }
  if (!vision && !text) throw new Error('no tensor named visual.* or token_embedding.weight: not an OpenAI CLIP checkpoint');
  const proj = shapes('text_projection') ? 'text_projection' : shapes('visual.proj') ? 'visual.proj' : undefined;
  if (!proj) throw new Error('no tensor "text_projection" or "visual.proj", which gives the embedding width');
  const config = { vision, text, embedDim: dims(proj, 2, 'the embedding width')[1]! };
  checkClipConfig(config, { source: 'inferred', field: (tower, key) => (key === 'heads' ? `heads.${tower}` : `the inferred ${tower ?? ''} ${key}`) });
  return config;
}
