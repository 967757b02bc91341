// Smoke test of the prompts bench suite in quick mode: both rows measured, nothing left allocated.
import { expect, it } from 'vitest';
import { QUICK } from '../bench/harness.js';
import { promptsSuite } from '../bench/suites/prompts.js';
import { useGpu } from './util/gpu.js';

const getGpu = useGpu();

it('prompts suite (--quick): a training step and a classification row, nothing left allocated', async () => {
  const gpu = await getGpu();
  const before = gpu.stats();
  const lines: string[] = [];
  const { rows, notes } = await promptsSuite({ gpu, settings: QUICK, quick: true, peak: { gflops: 1, gbps: 1, shaderCopyGbps: 1, bufferCopyGbps: 1, source: 'wall' }, log: (l) => lines.push(l) });
  expect(rows.map((r) => r.label)).toEqual([expect.stringContaining('prompt training step'), expect.stringContaining('classify 100 boxes with learned prompts')]);
  for (const r of rows) {
    expect(r.error, `${r.label}: ${r.error}`).toBeUndefined();
    expect(r.wallMs).toBeGreaterThan(0);
  }
  expect(notes!.join('\n')).toMatch(/steps\/s/);
  expect(gpu.stats().liveBuffers).toBe(before.liveBuffers);
}, 300_000);
