import { describe, expect, it } from 'vitest';
import { Tensor, kernels } from '../../src/index.js';
import { gatherBackwardReference, gatherReference } from '../../src/kernels/gather.js';
import { expectClose } from '../util/check.js';
import { gradFixture } from '../util/grad.js';
import { forEachProfile, requireF16, useGpu } from '../util/gpu.js';
import { firstDifference, runEagerAndGraph } from '../util/chunks.js';
import { randomArray } from '../util/random.js';

forEachProfile((profile, getGpu) => {
  const getSmallGpu = useGpu(profile, { limits: { maxStorageBufferBindingSize: 8192 } });
  describe('gather', () => {
    it('picks rows by index, zero rows for out-of-range indices, any index shape', async () => {
      const gpu = await getGpu();
      const table = randomArray(11 * 7, 3);
      const t = Tensor.from(gpu, table, [11, 7]);
      for (const [idx, shape] of [[[0], [1]], [[10, 3, 3, -1, 11, 5], [2, 3]], [[4, 4, 4, 4], [4]]] as [number[], number[]][]) {
        const i = Tensor.from(gpu, idx, shape, 'i32');
        const y = await kernels.gather(gpu, t, i);
        expect(y.shape).toEqual([...shape, 7]);
        expect(Array.from(await y.read())).toEqual(gatherReference(table, 7, idx));
        i.dispose();
        y.dispose();
      }
      t.dispose();
    });

    it('rejects bad arguments before dispatching', async () => {
      const gpu = await getGpu();
      const t = Tensor.from(gpu, new Float32Array(12), [3, 4]);
      const f = Tensor.from(gpu, [1], [1]);
      const flat = Tensor.from(gpu, new Float32Array(12), [12]);
      const idx = Tensor.from(gpu, [1], [1], 'i32');
      const before = gpu.stats();
      await expect(kernels.gather(gpu, t, f)).rejects.toThrow(/gather: indices must be i32, got f32/);
      await expect(kernels.gather(gpu, flat, idx)).rejects.toThrow(/table must be \[rows, width\], got \[12\]/);
      expect(gpu.stats().submits).toBe(before.submits);
      for (const x of [t, f, flat, idx]) x.dispose();
    });
    // 3000 indices into a [50, 33] table: output rows of 132 (f32) or 66 (f16) bytes, so chunks of
    // 60 or 120 indices under an 8 KiB binding limit (f16: 8-index steps keep offsets aligned).
    for (const dtype of ['f32', 'f16'] as const) {
      it(`splits indices into chunks under the binding limit, eager and in a graph (${dtype})`, async (ctx) => {
        const gpu = await getGpu();
        const small = await getSmallGpu();
        if (dtype === 'f16') requireF16(ctx, small);
        const table = randomArray(50 * 33, 4);
        const idx = Array.from({ length: 3000 }, (_, i) => ((i * 37) % 53) - 1);
        const t = Tensor.from(gpu, table, [50, 33], dtype);
        const i = Tensor.from(gpu, idx, [30, 100], 'i32');
        const unsplit = await kernels.gather(gpu, t, i);
        const want = await unsplit.read();
        const inputs = [Tensor.from(small, table, [50, 33], dtype), Tensor.from(small, idx, [30, 100], 'i32')];
        const { eager, graph, dispatches } = await runEagerAndGraph(small, kernels.gatherKernel, inputs, {});
        expect(dispatches).toBeGreaterThanOrEqual(25);
        expect(firstDifference(eager[0]!, want), 'eager').toBe(-1);
        expect(firstDifference(graph[0]!, want), 'graph').toBe(-1);
        for (const x of [t, i, unsplit, ...inputs]) x.dispose();
      });
    }

    it('a table over the binding limit fails before dispatch, saying what to do', async () => {
      const small = await getSmallGpu();
      const t = Tensor.empty(small, [100, 33]);
      const i = Tensor.from(small, [1], [1], 'i32');
      await expect(kernels.gather(small, t, i)).rejects.toThrow(
        /gather: table \(f32 \[100, 33\], 13200 bytes\) is bound whole and exceeds the device's maxStorageBufferBindingSize of 8192 bytes: gather splits indices, not the table/,
      );
      t.dispose();
      i.dispose();
    });
  });

  describe('gatherBackward (scatter-add of repeated indices)', () => {
    it('matches the reference: repeats, out-of-range indices, unused rows, several index shapes', async () => {
      const gpu = await getGpu();
      const cases: [number[], number[], number, number][] = [
        [[0], [1], 3, 5],
        [[2, 2, 2, 2], [4], 4, 7],
        [[10, 3, 3, -1, 11, 5, 3, 0], [2, 4], 11, 33],
        [Array.from({ length: 300 }, (_, i) => (i * 37) % 41), [3, 100], 50, 9],
      ];
      for (const [k, [idx, shape, rows, width]] of cases.entries()) {
        const dy = randomArray(idx.length * width, 80 + k, 2);
        const ti = Tensor.from(gpu, idx, shape, 'i32');
        const tdy = Tensor.from(gpu, dy, [...shape, width]);
        const g = await kernels.gatherBackward(gpu, ti, tdy, { rows });
        expect(g.shape).toEqual([rows, width]);
        expectClose(await g.read(), gatherBackwardReference(idx, dy, rows, width), { scaleTol: 1e-6, label: `gatherBackward ${shape}` });
        for (const t of [ti, tdy, g]) t.dispose();
      }
    });

    it('matches PyTorch autograd: the embedding fixture (rows accumulate)', async () => {
      const gpu = await getGpu();
      const fx = gradFixture('embedding');
      expect(fx.cases).toHaveLength(2);
      for (const c of fx.cases) {
        const [table, ids, dy] = [fx.tensor(`${c.name}.table`), fx.tensor(`${c.name}.ids_i32`), fx.tensor(`${c.name}.dY`)];
        const [tt, ti, tdy] = [Tensor.from(gpu, table.data, table.shape), Tensor.from(gpu, ids.data, ids.shape, 'i32'), Tensor.from(gpu, dy.data, dy.shape)];
        const y = await kernels.gather(gpu, tt, ti);
        expectClose(await y.read(), fx.tensor(`${c.name}.Y_f64`).data, { scaleTol: 1e-6, label: `${c.name} Y` });
        const g = await kernels.gatherBackward(gpu, ti, tdy, { rows: table.shape[0]! });
        expectClose(await g.read(), fx.tensor(`${c.name}.grad_table_f64`).data, { scaleTol: 1e-5, label: `${c.name} grad_table` });
        for (const t of [tt, ti, tdy, y, g]) t.dispose();
      }
    });

    it('rejects bad arguments before dispatching', async () => {
      const gpu = await getGpu();
      const idx = Tensor.from(gpu, [1, 2], [2], 'i32');
      const dy = Tensor.from(gpu, new Float32Array(6), [2, 3]);
      const wrong = Tensor.from(gpu, new Float32Array(9), [3, 3]);
      const before = gpu.stats();
      await expect(kernels.gatherBackward(gpu, idx, wrong, { rows: 4 })).rejects.toThrow(/gatherBackward: dy must be \[2, width\] \(indices' shape plus the row width\), got \[3, 3\]/);
      await expect(kernels.gatherBackward(gpu, dy, dy, { rows: 4 })).rejects.toThrow(/gatherBackward: indices must be i32, got f32/);
      await expect(kernels.gatherBackward(gpu, idx, dy, { rows: -1 })).rejects.toThrow(/gatherBackward: rows must be a non-negative integer, got -1/);
      expect(gpu.stats().submits).toBe(before.submits);
      for (const t of [idx, dy, wrong]) t.dispose();
    });

    it('is not split: over the binding limit it fails before dispatch, saying what to do', async () => {
      const small = await getSmallGpu();
      // 100 indices of 33 columns: dy is 13200 bytes.
      const i = Tensor.from(small, Array.from({ length: 100 }, (_, j) => j % 7), [100], 'i32');
      const dy = Tensor.empty(small, [100, 33]);
      const before = small.stats();
      await expect(kernels.gatherBackward(small, i, dy, { rows: 7 })).rejects.toThrow(
        /gatherBackward: dy \(f32 \[100, 33\], 13200 bytes\) is bound whole and exceeds the device's maxStorageBufferBindingSize of 8192 bytes: .*call it on fewer indices at a time .* and add up the gradients/,
      );
      expect(small.stats().submits).toBe(before.submits);
      i.dispose();
      dy.dispose();
    });
  });
});
