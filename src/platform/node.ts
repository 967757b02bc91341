// The Node platform: WebGPU through Dawn (npm `webgpu`), model files from disk (or http(s) URLs),
// images decoded by sharp.
import { readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import sharp from 'sharp';
import type { OpenGpuOptions } from '../gpu/gpu.js';
import { locateUrl, type ByteSource, type FileSet, type Location } from '../io/source.js';
import { PreprocessError, type DecodedImage } from '../models/preprocess/image.js';
import { setPlatform, type Platform } from './platform.js';
import { waitQuietly } from './quietWait.js';

/** The most bytes one read call is asked for (Node refuses 2 GiB and more). */
const READ_CHUNK_BYTES = 1 << 30;

/** A file on disk, read by range. Undefined when there is no such file. */
export async function fileSource(path: string): Promise<ByteSource | undefined> {
  let handle;
  try {
    handle = await open(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  const h = handle;
  let size: number;
  try {
    const s = await h.stat();
    if (s.isDirectory()) throw new Error('is a folder');
    size = s.size;
  } catch (err) {
    await h.close();
    throw err;
  }
  let closed = false;
  return {
    name: path,
    size,
    read: async (offset, length) => {
      if (closed) throw new Error('file is closed');
      const bytes = new Uint8Array(length);
      for (let done = 0; done < length; ) {
        const { bytesRead } = await h.read(bytes, done, Math.min(length - done, READ_CHUNK_BYTES), offset + done);
        if (bytesRead === 0) throw new Error(`file ended while reading bytes ${offset}…${offset + length}`);
        done += bytesRead;
      }
      return bytes;
    },
    close: () => {
      if (!closed) void h.close();
      closed = true;
    },
  };
}

/** A folder on disk. */
export function folderFileSet(dir: string): FileSet {
  return { name: dir, path: (file) => join(dir, file), open: (file) => fileSource(join(dir, file)) };
}

const nodePlatform: Platform = {
  name: 'node',
  async gpu(options: OpenGpuOptions) {
    const dawn = await import('webgpu');
    Object.assign(globalThis, dawn.globals);
    const args = [...(options.dawnOptions ?? [])];
    if (options.backend) args.push(`backend=${options.backend}`);
    if (options.adapter) args.push(`adapter=${options.adapter}`);
    const gpu = dawn.create(args);
    return { gpu, keepAlive: gpu };
  },
  noAdapterAdvice: 'On a machine without a GPU run scripts/setup to install a software Vulkan driver.',
  waitQuietly,
  async locate(path: string): Promise<Location> {
    if (/^https?:\/\//i.test(path)) return locateUrl(path);
    const s = await stat(path).catch(() => undefined);
    if (s?.isDirectory()) return { files: folderFileSet(path) };
    return { files: folderFileSet(dirname(path)), file: basename(path) };
  },
  async decodeImage(input: unknown): Promise<DecodedImage> {
    if (typeof input !== 'string' && !(input instanceof Uint8Array)) {
      throw new PreprocessError(`expected a file path or the bytes of an image (or RGBA pixels { data, width, height }), got ${describe(input)}`);
    }
    const what = typeof input === 'string' ? input : `image buffer of ${input.length} bytes`;
    try {
      // EXIF orientation applied, converted to 8-bit sRGB, alpha kept if present.
      const { data, info } = await sharp(input).rotate().toColourspace('srgb').raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
      if (info.channels !== 3 && info.channels !== 4) throw new Error(`${info.channels} channels after conversion to sRGB`);
      return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height, channels: info.channels };
    } catch (err) {
      throw new PreprocessError(`${what}: cannot read the image (${(err as Error).message})`, { cause: err });
    }
  },
  localFiles: {
    readText: (path) => readFileSync(path, 'utf8'),
    isFile: (path) => !!statSync(path, { throwIfNoEntry: false })?.isFile(),
    writeAtomic(path, bytes) {
      const temp = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
      try {
        writeFileSync(temp, bytes);
        renameSync(temp, path);
      } finally {
        rmSync(temp, { force: true });
      }
    },
    besides: (file, relative) => resolve(dirname(file), relative),
  },
};

function describe(v: unknown): string {
  return v === null || typeof v !== 'object' ? typeof v : `a ${v.constructor?.name ?? 'object'}`;
}

setPlatform(nodePlatform);
