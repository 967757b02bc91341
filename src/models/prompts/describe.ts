// OvarNet's task end to end: boxes from a detector (OWL-ViT), each then named and described by the
// region classifier with learned category and attribute prompts.
import type { LearnedPrompts } from './file.js';
import type { Box, RegionClassifier, RegionImage, ScoredName } from '../region/classifier.js';

export interface DescribedBox {
  /** Top categories from the learned prompts (softmax over the categories), best first. */
  categories: ScoredName[];
  /** Every attribute's probability (sigmoid of its learned-prompt logit). */
  attributes: Record<string, number>;
}

/**
 * Each box (e.g. a detection's) described by `classifier` with learned `prompts` (a file written by
 * savePrompts, or readPrompts' result). Boxes that are empty or outside the image get null.
 */
export async function describeBoxes<T extends { box: readonly number[] }>(classifier: RegionClassifier, image: RegionImage, items: readonly T[], prompts: string | LearnedPrompts, options: { topK?: number } = {}): Promise<(T & { description: DescribedBox | null })[]> {
  const valid = items.map((d) => d.box.length === 4 && d.box[2]! > d.box[0]! && d.box[3]! > d.box[1]! && d.box[2]! > 0 && d.box[3]! > 0);
  const boxes = items.filter((_, i) => valid[i]).map((d) => d.box as unknown as Box);
  const results = boxes.length ? await classifier.classify(image, boxes, { prompts, allScores: true, topK: options.topK ?? 3 }) : [];
  let at = 0;
  return items.map((d, i) => {
    const r = valid[i] ? results[at++] : undefined;
    return { ...d, description: r ? { categories: r.categories, attributes: r.scores!.attributes } : null };
  });
}
