/** An error from the GPU (validation, out-of-memory, device loss) or from checking arguments before
 * anything reached it. `op` names what was being done, so the message says where to look. */
export class GpuError extends Error {
  readonly op: string;
  constructor(op: string, message: string, options?: { cause?: unknown }) {
    super(`${op}: ${message}`, options);
    this.name = 'GpuError';
    this.op = op;
  }
}

/** Throws a GpuError naming `op` unless `condition` holds. Used for argument validation. */
export function check(condition: unknown, op: string, message: string | (() => string)): asserts condition {
  if (!condition) throw new GpuError(op, typeof message === 'function' ? message() : message);
}
