// The one numerical check every test uses: |got - ref| <= atol + rtol * |ref|. On failure it lists
// the first mismatches (index, got, ref) and the max error, so the message says where to look.
export interface CloseOptions {
  atol?: number;
  rtol?: number;
  /** Tolerance relative to the output scale: atol = scaleTol * max|ref| (and rtol = scaleTol unless given). */
  scaleTol?: number;
  label?: string;
}

export interface CloseReport {
  ok: boolean;
  maxAbsError: number;
  scale: number;
  message: string;
}

export function compareClose(got: ArrayLike<number>, ref: ArrayLike<number>, o: CloseOptions = {}): CloseReport {
  const label = o.label ?? 'values';
  if (got.length !== ref.length) {
    return { ok: false, maxAbsError: Infinity, scale: 0, message: `${label}: length ${got.length}, expected ${ref.length}` };
  }
  let scale = 0;
  for (let i = 0; i < ref.length; i++) if (Number.isFinite(ref[i])) scale = Math.max(scale, Math.abs(ref[i]!));
  const atol = o.atol ?? (o.scaleTol !== undefined ? o.scaleTol * Math.max(scale, 1e-30) : 0);
  const rtol = o.rtol ?? o.scaleTol ?? 0;
  let maxAbsError = 0;
  const bad: string[] = [];
  let nBad = 0;
  for (let i = 0; i < ref.length; i++) {
    const g = got[i]!;
    const r = ref[i]!;
    const same = g === r || (Number.isNaN(g) && Number.isNaN(r));
    const err = same ? 0 : Math.abs(g - r);
    if (!same) maxAbsError = Math.max(maxAbsError, Number.isNaN(err) ? Infinity : err);
    if (!same && !(err <= atol + rtol * Math.abs(r))) {
      if (nBad < 8) bad.push(`  [${i}] got ${g}, ref ${r}`);
      nBad++;
    }
  }
  const message =
    `${label}: ${nBad} of ${ref.length} outside ${atol.toExponential(2)} + ${rtol.toExponential(2)}·|ref|; ` +
    `max abs error ${maxAbsError.toExponential(3)} (output scale ${scale.toExponential(3)})` +
    (bad.length ? `\n${bad.join('\n')}` : '');
  return { ok: nBad === 0, maxAbsError, scale, message };
}

/** Throws with the report unless got is close to ref; returns the report for logging. */
export function expectClose(got: ArrayLike<number>, ref: ArrayLike<number>, o: CloseOptions = {}): CloseReport {
  const report = compareClose(got, ref, o);
  if (!report.ok) throw new Error(report.message);
  return report;
}
