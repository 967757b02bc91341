// Token-embedding lookup of CLIP's text tower (vocabulary 49408, width 512, batch 8 × 77 tokens) and
// the pooling gather at the end-of-text positions; the embeddings' backward (a scatter-add).
import type { KernelBenchCase } from '../types.js';
import { gatherBackwardKernel, gatherKernel, type GatherBackwardOptions } from '../../src/kernels/gather.js';
import { rng } from '../../test/util/random.js';

const r = rng(7);
const ids = Array.from({ length: 8 * 77 }, () => Math.floor(r() * 49408));

export const cases: KernelBenchCase<Record<string, never> | GatherBackwardOptions>[] = [
  {
    kernel: gatherKernel,
    label: 'CLIP text b8 token embeddings 8x77 ids from 49408x512',
    inputs: [{ shape: [49408, 512] }, { shape: [8, 77], dtype: 'i32', data: ids }],
    options: {},
    tfjs: (tf, [table, idx]) => tf.gather(table, idx),
  },
  {
    kernel: gatherKernel,
    label: 'CLIP text b8 pooling 8 rows from 616x512',
    inputs: [{ shape: [616, 512] }, { shape: [8], dtype: 'i32', data: [5, 90, 170, 240, 320, 400, 480, 600] }],
    options: {},
    tfjs: (tf, [table, idx]) => tf.gather(table, idx),
  },
  {
    kernel: gatherBackwardKernel,
    label: 'CLIP text b8 token embeddings backward: 8x77 ids (repeats) into 49408x512',
    inputs: [{ shape: [8, 77], dtype: 'i32', data: ids.map((id, i) => (i % 3 === 0 ? ids[0]! : id)) }, { shape: [8, 77, 512] }],
    options: { rows: 49408 },
    tfjs: (tf, [idx, dy]) => tf.unsortedSegmentSum(tf.reshape(dy, [616, 512]), tf.reshape(idx, [616]), 49408),
  },
];
