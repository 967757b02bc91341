import { describe, expect, it } from 'vitest';
import { Adam, AdamW, Sgd, Tensor, kernels, type Gpu, type Optimizer } from '../../src/index.js';
import { optimizerStepReference, type OptimizerReferenceState, type OptimizerUpdate } from '../../src/kernels/optimizerStep.js';
import { forEachProfile } from '../util/gpu.js';
import { expectClose } from '../util/check.js';
import { fixtureTensors } from '../util/grad.js';
import { randomArray } from '../util/random.js';

/** Three steps of `make(params)` on random parameters and gradients against the float64 reference. */
async function checkSteps(gpu: Gpu, make: (params: Tensor[]) => Optimizer, seed: number) {
  const shapes = [[7], [3, 5], [1], [130]];
  const params = shapes.map((s, i) => Tensor.from(gpu, randomArray(s.reduce((a, b) => a * b, 1), seed + i, 2), s));
  const opt = make(params);
  const ref = await Promise.all(params.map(async (p) => Float64Array.from(await p.read())));
  const state: OptimizerReferenceState[] = params.map((p) => ({ s1: new Float64Array(p.size), s2: new Float64Array(p.size), step: 0 }));
  for (let step = 0; step < 3; step++) {
    const grads = params.map((p, i) => Tensor.from(gpu, randomArray(p.size, seed + 100 * (step + 1) + i), p.shape));
    await opt.step(grads);
    for (const [i, g] of grads.entries()) {
      optimizerStepReference(opt.update, ref[i]!, await g.read(), state[i]!);
      expectClose(await params[i]!.read(), ref[i]!, { scaleTol: 1e-6, label: `${opt.constructor.name} ${JSON.stringify(opt.update)} step ${step + 1} param ${i}` });
      g.dispose();
    }
  }
  opt.dispose();
  for (const p of params) p.dispose();
}

forEachProfile((_profile, getGpu) => {
  describe('optimizerStep (Sgd, Adam, AdamW)', () => {
    it('Sgd matches the reference: plain, momentum, dampening, nesterov, weight decay', async () => {
      const gpu = await getGpu();
      await checkSteps(gpu, (p) => new Sgd(gpu, p, { lr: 0.1 }), 1);
      await checkSteps(gpu, (p) => new Sgd(gpu, p, { lr: 0.05, weightDecay: 0.1 }), 2);
      await checkSteps(gpu, (p) => new Sgd(gpu, p, { lr: 0.1, momentum: 0.9 }), 3);
      await checkSteps(gpu, (p) => new Sgd(gpu, p, { lr: 0.1, momentum: 0.8, dampening: 0.3, weightDecay: 0.01 }), 4);
      await checkSteps(gpu, (p) => new Sgd(gpu, p, { lr: 0.1, momentum: 0.9, nesterov: true, weightDecay: 0.02 }), 5);
    });

    it('Adam and AdamW match the reference (weight decay coupled and decoupled)', async () => {
      const gpu = await getGpu();
      await checkSteps(gpu, (p) => new Adam(gpu, p, { lr: 2e-3 }), 10);
      await checkSteps(gpu, (p) => new Adam(gpu, p, { lr: 0.01, betas: [0.8, 0.99], eps: 1e-6, weightDecay: 0.1 }), 11);
      await checkSteps(gpu, (p) => new AdamW(gpu, p, { lr: 0.01 }), 12);
      await checkSteps(gpu, (p) => new AdamW(gpu, p, { lr: 0.01, betas: [0.5, 0.9], weightDecay: 0.3 }), 13);
    });

    it('reproduces torch.optim (float64) on the coop fixture: Adam lr 2e-3 and SGD lr 0.1 momentum 0.9, 3 steps', async () => {
      const gpu = await getGpu();
      const fx = fixtureTensors('coop', 'coop.safetensors');
      const makers: Record<string, (p: Tensor[]) => Optimizer> = {
        adam: (p) => new Adam(gpu, p, { lr: 2e-3 }),
        sgd: (p) => new Sgd(gpu, p, { lr: 0.1, momentum: 0.9 }),
      };
      for (const [name, make] of Object.entries(makers)) {
        const init = fx('ctx_init');
        const ctx = Tensor.from(gpu, init.data, init.shape);
        const opt = make([ctx]);
        for (let k = 1; k <= 3; k++) {
          const g = fx(`${name}_grad_before_step${k}_f64`);
          const grad = Tensor.from(gpu, Float32Array.from(g.data), g.shape);
          await opt.step([grad]);
          const want = fx(`${name}_ctx_after_step${k}_f64`).data;
          // Relative to the parameters' scale: elements near 0 differ by a few ulps of the step
          // (torch's own float32 run is 2.9e-9 off after Adam's first step).
          expectClose(await ctx.read(), want, { scaleTol: 1e-5, label: `${name} ctx after step ${k}` });
          grad.dispose();
        }
        opt.dispose();
        ctx.dispose();
      }
    });

    it('the kernel updates several parameters in one node; the step count lives on the GPU', async () => {
      const gpu = await getGpu();
      const update: OptimizerUpdate = { kind: 'adam', lr: 0.1, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0, decoupled: false };
      const groups = [3, 4].map((n, i) => [
        Tensor.from(gpu, randomArray(n, 40 + i), [n]),
        Tensor.from(gpu, randomArray(n, 50 + i), [n]),
        Tensor.empty(gpu, [n]),
        Tensor.empty(gpu, [n]),
        Tensor.from(gpu, [i], [1], 'i32'),
      ]);
      const refs = await Promise.all(groups.map(async (g) => ({ p: Float64Array.from(await g[0]!.read()), st: { s1: new Float64Array(g[0]!.size), s2: new Float64Array(g[0]!.size), step: 0 } })));
      refs[1]!.st.step = 1; // the second parameter has taken a step already: its bias correction differs
      await kernels.optimizerStep(gpu, update, groups);
      for (const [i, g] of groups.entries()) {
        optimizerStepReference(update, refs[i]!.p, await g[1]!.read(), refs[i]!.st);
        expectClose(await g[0]!.read(), refs[i]!.p, { scaleTol: 1e-6, label: `param ${i}` });
        expect(Array.from(await g[4]!.read())).toEqual([i + 1]);
      }
      for (const t of groups.flat()) t.dispose();
    });

    it('rejects bad input before allocating or dispatching', async () => {
      const gpu = await getGpu();
      const p = Tensor.from(gpu, [1, 2, 3], [3]);
      const g = Tensor.from(gpu, [1, 2], [2]);
      const h = Tensor.from(gpu, [1, 2, 3], [3], 'f16');
      const before = gpu.stats();
      expect(() => new Sgd(gpu, [p], { lr: -1 })).toThrow(/^optimizerStep: lr must be a finite number >= 0, got -1$/);
      expect(() => new Sgd(gpu, [p], { lr: 0.1, nesterov: true })).toThrow(/^optimizerStep: nesterov needs momentum > 0 and dampening 0/);
      expect(() => new Adam(gpu, [p], { betas: [0.9, 1] })).toThrow(/^optimizerStep: betas must be two numbers in \[0, 1\)/);
      expect(() => new Adam(gpu, [p, p])).toThrow(/^Adam: params repeat a tensor$/);
      expect(() => new AdamW(gpu, [])).toThrow(/^AdamW: params must be a non-empty array of tensors$/);
      expect(() => new Adam(gpu, [h])).toThrow(/^optimizerStep: parameter 0: param must be f32, got f16$/);
      expect(gpu.stats()).toEqual(before);
      const opt = new Sgd(gpu, [p], { lr: 0.1, momentum: 0.9 });
      await expect(opt.step([g])).rejects.toThrow(/^Sgd: grads\[0\] of shape \[2\] must have params\[0\]'s shape \[3\]$/);
      await expect(opt.step([])).rejects.toThrow(/^Sgd: step needs one gradient per parameter \(1\), got 0$/);
      opt.dispose();
      await expect(opt.step([p])).rejects.toThrow(/^Sgd: step after dispose\(\)$/);
      expect(gpu.stats()).toEqual(before);
      for (const t of [p, g, h]) t.dispose();
    });
  });
});
