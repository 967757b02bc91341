// An independent reference for Hugging Face's post_process_image_guided_detection (transformers
// v4.35.2, OwlViTImageProcessor; Owlv2ImageProcessor's is a "Copied from" of it), written line by
// line from that code with torch's float32 arithmetic as Math.fround. It shares nothing with
// src/models/owlvit/postprocess.ts, so the fixtures' threshold-0 outputs check it and it checks
// ours at other thresholds.

import { expect } from 'vitest';
import { expectClose } from './check.js';
import type { OwlVitDetector } from '../../src/index.js';

const f = Math.fround;

export interface HfImageGuidedResult {
  scores: number[];
  boxes: number[];
}

/** box_iou(boxes1 [1, 4], boxes2 [N, 4])[0][0] of the owlvit module: plain IoU, areas not clamped. */
function boxIouRow(a: readonly number[], boxes: readonly number[][]): number[] {
  const area = (b: readonly number[]) => f(f(b[2]! - b[0]!) * f(b[3]! - b[1]!));
  return boxes.map((b) => {
    const w = Math.max(0, f(Math.min(a[2]!, b[2]!) - Math.max(a[0]!, b[0]!)));
    const h = Math.max(0, f(Math.min(a[3]!, b[3]!) - Math.max(a[1]!, b[1]!)));
    const inter = f(w * h);
    return f(inter / f(f(area(a) + area(b)) - inter));
  });
}

/**
 * logits [B, N, Q], targetBoxes [B, N, 4] cxcywh, targetSizes (h, w) per image. Returns one entry
 * per image the reference reports; an image whose scores are all 0 is skipped there, here it is
 * `undefined` so indices stay aligned.
 */
export function hfPostProcessImageGuided(logits: ArrayLike<number>, targetBoxes: ArrayLike<number>, [b, n, q]: readonly [number, number, number], threshold: number, nmsThreshold: number, targetSizes: readonly (readonly [number, number])[]): (HfImageGuidedResult | undefined)[] {
  // probs = torch.max(logits, dim=-1); scores = torch.sigmoid(probs.values)
  const scores = Array.from({ length: b }, (_, idx) =>
    Array.from({ length: n }, (_, i) => {
      const row = Array.from({ length: q }, (_, j) => logits[(idx * n + i) * q + j]!);
      return f(1 / (1 + Math.exp(-Math.max(...row))));
    }),
  );
  // target_boxes = center_to_corners_format(target_boxes)
  let boxes = Array.from({ length: b }, (_, idx) =>
    Array.from({ length: n }, (_, i) => {
      const [cx, cy, w, h] = [0, 1, 2, 3].map((k) => targetBoxes[(idx * n + i) * 4 + k]!);
      return [f(cx! - f(0.5 * w!)), f(cy! - f(0.5 * h!)), f(cx! + f(0.5 * w!)), f(cy! + f(0.5 * h!))];
    }),
  );
  if (nmsThreshold < 1.0) {
    for (let idx = 0; idx < b; idx++) {
      const s = scores[idx]!;
      const order = [...s.keys()].sort((x, y) => s[y]! - s[x]!); // torch.argsort(-scores[idx])
      for (const i of order) {
        if (!s[i]) continue;
        const ious = boxIouRow(boxes[idx]![i]!, boxes[idx]!);
        ious[i] = -1.0; // mask self-IoU
        ious.forEach((iou, k) => iou > nmsThreshold && (s[k] = 0));
      }
    }
  }
  // target_boxes = target_boxes * [img_w, img_h, img_w, img_h]
  boxes = boxes.map((bs, idx) => {
    const [h, w] = targetSizes[idx]!;
    return bs.map((x) => [f(x[0]! * w), f(x[1]! * h), f(x[2]! * w), f(x[3]! * h)]);
  });
  return scores.map((queryScores, idx) => {
    if (!queryScores.some((s) => s !== 0)) return undefined;
    // query_scores[query_scores < threshold] = 0.0
    const thr = f(threshold);
    const thresholded = queryScores.map((s) => (s < thr ? 0 : s));
    const maxScore = f(Math.max(...thresholded) + f(1e-6));
    const alphas = thresholded.map((s) => Math.min(Math.max(f(f(s - f(maxScore * f(0.1))) / f(maxScore * f(0.9))), 0.0), 1.0));
    const mask = [...alphas.keys()].filter((i) => alphas[i]! > 0);
    return { scores: mask.map((i) => alphas[i]!), boxes: mask.flatMap((i) => boxes[idx]![i]!) };
  });
}

/**
 * A detector's postProcessImageGuided against the reference on a fixture's f32 image-guided outputs
 * (`ig_logits`, `ig_target_pred_boxes`; one image query, so Q = 1): at threshold 0 the reference
 * must give the fixture's `ig_post_*` (which checks the reference); at each of `thresholds` ours
 * must equal it; and at some of them thresholding the rescaled scores (HF's rule before PR #25608)
 * would keep another number of boxes, so the test tells the two rules apart. `sizes` go to ours, `refSizes` to the
 * reference, `refBoxes` maps the reference's boxes to ours (OWLv2: the clip to the original image).
 */
export async function checkImageGuidedThresholds(
  det: Pick<OwlVitDetector, 'postProcessImageGuided'>,
  fixture: (name: string) => Float32Array,
  o: { n: number; sizes: [number, number][]; refSizes: [number, number][]; refBoxes?: (boxes: number[], img: number) => number[]; thresholds: number[] },
): Promise<string[]> {
  const [logits, targetPredBoxes] = [fixture('ig_logits'), fixture('ig_target_pred_boxes')];
  const shape = [o.sizes.length, o.n, 1] as const;
  const refAt = (t: number) => hfPostProcessImageGuided(logits, targetPredBoxes, shape, t, 0.3, o.refSizes).map((r, img) => r && { scores: r.scores, boxes: o.refBoxes ? o.refBoxes(r.boxes, img) : r.boxes });
  const messages: string[] = [];
  let rulesDiffer = 0;
  refAt(0).forEach((r, img) => {
    expectClose(r!.scores, fixture(`ig_post_scores_${img}`), { scaleTol: 1e-5, label: `reference at 0 vs ig_post_scores_${img}` });
    expectClose(r!.boxes, (o.refBoxes ?? ((b: number[]) => b))(Array.from(fixture(`ig_post_boxes_${img}`)), img), { scaleTol: 1e-5, label: `reference at 0 vs ig_post_boxes_${img}` });
  });
  for (const threshold of o.thresholds) {
    const ours = await det.postProcessImageGuided({ logits, targetPredBoxes }, { threshold, targetSizes: o.sizes });
    refAt(threshold).forEach((r, img) => {
      const label = `threshold ${threshold} image ${img}`;
      expect(ours[img]!.scores.length, label).toBe(r!.scores.length);
      const rescaledRule = Array.from(fixture(`ig_post_scores_${img}`)).filter((a) => a >= threshold).length;
      if (rescaledRule !== r!.scores.length) rulesDiffer++;
      if (r!.scores.length === 0) return messages.push(`${label}: none kept (the rescaled-score rule keeps ${rescaledRule})`);
      expectClose(ours[img]!.scores, r!.scores, { scaleTol: 1e-6, label: `${label} scores` });
      const m = expectClose(ours[img]!.boxes, r!.boxes, { scaleTol: 1e-6, label: `${label} boxes` }).message;
      messages.push(`${label}: ${r!.scores.length} kept (the rescaled-score rule keeps ${rescaledRule}); ${m}`);
    });
  }
  expect(rulesDiffer, 'cases where thresholding the rescaled scores keeps another number of boxes').toBeGreaterThan(0);
  return messages;
}
