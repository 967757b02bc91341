// The browser platform: WebGPU from navigator.gpu, model files from URLs (relative to the page),
// images decoded with createImageBitmap and read back through an OffscreenCanvas. DOM types are
// declared structurally here so that the Node build needs no DOM typings.
import type { OpenGpuOptions } from '../gpu/gpu.js';
import { locateUrl, type Location } from '../io/source.js';
import { PreprocessError, type DecodedImage } from '../models/preprocess/image.js';
import { setPlatform, type Platform } from './platform.js';

interface Bitmap {
  readonly width: number;
  readonly height: number;
  close(): void;
}
interface Context2D {
  drawImage(image: Bitmap, x: number, y: number): void;
  getImageData(x: number, y: number, w: number, h: number): { data: Uint8ClampedArray };
}
interface BrowserGlobals {
  navigator?: { gpu?: GPU };
  location?: { href: string };
  document?: { baseURI: string };
  createImageBitmap?(source: unknown, options?: Record<string, string>): Promise<Bitmap>;
  OffscreenCanvas?: new (w: number, h: number) => { getContext(kind: '2d', options?: Record<string, unknown>): Context2D | null };
  HTMLImageElement?: new () => { complete: boolean; decode(): Promise<void> };
}
const web = globalThis as unknown as BrowserGlobals;

const ENABLE_WEBGPU =
  'Use a browser with WebGPU enabled (Chrome or Edge 113+, Safari 26+, Firefox 141+) on a secure page (https or localhost); ' +
  'in Chromium on Linux, or headless, start it with --enable-unsafe-webgpu (chrome://gpu tells why WebGPU is off).';

/** Where relative URLs point: the document's base, else the page's address. */
function baseUrl(): string | undefined {
  return web.document?.baseURI ?? web.location?.href;
}

/** createImageBitmap without colour-space conversion or premultiplication, EXIF orientation applied (as sharp does in Node). */
function bitmap(source: unknown): Promise<Bitmap> {
  return web.createImageBitmap!(source, { imageOrientation: 'from-image', premultiplyAlpha: 'none', colorSpaceConversion: 'none' });
}

async function toBitmap(input: unknown): Promise<{ bitmap: Bitmap; what: string }> {
  if (typeof input === 'string') {
    const url = new URL(input, baseUrl()).href;
    const r = await fetch(url);
    if (!r.ok) throw new PreprocessError(`${input}: cannot read the image (HTTP ${r.status} ${r.statusText})`);
    return { bitmap: await bitmap(await r.blob()), what: input };
  }
  if (input instanceof Uint8Array || input instanceof ArrayBuffer) {
    return { bitmap: await bitmap(new Blob([input as Uint8Array<ArrayBuffer>])), what: `image buffer of ${input.byteLength} bytes` };
  }
  if (input instanceof Blob) return { bitmap: await bitmap(input), what: `${(input as { name?: string }).name ?? 'Blob'} (${input.size} bytes)` };
  const name = (input as object | null)?.constructor?.name ?? typeof input;
  if (web.HTMLImageElement && input instanceof web.HTMLImageElement && !input.complete) await input.decode();
  // ImageBitmap, HTMLImageElement, HTMLCanvasElement, OffscreenCanvas, SVGImageElement, VideoFrame, HTMLVideoElement.
  return { bitmap: await bitmap(input), what: `a ${name}` };
}

const browserPlatform: Platform = {
  name: 'browser',
  async gpu(_options: OpenGpuOptions) {
    const gpu = web.navigator?.gpu;
    if (!gpu) throw new Error(`this browser exposes no WebGPU (navigator.gpu is undefined). ${ENABLE_WEBGPU}`);
    return { gpu, keepAlive: gpu };
  },
  noAdapterAdvice: `The browser exposes WebGPU but offered no adapter (GPU blocklisted, or hardware acceleration off). ${ENABLE_WEBGPU}`,
  async locate(path: string): Promise<Location> {
    return locateUrl(new URL(path, baseUrl()));
  },
  baseUrl,
  async decodeImage(input: unknown): Promise<DecodedImage> {
    if (!web.createImageBitmap || !web.OffscreenCanvas) throw new PreprocessError('decoding images needs createImageBitmap and OffscreenCanvas, which this browser lacks: pass RGBA pixels ({ data, width, height }, e.g. an ImageData) instead');
    let decoded: { bitmap: Bitmap; what: string };
    try {
      decoded = await toBitmap(input);
    } catch (err) {
      if (err instanceof PreprocessError) throw err;
      const what = typeof input === 'string' ? input : `a ${(input as object | null)?.constructor?.name ?? typeof input}`;
      throw new PreprocessError(`${what}: cannot read the image (${(err as Error).message})`, { cause: err });
    }
    const { bitmap: b } = decoded;
    try {
      const ctx = new web.OffscreenCanvas(b.width, b.height).getContext('2d', { willReadFrequently: true, colorSpace: 'srgb' });
      if (!ctx) throw new PreprocessError(`${decoded.what}: no 2D canvas context to read its pixels`);
      ctx.drawImage(b, 0, 0);
      const { data } = ctx.getImageData(0, 0, b.width, b.height);
      return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width: b.width, height: b.height, channels: 4 };
    } finally {
      b.close();
    }
  },
};

setPlatform(browserPlatform);
