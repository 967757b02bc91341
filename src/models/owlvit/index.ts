export { type ImageHeadOutputs } from './heads.js';
export { OwlVitDetector, OwlVitImageEmbedding, type OwlVitLoadOptions, type PredictInputs, type PredictOutputs, type ImageGuidedInputs, type ImageGuidedOutputs } from './detector.js';
export { owlVitConfigFromHf, type OwlVitConfig } from './config.js';
export { postProcessObjectDetection, postProcessImageGuided, selectImageQuery, type Detections, type PostProcessOptions, type ImageGuidedPostProcessOptions } from './postprocess.js';
export { type DetectImage, type DetectQueries, type DetectOptions, type Detection } from './detect.js';
