// OWL-ViT's detection heads as graph compositions: no WebGPU calls here, only graph ops.
import type { GraphBuilder, Value } from '../../graph/builder.js';
import { boxesKernel } from '../../kernels/boxes.js';
import { regionWordSimilarityKernel } from '../../kernels/regionWordSimilarity.js';
import { textTower, visionTokens, type Weights } from '../clip/towers.js';
import type { OwlVitConfig } from './config.js';

export interface ImageHeadOutputs {
  /** [B, N, D]: layer_norm(post_layernorm(tokens)[:, 1:] · post_layernorm(tokens)[:, :1]), HF's image_embeds flattened. */
  imageEmbeds: Value;
  /** [B, N, 4] f32 cxcywh in [0, 1]: sigmoid(box_head(x) + box bias). */
  predBoxes: Value;
  /** [B, N, Dt]: class_head.dense0(x), not normalised (image-guided queries are chosen from these). */
  classEmbedsRaw: Value;
  /** [B, N, 1]: class_head.logit_shift(x) and class_head.logit_scale(x) (before elu + 1). */
  logitShift: Value;
  logitScale: Value;
  /** [B, N] f32: OWLv2's objectness_head(x)[..., 0]; absent for OWL-ViT v1. */
  objectnessLogits?: Value;
}

/**
 * pixels [B, 3, S, S] → everything about an image that does not depend on the queries. `vision`
 * reads the tower's weights, `head` the detection heads' (canonical names of names.ts).
 */
export function imageHeads(g: GraphBuilder, vision: Weights, head: Weights, c: OwlVitConfig, pixels: Value): ImageHeadOutputs {
  const b = pixels.shape[0]!;
  const t = 1 + c.gridSize * c.gridSize;
  const eps = c.vision.eps;
  const tokens = g.layerNorm(visionTokens(g, vision, c.vision, pixels), vision('ln_post.weight'), vision('ln_post.bias'), { eps }, 'vision.ln_post');
  const cls = g.slice(tokens, [0, 0], [b, 1], 'owl.class_token');
  const patches = g.slice(tokens, [0, 1], [b, t], 'owl.patches');
  const merged = g.mul(patches, cls, 'owl.merge_class_token');
  const imageEmbeds = g.layerNorm(merged, head('layer_norm.weight'), head('layer_norm.bias'), { eps }, 'owl.layer_norm');

  const linear = (x: Value, name: string, activation?: 'gelu') =>
    g.matmul(x, head(`${name}.weight`), { transposeB: true, bias: head(`${name}.bias`), activation }, `owl.${name}`);
  // HF's BoxPredictionHead: dense0 → GELU → dense1 → GELU → dense2 (the box head, and OWLv2's objectness head).
  const mlp = (name: string) => linear(linear(linear(imageEmbeds, `${name}.dense0`, 'gelu'), `${name}.dense1`, 'gelu'), `${name}.dense2`);
  const bias = g.op(boxesKernel, [], { op: 'owl_bias', gridSize: c.gridSize }, 'owl.box_bias')[0]!;
  const predBoxes = g.op(boxesKernel, [g.cast(mlp('box_head'), 'f32', 'owl.box_f32'), bias], { op: 'decode' }, 'owl.box_decode')[0]!;
  const objectness = c.modelType === 'owlv2' ? g.reshape(g.cast(mlp('objectness_head'), 'f32', 'owl.objectness_f32'), [b, c.gridSize * c.gridSize]) : undefined;

  return {
    imageEmbeds,
    predBoxes,
    classEmbedsRaw: linear(imageEmbeds, 'class_head.dense0'),
    logitShift: linear(imageEmbeds, 'class_head.logit_shift'),
    logitScale: linear(imageEmbeds, 'class_head.logit_scale'),
    ...(objectness && { objectnessLogits: objectness }),
  };
}

/**
 * Class logits [B, N, Q] f32 = (cos(e, q) + shift) · (elu(scale) + 1), e and q each divided by
 * their norm + 1e-6; queries whose mask is 0 get -1e6. queries [B or 1, Q, Dt], mask [B or 1, Q] i32.
 * Also the normalised class embeddings [B, N, Dt] (HF's class_embeds), and with `best` each box's
 * best logit [B, N, 1] f32 and its query [B, N, 1] i32 (the first on ties, as post-processing).
 */
export function classLogits(g: GraphBuilder, image: Pick<ImageHeadOutputs, 'classEmbedsRaw' | 'logitShift' | 'logitScale'>, queries: Value, mask: Value, options: { best?: boolean } = {}): { logits: Value; classEmbeds: Value; best?: { logits: Value; queries: Value } } {
  const [logits, top, index] = g.op(regionWordSimilarityKernel, [image.classEmbedsRaw, queries, image.logitShift, image.logitScale, mask], { mode: 'owl', queryMask: true, ...(options.best && { topK: 1 }) }, 'owl.class_logits');
  const classEmbeds = g.l2Normalize(image.classEmbedsRaw, 1e-6, 'owl.class_embeds');
  return { logits: logits!, classEmbeds, ...(options.best && { best: { logits: top!, queries: index! } }) };
}

/** ids [T, L] i32 and flat pool positions [T] → text_embeds [T, E], L2-normalised as OwlViTModel returns them. */
export function textEmbeds(g: GraphBuilder, text: Weights, c: OwlVitConfig, ids: Value, pool: Value): Value {
  return g.l2Normalize(textTower(g, text, c.text, 'NK', ids, pool).embeds, 0, 'owl.text_norm');
}
