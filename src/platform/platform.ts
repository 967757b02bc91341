// What differs between Node and a browser, behind one small interface: where WebGPU comes from,
// how a string names model files (a path or a URL), and how images are decoded. Each entry point
// (src/index.ts for Node, src/browser.ts for pages) installs its implementation once; models and
// loaders call platform() and never test which one they run on.
import type { OpenGpuOptions } from '../gpu/gpu.js';
import type { Location } from '../io/source.js';
import type { DecodedImage } from '../models/preprocess/image.js';

export interface Platform {
  readonly name: 'node' | 'browser';
  /** The WebGPU entry point, and an object to keep referenced while its devices live (Dawn needs it). */
  gpu(options: OpenGpuOptions): Promise<{ gpu: GPU; keepAlive: unknown }>;
  /** What to tell the user when no adapter is offered. */
  readonly noAdapterAdvice: string;
  /** A string naming model files: a file or folder path in Node, a URL in a page. */
  locate(path: string): Promise<Location>;
  /** The base that relative URLs resolve against (the page's address), if any. */
  baseUrl?(): string | undefined;
  /** Decodes an image given as a platform-specific input (a path, encoded bytes, an element, …). */
  decodeImage(input: unknown): Promise<DecodedImage>;
  /**
   * Awaits a pending WebGPU operation, sleeping `sleepMs` between polls for its completion where the
   * WebGPU binding would otherwise poll without pause on the calling thread (Node's Dawn). Absent
   * where waiting costs no CPU (a page: the browser's GPU process does the work).
   */
  waitQuietly?<T>(promise: Promise<T>, sleepMs: number): Promise<T>;
  /** Synchronous local files, for prompt files and training records (Node only; a page has none). */
  readonly localFiles?: LocalFiles;
}

export interface LocalFiles {
  readText(path: string): string;
  isFile(path: string): boolean;
  /** Writes beside `path`, then renames: an interrupted write leaves the previous file. */
  writeAtomic(path: string, bytes: Uint8Array): void;
  /** `relative` resolved against the folder holding `file`. */
  besides(file: string, relative: string): string;
}

let current: Platform | undefined;

/** Installs the platform implementation; called once by each entry point. */
export function setPlatform(p: Platform): void {
  current = p;
}

/** The local file system, or an error naming `op` where there is none (in a page). */
export function localFiles(op: string): LocalFiles {
  const files = platform().localFiles;
  if (!files) throw new Error(`${op}: needs local files, which a page does not have (run it in Node)`);
  return files;
}

export function platform(): Platform {
  if (!current) throw new Error('ovgpu: no platform installed; import ovgpu through its entry point (ovgpu, or ovgpu/browser)');
  return current;
}
