import { Float16Array } from '@petamoriken/float16';
import type { Gpu } from './gpu/gpu.js';
import { GpuError, check } from './gpu/errors.js';
import { readBuffer } from './gpu/readback.js';
import { BYTES_PER_ELEMENT, DTYPES, f16BitsToF32, f32ToF16Bits, isDType, shapeString, sizeOf, type DType, type ReadArray } from './dtype.js';

export type TensorData = ArrayLike<number> | ArrayBufferView;

// GPUBufferUsage is a global only once `webgpu` is loaded; the flag values are fixed by the spec.
const STORAGE_USAGE = 0x80 /* STORAGE */ | 0x04 /* COPY_SRC */ | 0x08; /* COPY_DST */

/** Bytes a tensor's buffer occupies: WebGPU bindings need a non-zero multiple of 4. */
export function paddedByteLength(shape: readonly number[], dtype: DType): number {
  return Math.max(4, Math.ceil((sizeOf(shape) * BYTES_PER_ELEMENT[dtype]) / 4) * 4);
}

function validateShape(op: string, shape: readonly number[]): void {
  check(Array.isArray(shape), op, `shape must be an array of non-negative integers, got ${String(shape)}`);
  for (const d of shape) {
    check(Number.isInteger(d) && d >= 0, op, `shape ${shapeString(shape)} must hold non-negative integers`);
  }
}

/**
 * The largest tensor a kernel can bind whole, in bytes: weight loaders refuse larger ones (kernels
 * split activations by rows, boxes or queries at the binding limit, but bind weights whole).
 */
export function maxTensorBytes(gpu: Gpu): number {
  return Math.min(gpu.limits.maxStorageBufferBindingSize ?? Infinity, gpu.limits.maxBufferSize ?? Infinity);
}

function validateSize(gpu: Gpu, op: string, shape: readonly number[], dtype: DType): number {
  const bytes = paddedByteLength(shape, dtype);
  // Tensors may exceed the binding limit: kernels that split their work bind slices of them.
  const limit = gpu.limits.maxBufferSize ?? Infinity;
  check(
    bytes <= limit,
    op,
    () => `a ${dtype} tensor of shape ${shapeString(shape)} needs ${bytes} bytes, above the device's maxBufferSize of ${limit} bytes`,
  );
  return bytes;
}

/** Converts user data to the bytes of `dtype` (f16 with IEEE round-to-nearest-even). */
export function encodeTensorData(data: TensorData, dtype: DType, count: number, op: string): ArrayBuffer {
  check(!(data instanceof DataView), op, 'data must be a typed array or an array of numbers, not a DataView');
  const src = data as ArrayLike<number>;
  const bytes = new ArrayBuffer(Math.max(4, Math.ceil((count * BYTES_PER_ELEMENT[dtype]) / 4) * 4));
  switch (dtype) {
    case 'f32':
      new Float32Array(bytes, 0, count).set(src);
      break;
    case 'f16':
      if (src instanceof Float32Array) f32ToF16Bits(src, new Uint16Array(bytes, 0, count));
      else new Uint16Array(bytes, 0, count).set(new Uint16Array(Float16Array.from(src).buffer));
      break;
    case 'i32':
    case 'u32': {
      const out = dtype === 'i32' ? new Int32Array(bytes, 0, count) : new Uint32Array(bytes, 0, count);
      const lo = dtype === 'i32' ? -0x80000000 : 0;
      const hi = dtype === 'i32' ? 0x7fffffff : 0xffffffff;
      for (let i = 0; i < count; i++) {
        const v = Number(src[i]);
        check(Number.isInteger(v) && v >= lo && v <= hi, op, () => `element ${i} (${src[i]}) is not a valid ${dtype}`);
        out[i] = v;
      }
      break;
    }
  }
  return bytes;
}

/** Decodes `count` elements of `dtype` starting at byte `byteOffset` (f16 widens to f32). */
export function decodeTensorData(bytes: ArrayBuffer, dtype: DType, count: number, byteOffset = 0): ReadArray {
  switch (dtype) {
    case 'f32':
      return new Float32Array(bytes, byteOffset, count).slice();
    case 'f16':
      return f16BitsToF32(new Uint16Array(bytes, byteOffset, count));
    case 'i32':
      return new Int32Array(bytes, byteOffset, count).slice();
    case 'u32':
      return new Uint32Array(bytes, byteOffset, count).slice();
  }
}

/** A contiguous row-major GPU buffer with a shape and an element type. */
export class Tensor<D extends DType = DType> {
  readonly gpu: Gpu;
  readonly shape: readonly number[];
  readonly dtype: D;
  /** Number of elements. */
  readonly size: number;
  /** Bytes of the underlying buffer (padded to a multiple of 4). */
  readonly byteLength: number;
  #buffer: GPUBuffer | undefined;

  private constructor(gpu: Gpu, buffer: GPUBuffer, shape: readonly number[], dtype: D, byteLength: number) {
    this.gpu = gpu;
    this.#buffer = buffer;
    this.shape = Object.freeze([...shape]);
    this.dtype = dtype;
    this.size = sizeOf(shape);
    this.byteLength = byteLength;
  }

  /** Uploads `data` (a typed array or numbers, row-major) as a tensor of `shape` and `dtype`. */
  static from<D extends DType = 'f32'>(gpu: Gpu, data: TensorData, shape: readonly number[], dtype: D = 'f32' as D): Tensor<D> {
    const op = 'Tensor.from';
    check(isDType(dtype), op, () => `unknown dtype ${JSON.stringify(dtype)}; expected one of ${DTYPES.join(', ')}`);
    validateShape(op, shape);
    const count = sizeOf(shape);
    const length = (data as ArrayLike<number>)?.length;
    check(typeof length === 'number', op, 'data must be a typed array or an array of numbers');
    check(
      length === count,
      op,
      () => `data has ${length} elements but shape ${shapeString(shape)} needs ${count}`,
    );
    const byteLength = validateSize(gpu, op, shape, dtype);
    const bytes = encodeTensorData(data, dtype, count, op);
    const buffer = gpu.createBuffer({ size: byteLength, usage: STORAGE_USAGE, mappedAtCreation: true }, op);
    new Uint8Array(buffer.getMappedRange()).set(new Uint8Array(bytes));
    buffer.unmap();
    return new Tensor(gpu, buffer, shape, dtype, byteLength);
  }

  /** An uninitialised (zero-filled) tensor, for kernel outputs. */
  static empty<D extends DType = 'f32'>(gpu: Gpu, shape: readonly number[], dtype: D = 'f32' as D): Tensor<D> {
    const op = 'Tensor.empty';
    check(isDType(dtype), op, () => `unknown dtype ${JSON.stringify(dtype)}; expected one of ${DTYPES.join(', ')}`);
    validateShape(op, shape);
    const byteLength = validateSize(gpu, op, shape, dtype);
    const buffer = gpu.createBuffer({ size: byteLength, usage: STORAGE_USAGE }, op);
    return new Tensor(gpu, buffer, shape, dtype, byteLength);
  }

  /** The GPU buffer; throws once the tensor is disposed. */
  get buffer(): GPUBuffer {
    if (!this.#buffer) throw new GpuError('Tensor', `use of a disposed tensor of shape ${shapeString(this.shape)}`);
    return this.#buffer;
  }

  get disposed(): boolean {
    return this.#buffer === undefined;
  }

  /** Copies the data back: Float32Array for f32/f16, Int32Array for i32, Uint32Array for u32. */
  async read(): Promise<ReadArray<D>> {
    const bytes = await readBuffer(this.gpu, this.buffer, this.byteLength, 'Tensor.read');
    return decodeTensorData(bytes, this.dtype, this.size) as ReadArray<D>;
  }

  /** Frees the GPU buffer. Calling it twice is fine; any other use afterwards throws. */
  dispose(): void {
    if (!this.#buffer) return;
    this.gpu.destroyBuffer(this.#buffer);
    this.#buffer = undefined;
  }

  toString(): string {
    return `Tensor(${this.dtype} ${shapeString(this.shape)})`;
  }
}
