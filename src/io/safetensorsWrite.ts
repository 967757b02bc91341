import { localFiles } from '../platform/platform.js';

type Tensors = Record<string, { shape: readonly number[]; data: Float32Array | Int32Array }>;

/** F32 / I32 tensors and string metadata as the bytes of a .safetensors file. */
function encodeSafetensorsFile(tensors: Tensors, metadata: Record<string, string> = {}): Uint8Array {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    header[name] = { dtype: t.data instanceof Int32Array ? 'I32' : 'F32', shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
  }
  const text = new TextEncoder();
  let json = text.encode(JSON.stringify(header));
  // 8-byte aligned data: pad the header with spaces.
  const padded = Math.ceil(json.length / 8) * 8;
  if (padded !== json.length) json = text.encode(JSON.stringify(header) + ' '.repeat(padded - json.length));
  const out = new Uint8Array(8 + json.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  let at = 8 + json.length;
  for (const t of Object.values(tensors)) {
    out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), at);
    at += t.data.byteLength;
  }
  return out;
}

/**
 * Writes F32 / I32 tensors and string metadata as a .safetensors file (Node). The bytes go to a
 * temporary file beside `path`, renamed over it only when complete: an interrupted write leaves
 * the previous file intact.
 */
export function writeSafetensorsFile(path: string, tensors: Tensors, metadata: Record<string, string> = {}): void {
  localFiles('writeSafetensorsFile').writeAtomic(path, encodeSafetensorsFile(tensors, metadata));
}
