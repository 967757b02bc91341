import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { Float16Array } from '@petamoriken/float16';

/** Dtypes we read. BF16 and F16 widen to f32; I64 narrows to i32 (values must fit). */
export type SafetensorsDType = 'F32' | 'F16' | 'BF16' | 'I64' | 'I32';

const DTYPE_BYTES: Record<SafetensorsDType, number> = { F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4 };

export interface SafetensorsEntry {
  readonly name: string;
  readonly dtype: SafetensorsDType;
  readonly shape: readonly number[];
  /** Byte range inside the data section. */
  readonly begin: number;
  readonly end: number;
}

/** Headers larger than this are refused before being read: real ones are a few MB at most. */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024 - 1;

export class SafetensorsError extends Error {
  constructor(file: string, message: string, options?: { cause?: unknown }) {
    super(`${file}: ${message}`, options);
    this.name = 'SafetensorsError';
  }
}

/** Parses and strictly validates a header against the file size. Throws SafetensorsError. */
export function parseSafetensorsHeader(
  file: string,
  headerBytes: Uint8Array,
  dataBytes: number,
): { entries: Map<string, SafetensorsEntry>; metadata: Record<string, string> } {
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(headerBytes));
  } catch (err) {
    throw new SafetensorsError(file, `header is not valid UTF-8 JSON (${(err as Error).message})`, { cause: err });
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new SafetensorsError(file, 'header must be a JSON object');
  const entries = new Map<string, SafetensorsEntry>();
  let metadata: Record<string, string> = {};
  for (const [name, raw] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new SafetensorsError(file, '__metadata__ must be an object');
      metadata = raw as Record<string, string>;
      continue;
    }
    const where = `tensor ${JSON.stringify(name)}`;
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new SafetensorsError(file, `${where}: entry must be an object`);
    const { dtype, shape, data_offsets: offsets } = raw as Record<string, unknown>;
    if (typeof dtype !== 'string' || !(dtype in DTYPE_BYTES)) {
      throw new SafetensorsError(file, `${where}: unsupported dtype ${JSON.stringify(dtype)} (expected one of ${Object.keys(DTYPE_BYTES).join(', ')})`);
    }
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new SafetensorsError(file, `${where}: shape must be an array of non-negative integers`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new SafetensorsError(file, `${where}: data_offsets must be [begin, end] non-negative integers`);
    }
    const [begin, end] = offsets as [number, number];
    const expected = shape.reduce((a: number, b: number) => a * b, 1) * DTYPE_BYTES[dtype as SafetensorsDType];
    if (end < begin) throw new SafetensorsError(file, `${where}: data_offsets [${begin}, ${end}] end before begin`);
    if (end - begin !== expected) {
      throw new SafetensorsError(file, `${where}: ${end - begin} bytes for ${dtype} of shape [${shape.join(', ')}], expected ${expected}`);
    }
    if (end > dataBytes) throw new SafetensorsError(file, `${where}: data_offsets end ${end} beyond the ${dataBytes} data bytes in the file`);
    entries.set(name, { name, dtype: dtype as SafetensorsDType, shape: shape as number[], begin, end });
  }
  // Tensors must tile the data section in order, without gaps or overlaps, as the format requires.
  const sorted = [...entries.values()].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let at = 0;
  for (const e of sorted) {
    if (e.begin !== at) {
      throw new SafetensorsError(file, `tensor ${JSON.stringify(e.name)}: data starts at ${e.begin}, expected ${at} (${e.begin < at ? 'overlaps the previous tensor' : 'gap in the data'})`);
    }
    at = e.end;
  }
  if (at !== dataBytes) throw new SafetensorsError(file, `tensors cover ${at} of the ${dataBytes} data bytes`);
  return { entries, metadata };
}

/** Host-side tensor data: f32 for float dtypes, i32 for integer dtypes. */
export interface HostTensor {
  readonly shape: readonly number[];
  readonly dtype: SafetensorsDType;
  readonly data: Float32Array | Int32Array;
}

/**
 * A .safetensors file opened for reading. The header is validated on open; tensor data is read
 * from disk one tensor at a time, so the whole file never sits in JS memory.
 */
export class SafetensorsFile {
  readonly path: string;
  readonly entries: ReadonlyMap<string, SafetensorsEntry>;
  readonly metadata: Readonly<Record<string, string>>;
  readonly #dataStart: number;
  #fd: number | undefined;

  private constructor(path: string, fd: number, entries: Map<string, SafetensorsEntry>, metadata: Record<string, string>, dataStart: number) {
    this.path = path;
    this.#fd = fd;
    this.entries = entries;
    this.metadata = metadata;
    this.#dataStart = dataStart;
  }

  static open(path: string): SafetensorsFile {
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (err) {
      throw new SafetensorsError(path, `cannot open (${(err as Error).message})`, { cause: err });
    }
    try {
      const size = fstatSync(fd).size;
      if (size < 8) throw new SafetensorsError(path, `file of ${size} bytes is too short for a safetensors header`);
      const lenBytes = Buffer.alloc(8);
      readSync(fd, lenBytes, 0, 8, 0);
      const headerLength = lenBytes.readBigUInt64LE(0);
      if (headerLength > BigInt(MAX_HEADER_BYTES)) throw new SafetensorsError(path, `header length ${headerLength} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
      if (headerLength > BigInt(size - 8)) throw new SafetensorsError(path, `header length ${headerLength} is beyond the end of the ${size}-byte file`);
      const n = Number(headerLength);
      const header = Buffer.alloc(n);
      if (readSync(fd, header, 0, n, 8) !== n) throw new SafetensorsError(path, 'short read of the header');
      const { entries, metadata } = parseSafetensorsHeader(path, header, size - 8 - n);
      return new SafetensorsFile(path, fd, entries, metadata, 8 + n);
    } catch (err) {
      closeSync(fd);
      throw err;
    }
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  /** Reads one tensor's raw bytes. */
  readBytes(name: string): { entry: SafetensorsEntry; bytes: Uint8Array } {
    const entry = this.entries.get(name);
    if (!entry) throw new SafetensorsError(this.path, `no tensor named ${JSON.stringify(name)}`);
    if (this.#fd === undefined) throw new SafetensorsError(this.path, 'file is closed');
    const bytes = new Uint8Array(entry.end - entry.begin);
    let done = 0;
    while (done < bytes.length) {
      const got = readSync(this.#fd, bytes, done, bytes.length - done, this.#dataStart + entry.begin + done);
      if (got === 0) throw new SafetensorsError(this.path, `tensor ${JSON.stringify(name)}: file ended while reading`);
      done += got;
    }
    return { entry, bytes };
  }

  /** Reads one tensor, converted: floats to Float32Array, integers to Int32Array. */
  get(name: string): HostTensor {
    const { entry, bytes } = this.readBytes(name);
    return { shape: entry.shape, dtype: entry.dtype, data: decodeTensor(this.path, entry, bytes) };
  }

  close(): void {
    if (this.#fd !== undefined) closeSync(this.#fd);
    this.#fd = undefined;
  }
}

function decodeTensor(file: string, entry: SafetensorsEntry, bytes: Uint8Array): Float32Array | Int32Array {
  const n = entry.shape.reduce((a, b) => a * b, 1);
  // Copy into an aligned buffer: the data offset inside the file need not be aligned.
  const aligned = bytes.slice().buffer;
  switch (entry.dtype) {
    case 'F32':
      return new Float32Array(aligned, 0, n);
    case 'F16':
      return Float32Array.from(new Float16Array(aligned, 0, n));
    case 'BF16': {
      const src = new Uint16Array(aligned, 0, n);
      const out = new Uint32Array(n);
      for (let i = 0; i < n; i++) out[i] = src[i]! << 16;
      return new Float32Array(out.buffer);
    }
    case 'I32':
      return new Int32Array(aligned, 0, n);
    case 'I64': {
      const src = new BigInt64Array(aligned, 0, n);
      const out = new Int32Array(n);
      for (let i = 0; i < n; i++) {
        const v = src[i]!;
        if (v > 2147483647n || v < -2147483648n) throw new SafetensorsError(file, `tensor ${JSON.stringify(entry.name)}: I64 value ${v} at ${i} does not fit in i32`);
        out[i] = Number(v);
      }
      return out;
    }
  }
}

/** Reads every tensor of a small file at once (fixtures, tests). */
export function readSafetensors(path: string): Map<string, HostTensor> {
  const f = SafetensorsFile.open(path);
  try {
    return new Map([...f.entries.keys()].map((name) => [name, f.get(name)]));
  } finally {
    f.close();
  }
}
