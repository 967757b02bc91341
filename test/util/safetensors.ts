import { readFileSync, writeFileSync } from 'node:fs';

/** A tensor to write: raw little-endian bytes with the dtype and shape the header will claim. */
export interface RawTensor {
  dtype: string;
  shape: number[];
  bytes: Uint8Array;
}

/** A safetensors file from header text and data bytes, with `headerLength` overridable to lie. */
export function rawSafetensors(header: string, data: Uint8Array = new Uint8Array(0), headerLength?: bigint): Buffer {
  const h = Buffer.from(header, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(headerLength ?? BigInt(h.length));
  return Buffer.concat([len, h, data]);
}

/** A valid header (tensors packed in the given order) and the data section. */
export function encodeSafetensors(tensors: Record<string, RawTensor>, metadata?: Record<string, string>): { header: string; data: Uint8Array } {
  const header: Record<string, unknown> = metadata ? { __metadata__: metadata } : {};
  let at = 0;
  for (const [name, t] of Object.entries(tensors)) {
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [at, at + t.bytes.length] };
    at += t.bytes.length;
  }
  return { header: JSON.stringify(header), data: Buffer.concat(Object.values(tensors).map((t) => t.bytes)) };
}

export function writeSafetensors(path: string, tensors: Record<string, RawTensor>, metadata?: Record<string, string>): string {
  const { header, data } = encodeSafetensors(tensors, metadata);
  writeFileSync(path, rawSafetensors(header, data));
  return path;
}

/** Little-endian bytes of a typed array. */
export function bytesOf(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength).slice();
}

export function f32(...values: number[]): RawTensor {
  return { dtype: 'F32', shape: [values.length], bytes: bytesOf(new Float32Array(values)) };
}

/** A file's tensors as raw bytes, in data order, with its metadata: edit them and write them back. */
export function readRawSafetensors(path: string): { tensors: Record<string, RawTensor>; metadata?: Record<string, string> } {
  const file = readFileSync(path);
  const n = Number(file.readBigUInt64LE(0));
  const { __metadata__: metadata, ...entries } = JSON.parse(file.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }> & { __metadata__?: Record<string, string> };
  const data = file.subarray(8 + n);
  const sorted = Object.entries(entries).sort((a, b) => a[1].data_offsets[0] - b[1].data_offsets[0]);
  const tensors = Object.fromEntries(sorted.map(([name, e]) => [name, { dtype: e.dtype, shape: e.shape, bytes: new Uint8Array(data.subarray(...e.data_offsets)) }]));
  return { tensors, metadata: metadata as Record<string, string> | undefined };
}
