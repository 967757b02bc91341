import { describe, expect, it } from 'vitest';
import { Float16Array } from '@petamoriken/float16';
import { GpuError, Tensor } from '../src/index.js';
import { f16BitsToF32, f32ToF16Bits } from '../src/dtype.js';
import { useGpu } from './util/gpu.js';

const getGpu = useGpu();

describe('Tensor', () => {
  it('round-trips f32 exactly, including specials', async () => {
    const gpu = await getGpu();
    const data = new Float32Array([0, -0, 1.5, -3.25e-38, 1e-45, 3.4028234e38, Infinity, -Infinity, NaN, Math.PI]);
    const t = Tensor.from(gpu, data, [2, 5]);
    expect(t.shape).toEqual([2, 5]);
    expect(t.dtype).toBe('f32');
    const back = await t.read();
    expect(back).toBeInstanceOf(Float32Array);
    expect(Array.from(back)).toEqual(Array.from(data));
    expect(Object.is(back[1], -0)).toBe(true);
    t.dispose();
  });

  it('round-trips f16 with IEEE rounding: NaN, ±Inf, subnormals, 65504, overflow', async () => {
    const gpu = await getGpu();
    const input = [0, -0, 1, -2.5, 65504, 65519.99, 65520, -70000, 5.960464477539063e-8, 2.98e-8, 6.097555160522461e-5, NaN, Infinity, -Infinity, 0.1, 1 / 3, 1.00048828125];
    // Expected values from the IEEE definition: round to nearest, ties to even.
    const expected = [0, -0, 1, -2.5, 65504, 65504, Infinity, -Infinity, 5.960464477539063e-8, 0, 6.097555160522461e-5, NaN, Infinity, -Infinity, 0.0999755859375, 0.333251953125, 1];
    const t = Tensor.from(gpu, input, [input.length], 'f16');
    expect(t.byteLength).toBe(Math.ceil((input.length * 2) / 4) * 4);
    const back = await t.read();
    expect(back).toBeInstanceOf(Float32Array);
    expect(Array.from(back)).toEqual(expected);
    expect(Object.is(back[1], -0)).toBe(true);
    // Same as the library's own Float16Array conversion.
    expect(Array.from(back)).toEqual(Array.from(Float16Array.from(input)));
    t.dispose();
  });

  it('round-trips i32 and u32 at their extremes', async () => {
    const gpu = await getGpu();
    const i = Tensor.from(gpu, new Int32Array([-2147483648, -1, 0, 1, 2147483647]), [5], 'i32');
    const iBack = await i.read();
    expect(iBack).toBeInstanceOf(Int32Array);
    expect(Array.from(iBack)).toEqual([-2147483648, -1, 0, 1, 2147483647]);
    const u = Tensor.from(gpu, [0, 1, 4294967295], [3], 'u32');
    const uBack = await u.read();
    expect(uBack).toBeInstanceOf(Uint32Array);
    expect(Array.from(uBack)).toEqual([0, 1, 4294967295]);
    i.dispose();
    u.dispose();
  });

  it('handles scalars and empty tensors', async () => {
    const gpu = await getGpu();
    const s = Tensor.from(gpu, [7], []);
    expect(Array.from(await s.read())).toEqual([7]);
    const e = Tensor.from(gpu, [], [0, 3]);
    expect(e.size).toBe(0);
    expect((await e.read()).length).toBe(0);
    s.dispose();
    e.dispose();
  });

  it('rejects bad input with a clear error and allocates nothing', async () => {
    const gpu = await getGpu();
    const before = gpu.stats();
    expect(() => Tensor.from(gpu, [1, 2, 3], [2, 2])).toThrow(/3 elements but shape \[2, 2\] needs 4/);
    expect(() => Tensor.from(gpu, [1, 2], [2], 'f64' as never)).toThrow(/unknown dtype "f64"; expected one of f32, f16, i32, u32/);
    expect(() => Tensor.from(gpu, [1, 2], [2, -1])).toThrow(/non-negative integers/);
    expect(() => Tensor.from(gpu, [1, 2], [1.5])).toThrow(/non-negative integers/);
    expect(() => Tensor.from(gpu, [1.5], [1], 'i32')).toThrow(/element 0 \(1.5\) is not a valid i32/);
    expect(() => Tensor.from(gpu, [-1], [1], 'u32')).toThrow(/not a valid u32/);
    expect(() => Tensor.from(gpu, {} as never, [1])).toThrow(/typed array or an array of numbers/);
    // Past the binding limit is fine (kernels bind slices); past the largest buffer is not.
    const limit = gpu.limits.maxBufferSize!;
    const rows = Math.floor(limit / 4 / 1024) + 1;
    expect(() => Tensor.empty(gpu, [rows, 1024])).toThrow(new RegExp(`needs ${rows * 4096} bytes, above the device's maxBufferSize of ${limit}`));
    expect(() => Tensor.from(gpu, { length: rows * 1024 } as never, [rows, 1024])).toThrow(GpuError);
    expect(gpu.stats()).toEqual(before);
  });

  it('dispose is idempotent and use after dispose throws', async () => {
    const gpu = await getGpu();
    const t = Tensor.from(gpu, [1, 2], [2]);
    t.dispose();
    t.dispose();
    expect(t.disposed).toBe(true);
    await expect(t.read()).rejects.toThrow(/disposed tensor of shape \[2\]/);
    expect(() => t.buffer).toThrow(GpuError);
  });

  it('stats() returns to its starting values once tensors are disposed', async () => {
    const gpu = await getGpu();
    const before = gpu.stats();
    const ts = [Tensor.from(gpu, new Float32Array(1000), [10, 100]), Tensor.from(gpu, [1, 2, 3], [3], 'f16'), Tensor.empty(gpu, [7], 'i32')];
    const during = gpu.stats();
    expect(during.liveBuffers).toBe(before.liveBuffers + 3);
    expect(during.liveBytes).toBe(before.liveBytes + 4000 + 8 + 28);
    await ts[0]!.read();
    expect(gpu.stats().submits).toBe(before.submits + 1);
    expect(gpu.stats().liveBuffers).toBe(during.liveBuffers); // the staging buffer is gone again
    for (const t of ts) t.dispose();
    const after = gpu.stats();
    expect(after.liveBuffers).toBe(before.liveBuffers);
    expect(after.liveBytes).toBe(before.liveBytes);
  });
});

describe('f16BitsToF32', () => {
  it('agrees with the Float16Array conversion on all 65 536 bit patterns', () => {
    const bits = Uint16Array.from({ length: 65536 }, (_, i) => i);
    const fast = f16BitsToF32(bits);
    const slow = Float32Array.from(new Float16Array(bits.buffer));
    for (let h = 0; h < bits.length; h++) {
      if (!Object.is(fast[h], slow[h])) throw new Error(`f16 bits 0x${h.toString(16)}: got ${fast[h]}, expected ${slow[h]}`);
    }
  });
});

describe('f32ToF16Bits', () => {
  it('agrees bit for bit with the Float16Array conversion on every exponent, ties and specials', () => {
    // Every f32 exponent with mantissas that hit ties, just-below and just-above ties for f16.
    const bits: number[] = [0x7fc00000, 0x7f800001, 0xff800000, 0x7f800000, 0, 0x80000000];
    for (let exp = 0; exp < 255; exp++) {
      for (const m of [0, 1, 0x1000, 0x1001, 0x0fff, 0x3000, 0x2000, 0x7fffff, 0x400000, 0x7fe000, 0x1fff, 0x12345]) {
        bits.push((exp << 23) | m, ((exp << 23) | m | 0x80000000) >>> 0);
      }
    }
    const src = new Float32Array(new Uint32Array(bits).buffer);
    const fast = new Uint16Array(src.length);
    f32ToF16Bits(src, fast);
    const slow = new Uint16Array(Float16Array.from(src).buffer);
    for (let i = 0; i < src.length; i++) {
      if (Number.isNaN(src[i])) expect((fast[i]! & 0x7c00) === 0x7c00 && (fast[i]! & 0x3ff) !== 0).toBe(true);
      else if (fast[i] !== slow[i]) throw new Error(`f32 bits 0x${bits[i]!.toString(16)}: got 0x${fast[i]!.toString(16)}, expected 0x${slow[i]!.toString(16)}`);
    }
  });
});
