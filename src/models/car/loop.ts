// CaR's recurrence (clip_as_rnn/modeling/model/car.py, _forward_car and _forward_stage), apart from
// the models: each stage proposes one mask per remaining query, scores every mask against the
// remaining queries, keeps the queries whose own mask scores above the threshold (the best one when
// none does), and the loop stops when the number of positive masks is unchanged.

/** One stage as it happened: the queries it ran on (original indices) and each one's own-mask score. */
export interface CarStage {
  queries: number[];
  scores: number[];
  kept: number[];
}

export interface CarLoopResult<M> {
  /** Original indices of the queries that survived, in original order. */
  survivors: number[];
  /** Per original query: its score in the last stage if it survived, else 0 (car.py's final_all_scores). */
  scores: number[];
  /** Per original query: the proposal the last stage made for it, if it survived. */
  proposals: (M | undefined)[];
  stages: CarStage[];
}

export interface CarLoopSteps<M> {
  /** One proposal per query of `queries` (original indices), in that order; `stage` counts from 1. */
  propose(queries: readonly number[], stage: number): Promise<M[]>;
  /**
   * The classification probabilities [masks × queries] (row i: proposal i against every query of
   * the stage, softmax over them); only the diagonal (each mask against its own query) is used.
   */
  classify(proposals: readonly M[], queries: readonly number[], stage: number): Promise<ArrayLike<number>>;
  /** Whether a proposal is all zero (car.py then keeps the previous stage's proposals). */
  isEmpty(proposal: M): boolean;
}

/** Index of the largest value, the first one on ties (numpy's argmax). */
function argmax(v: readonly number[]): number {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i]! > v[best]!) best = i;
  return best;
}

/**
 * Runs CaR's loop over `count` queries with confidence threshold `threshold` (a query survives a
 * stage when its own mask's probability exceeds it). As car.py: a stage where no query passes keeps
 * the best one; a stage whose proposals are all zero keeps the previous stage's proposals; the loop
 * ends when the number of positive masks equals the previous stage's.
 */
export async function runCarLoop<M>(count: number, threshold: number, steps: CarLoopSteps<M>): Promise<CarLoopResult<M>> {
  let queries = Array.from({ length: count }, (_, i) => i);
  let previous: Map<number, M> | undefined;
  let positiveLast = 0;
  const stages: CarStage[] = [];
  for (let stage = 1; ; stage++) {
    const made = await steps.propose(queries, stage);
    if (made.length !== queries.length) throw new Error(`CaR stage ${stage}: ${made.length} proposals for ${queries.length} queries`);
    const probs = await steps.classify(made, queries, stage);
    const n = queries.length;
    if (probs.length !== n * n) throw new Error(`CaR stage ${stage}: classification gave ${probs.length} values, expected ${n}×${n}`);
    const scores = queries.map((_, i) => probs[i * n + i]!);
    const kept = scores.flatMap((s, i) => (s > threshold ? [i] : []));
    if (!kept.length) kept.push(argmax(scores));
    stages.push({ queries, scores, kept: kept.map((i) => queries[i]!) });
    let proposals = new Map<number, M>(queries.map((q, i) => [q, made[i] as M]));
    // car.py: all-zero proposals fall back to the previous stage's (per query here, which is the
    // same wherever car.py's positional zip is consistent).
    if (previous && made.every((m) => steps.isEmpty(m))) proposals = previous;
    previous = proposals;
    const positive = kept.filter((i) => scores[i]! > 0).length;
    queries = kept.map((i) => queries[i]!);
    if (positive === positiveLast) {
      const last = stages[stages.length - 1]!;
      const survivors = [...queries].sort((a, b) => a - b);
      const finalScores = new Array<number>(count).fill(0);
      const finalProposals = new Array<M | undefined>(count).fill(undefined);
      for (const q of survivors) {
        finalScores[q] = last.scores[last.queries.indexOf(q)]!;
        finalProposals[q] = proposals.get(q);
      }
      return { survivors, scores: finalScores, proposals: finalProposals, stages };
    }
    positiveLast = positive;
  }
}

/**
 * CaR's forward_clip over prompted images: `logits` holds one [masks × queries] block of
 * exp(logit_scale)·cosine per semantic template. With `ensemble` (semantic templates given) each
 * block is softmaxed over the queries, the blocks are summed, and the sum is softmaxed again; without,
 * the single block is softmaxed once (CaR's single-template path).
 */
export function classificationProbabilities(logits: readonly ArrayLike<number>[], masks: number, queries: number, ensemble: boolean): Float64Array {
  const softmaxRows = (x: ArrayLike<number>) => {
    const out = new Float64Array(masks * queries);
    for (let r = 0; r < masks; r++) {
      let max = -Infinity;
      for (let c = 0; c < queries; c++) max = Math.max(max, x[r * queries + c]!);
      let sum = 0;
      for (let c = 0; c < queries; c++) sum += out[r * queries + c] = Math.exp(x[r * queries + c]! - max);
      for (let c = 0; c < queries; c++) out[r * queries + c]! /= sum;
    }
    return out;
  };
  if (!ensemble) {
    if (logits.length !== 1) throw new Error(`classificationProbabilities: one template without an ensemble, got ${logits.length}`);
    return softmaxRows(logits[0]!);
  }
  const sum = new Float64Array(masks * queries);
  for (const block of logits) {
    const p = softmaxRows(block);
    for (let k = 0; k < sum.length; k++) sum[k]! += p[k]!;
  }
  return softmaxRows(sum);
}
