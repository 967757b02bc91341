// The kernels suite's registry: each kernel adds ONE line here,
//   export { cases as <name> } from './<name>.js';
// re-exporting the `cases` of its bench/kernels/<name>.ts. The suite runs them in alphabetical
// order of these names (a module namespace lists its exports sorted).
export { cases as elementwise } from './elementwise.js';
export { cases as attention } from './attention.js';
export { cases as attentionBackward } from './attentionBackward.js';
export { cases as boxes } from './boxes.js';
export { cases as copy } from './copy.js';
export { cases as gather } from './gather.js';
export { cases as layerNorm } from './layerNorm.js';
export { cases as layerNormBackward } from './layerNormBackward.js';
export { cases as losses } from './losses.js';
export { cases as matmul } from './matmul.js';
export { cases as matmulBackward } from './matmulBackward.js';
export { cases as meanField } from './meanField.js';
export { cases as nms } from './nms.js';
export { cases as optimizerStep } from './optimizerStep.js';
export { cases as patchEmbed } from './patchEmbed.js';
export { cases as reduce } from './reduce.js';
export { cases as regionWordSimilarity } from './regionWordSimilarity.js';
export { cases as roiAlign } from './roiAlign.js';
export { cases as softmax } from './softmax.js';
export { cases as softmaxBackward } from './softmaxBackward.js';
