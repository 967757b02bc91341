export { findContours, boundingRect, type Contour } from './contours.js';
export { clipEsAttention, clipEsTransition, refineCamClipEs, scoremapBoxes, type ClipEsOptions, type ClipEsResult } from './clipes.js';
export { resizeLinear, scaleCamToImage } from './resize.js';
