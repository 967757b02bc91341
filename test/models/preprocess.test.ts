import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import {
  CLIP_MEAN,
  CLIP_STD,
  PreprocessError,
  decodeImage,
  preprocessClip,
  preprocessClipBatch,
  preprocessOwlVit,
  preprocessOwlVitBatch,
  resizeImage,
  type DecodedImage,
} from '../../src/models/preprocess/index.js';
import { expectClose } from '../util/check.js';

/** Pillow 9.4 reference images made by test/fixtures/preprocess/make_fixtures.py. */
const fixture = (name: string) => join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'preprocess', name);

/** An image from interleaved 8-bit pixels, encoded as PNG (optionally with an EXIF orientation). */
async function png(pixels: number[], width: number, height: number, channels: 3 | 4, orientation?: number): Promise<Buffer> {
  const img = sharp(Buffer.from(pixels), { raw: { width, height, channels } });
  return (orientation ? img.withMetadata({ orientation }) : img).png().toBuffer();
}

/**
 * The expected tensor, written from the definition: the size x size window at (left, top) of
 * interleaved pixels, channel-major, (v / 255 - mean) / std in float64.
 */
function expected(img: DecodedImage, left: number, top: number, size: number): number[] {
  const out: number[] = [];
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) out.push((img.data[((top + y) * img.width + left + x) * img.channels + c]! / 255 - CLIP_MEAN[c]!) / CLIP_STD[c]!);
    }
  }
  return out;
}

// Pixel (x, y) channel c of the hand-made images: all distinct.
const value = (x: number, y: number, c: number) => 10 * x + 50 * y + 3 * c;
function pattern(width: number, height: number): DecodedImage {
  const data: number[] = [];
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) for (let c = 0; c < 3; c++) data.push(value(x, y, c));
  return { data: Uint8Array.from(data), width, height, channels: 3 };
}

describe('preprocessClip', () => {
  it('a 5x3 image at size 3: no resize, centre crop of columns 1..3, normalized NCHW', async () => {
    const img = pattern(5, 3);
    const out = await preprocessClip(await png([...img.data], 5, 3, 3), { size: 3 });
    expect(out.shape).toEqual([1, 3, 3, 3]);
    // Spelled out for the first row of the red plane: pixels (1,0), (2,0), (3,0) = 10, 20, 30.
    expectClose(out.data.subarray(0, 3), [10, 20, 30].map((v) => (v / 255 - 0.48145466) / 0.26862954), { scaleTol: 1e-6 });
    expectClose(out.data, expected(img, 1, 0, 3), { scaleTol: 1e-6 });
  });

  it("crops at int(round((side - size) / 2)) with Python's round half to even", async () => {
    // 6 wide: (6 - 3) / 2 = 1.5 rounds to 2 (Hugging Face's floor would give 1); 8 wide: 2.5 → 2.
    for (const [w, h, left, top] of [[6, 3, 2, 0], [8, 3, 2, 0], [3, 7, 0, 2], [3, 6, 0, 2], [4, 3, 0, 0]] as const) {
      const img = pattern(w, h);
      const out = await preprocessClip(await png([...img.data], w, h, 3), { size: 3 });
      expectClose(out.data, expected(img, left, top, 3), { scaleTol: 1e-6, label: `${w}x${h}` });
    }
  });

  it('applies the EXIF orientation first', async () => {
    // 3x2 with orientation 6 (rotate 90° clockwise) is upright 2x3: rows [d a], [e b], [f c].
    const [a, b, c, d, e, f] = [[10, 20, 30], [40, 50, 60], [70, 80, 90], [100, 110, 120], [130, 140, 150], [160, 170, 180]];
    const buf = await png([a, b, c, d, e, f].flat() as number[], 3, 2, 3, 6);
    expect((await sharp(buf).metadata()).orientation).toBe(6);
    const upright: DecodedImage = { data: Uint8Array.from([d, a, e, b, f, c].flat() as number[]), width: 2, height: 3, channels: 3 };
    const out = await preprocessClip(buf, { size: 2 });
    // Short side 2 = size: no resize; crop top = round(0.5) = 0.
    expectClose(out.data, expected(upright, 0, 0, 2), { scaleTol: 1e-6 });
    expect((await preprocessOwlVit(buf, { size: 2 })).originalSize).toEqual([3, 2]);
  });

  it("drops alpha as PIL's convert('RGB') does: transparent pixels keep their colour", async () => {
    const rgba = [10, 20, 30, 0, 40, 50, 60, 128, 70, 80, 90, 255, 200, 210, 220, 0];
    const out = await preprocessClip(await png(rgba, 2, 2, 4), { size: 2 });
    const rgb: DecodedImage = { data: Uint8Array.from(rgba.filter((_, i) => i % 4 !== 3)), width: 2, height: 2, channels: 3 };
    expectClose(out.data, expected(rgb, 0, 0, 2), { scaleTol: 1e-6 });
  });

  it("resizes exactly as Pillow's BICUBIC, enlarging and shrinking, RGB and RGBA", async () => {
    for (const [input, ref] of [
      ['rgb_20x13.png', 'pil_20x13_to_49x32.png'],
      ['rgb_61x97.png', 'pil_61x97_to_32x50.png'],
      ['rgb_20x13.png', 'pil_20x13_to_16x16.png'],
      ['rgba_23x17.png', 'pil_23x17_to_16x12.png'],
    ]) {
      const want = await decodeImage(fixture(ref!));
      const got = resizeImage(await decodeImage(fixture(input!)), want.width, want.height);
      expect(got.channels, ref).toBe(want.channels);
      expect(Array.from(got.data), ref).toEqual(Array.from(want.data));
    }
    // The whole pipeline: 20x13 → 49x32 (Pillow), then the crop at round(17 / 2) = 8.
    const out = await preprocessClip(fixture('rgb_20x13.png'), { size: 32 });
    expectClose(out.data, expected(await decodeImage(fixture('pil_20x13_to_49x32.png')), 8, 0, 32), { scaleTol: 1e-6 });
  });

  it('stacks batches and rejects bad input and options', async () => {
    const a = fixture('rgb_20x13.png');
    const b = fixture('rgb_61x97.png');
    const batch = await preprocessClipBatch([a, b], { size: 16 });
    expect(batch.shape).toEqual([2, 3, 16, 16]);
    const [one, two] = [await preprocessClip(a, { size: 16 }), await preprocessClip(b, { size: 16 })];
    expect(Array.from(batch.data)).toEqual([...one.data, ...two.data]);
    await expect(preprocessClip('/nonexistent/cat.png')).rejects.toThrow(/\/nonexistent\/cat.png: cannot read the image/);
    await expect(preprocessClip(Buffer.from('not an image'))).rejects.toThrow(/image buffer of 12 bytes: cannot read the image/);
    await expect(preprocessClip(a, { size: 0 })).rejects.toThrow(PreprocessError);
    await expect(preprocessClip(a, { mean: [0.5] })).rejects.toThrow(/mean and std must hold 3 numbers/);
    await expect(preprocessOwlVit(a, { std: [1, 0, 1] })).rejects.toThrow(/std non-zero/);
    await expect(preprocessClip(42 as unknown as string)).rejects.toThrow(/expected a file path or the bytes of an image/);
  });
});

describe('preprocessOwlVit', () => {
  it('resizes to size x size ignoring the aspect ratio and keeps the original [h, w]', async () => {
    const out = await preprocessOwlVit(fixture('rgb_20x13.png'), { size: 16 });
    expect(out.shape).toEqual([1, 3, 16, 16]);
    expect(out.originalSize).toEqual([13, 20]);
    expectClose(out.data, expected(await decodeImage(fixture('pil_20x13_to_16x16.png')), 0, 0, 16), { scaleTol: 1e-6 });
    const batch = await preprocessOwlVitBatch([fixture('rgb_61x97.png'), fixture('rgb_20x13.png')], { size: 16 });
    expect(batch.originalSizes).toEqual([[97, 61], [13, 20]]);
    expect(Array.from(batch.data.subarray(3 * 256))).toEqual(Array.from(out.data));
  });
});
