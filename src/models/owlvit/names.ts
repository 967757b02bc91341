// OwlViTForObjectDetection's and Owlv2ForObjectDetection's head parameters: canonical name →
// checkpoint name and shape. The CLIP towers live under `owlvit.` (`owlv2.`) and are read through
// clip/names.ts (hfNames(root)).
import type { OwlVitConfig } from './config.js';

/** Head parameters and their shapes for a config (D: vision width, Dt: text width). */
export function headShapes(c: OwlVitConfig): Map<string, { name: string; shape: number[] }> {
  const d = c.vision.width;
  const dt = c.text.width;
  const entries: [string, number[]][] = [
    ['layer_norm.weight', [d]],
    ['layer_norm.bias', [d]],
    ['box_head.dense0.weight', [d, d]],
    ['box_head.dense0.bias', [d]],
    ['box_head.dense1.weight', [d, d]],
    ['box_head.dense1.bias', [d]],
    ['box_head.dense2.weight', [4, d]],
    ['box_head.dense2.bias', [4]],
    ['class_head.dense0.weight', [dt, d]],
    ['class_head.dense0.bias', [dt]],
    ['class_head.logit_shift.weight', [1, d]],
    ['class_head.logit_shift.bias', [1]],
    ['class_head.logit_scale.weight', [1, d]],
    ['class_head.logit_scale.bias', [1]],
  ];
  // OWLv2's objectness head is a box head with one output.
  if (c.modelType === 'owlv2') {
    entries.push(['objectness_head.dense0.weight', [d, d]], ['objectness_head.dense0.bias', [d]], ['objectness_head.dense1.weight', [d, d]], ['objectness_head.dense1.bias', [d]], ['objectness_head.dense2.weight', [1, d]], ['objectness_head.dense2.bias', [1]]);
  }
  // HF names these exactly like the canonical names.
  return new Map(entries.map(([n, shape]) => [n, { name: n, shape }]));
}

/** The towers' root in the checkpoint: 'owlvit.' or 'owlv2.'. */
export const towerRoot = (c: Pick<OwlVitConfig, 'modelType'>): string => `${c.modelType}.`;

/** Checkpoint tensors detection never reads (OwlViTModel's / Owlv2Model's CLIP-style image–text logits). */
export const unusedByDetection = (c: Pick<OwlVitConfig, 'modelType'>): string[] => [`${towerRoot(c)}logit_scale`, `${towerRoot(c)}visual_projection.weight`];
