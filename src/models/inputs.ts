// Checks the models make at their API boundary, before anything reaches the GPU: the kernels
// would spread NaN silently (or, in softmax, hide it as a masked value), and a box outside the image
// would average zeros, so such inputs are refused here with the argument named.
import { GpuError } from '../gpu/errors.js';

/** A GpuError for input that is wrong in itself (bad values, boxes, over-long text): the CLI's exit code 2. */
export class InputError extends GpuError {
  constructor(op: string, message: string, options?: { cause?: unknown }) {
    super(op, message, options);
    this.name = 'InputError';
  }
}

/** Throws an InputError naming `op` unless `condition` holds: argument checks at a model's API. */
export function checkInput(condition: unknown, op: string, message: string | (() => string)): asserts condition {
  if (!condition) throw new InputError(op, typeof message === 'function' ? message() : message);
}

/** Throws an InputError naming `op` and `what` at the first NaN or ±Infinity in `data`. */
export function checkFinite(op: string, what: string, data: ArrayLike<number>): void {
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i])) throw new InputError(op, `${what} holds ${data[i]} at index ${i}: NaN and Infinity are refused`);
  }
}

export type BoxXyxy = [number, number, number, number];

/**
 * A box [x1, y1, x2, y2] on an image of width × height, clipped to the image. Refused, naming `what`
 * (e.g. "box 3"): anything but four finite numbers, an empty or inverted box (x2 ≤ x1 or y2 ≤ y1),
 * and a box wholly outside the image.
 */
export function clipBox(op: string, what: string, box: unknown, width: number, height: number): BoxXyxy {
  const b = box as number[];
  if (!Array.isArray(b) && !ArrayBuffer.isView(b)) throw new InputError(op, `${what} must be [x1, y1, x2, y2], got ${describe(box)}`);
  if (b.length !== 4 || !Array.from(b).every((v) => typeof v === 'number' && Number.isFinite(v))) {
    throw new InputError(op, `${what} must be 4 finite numbers [x1, y1, x2, y2], got ${describe(box)}`);
  }
  const [x1, y1, x2, y2] = b as unknown as BoxXyxy;
  if (!(x2 > x1 && y2 > y1)) throw new InputError(op, `${what} [${x1}, ${y1}, ${x2}, ${y2}] is empty or inverted: need x2 > x1 and y2 > y1`);
  if (x1 >= width || y1 >= height || x2 <= 0 || y2 <= 0) {
    throw new InputError(op, `${what} [${x1}, ${y1}, ${x2}, ${y2}] lies wholly outside the ${width}×${height} image`);
  }
  return [Math.max(0, x1), Math.max(0, y1), Math.min(width, x2), Math.min(height, y2)];
}

function describe(v: unknown): string {
  try {
    return JSON.stringify(v, (_, x) => (typeof x === 'number' && !Number.isFinite(x) ? String(x) : x)) ?? String(v);
  } catch {
    return String(v);
  }
}

/** What encodeQuery needs from a tokenizer (ClipTokenizer has it). */
export interface QueryTokenizer {
  encode(text: string, options?: { contextLength?: number; truncate?: boolean }): Int32Array;
}

/**
 * A query's token ids [contextLength]. Text longer than the context is refused, naming the query and
 * the limit, unless `truncate` (then cut, as clip.tokenize(truncate=True)).
 */
export function encodeQuery(op: string, tokenizer: QueryTokenizer, text: string, contextLength: number, truncate = false): Int32Array {
  try {
    return tokenizer.encode(text, { contextLength, truncate });
  } catch (err) {
    let long = false;
    try {
      long = !truncate && !!tokenizer.encode(text, { contextLength, truncate: true });
    } catch {
      // not a length problem: report the first error
    }
    const why = long ? ` is longer than the model's context of ${contextLength} tokens (start and end tokens included); pass truncate: true (--truncate on the command line) to cut it` : `: ${(err as Error).message}`;
    throw new InputError(op, `query ${JSON.stringify(text.length > 80 ? `${text.slice(0, 77)}...` : text)}${why}`, { cause: err });
  }
}
