// onnxruntime-node (CPU) as an independent runtime for exported models (a dev dependency).
import * as ort from 'onnxruntime-node';
import type { DType } from '../../src/index.js';

export interface OrtFeed {
  data: Float32Array | Int32Array;
  shape: readonly number[];
  dtype?: DType;
}

const ORT_TYPE: Partial<Record<DType, 'float32' | 'int32'>> = { f32: 'float32', i32: 'int32' };

/** Runs ONNX bytes once on ORT's CPU provider. */
export async function runOrt(bytes: Uint8Array, feeds: Record<string, OrtFeed>): Promise<Record<string, ort.Tensor>> {
  const session = await ort.InferenceSession.create(bytes, { executionProviders: ['cpu'] });
  try {
    const inputs = Object.fromEntries(Object.entries(feeds).map(([k, f]) => [k, new ort.Tensor(ORT_TYPE[f.dtype ?? 'f32']!, f.data, [...f.shape])]));
    return await session.run(inputs);
  } finally {
    await session.release();
  }
}
