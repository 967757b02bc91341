// Binary-image contours as OpenCV 4.6's findContours(RETR_TREE) finds them: Suzuki & Abe's border
// following on the image padded with a zero frame (foreground 8-connected, background 4-connected),
// every outer and hole border, in OpenCV's output order (pre-order over the contour tree, siblings
// newest first, because cvInsertNodeIntoTree puts each new contour at the head of its parent's list).
// The approximation method does not matter here: CaR only takes bounding rectangles and draws the
// contours, and a CHAIN_APPROX_SIMPLE polyline rasterises back to exactly the traced pixels.

/** One border: the traced pixels (x, y) of the unpadded image, and whether it surrounds a hole. */
export interface Contour {
  points: Int32Array;
  hole: boolean;
}

// Neighbour offsets in clockwise order starting east (image y grows downwards).
const DX = [1, 1, 0, -1, -1, -1, 0, 1];
const DY = [0, 1, 1, 1, 0, -1, -1, -1];

function direction(dx: number, dy: number): number {
  for (let k = 0; k < 8; k++) if (DX[k] === dx && DY[k] === dy) return k;
  throw new Error(`not a neighbour offset (${dx}, ${dy})`);
}

/** Contours of the nonzero pixels of a `width` × `height` image (row-major), as cv2.findContours(RETR_TREE). */
export function findContours(image: ArrayLike<number>, width: number, height: number): Contour[] {
  const w = width + 2;
  const f = new Int32Array(w * (height + 2));
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) if (image[y * width + x]) f[(y + 1) * w + x + 1] = 1;
  // Border number → contour index, parent contour index (-1: the frame), hole flag.
  const borders: { contour: Contour; parent: number; children: number[] }[] = [];
  const hole = (nbd: number) => (nbd === 1 ? true : borders[nbd - 2]!.contour.hole);
  const parentOf = (nbd: number) => (nbd === 1 ? -1 : borders[nbd - 2]!.parent);
  let nbd = 1;
  for (let i = 1; i <= height; i++) {
    let lnbd = 1;
    for (let j = 1; j <= width; j++) {
      const p = f[i * w + j]!;
      let start: [number, number] | undefined;
      let isHole = false;
      if (p === 1 && f[i * w + j - 1] === 0) start = [j - 1, i];
      else if (p >= 1 && f[i * w + j + 1] === 0) {
        start = [j + 1, i];
        isHole = true;
        if (p > 1) lnbd = p;
      }
      if (start) {
        nbd++;
        // The frame counts as a hole border (number 1): outer borders inside holes are their children.
        const lnbdHole = hole(lnbd);
        const parent = isHole === lnbdHole ? parentOf(lnbd) : lnbd === 1 ? -1 : lnbd - 2;
        const points = trace(f, w, j, i, start[0], start[1], nbd);
        borders.push({ contour: { points, hole: isHole }, parent, children: [] });
        if (parent >= 0) borders[parent]!.children.push(borders.length - 1);
      }
      const q = f[i * w + j]!;
      if (q !== 1 && q !== 0) lnbd = Math.abs(q);
    }
  }
  const out: Contour[] = [];
  const visit = (k: number) => {
    out.push(borders[k]!.contour);
    for (let c = borders[k]!.children.length - 1; c >= 0; c--) visit(borders[k]!.children[c]!);
  };
  for (let k = borders.length - 1; k >= 0; k--) if (borders[k]!.parent === -1) visit(k);
  return out;
}

/** Follows one border from (x, y) whose known background neighbour is (sx, sy); labels it nbd. */
function trace(f: Int32Array, w: number, x: number, y: number, sx: number, sy: number, nbd: number): Int32Array {
  const pts: number[] = [];
  // 3.1: clockwise from the background neighbour, the first nonzero pixel.
  const d0 = direction(sx - x, sy - y);
  let first = -1;
  for (let k = 0; k < 8; k++) {
    const d = (d0 + k) % 8;
    if (f[(y + DY[d]!) * w + x + DX[d]!] !== 0) {
      first = d;
      break;
    }
  }
  if (first < 0) {
    f[y * w + x] = -nbd;
    return Int32Array.of(x - 1, y - 1);
  }
  const x1 = x + DX[first]!;
  const y1 = y + DY[first]!;
  let x2 = x1;
  let y2 = y1;
  let x3 = x;
  let y3 = y;
  for (;;) {
    pts.push(x3 - 1, y3 - 1);
    // 3.3: counter-clockwise from the pixel after (x2, y2), the first nonzero neighbour of (x3, y3).
    const from = direction(x2 - x3, y2 - y3);
    let eastZero = false;
    let d = from;
    for (let k = 1; k <= 8; k++) {
      d = (from - k + 8) % 8;
      if (f[(y3 + DY[d]!) * w + x3 + DX[d]!] !== 0) break;
      if (d === 0) eastZero = true;
    }
    const x4 = x3 + DX[d]!;
    const y4 = y3 + DY[d]!;
    // 3.4: a pixel whose east neighbour is background ends a run (negative label), others keep the number.
    if (eastZero) f[y3 * w + x3] = -nbd;
    else if (f[y3 * w + x3] === 1) f[y3 * w + x3] = nbd;
    if (x4 === x && y4 === y && x3 === x1 && y3 === y1) break;
    x2 = x3;
    y2 = y3;
    x3 = x4;
    y3 = y4;
  }
  return Int32Array.from(pts);
}

/** cv2.boundingRect of integer points: [x, y, width, height]. */
export function boundingRect(points: Int32Array): [number, number, number, number] {
  let x0 = Infinity;
  let y0 = Infinity;
  let x1 = -Infinity;
  let y1 = -Infinity;
  for (let k = 0; k < points.length; k += 2) {
    x0 = Math.min(x0, points[k]!);
    x1 = Math.max(x1, points[k]!);
    y0 = Math.min(y0, points[k + 1]!);
    y1 = Math.max(y1, points[k + 1]!);
  }
  return [x0, y0, x1 - x0 + 1, y1 - y0 + 1];
}
