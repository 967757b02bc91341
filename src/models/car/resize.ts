// cv2.resize(map, (width, height)) with INTER_LINEAR on a float map, as CaR resizes its CAMs
// (resize.cpp's generic path: pixel centres at +0.5, float32 weights, edge pixels repeated), and
// CaR's scale_cam_image (min-max scaling with its 1e-15, then that resize).

/** Source index and float32 weight of the right/lower neighbour for each output index. */
function taps(inSize: number, outSize: number): { index: Int32Array; frac: Float32Array } {
  const scale = 1 / (outSize / inSize);
  const index = new Int32Array(outSize);
  const frac = new Float32Array(outSize);
  for (let d = 0; d < outSize; d++) {
    let f = Math.fround((d + 0.5) * scale - 0.5);
    let s = Math.floor(f);
    f = Math.fround(f - s);
    if (s < 0) (f = 0), (s = 0);
    if (s >= inSize - 1) (f = 0), (s = inSize - 1);
    index[d] = s;
    frac[d] = f;
  }
  return { index, frac };
}

/** A [height, width] float map resized to [outH, outW] as cv2.resize(…, INTER_LINEAR). */
export function resizeLinear(map: ArrayLike<number>, width: number, height: number, outW: number, outH: number): Float32Array {
  const xs = taps(width, outW);
  const ys = taps(height, outH);
  const rows = new Float64Array(height * outW);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < outW; x++) {
      const s = xs.index[x]!;
      const f = xs.frac[x]!;
      const a = map[y * width + s]!;
      rows[y * outW + x] = f === 0 ? a : a * Math.fround(1 - f) + map[y * width + s + 1]! * f;
    }
  }
  const out = new Float32Array(outW * outH);
  for (let y = 0; y < outH; y++) {
    const s = ys.index[y]!;
    const f = ys.frac[y]!;
    for (let x = 0; x < outW; x++) {
      const a = rows[s * outW + x]!;
      out[y * outW + x] = f === 0 ? a : a * Math.fround(1 - f) + rows[(s + 1) * outW + x]! * f;
    }
  }
  return out;
}

/** CaR's scale_cam_image for one map: (x − min) / (1e-15 + max of that), then resized to width × height. */
export function scaleCamToImage(map: ArrayLike<number>, grid: readonly [number, number], width: number, height: number): Float32Array {
  let min = Infinity;
  for (let k = 0; k < map.length; k++) min = Math.min(min, map[k]!);
  const shifted = Float64Array.from(map as ArrayLike<number>, (v) => v - min);
  let max = 0;
  for (const v of shifted) max = Math.max(max, v);
  for (let k = 0; k < shifted.length; k++) shifted[k]! /= 1e-15 + max;
  return resizeLinear(shifted, grid[1], grid[0], width, height);
}
