import type { Gpu } from '../gpu/gpu.js';
import { GpuError } from '../gpu/errors.js';
import { Tensor, maxTensorBytes, paddedByteLength } from '../tensor.js';
import { f16BitsToF32 } from '../dtype.js';
import { locate, readText, type ByteSource, type FileSet, type ModelSource } from './source.js';

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

/**
 * A bad or unreadable checkpoint. Part of the GpuError family (loaders throw only GpuErrors), with
 * the file as its `op`, so the message starts with the file; it names the tensor where there is one.
 */
export class SafetensorsError extends GpuError {
  readonly file: string;
  constructor(file: string, message: string, options?: { cause?: unknown }) {
    super(file, message, options);
    this.name = 'SafetensorsError';
    this.file = file;
  }
}

/** Parses and strictly validates a header against the file size. Throws SafetensorsError. */
export function parseSafetensorsHeader(
  file: string,
  headerBytes: Uint8Array,
  dataBytes: number,
): { entries: Map<string, SafetensorsEntry>; metadata: Record<string, string> } {
  let text: string;
  let json: unknown;
  try {
    // A byte-order mark is kept (and so refused by JSON.parse), as other readers refuse it.
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(headerBytes);
    json = JSON.parse(text);
  } catch (err) {
    throw new SafetensorsError(file, `header is not valid UTF-8 JSON (${(err as Error).message})`, { cause: err });
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new SafetensorsError(file, 'header must be a JSON object');
  const duplicate = duplicateJsonKey(text);
  if (duplicate) {
    const [tensor, field] = duplicate.map((k) => JSON.stringify(k));
    throw new SafetensorsError(file, `tensor ${tensor}${field ? `: field ${field}` : ''} appears twice in the header`);
  }
  const entries = new Map<string, SafetensorsEntry>();
  let metadata: Record<string, string> = {};
  for (const [name, raw] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof raw !== 'object' || raw === null || Array.isArray(raw) || !Object.values(raw).every((v) => typeof v === 'string')) {
        throw new SafetensorsError(file, '__metadata__ must be an object of strings');
      }
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

/**
 * JSON.parse silently keeps the last of repeated keys, which would hide a second definition of a
 * tensor (or of its dtype). Scans already-valid JSON text for the first object with a repeated key:
 * returns [key] for a repeated top-level key, [top-level key, key] for one deeper, else undefined.
 */
function duplicateJsonKey(text: string): string[] | undefined {
  // One set of seen keys per open object (null for arrays).
  const open: (Set<string> | null)[] = [];
  let top = '';
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '{') open.push(new Set());
    else if (c === '[') open.push(null);
    else if (c === '}' || c === ']') open.pop();
    else if (c === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      const raw = text.slice(i, j + 1);
      i = j;
      let k = j + 1;
      while (k < text.length && ' \t\n\r'.includes(text[k]!)) k++;
      const keys = open[open.length - 1];
      if (text[k] !== ':' || !keys) continue;
      const key = raw.includes('\\') ? (JSON.parse(raw) as string) : raw.slice(1, -1);
      if (keys.has(key)) return open.length === 1 ? [key] : [top, key];
      keys.add(key);
      if (open.length === 1) top = key;
    }
  }
  return undefined;
}

/** Host-side tensor data: f32 for float dtypes, i32 for integer dtypes. */
export interface HostTensor {
  readonly shape: readonly number[];
  readonly dtype: SafetensorsDType;
  readonly data: Float32Array | Int32Array;
}

/**
 * A .safetensors file opened for reading. The header is validated on open; tensor data is read one
 * tensor at a time (a file on disk, a Blob, or HTTP range requests), so the whole file never sits
 * in JS memory.
 */
export class SafetensorsFile {
  readonly path: string;
  readonly entries: ReadonlyMap<string, SafetensorsEntry>;
  readonly metadata: Readonly<Record<string, string>>;
  readonly #dataStart: number;
  #source: ByteSource | undefined;

  private constructor(source: ByteSource, entries: Map<string, SafetensorsEntry>, metadata: Record<string, string>, dataStart: number) {
    this.path = source.name;
    this.#source = source;
    this.entries = entries;
    this.metadata = metadata;
    this.#dataStart = dataStart;
  }

  /** Opens a file: a path (Node), a URL, or an opened ByteSource (closed with this file). */
  static async open(source: string | URL | ByteSource): Promise<SafetensorsFile> {
    if (typeof source === 'string' || source instanceof URL) {
      const where = await locate(source);
      if (!where.file) throw new SafetensorsError(where.files.name, 'is a folder, not a .safetensors file');
      return SafetensorsFile.open(await openMember(where.files, where.file));
    }
    const path = source.name;
    try {
      const size = source.size;
      if (size < 8) throw new SafetensorsError(path, `file of ${size} bytes is too short for a safetensors header`);
      const headerLength = new DataView((await read(source, 0, 8, 'the header length')).slice().buffer).getBigUint64(0, true);
      if (headerLength > BigInt(MAX_HEADER_BYTES)) throw new SafetensorsError(path, `header length ${headerLength} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
      if (headerLength > BigInt(size - 8)) throw new SafetensorsError(path, `header length ${headerLength} is beyond the end of the ${size}-byte file`);
      const n = Number(headerLength);
      const header = await read(source, 8, n, 'the header');
      const { entries, metadata } = parseSafetensorsHeader(path, header, size - 8 - n);
      return new SafetensorsFile(source, entries, metadata, 8 + n);
    } catch (err) {
      source.close();
      throw err;
    }
  }

  /** Tensor names in header order. */
  get names(): string[] {
    return [...this.entries.keys()];
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  /** A tensor's dtype, shape and byte range; throws SafetensorsError when there is none. */
  entry(name: string): SafetensorsEntry {
    const entry = this.entries.get(name);
    if (!entry) throw new SafetensorsError(this.path, `no tensor named ${JSON.stringify(name)}`);
    return entry;
  }

  /** Reads one tensor's raw bytes (only those bytes: one read, one range request). */
  async readBytes(name: string): Promise<{ entry: SafetensorsEntry; bytes: Uint8Array }> {
    const entry = this.entry(name);
    if (!this.#source) throw new SafetensorsError(this.path, 'file is closed');
    const bytes = await read(this.#source, this.#dataStart + entry.begin, entry.end - entry.begin, `tensor ${JSON.stringify(name)}`);
    return { entry, bytes };
  }

  /** Reads one tensor, converted: floats to Float32Array, integers to Int32Array. */
  async get(name: string): Promise<HostTensor> {
    const { entry, bytes } = await this.readBytes(name);
    return { shape: entry.shape, dtype: entry.dtype, data: decodeEntry(this.path, entry, bytes) };
  }

  close(): void {
    this.#source?.close();
    this.#source = undefined;
  }
}

/** Reads a range, as a SafetensorsError naming `what` on failure. */
async function read(source: ByteSource, offset: number, length: number, what: string): Promise<Uint8Array> {
  try {
    return await source.read(offset, length);
  } catch (err) {
    if (err instanceof SafetensorsError) throw err;
    const message = err instanceof RangeError ? `cannot hold its ${length} bytes in memory` : 'read failed';
    throw new SafetensorsError(source.name, `${what}: ${message} (${(err as Error).message})`, { cause: err });
  }
}

/** Opens a file of a set, as a SafetensorsError when it is missing or unreadable. */
async function openMember(files: FileSet, file: string): Promise<ByteSource> {
  let source: ByteSource | undefined;
  try {
    source = await files.open(file);
  } catch (err) {
    throw new SafetensorsError(files.path(file), `cannot open (${(err as Error).message})`, { cause: err });
  }
  if (!source) throw new SafetensorsError(files.path(file), 'cannot open (no such file or folder)');
  return source;
}

/** Decodes one tensor's bytes, as a SafetensorsError when widening runs out of memory. */
function decodeEntry(file: string, entry: SafetensorsEntry, bytes: Uint8Array): Float32Array | Int32Array {
  try {
    return decodeTensor(file, entry, bytes);
  } catch (err) {
    if (!(err instanceof RangeError)) throw err;
    throw new SafetensorsError(file, `tensor ${JSON.stringify(entry.name)}: cannot widen its ${entry.end - entry.begin} bytes of ${entry.dtype} in memory (${err.message})`, { cause: err });
  }
}

function decodeTensor(file: string, entry: SafetensorsEntry, bytes: Uint8Array): Float32Array | Int32Array {
  const n = entry.shape.reduce((a, b) => a * b, 1);
  // Typed views need an aligned start: copy unless the bytes start their own buffer (readBytes's do).
  const aligned = bytes.byteOffset === 0 ? bytes.buffer : new Uint8Array(bytes).buffer;
  switch (entry.dtype) {
    case 'F32':
      return new Float32Array(aligned, 0, n);
    case 'F16':
      return f16BitsToF32(new Uint16Array(aligned, 0, n));
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

/** Reads every tensor of a small file at once (fixtures, tests): a path (Node), a URL, or a ByteSource. */
export async function readSafetensors(source: string | URL | ByteSource): Promise<Map<string, HostTensor>> {
  const f = await SafetensorsFile.open(source);
  try {
    const out = new Map<string, HostTensor>();
    for (const name of f.names) out.set(name, await f.get(name));
    return out;
  } finally {
    f.close();
  }
}

/** Every tensor of a .safetensors file already in memory; `name` is for messages. */
export function decodeSafetensors(bytes: Uint8Array, name = 'safetensors bytes'): Map<string, HostTensor> {
  if (bytes.length < 8) throw new SafetensorsError(name, `file of ${bytes.length} bytes is too short for a safetensors header`);
  const headerLength = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  if (headerLength > BigInt(Math.min(MAX_HEADER_BYTES, bytes.length - 8))) throw new SafetensorsError(name, `header length ${headerLength} is beyond the end of the ${bytes.length}-byte file or the ${MAX_HEADER_BYTES}-byte limit`);
  const start = 8 + Number(headerLength);
  const { entries } = parseSafetensorsHeader(name, bytes.subarray(8, start), bytes.length - start);
  return new Map([...entries.values()].map((e) => [e.name, { shape: e.shape, dtype: e.dtype, data: decodeEntry(name, e, bytes.subarray(start + e.begin, start + e.end)) }]));
}

/** What both a single file and a sharded checkpoint offer: named tensors read one at a time. */
export interface TensorSource {
  readonly path: string;
  readonly names: readonly string[];
  has(name: string): boolean;
  entry(name: string): SafetensorsEntry;
  readBytes(name: string): Promise<{ entry: SafetensorsEntry; bytes: Uint8Array }>;
  get(name: string): Promise<HostTensor>;
  close(): void;
}

/** The names a Hugging Face folder uses: one file, or shards listed by an index. */
const SINGLE_FILE_NAME = 'model.safetensors';
const INDEX_FILE_NAME = 'model.safetensors.index.json';

/**
 * A checkpoint: one .safetensors file, or every shard a `model.safetensors.index.json` lists
 * (`weight_map`: tensor name → shard file beside the index). Names are unique across shards.
 */
export class SafetensorsCheckpoint implements TensorSource {
  /** The .safetensors file or the index that was opened. */
  readonly path: string;
  readonly files: readonly SafetensorsFile[];
  readonly #where: ReadonlyMap<string, SafetensorsFile>;

  private constructor(path: string, files: SafetensorsFile[], where: Map<string, SafetensorsFile>) {
    this.path = path;
    this.files = files;
    this.#where = where;
  }

  /**
   * Opens a .safetensors file, an index .json, or a folder holding `model.safetensors` or the
   * index: a path (Node), a URL (a folder's ends with '/'), or files by name (see ModelSource).
   */
  static async open(source: ModelSource): Promise<SafetensorsCheckpoint> {
    const { files, file } = await locate(source);
    let name = file;
    if (name === undefined) {
      for (const candidate of [SINGLE_FILE_NAME, INDEX_FILE_NAME]) {
        const s = await files.open(candidate).catch(() => undefined);
        if (!s) continue;
        if (candidate === SINGLE_FILE_NAME) {
          const f = await SafetensorsFile.open(s);
          return new SafetensorsCheckpoint(f.path, [f], new Map(f.names.map((n) => [n, f])));
        }
        s.close();
        name = candidate;
        break;
      }
      if (name === undefined) throw new SafetensorsError(files.name, `folder holds neither ${SINGLE_FILE_NAME} nor ${INDEX_FILE_NAME}`);
    }
    if (!name.endsWith('.json')) {
      const f = await SafetensorsFile.open(await openMember(files, name));
      return new SafetensorsCheckpoint(f.path, [f], new Map(f.names.map((n) => [n, f])));
    }
    const path = files.path(name);
    const weightMap = await readIndex(files, name);
    const opened = new Map<string, SafetensorsFile>();
    try {
      for (const shard of new Set(weightMap.values())) opened.set(shard, await SafetensorsFile.open(await openMember(files, shard)));
      for (const [tensor, shard] of weightMap) {
        if (!opened.get(shard)!.has(tensor)) {
          throw new SafetensorsError(path, `tensor ${JSON.stringify(tensor)} is listed in shard ${JSON.stringify(shard)}, which does not contain it`);
        }
      }
      const where = new Map<string, SafetensorsFile>();
      for (const f of opened.values()) {
        for (const tensor of f.names) {
          const other = where.get(tensor);
          if (other) throw new SafetensorsError(path, `tensor ${JSON.stringify(tensor)} is in two shards: ${other.path} and ${f.path}`);
          where.set(tensor, f);
        }
      }
      return new SafetensorsCheckpoint(path, [...opened.values()], where);
    } catch (err) {
      for (const f of opened.values()) f.close();
      throw err;
    }
  }

  /** Tensor names, shard by shard in header order. */
  get names(): string[] {
    return [...this.#where.keys()];
  }

  has(name: string): boolean {
    return this.#where.has(name);
  }

  /** The shard holding `name`. */
  file(name: string): SafetensorsFile {
    const file = this.#where.get(name);
    if (!file) throw new SafetensorsError(this.path, `no tensor named ${JSON.stringify(name)}`);
    return file;
  }

  entry(name: string): SafetensorsEntry {
    return this.file(name).entry(name);
  }

  async readBytes(name: string): Promise<{ entry: SafetensorsEntry; bytes: Uint8Array }> {
    return this.file(name).readBytes(name);
  }

  async get(name: string): Promise<HostTensor> {
    return this.file(name).get(name);
  }

  close(): void {
    for (const f of this.files) f.close();
  }
}

/** Opens a checkpoint: see SafetensorsCheckpoint.open. */
export function openCheckpoint(source: ModelSource): Promise<SafetensorsCheckpoint> {
  return SafetensorsCheckpoint.open(source);
}

/** Reads and checks an index's `weight_map`: tensor name → shard file beside the index. */
async function readIndex(files: FileSet, name: string): Promise<Map<string, string>> {
  const path = files.path(name);
  let text: string;
  try {
    const s = await files.open(name);
    if (!s) throw new Error('no such file');
    try {
      text = await readText(s);
    } finally {
      s.close();
    }
  } catch (err) {
    throw new SafetensorsError(path, `cannot read the index (${(err as Error).message})`, { cause: err });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new SafetensorsError(path, `index is not valid JSON (${(err as Error).message})`, { cause: err });
  }
  const map = (json as { weight_map?: unknown } | null)?.weight_map;
  if (typeof map !== 'object' || map === null || Array.isArray(map)) throw new SafetensorsError(path, 'index has no weight_map object');
  const duplicate = duplicateJsonKey(text);
  if (duplicate) throw new SafetensorsError(path, `key ${duplicate.map((k) => JSON.stringify(k)).join(' → ')} appears twice in the index`);
  const out = new Map<string, string>();
  for (const [tensor, shard] of Object.entries(map)) {
    // Shards live beside the index: a path that leaves the folder is refused, not followed.
    if (typeof shard !== 'string' || shard === '' || /^([\\/]|[A-Za-z]:|[a-z]+:\/\/)/.test(shard) || shard.split(/[\\/]/).includes('..')) {
      throw new SafetensorsError(path, `tensor ${JSON.stringify(tensor)}: shard ${JSON.stringify(shard)} must be a file name beside the index`);
    }
    out.set(tensor, shard);
  }
  if (out.size === 0) throw new SafetensorsError(path, 'weight_map lists no tensors');
  return out;
}

/** Largest magnitude that does not round to infinity in f16. */
const F16_LIMIT = 65520;

/** Index of the first finite value that f16 storage would turn into an infinity, or -1. */
export function f16OverflowIndex(data: Float32Array): number {
  for (let i = 0; i < data.length; i++) if (Math.abs(data[i]!) >= F16_LIMIT && Number.isFinite(data[i])) return i;
  return -1;
}

/**
 * Reads one tensor (only its bytes) and uploads it: float dtypes as f32 or f16 (default f32),
 * integer dtypes as i32. A float value that would overflow f16 is an error, not an infinity.
 */
export async function uploadTensor(gpu: Gpu, source: TensorSource, name: string, dtype?: 'f32' | 'f16' | 'i32'): Promise<Tensor> {
  const entry = source.entry(name);
  const isInt = entry.dtype === 'I32' || entry.dtype === 'I64';
  const target = dtype ?? (isInt ? 'i32' : 'f32');
  const where = `tensor ${JSON.stringify(name)}`;
  if (isInt !== (target === 'i32')) {
    throw new SafetensorsError(source.path, `${where}: cannot upload ${entry.dtype} data as ${target}`);
  }
  // Checked before reading: a tensor too big for one device buffer is never read into memory.
  const bytes = paddedByteLength(entry.shape, target);
  if (bytes > maxTensorBytes(gpu)) {
    throw new SafetensorsError(source.path, `${where} of shape [${entry.shape.join(', ')}] needs ${bytes} bytes as ${target}, above this device's limit of ${maxTensorBytes(gpu)} bytes per buffer`);
  }
  const host = await source.get(name);
  if (target === 'f16') {
    const i = f16OverflowIndex(host.data as Float32Array);
    if (i >= 0) throw new SafetensorsError(source.path, `${where}: value ${host.data[i]} at index ${i} overflows f16`);
  }
  return Tensor.from(gpu, host.data, host.shape, target);
}
