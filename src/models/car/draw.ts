// The few OpenCV 4.6 raster operations CaR's visual prompts use, reproduced pixel for pixel on
// 8-bit images: cv2.ellipse and cv2.rectangle outlines (thickness 1, LINE_8), GaussianBlur's
// bit-exact fixed-point 8-bit path, cvtColor's fixed-point grey, and scipy's binary_fill_holes.

/** Sets one pixel of an interleaved image to a colour (the first `color.length` channels). */
export type Plot = (x: number, y: number) => void;

const XY_SHIFT = 16;
const XY_ONE = 1 << XY_SHIFT;

// drawing.cpp's SinTable: sin of whole degrees 0..450 (cos(a) = SinTable[450 - a]) at 7 decimals, as floats.
const SIN_TABLE = Float32Array.from({ length: 451 }, (_, k) => Number(Math.sin((k * Math.PI) / 180).toFixed(7)));

/** C's rint (cvRound): to the nearest integer, halves to even. */
function roundHalfEven(v: number): number {
  const r = Math.round(v);
  return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** clipLine(Size2l(width, height), p1, p2): the segment clipped to the image; false when it misses it. */
function clipLine(width: number, height: number, p: number[]): boolean {
  const right = width - 1;
  const bottom = height - 1;
  let [x1, y1, x2, y2] = p as [number, number, number, number];
  const code = (x: number, y: number) => (x < 0 ? 1 : 0) + (x > right ? 2 : 0) + (y < 0 ? 4 : 0) + (y > bottom ? 8 : 0);
  let c1 = code(x1, y1);
  let c2 = code(x2, y2);
  if ((c1 & c2) === 0 && (c1 | c2) !== 0) {
    if (c1 & 12) {
      const a = c1 < 8 ? 0 : bottom;
      x1 += Math.trunc(((a - y1) * (x2 - x1)) / (y2 - y1));
      y1 = a;
      c1 = (x1 < 0 ? 1 : 0) + (x1 > right ? 2 : 0);
    }
    if (c2 & 12) {
      const a = c2 < 8 ? 0 : bottom;
      x2 += Math.trunc(((a - y2) * (x2 - x1)) / (y2 - y1));
      y2 = a;
      c2 = (x2 < 0 ? 1 : 0) + (x2 > right ? 2 : 0);
    }
    if ((c1 & c2) === 0 && (c1 | c2) !== 0) {
      if (c1) {
        const a = c1 === 1 ? 0 : right;
        y1 += Math.trunc(((a - x1) * (y2 - y1)) / (x2 - x1));
        x1 = a;
        c1 = 0;
      }
      if (c2) {
        const a = c2 === 1 ? 0 : right;
        y2 += Math.trunc(((a - x2) * (y2 - y1)) / (x2 - x1));
        x2 = a;
        c2 = 0;
      }
    }
  }
  p.splice(0, 4, x1, y1, x2, y2);
  return (c1 | c2) === 0;
}

/** drawing.cpp's Line2: an 8-connected line between fixed-point (16-bit fraction) end points. */
function line2(width: number, height: number, a: readonly [number, number], b: readonly [number, number], plot: Plot): void {
  const p = [a[0], a[1], b[0], b[1]];
  if (!clipLine(width * XY_ONE, height * XY_ONE, p)) return;
  let [x1, y1, x2, y2] = p as [number, number, number, number];
  let dx = x2 - x1;
  let dy = y2 - y1;
  const ax = Math.abs(dx);
  const ay = Math.abs(dy);
  const odd = (v: number) => (v % 2 === 0 ? v + 1 : v);
  let xStep: number;
  let yStep: number;
  let ecount: number;
  if (ax > ay) {
    if (dx < 0) {
      [x1, x2, y1, y2] = [x2, x1, y2, y1];
      dy = -dy;
    }
    xStep = XY_ONE;
    yStep = Math.trunc((dy * XY_ONE) / odd(ax));
    ecount = Math.floor((x2 - x1) / XY_ONE);
  } else {
    if (dy < 0) {
      [x1, x2, y1, y2] = [x2, x1, y2, y1];
      dx = -dx;
    }
    xStep = Math.trunc((dx * XY_ONE) / odd(ay));
    yStep = XY_ONE;
    ecount = Math.floor((y2 - y1) / XY_ONE);
  }
  x1 += XY_ONE >> 1;
  y1 += XY_ONE >> 1;
  const put = (x: number, y: number) => {
    if (x >= 0 && x < width && y >= 0 && y < height) plot(x, y);
  };
  put(Math.floor((x2 + (XY_ONE >> 1)) / XY_ONE), Math.floor((y2 + (XY_ONE >> 1)) / XY_ONE));
  if (ax > ay) {
    let x = Math.floor(x1 / XY_ONE);
    for (; ecount >= 0; ecount--, x++, y1 += yStep) put(x, Math.floor(y1 / XY_ONE));
  } else {
    let y = Math.floor(y1 / XY_ONE);
    for (; ecount >= 0; ecount--, y++, x1 += xStep) put(Math.floor(x1 / XY_ONE), y);
  }
}

/** cv2.ellipse(img, center, axes, 0, 0, 360, color, thickness=1): the outline as EllipseEx draws it. */
export function drawEllipse(width: number, height: number, center: readonly [number, number], axes: readonly [number, number], plot: Plot): void {
  const cx = center[0] * XY_ONE;
  const cy = center[1] * XY_ONE;
  const aw = Math.abs(axes[0]) * XY_ONE;
  const ah = Math.abs(axes[1]) * XY_ONE;
  const size = Math.floor((Math.max(aw, ah) + (XY_ONE >> 1)) / XY_ONE);
  const delta = size < 3 ? 90 : size < 10 ? 30 : size < 15 ? 18 : 5;
  const pts: [number, number][] = [];
  for (let i = 0; i < 360 + delta; i += delta) {
    const angle = Math.min(i, 360);
    const vx = cx + aw * SIN_TABLE[450 - angle]!;
    const vy = cy + ah * SIN_TABLE[angle]!;
    // EllipseEx: rounded to whole pixels, then the remaining fraction rounded to 1/65536.
    let px = roundHalfEven(vx / XY_ONE) * XY_ONE;
    let py = roundHalfEven(vy / XY_ONE) * XY_ONE;
    px += roundHalfEven(vx - px);
    py += roundHalfEven(vy - py);
    const last = pts[pts.length - 1];
    if (!last || last[0] !== px || last[1] !== py) pts.push([px, py]);
  }
  if (pts.length <= 1) pts.splice(0, pts.length, [cx, cy], [cx, cy]);
  for (let k = 1; k < pts.length; k++) line2(width, height, pts[k - 1]!, pts[k]!, plot);
}

/** cv2.rectangle(img, (x0, y0), (x1, y1), color, thickness=1): the four sides, clipped to the image. */
export function drawRectangle(width: number, height: number, x0: number, y0: number, x1: number, y1: number, plot: Plot): void {
  const hline = (y: number, xa: number, xb: number) => {
    if (y < 0 || y >= height) return;
    for (let x = Math.max(0, Math.min(xa, xb)); x <= Math.min(width - 1, Math.max(xa, xb)); x++) plot(x, y);
  };
  const vline = (x: number, ya: number, yb: number) => {
    if (x < 0 || x >= width) return;
    for (let y = Math.max(0, Math.min(ya, yb)); y <= Math.min(height - 1, Math.max(ya, yb)); y++) plot(x, y);
  };
  hline(y0, x0, x1);
  hline(y1, x0, x1);
  vline(x0, y0, y1);
  vline(x1, y0, y1);
}

/** OpenCV's borderInterpolate for BORDER_REFLECT_101 (gfedcb|abcdefgh|gfedcba). */
function reflect101(p: number, n: number): number {
  if (n === 1) return 0;
  while (p < 0 || p >= n) p = p < 0 ? -p : 2 * n - 2 - p;
  return p;
}

/**
 * getGaussianKernelBitExact then getGaussianKernelFixedPoint_ED: the size-n kernel (sigma 0: the
 * size's default 0.15·n + 0.35) in 8-bit fixed point, rounding errors carried along, summing to 256.
 */
export function gaussianKernelFixed(n: number, sigma = 0): Int32Array {
  const s = sigma > 0 ? sigma : n * 0.15 + 0.35;
  const scale = -0.125 / (s * s);
  const half = (n - 1) / 2;
  const values: number[] = [];
  let sum = 0;
  for (let i = 0, x = 1 - n; i < half; i++, x += 2) {
    values.push(Math.exp(x * x * scale));
    sum += values[i]!;
  }
  const mul = 1 / (sum * 2 + 1);
  const out = new Int32Array(n);
  let err = 0;
  let total = 0;
  for (let i = 0; i < half; i++) {
    const adj = values[i]! * mul * 256 + err;
    const v = roundHalfEven(adj);
    err = adj - v;
    out[i] = out[n - 1 - i] = v;
    total += v;
  }
  out[half] = 256 - 2 * total;
  return out;
}

/**
 * cv2.GaussianBlur(img, (n, n), 0) on the first 3 channels of an interleaved 8-bit image (others
 * copied): the bit-exact path, rows then columns in fixed point, reflect-101 borders.
 */
export function gaussianBlurU8(src: Uint8Array, width: number, height: number, channels: number, n = 15): Uint8Array {
  const k = gaussianKernelFixed(n);
  const r = (n - 1) / 2;
  const rows = new Uint32Array(width * height * 3);
  const xIndex = Int32Array.from({ length: width + 2 * r }, (_, i) => reflect101(i - r, width));
  const yIndex = Int32Array.from({ length: height + 2 * r }, (_, i) => reflect101(i - r, height));
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      for (let c = 0; c < 3; c++) {
        let s = 0;
        for (let i = 0; i < n; i++) s += k[i]! * src[(y * width + xIndex[x + i]!) * channels + c]!;
        rows[(y * width + x) * 3 + c] = s;
      }
    }
  }
  const out = src.slice();
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      for (let c = 0; c < 3; c++) {
        let s = 0;
        for (let i = 0; i < n; i++) s += k[i]! * rows[(yIndex[y + i]! * width + x) * 3 + c]!;
        out[(y * width + x) * channels + c] = Math.min(255, Math.floor((s + 32768) / 65536));
      }
    }
  }
  return out;
}

/** cv2.cvtColor(…, COLOR_BGR2GRAY) of a pixel whose channels are (c0, c1, c2): OpenCV 4's 15-bit weights. */
export function grayBgr(c0: number, c1: number, c2: number): number {
  return (c0 * 3735 + c1 * 19235 + c2 * 9798 + (1 << 14)) >> 15;
}

/** scipy.ndimage.binary_fill_holes (4-connected background): background not reachable from the border becomes 1. */
export function fillHoles(mask: ArrayLike<number>, width: number, height: number): Uint8Array {
  const out = new Uint8Array(width * height).fill(1);
  const stack: number[] = [];
  const seed = (i: number) => {
    if (!mask[i] && out[i]) {
      out[i] = 0;
      stack.push(i);
    }
  };
  for (let x = 0; x < width; x++) seed(x), seed((height - 1) * width + x);
  for (let y = 0; y < height; y++) seed(y * width), seed(y * width + width - 1);
  while (stack.length) {
    const i = stack.pop()!;
    const x = i % width;
    if (x > 0) seed(i - 1);
    if (x < width - 1) seed(i + 1);
    if (i >= width) seed(i - width);
    if (i < (height - 1) * width) seed(i + width);
  }
  return out;
}
