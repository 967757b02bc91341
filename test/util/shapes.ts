// A synthetic labelled-box dataset: coloured shapes drawn on noisy grey images, category = shape,
// attributes = colour (1 for the object's colour, 0 for the others, some left unknown as −1).
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import type { PromptRecord } from '../../src/index.js';
import { rng } from './random.js';

export const SHAPES = ['square', 'circle', 'triangle'] as const;
export const COLOURS = { red: [220, 30, 30], green: [30, 200, 40], blue: [40, 60, 230] } as const;

function inside(shape: (typeof SHAPES)[number], u: number, v: number): boolean {
  // u, v in [0, 1] across the object's box.
  if (shape === 'square') return true;
  if (shape === 'circle') return (u - 0.5) ** 2 + (v - 0.5) ** 2 <= 0.25;
  return v >= Math.abs(u - 0.5) * 2; // apex at the top
}

/** `images` PNGs of size × size in `dir`, two objects each (left and right half), and their records. */
export async function writeShapes(dir: string, images: number, seed: number, size = 64): Promise<PromptRecord[]> {
  const r = rng(seed);
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(r() * xs.length) % xs.length]!;
  const colours = Object.keys(COLOURS) as (keyof typeof COLOURS)[];
  const records: PromptRecord[] = [];
  for (let i = 0; i < images; i++) {
    const px = new Uint8Array(size * size * 3);
    for (let k = 0; k < px.length; k++) px[k] = 110 + Math.floor(r() * 40);
    const boxes: PromptRecord['boxes'] = [];
    for (const half of [0, 1]) {
      const shape = pick(SHAPES);
      const colour = pick(colours);
      const side = Math.round(size * (0.3 + 0.15 * r()));
      const x1 = half * (size / 2) + Math.floor(r() * (size / 2 - side));
      const y1 = Math.floor(r() * (size - side));
      for (let y = y1; y < y1 + side; y++) for (let x = x1; x < x1 + side; x++) {
        if (inside(shape, (x - x1 + 0.5) / side, (y - y1 + 0.5) / side)) px.set(COLOURS[colour], (y * size + x) * 3);
      }
      const attributes = Object.fromEntries(colours.map((c) => [c, r() < 0.15 ? -1 : c === colour ? 1 : 0]));
      boxes.push({ box: [x1, y1, x1 + side, y1 + side], category: shape, attributes });
    }
    const image = join(dir, `shape-${i}.png`);
    writeFileSync(image, await sharp(Buffer.from(px), { raw: { width: size, height: size, channels: 3 } }).png().toBuffer());
    records.push({ image, boxes });
  }
  return records;
}
