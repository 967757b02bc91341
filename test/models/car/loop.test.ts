import { describe, expect, it } from 'vitest';
import { classificationProbabilities, runCarLoop } from '../../../src/models/car/index.js';

/**
 * A loop whose classifier returns, at each stage, a matrix with the given own-mask scores on the
 * diagonal (rows filled so they sum to 1, as a softmax would); proposals are labelled
 * `q<query>@<stage>` so the result shows which stage's mask each query got.
 */
function scripted(diagonals: number[][], empty: (label: string) => boolean = () => false) {
  const seen: number[][] = [];
  const steps = {
    async propose(queries: readonly number[], stage: number) {
      seen.push([...queries]);
      return queries.map((q) => `q${q}@${stage}`);
    },
    async classify(proposals: readonly string[], queries: readonly number[], stage: number) {
      const d = diagonals[stage - 1];
      if (!d || d.length !== queries.length) throw new Error(`test script has no ${queries.length} scores for stage ${stage}`);
      const n = queries.length;
      return Float64Array.from({ length: n * n }, (_, k) => (k % (n + 1) === 0 ? d[k / (n + 1)]! : n > 1 ? (1 - d[Math.floor(k / n)]!) / (n - 1) : 0));
    },
    isEmpty: empty,
  };
  return { steps, seen };
}

describe("CaR's loop (car.py) with injected classification scores", () => {
  it('drops queries scoring at or below the threshold, stage by stage, until the positives stop changing', async () => {
    const { steps, seen } = scripted([[0.6, 0.2, 0.5], [0.7, 0.3], [0.9]]);
    const r = await runCarLoop(3, 0.45, steps);
    expect(seen).toEqual([[0, 1, 2], [0, 2], [0]]);
    expect(r.stages.map((s) => s.kept)).toEqual([[0, 2], [0], [0]]);
    expect(r.survivors).toEqual([0]);
    expect(r.scores).toEqual([0.9, 0, 0]);
    expect(r.proposals).toEqual(['q0@3', undefined, undefined]);
  });

  it('keeps the best mask when none passes (numpy argmax: first of equals), and that counts as a positive', async () => {
    const { steps, seen } = scripted([[0.3, 0.4, 0.4], [0.2]]);
    const r = await runCarLoop(3, 0.45, steps);
    expect(seen).toEqual([[0, 1, 2], [1]]);
    expect(r.survivors).toEqual([1]);
    expect(r.scores).toEqual([0, 0.2, 0]);
  });

  it('runs a second stage even when every query passes the first, then stops (count unchanged)', async () => {
    const { steps, seen } = scripted([[0.5, 0.6], [0.55, 0.65]]);
    const r = await runCarLoop(2, 0.45, steps);
    expect(seen).toEqual([[0, 1], [0, 1]]);
    expect(r.stages.length).toBe(2);
    expect(r.proposals).toEqual(['q0@2', 'q1@2']);
    expect(r.scores).toEqual([0.55, 0.65]);
  });

  it('maps surviving masks back to the original query order', async () => {
    // Queries 1 and 3 of 4 survive; their masks come back at positions 1 and 3.
    const { steps, seen } = scripted([[0.1, 0.5, 0.2, 0.8], [0.6, 0.7]]);
    const r = await runCarLoop(4, 0.45, steps);
    expect(seen[1]).toEqual([1, 3]);
    expect(r.survivors).toEqual([1, 3]);
    expect(r.proposals).toEqual([undefined, 'q1@2', undefined, 'q3@2']);
    expect(r.scores).toEqual([0, 0.6, 0, 0.7]);
  });

  it("keeps the previous stage's proposals when a stage's are all zero", async () => {
    const { steps } = scripted([[0.6, 0.2, 0.7], [0.8, 0.9]], (label) => label.endsWith('@2'));
    const r = await runCarLoop(3, 0.45, steps);
    expect(r.proposals).toEqual(['q0@1', undefined, 'q2@1']);
  });

  it('threshold 0 keeps everything; threshold 1 keeps only the fallback', async () => {
    expect((await runCarLoop(3, 0, scripted([[0.2, 0.3, 0.5], [0.2, 0.3, 0.5]]).steps)).survivors).toEqual([0, 1, 2]);
    expect((await runCarLoop(3, 1, scripted([[0.2, 0.3, 0.5], [1]]).steps)).survivors).toEqual([2]);
  });
});

describe('classificationProbabilities (forward_clip)', () => {
  const softmax = (v: number[]) => {
    const e = v.map((x) => Math.exp(x - Math.max(...v)));
    return e.map((x) => x / e.reduce((a, b) => a + b, 0));
  };
  it('one template: a softmax over the queries per mask', () => {
    const p = classificationProbabilities([[1, 2, 3, 0, 0, 5]], 2, 3, false);
    expect(Array.from(p)).toEqual([...softmax([1, 2, 3]), ...softmax([0, 0, 5])]);
  });
  it('an ensemble: per-template softmaxes summed, then softmaxed again', () => {
    const a = [1, 2, 3, 0];
    const b = [4, -1, 0, 2];
    const p = classificationProbabilities([a, b], 2, 2, true);
    const row = (r: number) => softmax(softmax(a.slice(r * 2, r * 2 + 2)).map((v, i) => v + softmax(b.slice(r * 2, r * 2 + 2))[i]!));
    const want = [...row(0), ...row(1)];
    Array.from(p).forEach((v, i) => expect(v).toBeCloseTo(want[i]!, 14));
  });
});
