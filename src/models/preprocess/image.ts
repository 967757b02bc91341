// Image preprocessing for CLIP and OWL-ViT, as the reference pipelines do it:
// - CLIP (openai/CLIP `_transform`, torchvision): Resize(size, BICUBIC) of the shortest side,
//   CenterCrop(size), convert('RGB'), ToTensor (/255), Normalize(mean, std), all in float32.
// - OWL-ViT (Hugging Face OwlViTImageProcessor): resize to size x size ignoring the aspect ratio
//   (boxes are rescaled with the original size afterwards), /255, normalize with CLIP's mean/std.
// Decoding is the platform's (sharp in Node, which applies the EXIF orientation as the
// references on PIL's Image.open do not, so a phone photo is used upright; createImageBitmap in a
// page); RGBA pixels given as { data, width, height } (an ImageData) skip it, and everything after
// decoding is ours, so both platforms give the same numbers for the same pixels. Resizing is
// Pillow's exactly.
import { platform } from '../../platform/platform.js';
import { premultiply, resizeBicubic, unpremultiply } from './resample.js';

export const CLIP_MEAN: readonly number[] = [0.48145466, 0.4578275, 0.40821073];
export const CLIP_STD: readonly number[] = [0.26862954, 0.26130258, 0.27577711];

/** 8-bit RGBA pixels, row-major, as an ImageData holds them. */
export interface RgbaPixels {
  readonly data: Uint8ClampedArray | Uint8Array;
  readonly width: number;
  readonly height: number;
}

/**
 * An image: RGBA pixels ({ data, width, height }, e.g. an ImageData), or what the platform decodes:
 * in Node a file path or the bytes of an encoded image (PNG, JPEG, WebP, GIF, TIFF, AVIF, SVG, …);
 * in a page also a URL, an ImageBitmap, an HTMLImageElement, an HTMLCanvasElement, an
 * OffscreenCanvas or a Blob / File.
 */
export type ImageInput = string | Uint8Array | RgbaPixels | BrowserImage;

/** A browser image source (ImageBitmap, HTMLImageElement, HTMLCanvasElement, OffscreenCanvas, Blob, …), typed structurally so Node builds need no DOM types. */
export type BrowserImage = Blob | { readonly width: number; readonly height: number };

export interface NormalizeOptions {
  /** Output side in pixels (224 for CLIP ViT-B/32, 768 for OWL-ViT B/32). */
  size?: number;
  mean?: readonly number[];
  std?: readonly number[];
}

/** NCHW pixels: shape [batch, 3, height, width]. */
export interface PixelBatch {
  data: Float32Array;
  shape: [number, 3, number, number];
}

export class PreprocessError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PreprocessError';
  }
}

/** Decoded 8-bit sRGB pixels, upright, interleaved: 3 channels, or 4 when the image has alpha. */
export interface DecodedImage {
  data: Uint8Array;
  width: number;
  height: number;
  channels: 3 | 4;
}

function isRgbaPixels(v: unknown): v is RgbaPixels {
  const p = v as RgbaPixels;
  return typeof v === 'object' && v !== null && (p.data instanceof Uint8ClampedArray || p.data instanceof Uint8Array) && Number.isInteger(p.width) && Number.isInteger(p.height);
}

/** Decodes to 8-bit sRGB, upright, alpha kept if present; RGBA pixels are taken as they are. */
export async function decodeImage(input: ImageInput): Promise<DecodedImage> {
  if (!isRgbaPixels(input)) return platform().decodeImage(input);
  const { data, width, height } = input;
  if (width < 1 || height < 1 || data.length !== width * height * 4) {
    throw new PreprocessError(`RGBA pixels must hold width · height · 4 = ${width * height * 4} bytes for ${width}x${height}, got ${data.length}`);
  }
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width, height, channels: 4 };
}

/**
 * Pillow's resize of an RGB or RGBA image: RGBA is resized premultiplied by alpha and divided back,
 * as Image.resize does; a resize to the same size is a copy.
 */
export function resizeImage(img: DecodedImage, width: number, height: number): DecodedImage {
  if (width === img.width && height === img.height) return img;
  const src = img.channels === 4 ? premultiply(img.data) : img.data;
  const out = resizeBicubic(src, img.width, img.height, img.channels, width, height);
  return { data: img.channels === 4 ? unpremultiply(out) : out, width, height, channels: img.channels };
}

/** torchvision's Resize(size) target: the shortest side becomes `size`, the other int(size * long / short). */
export function shortSideSize(width: number, height: number, size: number): [number, number] {
  const long = Math.trunc((size * Math.max(width, height)) / Math.min(width, height));
  return width <= height ? [size, long] : [long, size];
}

/** Python's round() of x / 2 for an integer x: halves go to the even neighbour. */
export function halfRoundedEven(x: number): number {
  const half = x / 2;
  const floor = Math.floor(half);
  return half - floor !== 0.5 ? Math.round(half) : floor % 2 === 0 ? floor : floor + 1;
}

function checkOptions(op: string, size: number, mean: readonly number[], std: readonly number[]): void {
  if (!Number.isInteger(size) || size < 1) throw new PreprocessError(`${op}: size must be a positive integer, got ${size}`);
  if (mean.length !== 3 || std.length !== 3 || !std.every((s) => s !== 0 && Number.isFinite(s))) {
    throw new PreprocessError(`${op}: mean and std must hold 3 numbers each, std non-zero`);
  }
}

/**
 * Writes the width x height window at (left, top) into `out` as normalized float32 NCHW, alpha
 * dropped (PIL's convert('RGB') keeps the colour of transparent pixels as it is). The arithmetic is
 * float32 like the reference's ToTensor and Normalize.
 */
function normalizeInto(out: Float32Array, offset: number, img: DecodedImage, left: number, top: number, width: number, height: number, mean: readonly number[], std: readonly number[]): void {
  for (let c = 0; c < 3; c++) {
    const m = Math.fround(mean[c]!);
    const s = Math.fround(std[c]!);
    const plane = offset + c * width * height;
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const v = img.data[((top + y) * img.width + left + x) * img.channels + c]!;
        out[plane + y * width + x] = Math.fround(Math.fround(Math.fround(v / 255) - m) / s);
      }
    }
  }
}

/** CLIP preprocessing of several images, stacked: shape [n, 3, size, size]. */
export async function preprocessClipBatch(inputs: readonly ImageInput[], options: NormalizeOptions = {}): Promise<PixelBatch> {
  checkOptions('preprocessClip', options.size ?? 224, options.mean ?? CLIP_MEAN, options.std ?? CLIP_STD);
  const decoded: DecodedImage[] = [];
  for (const input of inputs) decoded.push(await decodeImage(input));
  return clipPixels(decoded, options);
}

/** CLIP preprocessing of decoded images (shortest side to `size`, bicubic; centre crop; /255; normalize): [n, 3, size, size]. */
export function clipPixels(images: readonly DecodedImage[], options: NormalizeOptions = {}): PixelBatch {
  const { size = 224, mean = CLIP_MEAN, std = CLIP_STD } = options;
  checkOptions('preprocessClip', size, mean, std);
  const data = new Float32Array(images.length * 3 * size * size);
  for (const [i, decoded] of images.entries()) {
    const img = resizeImage(decoded, ...shortSideSize(decoded.width, decoded.height, size));
    // torchvision's CenterCrop: int(round((h - size) / 2.0)) with Python's round half to even.
    normalizeInto(data, i * 3 * size * size, img, halfRoundedEven(img.width - size), halfRoundedEven(img.height - size), size, size, mean, std);
  }
  return { data, shape: [images.length, 3, size, size] };
}

/** CLIP preprocessing: shortest side to `size` (bicubic), centre crop, /255, normalize; [1, 3, size, size]. */
export async function preprocessClip(input: ImageInput, options: NormalizeOptions = {}): Promise<PixelBatch> {
  return preprocessClipBatch([input], options);
}

/**
 * One image resized whole to height × width (bicubic, aspect ratio ignored, no crop), /255,
 * normalized: [1, 3, height, width], as CaR's `_transform_resize`; `originalSize` is [h, w].
 */
export async function preprocessClipResized(input: ImageInput, height: number, width: number, options: Omit<NormalizeOptions, 'size'> = {}): Promise<PixelBatch & { originalSize: [number, number] }> {
  checkOptions('preprocessClipResized', height, options.mean ?? CLIP_MEAN, options.std ?? CLIP_STD);
  checkOptions('preprocessClipResized', width, options.mean ?? CLIP_MEAN, options.std ?? CLIP_STD);
  const decoded = await decodeImage(input);
  return { ...clipPixelsResized(decoded, height, width, options), originalSize: [decoded.height, decoded.width] };
}

/** preprocessClipResized of a decoded image: resized whole to height × width, /255, normalized, [1, 3, height, width]. */
export function clipPixelsResized(decoded: DecodedImage, height: number, width: number, options: Omit<NormalizeOptions, 'size'> = {}): PixelBatch {
  const { mean = CLIP_MEAN, std = CLIP_STD } = options;
  checkOptions('preprocessClipResized', height, mean, std);
  checkOptions('preprocessClipResized', width, mean, std);
  const data = new Float32Array(3 * height * width);
  normalizeInto(data, 0, resizeImage(decoded, width, height), 0, 0, width, height, mean, std);
  return { data, shape: [1, 3, height, width] };
}

/** OWL-ViT preprocessing of several images: each resized to size x size; original [height, width] kept. */
export async function preprocessOwlVitBatch(
  inputs: readonly ImageInput[],
  options: NormalizeOptions = {},
): Promise<PixelBatch & { originalSizes: [number, number][] }> {
  const { size = 768, mean = CLIP_MEAN, std = CLIP_STD } = options;
  checkOptions('preprocessOwlVit', size, mean, std);
  const data = new Float32Array(inputs.length * 3 * size * size);
  const originalSizes: [number, number][] = [];
  for (const [i, input] of inputs.entries()) {
    const decoded = await decodeImage(input);
    originalSizes.push([decoded.height, decoded.width]);
    normalizeInto(data, i * 3 * size * size, resizeImage(decoded, size, size), 0, 0, size, size, mean, std);
  }
  return { data, shape: [inputs.length, 3, size, size], originalSizes };
}

/** OWL-ViT preprocessing: resized to size x size (aspect ignored), /255, normalize; `originalSize` is [h, w]. */
export async function preprocessOwlVit(input: ImageInput, options: NormalizeOptions = {}): Promise<PixelBatch & { originalSize: [number, number] }> {
  const { data, shape, originalSizes } = await preprocessOwlVitBatch([input], options);
  return { data, shape, originalSize: originalSizes[0]! };
}
