// Attribute and category evaluation as OVAD reports it: per-attribute average precision over the
// boxes whose label is known (scikit-learn's average_precision_score: thresholds at the distinct
// scores, tied scores taken together, AP = Σ (R_i − R_{i−1}) · P_i), attributes without positives
// excluded and listed; mAP over attributes and per frequency group; category top-k accuracy.
import { InputError } from '../inputs.js';

export interface AttributeEvaluationInput {
  /** [boxes × attributes] row-major scores (any monotone scale: logits or probabilities). */
  scores: Float32Array | Float64Array | readonly number[];
  /** Same shape: 1 positive, 0 negative, −1 unknown (ignored). */
  labels: Int32Array | Int8Array | readonly number[];
  /** Attribute names, one per column. */
  attributes: readonly string[];
  /** Optional group per attribute (e.g. head / medium / tail). */
  groups?: readonly string[];
}

export interface AttributeEvaluation {
  /** Mean AP over the attributes with at least one positive (null when none has). */
  mAP: number | null;
  /** AP per attribute; null for those without positives (excluded from every mean). */
  ap: Record<string, number | null>;
  /** Attributes excluded for having no positive box. */
  excluded: string[];
  /** mAP per group, over its attributes with positives (null when none has). */
  groups?: Record<string, number | null>;
}

/** scikit-learn's average_precision_score of one binary problem; null without positives. */
export function averagePrecision(scores: ArrayLike<number>, positives: ArrayLike<boolean | number>): number | null {
  const n = scores.length;
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => scores[b]! - scores[a]!);
  let total = 0;
  for (let i = 0; i < n; i++) if (positives[i]) total++;
  if (total === 0) return null;
  let tp = 0;
  let seen = 0;
  let ap = 0;
  let lastRecall = 0;
  for (let i = 0; i < n; i++) {
    const k = order[i]!;
    seen++;
    if (positives[k]) tp++;
    // A threshold sits after the last of a run of equal scores.
    if (i + 1 < n && scores[order[i + 1]!] === scores[k]) continue;
    const recall = tp / total;
    ap += (recall - lastRecall) * (tp / seen);
    lastRecall = recall;
  }
  return ap;
}

/** Per-attribute AP over the boxes with a known label, mAP, and per-group mAP. */
export function evaluateAttributes(input: AttributeEvaluationInput): AttributeEvaluation {
  const op = 'evaluateAttributes';
  const { scores, labels, attributes, groups } = input;
  const a = attributes?.length;
  if (!Array.isArray(attributes) || a === 0) throw new InputError(op, 'attributes must be a non-empty list of names');
  if (new Set(attributes).size !== a) throw new InputError(op, `attribute names repeat: ${JSON.stringify(attributes.filter((n, i) => attributes.indexOf(n) !== i))}`);
  if (!scores || scores.length % a !== 0) throw new InputError(op, `scores must be [boxes × ${a}] values, got ${scores?.length}`);
  if (!labels || labels.length !== scores.length) throw new InputError(op, `labels must have the scores' ${scores.length} values, got ${labels?.length}`);
  if (groups !== undefined && (!Array.isArray(groups) || groups.length !== a)) throw new InputError(op, `groups must name one group per attribute (${a}), got ${groups?.length}`);
  const boxes = scores.length / a;
  for (let i = 0; i < scores.length; i++) {
    if (!Number.isFinite(scores[i])) throw new InputError(op, `scores[${Math.floor(i / a)}, ${i % a}] is ${scores[i]}: scores must be finite`);
    const l = labels[i];
    if (l !== 1 && l !== 0 && l !== -1) throw new InputError(op, `labels[${Math.floor(i / a)}, ${i % a}] is ${l}: expected 1, 0 or -1 (unknown)`);
  }
  const ap: Record<string, number | null> = {};
  const excluded: string[] = [];
  attributes.forEach((name, j) => {
    const s: number[] = [];
    const p: boolean[] = [];
    for (let b = 0; b < boxes; b++) {
      const l = labels[b * a + j]!;
      if (l >= 0) {
        s.push(scores[b * a + j]!);
        p.push(l === 1);
      }
    }
    ap[name] = averagePrecision(s, p);
    if (ap[name] === null) excluded.push(name);
  });
  const mean = (names: readonly string[]) => {
    const xs = names.map((n) => ap[n]).filter((v): v is number => v !== null);
    return xs.length ? xs.reduce((x, y) => x + y, 0) / xs.length : null;
  };
  const result: AttributeEvaluation = { mAP: mean(attributes), ap, excluded };
  if (groups) result.groups = Object.fromEntries([...new Set(groups)].map((g) => [g, mean(attributes.filter((_, j) => groups[j] === g))]));
  return result;
}

/**
 * Top-k category accuracy over the boxes with a label (≥ 0): a box counts when fewer than k
 * categories score strictly higher than its own. `scores` [boxes × categories] row-major.
 */
export function categoryAccuracy(scores: ArrayLike<number>, labels: ArrayLike<number>, categories: number, ks: readonly number[] = [1, 5]): { count: number; top: Record<number, number | null> } {
  const op = 'categoryAccuracy';
  if (!Number.isInteger(categories) || categories < 1 || scores.length !== labels.length * categories) {
    throw new InputError(op, `scores must be [${labels.length} boxes × ${categories} categories], got ${scores.length} values`);
  }
  const hits = ks.map(() => 0);
  let count = 0;
  for (let b = 0; b < labels.length; b++) {
    const c = labels[b]!;
    if (c < 0) continue;
    if (!Number.isInteger(c) || c >= categories) throw new InputError(op, `labels[${b}] is ${c}: expected a category index in [0, ${categories}) or -1`);
    count++;
    const own = scores[b * categories + c]!;
    let above = 0;
    for (let k = 0; k < categories; k++) if (scores[b * categories + k]! > own) above++;
    ks.forEach((k, i) => above < k && hits[i]!++);
  }
  return { count, top: Object.fromEntries(ks.map((k, i) => [k, count ? hits[i]! / count : null])) };
}
