// The public API both builds share; src/index.ts (Node) and src/browser.ts (pages) add their platform.
export { openGpu, Gpu, GpuError, detectProfile } from './gpu/index.js';
export type { OpenGpuOptions, GpuInfo, GpuStats, GpuProfile } from './gpu/index.js';
export { Tensor, type TensorData } from './tensor.js';
export { type DType, DTYPES, sizeOf } from './dtype.js';
export * as kernels from './kernels/index.js';
export { Optimizer, Sgd, Adam, AdamW, type SgdOptions, type AdamOptions } from './optim.js';
export * from './graph/index.js';
export { ClipModel, clipLogits, type ClipLoadOptions, type ImageRunOptions, type TowerResult } from './models/clip/model.js';
export { gradCamToImage, type GradCamOptions, type GradCamResult } from './models/clip/gradcam.js';
export { resizePositionEmbedding, type PositionEmbeddingOptions, type PositionInterpolation } from './models/clip/position.js';
export { type ClipConfig, type VisionConfig, type TextConfig, clipConfigFromHf, clipConfigFromOpenAi } from './models/clip/config.js';
export {
  SafetensorsFile,
  SafetensorsCheckpoint,
  SafetensorsError,
  openCheckpoint,
  uploadTensor,
  readSafetensors,
  decodeSafetensors,
  type TensorSource,
  type SafetensorsEntry,
  type SafetensorsDType,
  type HostTensor,
} from './io/safetensors.js';
export { locate, memorySource, blobSource, httpSource, urlFileSet, mapFileSet, type ByteSource, type FileSet, type FileLike, type ModelSource, type Location } from './io/source.js';
export { ClipTokenizer, TokenizerError, type EncodeOptions } from './models/tokenizer/index.js';
export {
  preprocessClip,
  preprocessClipBatch,
  preprocessClipResized,
  preprocessOwlVit,
  preprocessOwlVitBatch,
  preprocessOwlv2,
  preprocessOwlv2Batch,
  decodeImage,
  PreprocessError,
  CLIP_MEAN,
  CLIP_STD,
  type ImageInput,
  type RgbaPixels,
  type BrowserImage,
  type NormalizeOptions,
  type PixelBatch,
} from './models/preprocess/index.js';
export { InputError } from './models/inputs.js';
export * from './models/region/index.js';
export * from './models/prompts/index.js';
export * from './models/owlvit/index.js';
export { randomModel, TINY_OWLVIT, TINY_CLIP, vitB32, owlv2B16, type RandomModelKind } from './models/randomWeights.js';
export { denseCrf, DenseCrfImage, crfProbabilitiesFromCams, crfColors, crfLattices, CAR_CRF_DEFAULTS, type DenseCrfOptions, type DenseCrfResult } from './models/car/crf.js';
export { exportOnnx, ONNX_OPSET, type OnnxExportOptions } from './onnx/export.js';
export * from './models/car/index.js';
