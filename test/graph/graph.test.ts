import { describe, expect, it } from 'vitest';
import { GpuError, GraphBuilder, Tensor, formatProfile, kernels, planMemory } from '../../src/index.js';
import { elementwiseReference, matmulReference, stridedCopyReference, sliceView, transposeView } from '../../src/kernels/index.js';
import { useGpu } from '../util/gpu.js';
import { expectClose } from '../util/check.js';
import { randomArray } from '../util/random.js';

const getGpu = useGpu();

describe('planMemory', () => {
  it('shares bytes between values whose lifetimes do not overlap, never between ones that do', () => {
    const values = [
      { bytes: 100, first: 0, last: 1 },
      { bytes: 100, first: 1, last: 2 },
      { bytes: 100, first: 2, last: 3 },
      { bytes: 40, first: 3, last: 4 },
    ];
    const plan = planMemory(values);
    for (let i = 0; i < values.length; i++) {
      for (let j = i + 1; j < values.length; j++) {
        const a = values[i]!;
        const b = values[j]!;
        if (a.first <= b.last && b.first <= a.last) expect(plan.buffer[i]).not.toBe(plan.buffer[j]);
      }
      expect(plan.bufferBytes[plan.buffer[i]!]).toBeGreaterThanOrEqual(values[i]!.bytes);
    }
    // At most two 100-byte values are alive at once: two buffers instead of four.
    expect(plan.bufferBytes).toEqual([100, 100]);
    expect(plan.totalBytes).toBe(200);
    expect(plan.unsharedBytes).toBe(340);
    expect(plan.largestBytes).toBe(100);
  });
});

describe('graph executor', () => {
  it('matches the eager kernels and the CPU reference, with one submit per run', async () => {
    const gpu = await getGpu();
    const shape = [6, 37];
    const biasData = randomArray(37, 2);
    const xData = randomArray(6 * 37, 1, 3);
    const bias = Tensor.from(gpu, biasData, [37]);
    const g = new GraphBuilder();
    const x = g.input('x', shape);
    const y = g.gelu(g.add(x, g.constant(bias), 'bias'), 'gelu');
    g.output('y', y);
    g.output('n', g.l2Normalize(y));
    const plan = await g.compile(gpu);
    const before = gpu.stats();
    const { outputs } = await plan.run({ x: xData });
    expect(gpu.stats().submits).toBe(before.submits + 1);
    const ref = elementwiseReference(elementwiseReference(xData, shape, { op: 'add' }, biasData), shape, { op: 'gelu' });
    expectClose(outputs.y!, ref, { scaleTol: 1e-5 });
    expectClose(outputs.n!, elementwiseReference(ref, shape, { op: 'l2norm' }), { scaleTol: 1e-5 });
    // Eager: the same kernels give the same bits.
    const xt = Tensor.from(gpu, xData, shape);
    const e1 = await kernels.add(gpu, xt, bias);
    const e2 = await kernels.gelu(gpu, e1);
    expect(Array.from(await e2.read())).toEqual(Array.from(outputs.y!));
    for (const t of [xt, e1, e2, bias]) t.dispose();
    plan.dispose();
  });

  it('reshape and contiguous slices are views; transpose, strided slices and concat copy', async () => {
    const gpu = await getGpu();
    const data = randomArray(2 * 5 * 6, 3);
    const g = new GraphBuilder();
    const x = g.input('x', [2, 5, 6]);
    const r = g.reshape(x, [10, -1]);
    expect(r.shape).toEqual([10, 6]);
    expect(r.source.kind).toBe('view');
    const rowSlice = g.slice(r, [3], [7]); // rows 3..6: contiguous, offset 18 floats (72 bytes: not bindable)
    expect(rowSlice.source.kind).toBe('view');
    const colSlice = g.slice(x, [0, 1, 2], [2, 4, 5]); // strided: a copy node
    expect(colSlice.source.kind).toBe('node');
    const t = g.transpose(x, [2, 0, 1]);
    const c = g.concat([x, g.scale(x, 2)], 1);
    g.output('row', g.scale(rowSlice, 1)); // consumed by a kernel: the misaligned view is materialised
    g.output('rowView', rowSlice); // read back directly from the view
    g.output('col', colSlice);
    g.output('t', t);
    g.output('c', c);
    const plan = await g.compile(gpu);
    const { outputs } = await plan.run({ x: data });
    const rowRef = stridedCopyReference(data, sliceView([10, 6], [3], [7]));
    expect(Array.from(outputs.row!)).toEqual(rowRef.map((v) => Math.fround(v)));
    expect(Array.from(outputs.rowView!)).toEqual(rowRef);
    expect(Array.from(outputs.col!)).toEqual(stridedCopyReference(data, sliceView([2, 5, 6], [0, 1, 2], [2, 4, 5])));
    expect(Array.from(outputs.t!)).toEqual(stridedCopyReference(data, transposeView([2, 5, 6], [2, 0, 1])));
    const cRef: number[] = [];
    for (let b = 0; b < 2; b++) {
      for (let k = 0; k < 30; k++) cRef.push(data[b * 30 + k]!);
      for (let k = 0; k < 30; k++) cRef.push(Math.fround(2 * data[b * 30 + k]!));
    }
    expect(Array.from(outputs.c!)).toEqual(cRef);
    plan.dispose();
  });

  it('copyTo keeps outputs on the GPU in the same submit, for another plan to take as an input', async () => {
    const gpu = await getGpu();
    const xData = randomArray(4 * 9, 3, 2);
    const g = new GraphBuilder();
    const x = g.input('x', [4, 9]);
    const y = g.gelu(x, 'gelu');
    g.output('y', y);
    g.output('row', g.slice(y, [1, 0], [2, 9])); // a view at an offset into y
    const plan = await g.compile(gpu);
    const g2 = new GraphBuilder();
    g2.output('z', g2.scale(g2.input('y', [4, 9]), 2));
    const plan2 = await g2.compile(gpu);
    const yt = Tensor.empty(gpu, [4, 9]);
    const rowT = Tensor.empty(gpu, [1, 9]);
    const before = gpu.stats().submits;
    const { outputs } = await plan.run({ x: xData }, { outputs: [], copyTo: { y: yt, row: rowT } });
    expect(Object.keys(outputs)).toEqual([]);
    expect(gpu.stats().submits).toBe(before + 1);
    const ref = elementwiseReference(xData, [4, 9], { op: 'gelu' });
    expectClose(await yt.read(), ref, { scaleTol: 1e-5 });
    expectClose(await rowT.read(), ref.slice(9, 18), { scaleTol: 1e-5 });
    const z = (await plan2.run({ y: yt })).outputs.z!;
    expectClose(z, ref.map((v) => 2 * v), { scaleTol: 1e-5 });

    const wrong = Tensor.empty(gpu, [9, 4]);
    const stats = gpu.stats();
    await expect(plan.run({ x: xData }, { copyTo: { y: wrong } })).rejects.toThrow(/copyTo "y": tensor is f32 \[9, 4\], expected f32 \[4, 9\]/);
    await expect(plan.run({ x: xData }, { copyTo: { nope: yt } })).rejects.toThrow(/copyTo: unknown output "nope"/);
    wrong.dispose();
    await expect(plan.run({ x: xData }, { copyTo: { y: wrong } })).rejects.toThrow(/copyTo "y": expected a live Tensor/);
    expect(gpu.stats().submits).toBe(stats.submits);
    for (const t of [yt, rowT]) t.dispose();
    plan.dispose();
    plan2.dispose();
  });

  it('copyTo copies f16 outputs of odd length, and refuses views that start inside a word', async () => {
    const gpu = await getGpu();
    if (!gpu.features.has('shader-f16')) return;
    const xData = randomArray(7 * 7, 4, 2);
    const g = new GraphBuilder();
    const y = g.gelu(g.input('x', [7, 7], 'f16'));
    g.output('y', y);
    g.output('odd', g.slice(y, [1], [2])); // starts at element 7: inside a 4-byte word
    const plan = await g.compile(gpu);
    const yt = Tensor.empty(gpu, [7, 7], 'f16');
    await plan.run({ x: xData }, { outputs: [], copyTo: { y: yt } });
    const host = (await plan.run({ x: xData }, { outputs: ['y'] })).outputs.y!;
    expect(Array.from(await yt.read())).toEqual(Array.from(host));
    const row = Tensor.empty(gpu, [1, 7], 'f16');
    await expect(plan.run({ x: xData }, { copyTo: { odd: row } })).rejects.toThrow(/starts inside a 4-byte word/);
    yt.dispose();
    row.dispose();
    plan.dispose();
  });

  it('matmul takes a batched b (per-head q·kᵀ) through the builder unchanged', async () => {
    const gpu = await getGpu();
    const [B, L, D] = [3, 5, 8];
    const qData = randomArray(B * L * D, 11);
    const kData = randomArray(B * L * D, 12);
    const g = new GraphBuilder();
    const q = g.input('q', [B, L, D]);
    const k = g.input('k', [B, L, D]);
    const logits = g.matmul(q, k, { transposeB: true });
    expect(logits.shape).toEqual([B, L, L]);
    g.output('logits', logits);
    const bad = new GraphBuilder();
    expect(() => bad.matmul(bad.input('q', [B, L, D]), bad.input('k', [2, L, D]), { transposeB: true }, 'qk')).toThrow(/graph node qk: matmul: b must be \[N, K=8\] or \[3, N, K=8\]/);
    const plan = await g.compile(gpu);
    const { outputs } = await plan.run({ q: qData, k: kData });
    expectClose(outputs.logits!, matmulReference(qData, kData, B * L, L, D, { transposeB: true, batch: B }), { scaleTol: 1e-5 });
    plan.dispose();
  });

  it('fails at build time naming the node and what its kernel expected', () => {
    const g = new GraphBuilder();
    const a = g.input('a', [3, 4]);
    const b = g.input('b', [5]);
    expect(() => g.add(a, b, 'residual add')).toThrow(/graph node residual add: elementwise.add: b of shape \[5\] does not broadcast with x's shape \[3, 4\]/);
    expect(() => g.reshape(a, [5, -1])).toThrow(/cannot reshape/);
    expect(() => g.transpose(a, [0, 0])).toThrow(/not a permutation/);
    const other = new GraphBuilder().input('x', [3, 4]);
    expect(() => g.add(a, other)).toThrow(/not a value of this graph/);
    expect(() => g.input('a', [1])).toThrow(/already defined/);
  });

  it('refuses bad inputs before encoding anything', async () => {
    const gpu = await getGpu();
    const g = new GraphBuilder();
    g.output('y', g.gelu(g.input('x', [4, 4])));
    const ids = g.input('ids', [2], 'i32');
    g.output('ids', ids);
    const plan = await g.compile(gpu);
    const before = gpu.stats();
    await expect(plan.run({ x: new Float32Array(15), ids: [1, 2] })).rejects.toThrow(/input "x" has 15 elements, expected 16 for f32 \[4, 4\]/);
    await expect(plan.run({ ids: [1, 2] })).rejects.toThrow(/missing input "x"/);
    await expect(plan.run({ x: new Float32Array(16), ids: [1, 2], z: [1] })).rejects.toThrow(/unknown input "z"/);
    await expect(plan.run({ x: new Float32Array(16), ids: new Float32Array(2) })).rejects.toThrow(/ids" is a Float32Array, expected i32/);
    await expect(plan.run({ x: new Float32Array(16), ids: [1, 2] }, { outputs: ['nope'] })).rejects.toThrow(/unknown output "nope"/);
    const wrong = Tensor.from(gpu, new Float32Array(8), [2, 4]);
    await expect(plan.run({ x: wrong, ids: [1, 2] })).rejects.toThrow(/is f32 \[2, 4\], expected f32 \[4, 4\]/);
    expect(gpu.stats().submits).toBe(before.submits);
    const ok = await plan.run({ x: Tensor.from(gpu, new Float32Array(16).fill(1), [4, 4]), ids: new Int32Array([7, -3]) }, { outputs: ['ids'] });
    expect(Array.from(ok.outputs.ids!)).toEqual([7, -3]);
    expect(ok.outputs.y).toBeUndefined();
    wrong.dispose();
    plan.dispose();
    await expect(plan.run({ x: new Float32Array(16), ids: [1, 2] })).rejects.toThrow(/disposed/);
  });

  it('serialises concurrent runs and profiles per node', async () => {
    const gpu = await getGpu();
    const g = new GraphBuilder();
    const x = g.input('x', [64, 64]);
    g.output('y', g.quickGelu(g.scale(x, 0.5, 'half'), 'act'));
    const plan = await g.compile(gpu);
    const inputs = [1, 2, 3, 4].map((s) => randomArray(64 * 64, s));
    const results = await Promise.all(inputs.map((x) => plan.run({ x })));
    results.forEach((r, i) => {
      const ref = elementwiseReference(elementwiseReference(inputs[i]!, [64, 64], { op: 'scale', scalar: 0.5 }), [64, 64], { op: 'quick_gelu' });
      expectClose(r.outputs.y!, ref, { scaleTol: 1e-5 });
    });
    const { profile } = await plan.run({ x: inputs[0]! }, { profile: true });
    expect(profile).toBeDefined();
    if (gpu.features.has('timestamp-query')) {
      expect(profile!.source).toBe('timestamp');
      expect(profile!.nodes.map((n) => n.label)).toEqual(['half', 'act']);
      for (const n of profile!.nodes) expect(n.ms).toBeGreaterThanOrEqual(0);
    }
    const table = formatProfile(profile!);
    expect(table).toMatch(/half/);
    console.log(table);
    plan.dispose();
  });

  it('staging buffers are made on an output\'s first read: a run that reads only the loss holds no copy of the rest', async () => {
    const gpu = await getGpu();
    const g = new GraphBuilder();
    const big = g.mul(g.input('x', [64, 256]), g.input('y', [64, 256]));
    g.output('big', big);
    g.output('loss', g.sum(big, [0, 1]));
    const plan = await g.compile(gpu);
    const x = randomArray(64 * 256, 7);
    const y = randomArray(64 * 256, 8);
    const compiled = gpu.stats();
    const owned = plan.memory.ownedBytes;
    const loss = (await plan.run({ x, y }, { outputs: ['loss'] })).outputs.loss!;
    let sum = 0;
    for (let i = 0; i < x.length; i++) sum += Math.fround(x[i]! * y[i]!);
    expect(Math.abs(loss[0]! - sum)).toBeLessThanOrEqual(1e-4 * Math.max(1, Math.abs(sum)));
    const afterLoss = gpu.stats();
    expect([afterLoss.liveBuffers - compiled.liveBuffers, afterLoss.liveBytes - compiled.liveBytes, plan.memory.ownedBytes - owned]).toEqual([1, 4, 4]);
    const both = await plan.run({ x, y });
    expect(both.outputs.big!.length).toBe(64 * 256);
    expect(gpu.stats().liveBytes - compiled.liveBytes).toBe(4 + 64 * 256 * 4);
    expect(plan.memory.ownedBytes - owned).toBe(4 + 64 * 256 * 4);
    plan.dispose();
    expect(gpu.stats().liveBytes).toBe(compiled.liveBytes - owned);
  });

  it('200 runs: exactly 200 submits and flat memory; dispose returns to the start, shared constants counted', async () => {
    const gpu = await getGpu();
    const start = gpu.stats();
    const w = Tensor.from(gpu, randomArray(32, 5), [32]);
    const build = () => {
      const g = new GraphBuilder();
      g.output('y', g.mul(g.input('x', [8, 32]), g.constant(w, { owned: true })));
      return g.compile(gpu);
    };
    const [p1, p2] = [await build(), await build()];
    const afterCompile = gpu.stats();
    const x = randomArray(8 * 32, 6);
    await p1.run({ x });
    // The first read of y made its staging buffer, and the plan counts it.
    const afterFirst = gpu.stats();
    expect([afterFirst.liveBuffers - afterCompile.liveBuffers, afterFirst.liveBytes - afterCompile.liveBytes]).toEqual([1, 8 * 32 * 4]);
    for (let i = 1; i < 200; i++) await p1.run({ x });
    const afterRuns = gpu.stats();
    expect(afterRuns.submits - afterCompile.submits).toBe(200);
    expect(afterRuns.liveBuffers).toBe(afterFirst.liveBuffers);
    expect(afterRuns.liveBytes).toBe(afterFirst.liveBytes);
    p1.dispose();
    expect(w.disposed).toBe(false); // p2 still holds the shared constant
    expect((await p2.run({ x })).outputs.y!.length).toBe(256);
    p2.dispose();
    expect(w.disposed).toBe(true);
    const end = gpu.stats();
    expect(end.liveBuffers).toBe(start.liveBuffers);
    expect(end.liveBytes).toBe(start.liveBytes);
  });

  it('reports peak intermediate memory below the unshared sum', async () => {
    const gpu = await getGpu();
    const g = new GraphBuilder();
    let x = g.input('x', [16, 256]);
    for (let i = 0; i < 10; i++) x = g.gelu(x);
    g.output('y', x);
    const plan = await g.compile(gpu);
    expect(plan.memory.largestBytes).toBe(16 * 256 * 4);
    expect(plan.memory.unsharedBytes).toBeGreaterThanOrEqual(10 * 16 * 256 * 4);
    expect(plan.memory.intermediateBytes).toBe(2 * 16 * 256 * 4);
    expect(plan.memory.intermediateBuffers).toBe(2);
    plan.dispose();
  });

  it('rejects an empty graph', async () => {
    const gpu = await getGpu();
    await expect(new GraphBuilder().compile(gpu)).rejects.toThrow(GpuError);
  });
});
