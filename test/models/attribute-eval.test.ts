// Attribute AP (scikit-learn's average_precision_score) and category accuracy, against hand-computed
// values and a float64 reference written from the definition (every distinct score as a threshold).
import { describe, expect, it } from 'vitest';
import { InputError, averagePrecision, categoryAccuracy, evaluateAttributes } from '../../src/index.js';
import { randomArray } from '../util/random.js';

/** AP from the definition: thresholds t at the distinct scores, descending; Σ (R(t) − R(prev)) · P(t). */
function referenceAp(scores: number[], positive: boolean[]): number | null {
  const total = positive.filter(Boolean).length;
  if (total === 0) return null;
  const thresholds = [...new Set(scores)].sort((a, b) => b - a);
  let ap = 0;
  let previous = 0;
  for (const t of thresholds) {
    let tp = 0;
    let predicted = 0;
    scores.forEach((s, i) => {
      if (s >= t) {
        predicted++;
        if (positive[i]) tp++;
      }
    });
    ap += (tp / total - previous) * (tp / predicted);
    previous = tp / total;
  }
  return ap;
}

describe('averagePrecision / evaluateAttributes', () => {
  it('hand-computed cases: the scikit-learn docs example, ties, all positive, no positives', () => {
    // sklearn.metrics.average_precision_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) = 0.8333…
    expect(averagePrecision([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])).toBeCloseTo(5 / 6, 12);
    // Three tied at 0.5 (one positive): P = 1/3 at R = 1/2, then P = 1/2 at R = 1.
    expect(averagePrecision([0.5, 0.5, 0.5, 0.1], [1, 0, 0, 1])).toBeCloseTo(0.5 / 3 + 0.25, 12);
    // The same scores untied in the positive's favour give more.
    expect(averagePrecision([0.6, 0.5, 0.5, 0.1], [1, 0, 0, 1])).toBeCloseTo(0.5 + 0.5 * 0.5, 12);
    expect(averagePrecision([0.2, 0.1], [1, 1])).toBe(1);
    expect(averagePrecision([0.2, 0.1], [0, 0])).toBeNull();
    const r = evaluateAttributes({
      scores: [0.9, 0.1, 0.3, 0.8, 0.2, 0.4, 0.7, 0.6, 0.5, 0.1, 0.9, 0.2],
      labels: [1, 0, -1, 0, 0, 1, 1, -1, 0, -1, 0, 1],
      attributes: ['red', 'round', 'wet'],
      groups: ['head', 'tail', 'tail'],
    });
    // red: scores 0.9 (+), 0.8 (−), 0.7 (+) [0.1 unknown] → 1·½ + ⅔·½; round: 0.1 (−), 0.2 (−), 0.9 (−) → no positives; wet: 0.4 (+), 0.5 (−), 0.2 (+) [0.3 unknown] → ½·½ + ⅔·½.
    expect(r.ap.red).toBeCloseTo(0.5 + 1 / 3, 12);
    expect(r.ap.round).toBeNull();
    expect(r.ap.wet).toBeCloseTo(0.25 + 1 / 3, 12);
    expect(r.excluded).toEqual(['round']);
    expect(r.mAP).toBeCloseTo((0.5 + 1 / 3 + 0.25 + 1 / 3) / 2, 12);
    expect(r.groups!.head).toBeCloseTo(0.5 + 1 / 3, 12);
    expect(r.groups!.tail).toBeCloseTo(0.25 + 1 / 3, 12);
    expect(evaluateAttributes({ scores: [0.3], labels: [0], attributes: ['x'] })).toEqual({ mAP: null, ap: { x: null }, excluded: ['x'] });
  });

  it('random cases (with ties and unknowns) equal the float64 reference', () => {
    for (let seed = 1; seed <= 20; seed++) {
      const boxes = 5 + seed * 7;
      const a = 1 + (seed % 6);
      // Scores rounded to few levels so that ties are common.
      const scores = Array.from(randomArray(boxes * a, seed), (v) => Math.round(v * (seed % 3 === 0 ? 4 : 1000)) / 10);
      const labels = Array.from(randomArray(boxes * a, 100 + seed), (v) => (v > 0.5 ? -1 : v > -0.2 ? 0 : 1));
      const names = Array.from({ length: a }, (_, j) => `a${j}`);
      const r = evaluateAttributes({ scores: Float32Array.from(scores), labels: Int32Array.from(labels), attributes: names });
      const refs: number[] = [];
      names.forEach((n, j) => {
        const s: number[] = [];
        const p: boolean[] = [];
        for (let b = 0; b < boxes; b++) if (labels[b * a + j]! >= 0) (s.push(Math.fround(scores[b * a + j]!)), p.push(labels[b * a + j] === 1));
        const ref = referenceAp(s, p);
        if (ref === null) expect(r.ap[n]).toBeNull();
        else {
          expect(r.ap[n]).toBeCloseTo(ref, 12);
          refs.push(ref);
        }
      });
      if (refs.length) expect(r.mAP).toBeCloseTo(refs.reduce((x, y) => x + y, 0) / refs.length, 12);
    }
  });

  it('category top-1 / top-5 accuracy over labelled boxes', () => {
    const scores = [0.9, 0.05, 0.05, 0.1, 0.2, 0.7, 0.3, 0.3, 0.4, 0.5, 0.2, 0.3];
    // Box 0: label 0 ranks 1st; box 1: label 1 ranks 2nd; box 2: label 1 (0.3, below 0.4) ranks 2nd; box 3: unlabelled.
    const r = categoryAccuracy(scores, [0, 1, 1, -1], 3, [1, 2]);
    expect(r).toEqual({ count: 3, top: { 1: 1 / 3, 2: 1 } });
    expect(() => categoryAccuracy(scores, [0, 1, 5, -1], 3)).toThrow(/labels\[2\] is 5/);
  });

  it('refuses bad input naming it', () => {
    const e = (x: Parameters<typeof evaluateAttributes>[0]) => () => evaluateAttributes(x);
    expect(e({ scores: [1, 2, 3], labels: [1, 0, 1], attributes: ['a', 'b'] })).toThrow(/scores must be \[boxes × 2\] values, got 3/);
    expect(e({ scores: [1, 2], labels: [1, 0, 1], attributes: ['a', 'b'] })).toThrow(/labels must have the scores' 2 values, got 3/);
    expect(e({ scores: [1, 2], labels: [1, 2], attributes: ['a', 'b'] })).toThrow(/labels\[0, 1\] is 2: expected 1, 0 or -1/);
    expect(e({ scores: [1, NaN], labels: [1, 0], attributes: ['a', 'b'] })).toThrow(/scores\[0, 1\] is NaN/);
    expect(e({ scores: [1, 2], labels: [1, 0], attributes: [] })).toThrow(InputError);
    expect(e({ scores: [1, 2], labels: [1, 0], attributes: ['a', 'a'] })).toThrow(/attribute names repeat/);
    expect(e({ scores: [1, 2], labels: [1, 0], attributes: ['a', 'b'], groups: ['head'] })).toThrow(/groups must name one group per attribute \(2\)/);
  });
});
