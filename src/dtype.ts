/** Element types a Tensor can hold. f16 is storage only: compute accumulates in f32. */
export type DType = 'f32' | 'f16' | 'i32' | 'u32';

export const DTYPES: readonly DType[] = ['f32', 'f16', 'i32', 'u32'];

export const BYTES_PER_ELEMENT: Readonly<Record<DType, number>> = { f32: 4, f16: 2, i32: 4, u32: 4 };

/** What `Tensor.read()` returns: f16 widens to f32. */
export type ReadArray<D extends DType = DType> = D extends 'i32' ? Int32Array : D extends 'u32' ? Uint32Array : Float32Array;

export function isDType(x: unknown): x is DType {
  return typeof x === 'string' && (DTYPES as readonly string[]).includes(x);
}

/** Number of elements of a shape; [] is a scalar (1 element). */
export function sizeOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function shapeString(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}
