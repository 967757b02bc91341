// Memory planning for intermediate values: each value has a size and a lifetime [first, last]
// (node indices). Values whose lifetimes do not overlap may share a buffer. Shared buffers rather
// than offsets in one arena, because WebGPU forbids binding one buffer both read-only and writable
// in the same dispatch. Assignment is greedy by size (TFLite's "greedy by size" for shared
// objects): largest values first, each into the smallest existing buffer with no live conflict.

export interface Lifetime {
  bytes: number;
  first: number;
  last: number;
}

export interface MemoryPlan {
  /** Index of the shared buffer each value lives in. */
  buffer: number[];
  /** Size of each shared buffer. */
  bufferBytes: number[];
  /** Sum of the shared buffers: the peak of intermediate memory. */
  totalBytes: number;
  /** What one buffer per value would have needed. */
  unsharedBytes: number;
  /** The largest single value. */
  largestBytes: number;
}

export function planMemory(values: readonly Lifetime[]): MemoryPlan {
  const order = values.map((_, i) => i).sort((a, b) => values[b]!.bytes - values[a]!.bytes || values[a]!.first - values[b]!.first);
  const buffer = new Array<number>(values.length).fill(-1);
  const bufferBytes: number[] = [];
  const members: number[][] = [];
  const overlaps = (a: Lifetime, b: Lifetime) => a.first <= b.last && b.first <= a.last;
  for (const i of order) {
    const v = values[i]!;
    let best = -1;
    for (let b = 0; b < bufferBytes.length; b++) {
      if (members[b]!.some((j) => overlaps(values[j]!, v))) continue;
      if (best < 0 || bufferBytes[b]! < bufferBytes[best]!) best = b;
    }
    if (best < 0) {
      best = bufferBytes.length;
      bufferBytes.push(v.bytes);
      members.push([]);
    }
    members[best]!.push(i);
    buffer[i] = best;
  }
  return {
    buffer,
    bufferBytes,
    totalBytes: bufferBytes.reduce((s, b) => s + b, 0),
    unsharedBytes: values.reduce((s, v) => s + v.bytes, 0),
    largestBytes: values.reduce((m, v) => Math.max(m, v.bytes), 0),
  };
}
