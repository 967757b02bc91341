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

const num = (o: Json, key: string, fallback: number): number => (typeof o[key] === 'number' ? (o[key] as number) : fallback);

function activationOf(o: Json): Activation {
  const act = (o.hidden_act ?? 'quick_gelu') as string;
  if (act === 'quick_gelu') return 'quick_gelu';
  if (act === 'gelu') return 'gelu';
  throw new Error(`unsupported hidden_act ${JSON.stringify(act)} (expected quick_gelu or gelu)`);
}

/** HF CLIPVisionConfig, with the library's defaults for missing fields (ViT-B/32). */
export function visionConfigFromHf(o: Json): VisionConfig {
  return {
    width: num(o, 'hidden_size', 768),
    layers: num(o, 'num_hidden_layers', 12),
    heads: num(o, 'num_attention_heads', 12),
    mlpWidth: num(o, 'intermediate_size', 3072),
    activation: activationOf(o),
    eps: num(o, 'layer_norm_eps', 1e-5),
    imageSize: num(o, 'image_size', 224),
    patchSize: num(o, 'patch_size', 32),
  };
}

/**
 * HF CLIPTextConfig. `pooling` follows the model class: CLIP (transformers ≥ 4.31) pools at the
 * first eos_token_id unless that is the legacy 2; OWL-ViT always pools at the argmax of the ids.
 */
export function textConfigFromHf(o: Json, pooling: 'clip' | 'argmax' = 'clip'): TextConfig {
  const eos = num(o, 'eos_token_id', 2);
  return {
    width: num(o, 'hidden_size', 512),
    layers: num(o, 'num_hidden_layers', 12),
    heads: num(o, 'num_attention_heads', 8),
    mlpWidth: num(o, 'intermediate_size', 2048),
    activation: activationOf(o),
    eps: num(o, 'layer_norm_eps', 1e-5),
    contextLength: num(o, 'max_position_embeddings', 77),
    vocabSize: num(o, 'vocab_size', 49408),
    eosTokenId: pooling === 'clip' && eos !== 2 ? eos : undefined,
  };
}

/** A config.json object: CLIPConfig / OwlViTConfig (both towers) or a CLIPVisionConfig alone. */
export function clipConfigFromHf(o: Json): ClipConfig {
  const type = o.model_type as string | undefined;
  const pooling = type === 'owlvit' ? 'argmax' : 'clip';
  if (type === 'clip_vision_model' || (!o.vision_config && !o.text_config && o.hidden_size)) {
    return { vision: visionConfigFromHf(o), embedDim: num(o, 'projection_dim', 512) };
  }
  const vision = o.vision_config ? visionConfigFromHf(o.vision_config as Json) : undefined;
  const text = o.text_config ? textConfigFromHf(o.text_config as Json, pooling) : undefined;
  if (!vision && !text) throw new Error('config has neither vision_config nor text_config');
  return { vision, text, embedDim: num(o, 'projection_dim', 512) };
}

/**
 * Infers the config from OpenAI state-dict shapes, as clip/model.py build_model does; heads are
 * width / 64 there, which `heads` may override (small or unusual checkpoints).
 */
export function clipConfigFromOpenAi(shapes: (name: string) => readonly number[] | undefined, names: readonly string[], heads: { vision?: number; text?: number } = {}): ClipConfig {
  const count = (re: RegExp) => new Set(names.map((n) => re.exec(n)?.[1]).filter((x) => x !== undefined)).size;
  const conv = shapes('visual.conv1.weight');
  const tok = shapes('token_embedding.weight');
  let vision: VisionConfig | undefined;
  if (conv) {
    const width = conv[0]!;
    const patch = conv[3]!;
    const grid = Math.round(Math.sqrt(shapes('visual.positional_embedding')![0]! - 1));
    vision = {
      width,
      layers: count(/^visual\.transformer\.resblocks\.(\d+)\.attn\.in_proj_weight$/),
      heads: heads.vision ?? Math.floor(width / 64),
      mlpWidth: shapes('visual.transformer.resblocks.0.mlp.c_fc.weight')![0]!,
      activation: 'quick_gelu',
      eps: 1e-5,
      imageSize: patch * grid,
      patchSize: patch,
    };
  }
  let text: TextConfig | undefined;
  if (tok) {
    const width = shapes('ln_final.weight')![0]!;
    text = {
      width,
      layers: count(/^transformer\.resblocks\.(\d+)\.attn\.in_proj_weight$/),
      heads: heads.text ?? Math.floor(width / 64),
      mlpWidth: shapes('transformer.resblocks.0.mlp.c_fc.weight')![0]!,
      activation: 'quick_gelu',
      eps: 1e-5,
      contextLength: shapes('positional_embedding')![0]!,
      vocabSize: tok[0]!,
    };
  }
  const embedDim = shapes('text_projection')?.[1] ?? shapes('visual.proj')?.[1];
  if (embedDim === undefined) throw new Error('cannot infer the embedding width: no text_projection or visual.proj');
  return { vision, text, embedDim };
}
