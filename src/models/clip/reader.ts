import { SafetensorsError, openCheckpoint } from '../../io/safetensors.js';
import type { Location } from '../../io/source.js';
import type { WeightReader } from './weights.js';

export interface WeightReaderOptions {
  /** Accept weights holding NaN or ±Inf (default: refused, naming the tensor). */
  allowNonFinite?: boolean;
}

/**
 * A WeightReader over a .safetensors file, a sharded index, or a folder holding either. Reading
 * refuses integer tensors where weights are expected, and NaN or Inf unless `allowNonFinite`.
 */
export async function openWeightReader(where: Location, options: WeightReaderOptions = {}): Promise<WeightReader & { close(): void }> {
  const f = await openCheckpoint(where);
  return {
    path: f.path,
    names: () => f.names,
    shape: (n) => (f.has(n) ? f.entry(n).shape : undefined),
    dtype: (n) => (f.has(n) ? f.entry(n).dtype : undefined),
    read: async (n) => {
      const t = await f.get(n);
      const where = `tensor ${JSON.stringify(n)}`;
      if (!(t.data instanceof Float32Array)) throw new SafetensorsError(f.file(n).path, `${where} has dtype ${t.dtype}, expected a float dtype`);
      if (!options.allowNonFinite) {
        const d = t.data;
        let first = -1;
        let count = 0;
        // x - x is NaN exactly for NaN and ±Inf.
        for (let i = 0; i < d.length; i++) {
          if (d[i]! - d[i]! !== 0) {
            if (first < 0) first = i;
            count++;
          }
        }
        if (count) throw new SafetensorsError(f.file(n).path, `${where} holds ${d[first]} at index ${first} (${count} non-finite of ${d.length} values); load with allowNonFinite: true to accept it`);
      }
      return t.data;
    },
    close: () => f.close(),
  };
}
