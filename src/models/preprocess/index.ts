export {
  CLIP_MEAN,
  CLIP_STD,
  PreprocessError,
  decodeImage,
  resizeImage,
  shortSideSize,
  halfRoundedEven,
  preprocessClip,
  preprocessClipBatch,
  preprocessClipResized,
  preprocessOwlVit,
  preprocessOwlVitBatch,
  type DecodedImage,
  type ImageInput,
  type NormalizeOptions,
  type PixelBatch,
} from './image.js';
export { preprocessOwlv2, preprocessOwlv2Batch, resizeOwlv2 } from './owlv2.js';
