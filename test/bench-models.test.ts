// Smoke test of the model-level bench suites in quick mode (tiny stand-in models): every row is
// measured without error and everything allocated is freed. No speed assertions.
import { describe, expect, it } from 'vitest';
import { QUICK } from '../bench/harness.js';
import { graphSuite } from '../bench/suites/graph.js';
import { clipSuite } from '../bench/suites/clip.js';
import { owlv2Suite, owlvitSuite } from '../bench/suites/owlvit.js';
import type { SuiteContext } from '../bench/main.js';
import { useGpu } from './util/gpu.js';
import { loadOrt, ORT_PEERS } from '../bench/ort.js';
import { loadTfjs } from '../bench/peers.js';
import { gradSuite } from '../bench/suites/grad.js';

const getGpu = useGpu();

describe('model bench suites (--quick)', () => {
  for (const [name, suite, minRows] of [['graph', graphSuite, 4], ['clip', clipSuite, 4], ['owlvit', owlvitSuite, 8], ['owlv2', owlv2Suite, 8], ['grad', gradSuite, 3]] as const) {
    it(`${name}: rows without errors, nothing left allocated`, async () => {
      const gpu = await getGpu();
      const before = gpu.stats();
      const lines: string[] = [];
      // The clip suite also runs its towers in every ONNX Runtime peer, so a peer that breaks is seen.
      const ort = name === 'clip' ? await Promise.all(ORT_PEERS.map((p) => loadOrt(p, gpu))) : undefined;
      // The grad suite checks its TF.js tf.grads peer's gradients against ours.
      const tfjs = name === 'grad' ? await loadTfjs(gpu) : undefined;
      const ctx: SuiteContext = { gpu, settings: QUICK, quick: true, peak: { gflops: 1, gbps: 1, shaderCopyGbps: 1, bufferCopyGbps: 1, source: 'wall' }, ort, tfjs, log: (l) => lines.push(l) };
      const { rows, notes, appendix } = await suite(ctx);
      expect(rows.length).toBeGreaterThanOrEqual(minRows);
      for (const r of rows) {
        expect(r.error, `${r.label}: ${r.error}`).toBeUndefined();
        expect(r.wallMs).toBeGreaterThan(0);
      }
      expect(notes?.length).toBeGreaterThan(0);
      if (name === 'clip') {
        const f32 = rows.filter((r) => / f32 b\d/.test(r.label));
        expect(f32.length).toBe(3);
        for (const r of f32) for (const p of ORT_PEERS) expect(r.peers?.[p]?.ms, `${r.label} ${p}: ${r.peers?.[p]?.error}`).toBeGreaterThan(0);
      }
      if (name === 'grad') {
        for (const r of rows.filter((r) => !r.label.includes('memory'))) expect(r.ratio, `${r.label}: ${r.peerError}`).toBeGreaterThan(0);
        // The training-step memory row: flat over its steps, everything freed by dispose().
        const memory = notes!.filter((n) => n.includes('training step memory'));
        expect(memory).toHaveLength(1);
        expect(memory[0]).toMatch(/varying by 0 B and 0 buffers; submits per step 1; 1 distinct loss value\(s\) over the steps; dispose\(\) left 0 B in 0 buffers/);
        const agree = notes!.filter((n) => n.includes('TF.js tf.grads computes the same gradients')).map((n) => Number(/ over the \d+ gradients (\S+)/.exec(n)![1]));
        expect(agree).toHaveLength(2);
        for (const e of agree) expect(e).toBeLessThan(1e-4);
      }
      if (name === 'graph') {
        expect(rows.some((r) => r.label.includes('eager') && r.ratio! > 0)).toBe(true);
        expect(appendix!.join('\n')).toMatch(/vision\.block0\.fc1\s+matmul/);
      }
      // Filtering keeps only matching rows.
      const filtered = await suite({ ...ctx, filter: 'b8' });
      expect(filtered.rows.every((r) => `${r.kernel} ${r.label}`.toLowerCase().includes('b8'))).toBe(true);
      expect(gpu.stats().liveBuffers).toBe(before.liveBuffers);
    }, 300_000);
  }
});
