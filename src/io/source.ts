// Where model files come from: a folder on disk (Node), a base URL read with HTTP range requests,
// or a map of file names to bytes, Blobs/Files or URLs (e.g. from <input webkitdirectory>). The
// loaders see only FileSet and ByteSource; this module holds the parts every platform shares
// (fetch, Blob and memory exist in Node 20 as in browsers), the platform adds disk paths.
import { GpuError } from '../gpu/errors.js';
import { platform } from '../platform/platform.js';

/** One file's bytes, read by range, so a large checkpoint is never held whole. */
export interface ByteSource {
  /** For messages: the path or URL. */
  readonly name: string;
  readonly size: number;
  read(offset: number, length: number): Promise<Uint8Array>;
  close(): void;
}

/** A folder of model files. */
export interface FileSet {
  /** For messages: the folder path or base URL. */
  readonly name: string;
  /** For messages: where `file` would be. */
  path(file: string): string;
  /** Opens a file of the set; undefined when there is no such file. */
  open(file: string): Promise<ByteSource | undefined>;
}

/** One model file given by value: its bytes, a Blob or File, or a URL to fetch it from. */
export type FileLike = ArrayBuffer | ArrayBufferView | Blob | URL | string;

/**
 * Model files: a folder or file path (Node) or URL (`'https://…/model/'`, `'/models/owlvit/'` in a
 * page; a trailing slash means a folder), a URL object, file names mapped to their contents, a
 * list of Files (as `<input webkitdirectory>` gives), a FileSet, or a file of one (a Location).
 */
export type ModelSource = string | URL | FileSet | Location | ReadonlyMap<string, FileLike> | Readonly<Record<string, FileLike>> | ArrayLike<File> | Iterable<File>;

/** A folder, or one file in it. */
export interface Location {
  readonly files: FileSet;
  readonly file?: string;
}

/** Where a source's files are: a folder, or a named file in its folder. */
export async function locate(source: ModelSource): Promise<Location> {
  if (typeof source === 'string') return platform().locate(source);
  if (source instanceof URL) return locateUrl(source);
  if (isFileSet(source)) return { files: source };
  if (isFileSet((source as Location).files)) return source as Location;
  return { files: mapFileSet(source as Exclude<ModelSource, string | URL | FileSet | Location>) };
}

function isFileSet(v: unknown): v is FileSet {
  return typeof v === 'object' && v !== null && typeof (v as FileSet).open === 'function' && typeof (v as FileSet).path === 'function';
}

/** A URL: a folder when its path ends with '/', else a file in the folder above. */
export function locateUrl(url: URL | string): Location {
  const u = new URL(url);
  const slash = u.pathname.lastIndexOf('/');
  const file = decodeURIComponent(u.pathname.slice(slash + 1));
  const base = new URL(u.pathname.slice(0, slash + 1), u);
  return { files: urlFileSet(base), file: file || undefined };
}

/** Reads a whole file. */
export async function readAll(source: ByteSource): Promise<Uint8Array> {
  return source.read(0, source.size);
}

/** Reads a whole file as UTF-8 text. */
export async function readText(source: ByteSource): Promise<string> {
  return new TextDecoder().decode(await readAll(source));
}

/** Opens a file and reads it whole; undefined when there is none. */
export async function readFile(files: FileSet, file: string): Promise<Uint8Array | undefined> {
  const s = await files.open(file);
  if (!s) return undefined;
  try {
    return await readAll(s);
  } finally {
    s.close();
  }
}

/** Whether a file exists in the set. */
export async function hasFile(files: FileSet, file: string): Promise<boolean> {
  const s = await files.open(file);
  s?.close();
  return s !== undefined;
}

/** gunzip with the platform-neutral DecompressionStream (Node 18+, every current browser). */
export async function gunzip(bytes: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream().pipeThrough(new DecompressionStream('gzip'));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** Bytes already in memory. */
export function memorySource(name: string, bytes: Uint8Array): ByteSource {
  return {
    name,
    size: bytes.length,
    read: async (offset, length) => bytes.subarray(offset, offset + length),
    close: () => {},
  };
}

/** A Blob or File, sliced per read (the browser reads only those bytes from disk). */
export function blobSource(name: string, blob: Blob): ByteSource {
  return {
    name,
    size: blob.size,
    read: async (offset, length) => new Uint8Array(await blob.slice(offset, offset + length).arrayBuffer()),
    close: () => {},
  };
}

/** Thrown for HTTP failures, naming the URL. */
function httpError(url: string, message: string, cause?: unknown): GpuError {
  return new GpuError(url, message, cause === undefined ? undefined : { cause });
}

async function request(url: string, init?: { method?: string; range?: [number, number] }): Promise<Response> {
  try {
    return await fetch(url, { method: init?.method, headers: init?.range ? { Range: `bytes=${init.range[0]}-${init.range[1] - 1}` } : undefined });
  } catch (err) {
    throw httpError(url, `cannot fetch (${(err as Error).message})`, err);
  }
}

/**
 * A file over HTTP, read with range requests: a HEAD request gives its size, then every read asks
 * for exactly its bytes. A server that answers a range with the whole file (200) is read once and
 * served from memory from then on; without a size, the file is fetched whole. Undefined on 404.
 */
export async function httpSource(url: string): Promise<ByteSource | undefined> {
  const head = await request(url, { method: 'HEAD' });
  if (head.status === 404 || head.status === 410) return undefined;
  const length = head.headers.get('Content-Length');
  if (!head.ok || length === null || head.headers.get('Content-Encoding')) {
    const r = await request(url);
    if (r.status === 404 || r.status === 410) return undefined;
    if (!r.ok) throw httpError(url, `HTTP ${r.status} ${r.statusText}`);
    return memorySource(url, new Uint8Array(await r.arrayBuffer()));
  }
  const size = Number(length);
  let whole: Uint8Array | undefined;
  return {
    name: url,
    size,
    read: async (offset, n) => {
      if (offset < 0 || offset + n > size) throw httpError(url, `read of bytes ${offset}…${offset + n} beyond the ${size}-byte file`);
      if (whole) return whole.subarray(offset, offset + n);
      if (n === 0) return new Uint8Array(0);
      const r = await request(url, { range: [offset, offset + n] });
      if (r.status !== 206 && r.status !== 200) throw httpError(url, `HTTP ${r.status} ${r.statusText} for bytes ${offset}…${offset + n}`);
      const bytes = new Uint8Array(await r.arrayBuffer());
      if (r.status === 200) {
        // Ranges ignored: keep the one whole copy rather than fetch it again per read.
        if (bytes.length !== size) throw httpError(url, `got ${bytes.length} bytes, the file has ${size}`);
        whole = bytes;
        return whole.subarray(offset, offset + n);
      }
      if (bytes.length !== n) throw httpError(url, `got ${bytes.length} bytes for a range of ${n}`);
      return bytes;
    },
    close: () => {
      whole = undefined;
    },
  };
}

/** Files under a base URL (which should end with '/'). */
export function urlFileSet(base: URL | string): FileSet {
  const root = new URL(base);
  return {
    name: root.href,
    path: (file) => new URL(encodeFileName(file), root).href,
    open: (file) => httpSource(new URL(encodeFileName(file), root).href),
  };
}

function encodeFileName(file: string): string {
  return file.split('/').map(encodeURIComponent).join('/');
}

/** Files given by value: a map or record of names to FileLikes, or a list of Files (keyed by name). */
export function mapFileSet(source: Exclude<ModelSource, string | URL | FileSet | Location>): FileSet {
  const entries = new Map<string, FileLike>();
  if (source instanceof Map) for (const [k, v] of source) entries.set(k, v);
  else if (isFileList(source)) for (const f of Array.from(source as ArrayLike<File>)) entries.set(f.name, f);
  else if (typeof source === 'object' && source !== null) for (const [k, v] of Object.entries(source)) entries.set(k, v as FileLike);
  const name = `files {${[...entries.keys()].join(', ')}}`;
  return {
    name,
    path: (file) => file,
    open: async (file) => {
      const v = entries.get(file);
      if (v === undefined) return undefined;
      if (typeof v === 'string' || v instanceof URL) return httpSource(new URL(v, platform().baseUrl?.()).href);
      if (typeof Blob !== 'undefined' && v instanceof Blob) return blobSource(file, v);
      if (v instanceof ArrayBuffer) return memorySource(file, new Uint8Array(v));
      if (ArrayBuffer.isView(v)) return memorySource(file, new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
      throw new GpuError(name, `file ${JSON.stringify(file)} must be an ArrayBuffer, a typed array, a Blob or File, or a URL; got ${typeof v}`);
    },
  };
}

function isFileList(v: unknown): boolean {
  if (typeof File === 'undefined') return false;
  if (Array.isArray(v)) return v.length > 0 && v.every((f) => f instanceof File);
  return typeof (v as { item?: unknown }).item === 'function' && typeof (v as { length?: unknown }).length === 'number';
}
