// Weight-name conventions as tables. Canonical names (left) are what the tower builders ask for;
// each convention maps them to checkpoint names. A list means "the first that exists" (spellings
// differ between CLIP and OWL-ViT); `concat` stacks tensors along the first axis (HF's separate
// q, k, v projections become the packed QKV weight OpenAI stores as in_proj_weight).
import { SafetensorsError } from '../../io/safetensors.js';

export type Source = string | readonly string[] | { readonly concat: readonly string[] };

/** The checkpoint names a source reads: all of them for concat, else the candidates in order. */
export function sourceNames(s: Source): { concat: boolean; names: readonly string[] } {
  if (typeof s === 'string') return { concat: false, names: [s] };
  if (Array.isArray(s)) return { concat: false, names: s as readonly string[] };
  return { concat: true, names: (s as { concat: readonly string[] }).concat };
}

export interface TowerNames {
  /** Prefix of the tower's own parameters. */
  prefix: string;
  /** Prefix of layer i's parameters ({i} is replaced). */
  layer: string;
  params: Readonly<Record<string, Source>>;
  /** The projection into the joint space, relative to the model root, and its layout. */
  projection: string;
}

export interface Convention {
  name: 'hf' | 'openai';
  /** Projection weights: 'NK' = [embed, width] (nn.Linear, HF) or 'KN' = [width, embed] (OpenAI). */
  projectionLayout: 'NK' | 'KN';
  layer: Readonly<Record<string, Source>>;
  vision: TowerNames;
  text: TowerNames;
  logitScale: string;
}

const HF_LAYER = {
  'ln1.weight': 'layer_norm1.weight',
  'ln1.bias': 'layer_norm1.bias',
  'qkv.weight': { concat: ['self_attn.q_proj.weight', 'self_attn.k_proj.weight', 'self_attn.v_proj.weight'] },
  'qkv.bias': { concat: ['self_attn.q_proj.bias', 'self_attn.k_proj.bias', 'self_attn.v_proj.bias'] },
  'out.weight': 'self_attn.out_proj.weight',
  'out.bias': 'self_attn.out_proj.bias',
  'ln2.weight': 'layer_norm2.weight',
  'ln2.bias': 'layer_norm2.bias',
  'fc1.weight': 'mlp.fc1.weight',
  'fc1.bias': 'mlp.fc1.bias',
  'fc2.weight': 'mlp.fc2.weight',
  'fc2.bias': 'mlp.fc2.bias',
} as const;

const OPENAI_LAYER = {
  'ln1.weight': 'ln_1.weight',
  'ln1.bias': 'ln_1.bias',
  'qkv.weight': 'attn.in_proj_weight',
  'qkv.bias': 'attn.in_proj_bias',
  'out.weight': 'attn.out_proj.weight',
  'out.bias': 'attn.out_proj.bias',
  'ln2.weight': 'ln_2.weight',
  'ln2.bias': 'ln_2.bias',
  'fc1.weight': 'mlp.c_fc.weight',
  'fc1.bias': 'mlp.c_fc.bias',
  'fc2.weight': 'mlp.c_proj.weight',
  'fc2.bias': 'mlp.c_proj.bias',
} as const;

/** Hugging Face CLIPModel / OwlViTModel / Owlv2Model names; `root` is 'owlvit.' ('owlv2.') inside OwlViTForObjectDetection (Owlv2ForObjectDetection). */
export function hfNames(root = ''): Convention {
  return {
    name: 'hf',
    projectionLayout: 'NK',
    layer: HF_LAYER,
    vision: {
      prefix: `${root}vision_model.`,
      layer: `${root}vision_model.encoder.layers.{i}.`,
      params: {
        'patch.weight': 'embeddings.patch_embedding.weight',
        class: 'embeddings.class_embedding',
        pos: 'embeddings.position_embedding.weight',
        'ln_pre.weight': ['pre_layrnorm.weight', 'pre_layernorm.weight'],
        'ln_pre.bias': ['pre_layrnorm.bias', 'pre_layernorm.bias'],
        'ln_post.weight': 'post_layernorm.weight',
        'ln_post.bias': 'post_layernorm.bias',
      },
      projection: `${root}visual_projection.weight`,
    },
    text: {
      prefix: `${root}text_model.`,
      layer: `${root}text_model.encoder.layers.{i}.`,
      params: {
        tok: 'embeddings.token_embedding.weight',
        pos: 'embeddings.position_embedding.weight',
        'ln_final.weight': 'final_layer_norm.weight',
        'ln_final.bias': 'final_layer_norm.bias',
      },
      projection: `${root}text_projection.weight`,
    },
    logitScale: `${root}logit_scale`,
  };
}

/** OpenAI clip/model.py state-dict names. */
const OPENAI_NAMES: Convention = {
  name: 'openai',
  projectionLayout: 'KN',
  layer: OPENAI_LAYER,
  vision: {
    prefix: 'visual.',
    layer: 'visual.transformer.resblocks.{i}.',
    params: {
      'patch.weight': 'conv1.weight',
      class: 'class_embedding',
      pos: 'positional_embedding',
      'ln_pre.weight': 'ln_pre.weight',
      'ln_pre.bias': 'ln_pre.bias',
      'ln_post.weight': 'ln_post.weight',
      'ln_post.bias': 'ln_post.bias',
    },
    projection: 'visual.proj',
  },
  text: {
    prefix: '',
    layer: 'transformer.resblocks.{i}.',
    params: {
      tok: 'token_embedding.weight',
      pos: 'positional_embedding',
      'ln_final.weight': 'ln_final.weight',
      'ln_final.bias': 'ln_final.bias',
    },
    projection: 'text_projection',
  },
  logitScale: 'logit_scale',
};

/** Which convention a checkpoint uses, from the names it holds; `file` names it in the error. */
export function detectConvention(names: readonly string[], file = 'checkpoint'): Convention {
  const has = (n: string) => names.includes(n);
  if (has('visual.conv1.weight') || has('token_embedding.weight')) return OPENAI_NAMES;
  for (const root of ['', 'owlvit.', 'owlv2.', 'clip.']) {
    if (has(`${root}vision_model.embeddings.class_embedding`) || has(`${root}text_model.embeddings.token_embedding.weight`)) return hfNames(root);
  }
  throw new SafetensorsError(file, 'no CLIP weights found: expected OpenAI names (visual.conv1.weight, …) or Hugging Face names (vision_model.embeddings.…)');
}

/** Every checkpoint source of one canonical parameter of a tower ('vision' | 'text'), layer i. */
export function sourceOf(c: Convention, tower: 'vision' | 'text', param: string): { source: Source; prefix: string } {
  const t = c[tower];
  const m = /^layers\.(\d+)\.(.+)$/.exec(param);
  if (m) {
    const s = c.layer[m[2]!];
    if (!s) throw new Error(`unknown layer parameter ${param}`);
    return { source: s, prefix: t.layer.replace('{i}', m[1]!) };
  }
  if (param === 'proj') return { source: t.projection, prefix: '' };
  const s = t.params[param];
  if (!s) throw new Error(`unknown ${tower} parameter ${param}`);
  return { source: s, prefix: t.prefix };
}
