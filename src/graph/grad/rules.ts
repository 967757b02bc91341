import type { Kernel } from '../../kernels/program.js';
import { concatKernel, stridedCopyKernel } from '../../kernels/copy.js';
import { elementwiseKernel } from '../../kernels/elementwise.js';
import { matmulKernel } from '../../kernels/matmul.js';
import { reduceKernel } from '../../kernels/reduce.js';
import { softmaxKernel } from '../../kernels/softmax.js';
import { layerNormKernel } from '../../kernels/layerNorm.js';
import { patchEmbedKernel } from '../../kernels/patchEmbed.js';
import { attentionKernel } from '../../kernels/attention.js';
import { gatherKernel } from '../../kernels/gather.js';
import { roiAlignKernel } from '../../kernels/roiAlign.js';
import { regionWordSimilarityKernel } from '../../kernels/regionWordSimilarity.js';
import { binaryCrossEntropyWithLogitsKernel, crossEntropyKernel, logSoftmaxKernel } from '../../kernels/losses.js';
import type { GradRule } from './index.js';
import { elementwiseGrad } from './elementwise.js';
import { matmulGrad } from './matmul.js';
import { concatGrad, stridedCopyGrad } from './copy.js';
import { reduceGrad } from './reduce.js';
import { logSoftmaxGrad, softmaxGrad } from './softmax.js';
import { layerNormGrad } from './layerNorm.js';
import { patchEmbedGrad } from './patchEmbed.js';
import { attentionGrad } from './attention.js';
import { gatherGrad } from './gather.js';
import { roiAlignGrad } from './roiAlign.js';
import { regionWordSimilarityGrad } from './regionWordSimilarity.js';
import { binaryCrossEntropyWithLogitsGrad, crossEntropyGrad } from './losses.js';

/** The backward rule of each kernel that has one. */
export const RULES = new Map<Kernel<unknown>, GradRule>([
  [elementwiseKernel, elementwiseGrad],
  [matmulKernel, matmulGrad],
  [stridedCopyKernel, stridedCopyGrad],
  [concatKernel, concatGrad],
  [reduceKernel, reduceGrad],
  [softmaxKernel, softmaxGrad],
  [layerNormKernel, layerNormGrad],
  [patchEmbedKernel, patchEmbedGrad],
  [attentionKernel, attentionGrad],
  [gatherKernel, gatherGrad],
  [roiAlignKernel, roiAlignGrad],
  [regionWordSimilarityKernel, regionWordSimilarityGrad],
  [logSoftmaxKernel, logSoftmaxGrad],
  [crossEntropyKernel, crossEntropyGrad],
  [binaryCrossEntropyWithLogitsKernel, binaryCrossEntropyWithLogitsGrad],
] as [Kernel<unknown>, GradRule][]);
