export { findContours, boundingRect, type Contour } from './contours.js';
export { clipEsAttention, clipEsTransition, refineCamClipEs, scaleCamToImage, scoremapBoxes, type ClipEsOptions, type ClipEsResult } from './clipes.js';
export { applyVisualPrompts, checkVisualPromptTypes, VISUAL_PROMPT_TYPES, type VisualPromptType, type VisualPromptOptions } from './prompts.js';
export { gaussianBlurU8, gaussianKernelFixed } from './draw.js';
export { runCarLoop, classificationProbabilities, type CarLoopResult, type CarLoopSteps, type CarStage } from './loop.js';
export { CarSegmenter, proposeMasks, type ProposalResult, type CarLoadOptions, type CarSegmentOptions, type CarSegmentation, type CarQueryResult, type CarProgress, type CarImage } from './segmenter.js';
