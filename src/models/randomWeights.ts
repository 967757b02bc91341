// Random-weight checkpoints in Hugging Face layout (config.json + model.safetensors, plus a small
// self-contained tokenizer), for the CLI's built-in demo model, benchmarks and tests. Weights are
// deterministic (seeded), so a model folder is the same on every machine; the outputs mean nothing.
import { bytesToUnicode } from './tokenizer/index.js';
import type { ClipConfig, TowerConfig } from './clip/config.js';

export type RandomModelKind = 'clip' | 'owlvit' | 'owlv2';

/** 256 byte tokens, the same with '</w>', SOT and EOT: CLIP's BPE with no merges (see byteTokenizerFiles). */
const BYTE_VOCAB_SIZE = 2 * 256 + 2;

/**
 * The tiny OWL-ViT the CLI uses when no --model is given: 256-px input, patch 32 (an 8 × 8 grid, 64
 * boxes), width 64, 2 layers per tower; vocabulary = the byte-level tokenizer below (514 ids).
 */
export const TINY_OWLVIT: ClipConfig = {
  vision: { width: 64, layers: 2, heads: 2, mlpWidth: 128, activation: 'quick_gelu', eps: 1e-5, imageSize: 256, patchSize: 32 },
  text: { width: 64, layers: 2, heads: 2, mlpWidth: 128, activation: 'quick_gelu', eps: 1e-5, contextLength: 32, vocabSize: BYTE_VOCAB_SIZE, eosTokenId: BYTE_VOCAB_SIZE - 1 },
  embedDim: 64,
};

/** A tiny CLIP (TINY_OWLVIT's towers at 64 px: a 2 × 2 grid) for examples and tests. */
export const TINY_CLIP: ClipConfig = { ...TINY_OWLVIT, vision: { ...TINY_OWLVIT.vision!, imageSize: 64 } };

/** ViT-B/32 towers (CLIP at 224 px; OWL-ViT B/32 uses them at 768 px with 16 text positions). */
export function vitB32(kind: RandomModelKind): ClipConfig {
  const tower = { width: 768, layers: 12, heads: 12, mlpWidth: 3072, activation: 'quick_gelu' as const, eps: 1e-5 };
  return {
    vision: { ...tower, imageSize: kind === 'clip' ? 224 : 768, patchSize: 32 },
    text: { width: 512, layers: 12, heads: 8, mlpWidth: 2048, activation: 'quick_gelu', eps: 1e-5, contextLength: kind === 'clip' ? 77 : 16, vocabSize: 49408, eosTokenId: 49407 },
    embedDim: 512,
  };
}

/** OWLv2 B/16 (owlv2-base-patch16): ViT-B/16 at 960 px (a 60 × 60 grid: 3 600 boxes, 3 601 tokens), OWL-ViT's text tower. */
export function owlv2B16(): ClipConfig {
  const c = vitB32('owlv2');
  return { ...c, vision: { ...c.vision!, imageSize: 960, patchSize: 16 } };
}

/** Seeded uniform [-1, 1) (mulberry32). */
export function uniform(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2147483648 - 1;
  };
}

/** `count` seeded draws from N(0, std²) (Box–Muller on the uniform stream). */
export function normal(count: number, std: number, seed: number): Float32Array {
  const r = uniform(seed);
  const out = new Float32Array(count);
  for (let i = 0; i < count; i += 2) {
    const u = (r() + 1) / 2 || Number.MIN_VALUE;
    const v = (r() + 1) / 2;
    const m = std * Math.sqrt(-2 * Math.log(u));
    out[i] = m * Math.cos(2 * Math.PI * v);
    if (i + 1 < count) out[i + 1] = m * Math.sin(2 * Math.PI * v);
  }
  return out;
}

/** How one parameter is drawn: `center + spread · U(-1, 1)`. */
export interface Param {
  name: string;
  shape: number[];
  center: number;
  spread: number;
}

function towerParams(prefix: string, c: TowerConfig): Param[] {
  const d = c.width;
  const f = c.mlpWidth;
  const out: Param[] = [];
  const linear = (name: string, n: number, k: number) => out.push({ name: `${name}.weight`, shape: [n, k], center: 0, spread: Math.sqrt(3 / k) }, { name: `${name}.bias`, shape: [n], center: 0, spread: 0.02 });
  const norm = (name: string) => out.push({ name: `${name}.weight`, shape: [d], center: 1, spread: 0.1 }, { name: `${name}.bias`, shape: [d], center: 0, spread: 0.05 });
  for (let i = 0; i < c.layers; i++) {
    const l = `${prefix}encoder.layers.${i}.`;
    norm(`${l}layer_norm1`);
    for (const p of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) linear(`${l}self_attn.${p}`, d, d);
    norm(`${l}layer_norm2`);
    linear(`${l}mlp.fc1`, f, d);
    linear(`${l}mlp.fc2`, d, f);
  }
  return out;
}

/**
 * Every parameter of a HF CLIPModel ('clip'), OwlViTForObjectDetection ('owlvit') or
 * Owlv2ForObjectDetection ('owlv2': the same plus an objectness head), with its init.
 * A CLIP config without `text` (or `vision`) gives a one-tower checkpoint.
 */
export function randomParams(kind: RandomModelKind, c: ClipConfig): Param[] {
  const { vision: v, text: t } = c;
  const owl = kind !== 'clip';
  if (owl && !(v && t)) throw new Error('an OWL-ViT needs both towers');
  const root = owl ? `${kind}.` : '';
  const ln = (name: string, d: number): Param[] => [
    { name: `${name}.weight`, shape: [d], center: 1, spread: 0.1 },
    { name: `${name}.bias`, shape: [d], center: 0, spread: 0.05 },
  ];
  const params: Param[] = [];
  if (v) {
    const vp = `${root}vision_model.`;
    const grid = v.imageSize / v.patchSize;
    params.push(
      { name: `${vp}embeddings.class_embedding`, shape: [v.width], center: 0, spread: 0.5 },
      { name: `${vp}embeddings.patch_embedding.weight`, shape: [v.width, 3, v.patchSize, v.patchSize], center: 0, spread: Math.sqrt(3 / (3 * v.patchSize * v.patchSize)) },
      { name: `${vp}embeddings.position_embedding.weight`, shape: [1 + grid * grid, v.width], center: 0, spread: 0.5 },
      ...ln(`${vp}${owl ? 'pre_layernorm' : 'pre_layrnorm'}`, v.width),
      ...towerParams(vp, v),
      ...ln(`${vp}post_layernorm`, v.width),
      { name: `${root}visual_projection.weight`, shape: [c.embedDim, v.width], center: 0, spread: Math.sqrt(3 / v.width) },
    );
  }
  if (t) {
    const tp = `${root}text_model.`;
    params.push(
      { name: `${tp}embeddings.token_embedding.weight`, shape: [t.vocabSize, t.width], center: 0, spread: 0.5 },
      { name: `${tp}embeddings.position_embedding.weight`, shape: [t.contextLength, t.width], center: 0, spread: 0.5 },
      ...towerParams(tp, t),
      ...ln(`${tp}final_layer_norm`, t.width),
      { name: `${root}text_projection.weight`, shape: [c.embedDim, t.width], center: 0, spread: Math.sqrt(3 / t.width) },
    );
  }
  params.push({ name: `${root}logit_scale`, shape: [], center: Math.log(1 / 0.07), spread: 0 });
  if (owl) {
    const d = v!.width;
    const lin = (name: string, n: number, k: number): Param[] => [
      { name: `${name}.weight`, shape: [n, k], center: 0, spread: Math.sqrt(3 / k) },
      { name: `${name}.bias`, shape: [n], center: 0, spread: 0.02 },
    ];
    params.push(
      ...lin('box_head.dense0', d, d),
      ...lin('box_head.dense1', d, d),
      ...lin('box_head.dense2', 4, d),
      ...lin('class_head.dense0', c.embedDim, d),
      ...lin('class_head.logit_shift', 1, d),
      ...lin('class_head.logit_scale', 1, d),
      ...ln('layer_norm', d),
    );
    if (kind === 'owlv2') params.push(...lin('objectness_head.dense0', d, d), ...lin('objectness_head.dense1', d, d), ...lin('objectness_head.dense2', 1, d));
  }
  return params;
}

/** A Hugging Face config.json for the model (one tower's config is left out when it is absent). */
export function hfConfigJson(kind: RandomModelKind, c: ClipConfig, seed = 1): Record<string, unknown> {
  const { vision: v, text: t } = c;
  const tower = (x: TowerConfig) => ({
    hidden_size: x.width,
    num_hidden_layers: x.layers,
    num_attention_heads: x.heads,
    intermediate_size: x.mlpWidth,
    hidden_act: x.activation,
    layer_norm_eps: x.eps,
  });
  return {
    model_type: kind,
    architectures: [{ clip: 'CLIPModel', owlvit: 'OwlViTForObjectDetection', owlv2: 'Owlv2ForObjectDetection' }[kind]],
    projection_dim: c.embedDim,
    logit_scale_init_value: Math.log(1 / 0.07),
    ...(t && {
      text_config: {
        ...tower(t),
        model_type: `${kind}_text_model`,
        max_position_embeddings: t.contextLength,
        vocab_size: t.vocabSize,
        pad_token_id: 0,
        bos_token_id: t.vocabSize - 2,
        eos_token_id: t.eosTokenId ?? t.vocabSize - 1,
      },
    }),
    ...(v && { vision_config: { ...tower(v), model_type: `${kind}_vision_model`, image_size: v.imageSize, patch_size: v.patchSize, num_channels: 3 } }),
    ovgpu_random_weights: { seed },
  };
}

/**
 * A safetensors file of random F32 weights, as chunks generated one after another (a large model
 * is never whole in memory): every parameter drawn from its own seeded stream.
 */
export function* randomSafetensors(params: readonly Param[], seed: number): Generator<Uint8Array> {
  const header: Record<string, unknown> = { __metadata__: { format: 'pt', ovgpu: 'random weights' } };
  let offset = 0;
  for (const p of params) {
    const bytes = 4 * p.shape.reduce((a, b) => a * b, 1);
    header[p.name] = { dtype: 'F32', shape: p.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8); // keep the data 8-byte aligned
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, BigInt(json.length), true);
  yield len;
  yield new TextEncoder().encode(json);
  for (const [i, p] of params.entries()) {
    const r = uniform(seed * 1_000_003 + i);
    const n = p.shape.reduce((a, b) => a * b, 1);
    const chunk = new Float32Array(Math.min(n, 1 << 20));
    for (let start = 0; start < n; start += chunk.length) {
      const m = Math.min(chunk.length, n - start);
      for (let j = 0; j < m; j++) chunk[j] = p.center + p.spread * r();
      yield new Uint8Array(chunk.buffer, 0, 4 * m);
    }
  }
}

/**
 * The byte-level tokenizer files (HF vocab.json + merges.txt with no merges): every UTF-8 byte is a
 * token, so any text tokenizes, one id per byte (CLIP's BPE with an empty merge list).
 */
function byteTokenizerFiles(): { vocab: Record<string, number>; merges: string } {
  const bytes = bytesToUnicode();
  const ordered = [...bytes.filter((ch) => ch.codePointAt(0)! < 256), ...bytes.filter((ch) => ch.codePointAt(0)! >= 256)];
  const tokens = [...ordered, ...ordered.map((ch) => `${ch}</w>`), '<|startoftext|>', '<|endoftext|>'];
  return { vocab: Object.fromEntries(tokens.map((tok, id) => [tok, id])), merges: '#version: 0.2\n' };
}

/**
 * A random model's files, by name: model.safetensors (as chunks), config.json and, when the text
 * vocabulary is the byte-level one, vocab.json + merges.txt.
 */
export function randomModelChunks(kind: RandomModelKind, config: ClipConfig, seed = 1): Map<string, Iterable<Uint8Array>> {
  const text = new TextEncoder();
  const files = new Map<string, Iterable<Uint8Array>>([['model.safetensors', randomSafetensors(randomParams(kind, config), seed)]]);
  if (config.text?.vocabSize === BYTE_VOCAB_SIZE) {
    const { vocab, merges } = byteTokenizerFiles();
    files.set('vocab.json', [text.encode(JSON.stringify(vocab))]);
    files.set('merges.txt', [text.encode(merges)]);
  }
  files.set('config.json', [text.encode(JSON.stringify(hfConfigJson(kind, config, seed), null, 2))]);
  return files;
}

/**
 * A random model in memory, file name → bytes: what ClipModel.load, OwlVitDetector.load and
 * RegionClassifier.load take in a page (e.g. `randomModel('owlvit', TINY_OWLVIT)`).
 */
export function randomModel(kind: RandomModelKind, config: ClipConfig, seed = 1): Map<string, Uint8Array> {
  const out = new Map<string, Uint8Array>();
  for (const [name, chunks] of randomModelChunks(kind, config, seed)) {
    const parts = [...chunks].map((c) => c.slice());
    const bytes = new Uint8Array(parts.reduce((n, c) => n + c.length, 0));
    let at = 0;
    for (const c of parts) {
      bytes.set(c, at);
      at += c.length;
    }
    out.set(name, bytes);
  }
  return out;
}
