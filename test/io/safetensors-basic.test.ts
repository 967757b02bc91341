import { describe, expect, it } from 'vitest';
import { loadFixture, fixtureTensor } from '../util/fixtures.js';

describe('safetensors (fixtures)', () => {
  it('reads F32 and I64 tensors of the fixtures', () => {
    const io = loadFixture('clip_tiny', 'io.safetensors');
    const ids = fixtureTensor(io, 'input_ids');
    expect(ids.shape).toEqual([3, 16]);
    expect(ids.data).toBeInstanceOf(Int32Array);
    expect(Array.from(ids.data)).toEqual(Array.from(fixtureTensor(io, 'input_ids_i32').data));
    expect(Array.from(fixtureTensor(io, 'eot_positions').data)).toEqual([5, 15, 1]);
    const px = fixtureTensor(io, 'pixel_values');
    expect(px.shape).toEqual([2, 3, 32, 32]);
    expect(px.data).toBeInstanceOf(Float32Array);
  });
});
