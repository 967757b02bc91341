// CLIP's towers as graph compositions: no WebGPU calls here, only graph ops. Both take the
// weights as a lookup from canonical names (names.ts) to graph values.
import type { GraphBuilder, Value } from '../../graph/builder.js';
import type { TextConfig, TowerConfig, VisionConfig } from './config.js';

export type Weights = (name: string) => Value;

/** Values inside a block that callers may read: the ln_1 output (gradCAM's target) and the packed qkv. */
export interface BlockTaps {
  ln1?: Value;
  qkv?: Value;
}

/** One pre-LN residual block: x + attn(ln1(x)), then + mlp(ln2(x)); residuals fused into matmuls. */
export function transformerBlock(g: GraphBuilder, w: Weights, layer: number, c: TowerConfig, x: Value, mask: 'causal' | undefined, name: string, taps: BlockTaps = {}): Value {
  const p = (s: string) => w(`layers.${layer}.${s}`);
  const h = (taps.ln1 = g.layerNorm(x, p('ln1.weight'), p('ln1.bias'), { eps: c.eps }, `${name}.ln1`));
  const qkv = (taps.qkv = g.matmul(h, p('qkv.weight'), { transposeB: true, bias: p('qkv.bias') }, `${name}.qkv`));
  const a = g.attentionPacked(qkv, { heads: c.heads, mask }, `${name}.attn`);
  const x1 = g.matmul(a, p('out.weight'), { transposeB: true, bias: p('out.bias'), residual: x }, `${name}.out`);
  const h2 = g.layerNorm(x1, p('ln2.weight'), p('ln2.bias'), { eps: c.eps }, `${name}.ln2`);
  const f = g.matmul(h2, p('fc1.weight'), { transposeB: true, bias: p('fc1.bias'), activation: c.activation }, `${name}.fc1`);
  return g.matmul(f, p('fc2.weight'), { transposeB: true, bias: p('fc2.bias'), residual: x1 }, `${name}.fc2`);
}

export interface TowerOutputs {
  /** [B, embed]: the projected pooled embedding (unnormalised). */
  embeds: Value;
  /** [B, T, embed]: ln_post on every token, then the projection (vision, when asked). */
  dense?: Value;
  /** Named intermediates for debugging and tests (always recorded; only read when asked). */
  intermediates: Record<string, Value>;
}

/** Projection into the joint space; 'NK' weights are nn.Linear-shaped [embed, width]. */
function project(g: GraphBuilder, w: Weights, x: Value, layout: 'NK' | 'KN', name: string): Value {
  return g.matmul(x, w('proj'), { transposeB: layout === 'NK' }, name);
}

/**
 * pixels [B, 3, H, W] → the encoder's tokens [B, 1 + patches, width] before ln_post (class token
 * first); heads that read every token (OWL-ViT) start here.
 */
export function visionTokens(g: GraphBuilder, w: Weights, c: VisionConfig, pixels: Value, inter: Record<string, Value> = {}): Value {
  let x = (inter.ln_pre_out = visionEmbed(g, w, c, pixels));
  for (let i = 0; i < c.layers; i++) x = inter[`block${i}_out`] = transformerBlock(g, w, i, c, x, undefined, `vision.block${i}`);
  return (inter.tokens_pre_ln_post = x);
}

/** pixels [B, 3, H, W] → ln_pre(class token and patch embeddings + position embedding) [B, 1 + patches, width]. */
export function visionEmbed(g: GraphBuilder, w: Weights, c: VisionConfig, pixels: Value): Value {
  const x = g.patchEmbed(pixels, w('patch.weight'), w('class'), w('pos'), { patchSize: c.patchSize }, 'vision.embed');
  return g.layerNorm(x, w('ln_pre.weight'), w('ln_pre.bias'), { eps: c.eps }, 'vision.ln_pre');
}

/**
 * The attention probabilities of a block averaged over heads, [B, L, L], from its packed qkv
 * [B, L, 3·width] (what nn.MultiheadAttention returns with need_weights): recomputed beside the
 * fused attention kernel, which never materialises them.
 */
export function headAveragedAttention(g: GraphBuilder, qkv: Value, heads: number, name: string): Value {
  const [b, l, three] = qkv.shape as [number, number, number];
  const width = three / 3;
  const dh = width / heads;
  const part = (i: number) => g.transpose(g.reshape(g.slice(qkv, [0, 0, i * width], [b, l, (i + 1) * width], `${name}.split`), [b, l, heads, dh]), [0, 2, 1, 3], `${name}.heads`);
  const logits = g.matmul(g.scale(part(0), dh ** -0.5, `${name}.scale`), part(1), { transposeB: true }, `${name}.logits`);
  return g.mean(g.softmax(logits, {}, `${name}.softmax`), [1], `${name}.mean`);
}

/** pixels [B, 3, H, W] → image embeddings (and the dense token map when `dense`). */
export function visionTower(g: GraphBuilder, w: Weights, c: VisionConfig, layout: 'NK' | 'KN', pixels: Value, options: { dense?: boolean } = {}): TowerOutputs {
  const b = pixels.shape[0]!;
  const inter: Record<string, Value> = {};
  const x = visionTokens(g, w, c, pixels, inter);
  const lnPost = (v: Value) => g.layerNorm(v, w('ln_post.weight'), w('ln_post.bias'), { eps: c.eps }, 'vision.ln_post');
  if (options.dense) {
    const post = (inter.tokens_post_ln_post = lnPost(x));
    const dense = (inter.tokens_proj = project(g, w, post, layout, 'vision.proj'));
    const embeds = g.reshape(g.slice(dense, [0, 0], [b, 1], 'vision.pool'), [b, -1]);
    return { embeds, dense, intermediates: inter };
  }
  const cls = g.reshape(g.slice(x, [0, 0], [b, 1], 'vision.pool'), [b, -1]);
  return { embeds: project(g, w, lnPost(cls), layout, 'vision.proj'), intermediates: inter };
}

/** ids [B, L] (i32) and the pooled position of each row as flat indices b·L + t → text embeddings. */
export function textTower(g: GraphBuilder, w: Weights, c: TextConfig, layout: 'NK' | 'KN', ids: Value, poolIndex: Value): TowerOutputs {
  return textFromEmbeddings(g, w, c, layout, g.gather(w('tok'), ids, 'text.tokens'), poolIndex);
}

/**
 * Token embeddings [B, L, width] (ids looked up, or learned prompt vectors) → text embeddings:
 * position embedding, causal blocks, ln_final, the rows at `poolIndex` (flat b·L + t), projection.
 */
export function textFromEmbeddings(g: GraphBuilder, w: Weights, c: TextConfig, layout: 'NK' | 'KN', embeds: Value, poolIndex: Value): TowerOutputs {
  const [b, l] = embeds.shape as [number, number];
  const inter: Record<string, Value> = {};
  const pos = l === c.contextLength ? w('pos') : g.slice(w('pos'), [0], [l]);
  let x = g.add(embeds, pos, 'text.pos');
  for (let i = 0; i < c.layers; i++) x = inter[`block${i}_out`] = transformerBlock(g, w, i, c, x, 'causal', `text.block${i}`);
  x = inter.ln_final_out = g.layerNorm(x, w('ln_final.weight'), w('ln_final.bias'), { eps: c.eps }, 'text.ln_final');
  const pooled = (inter.pooled = g.gather(g.reshape(x, [b * l, c.width]), poolIndex, 'text.pool'));
  return { embeds: project(g, w, pooled, layout, 'text.proj'), intermediates: inter };
}

/** Where each row of ids is pooled: the first eos id, else (OpenAI) the first argmax. Flat b·L + t. */
export function poolIndices(ids: ArrayLike<number>, batch: number, length: number, eosTokenId?: number): Int32Array {
  const out = new Int32Array(batch);
  for (let r = 0; r < batch; r++) {
    let best = 0;
    for (let t = 0; t < length; t++) {
      const v = ids[r * length + t]!;
      if (eosTokenId !== undefined) {
        if (v === eosTokenId) {
          best = t;
          break;
        }
      } else if (v > ids[r * length + best]!) best = t;
    }
    out[r] = r * length + best;
  }
  return out;
}
