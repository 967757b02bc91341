import { describe, expect, it } from 'vitest';
import { applyVisualPrompts, gaussianBlurU8, gaussianKernelFixed, type VisualPromptType } from '../../../src/models/car/index.js';
import { fixtureTensors } from '../../util/grad.js';

// CaR's apply_visual_prompts (cv2 4.6 rasterisation) on vp.image with masks from the refined CAMs.
const t = fixtureTensors('clip_tiny', 'car_gradcam.safetensors');
const CASES: Record<string, VisualPromptType[]> = {
  circle: ['circle'],
  rectangle: ['rectangle'],
  contour: ['contour'],
  blur: ['blur'],
  gray: ['gray'],
  black: ['black'],
  blur_circle: ['circle', 'blur'], // CaR's order applies whatever order is given
  gray_contour: ['contour', 'gray'],
};

function rgbaOf(rgb: Uint8Array): Uint8Array {
  const out = new Uint8Array((rgb.length / 3) * 4).fill(255);
  for (let i = 0; i < rgb.length / 3; i++) out.set(rgb.subarray(i * 3, i * 3 + 3), i * 4);
  return out;
}

/** Pixels whose RGB differs from the reference, and the largest channel difference. */
function diff(rgba: Uint8Array, rgb: Uint8Array): { pixels: number; max: number } {
  let pixels = 0;
  let max = 0;
  for (let i = 0; i < rgb.length / 3; i++) {
    let d = 0;
    for (let c = 0; c < 3; c++) d = Math.max(d, Math.abs(rgba[i * 4 + c]! - rgb[i * 3 + c]!));
    if (d) pixels++;
    max = Math.max(max, d);
  }
  return { pixels, max };
}

describe('visual prompts against CaR (cv2 4.6)', () => {
  const image = t('vp.image');
  const [h, w] = image.shape as [number, number];
  const rgba = rgbaOf(image.data as Uint8Array);
  for (const k of [0, 1]) {
    for (const [name, types] of Object.entries(CASES)) {
      it(`mask ${k}: ${name} — 0 of ${w}×${h} pixels differ`, () => {
        const out = applyVisualPrompts(rgba, w, h, t(`vp.t${k}.mask`).data as Uint8Array, types);
        expect(diff(out, t(`vp.t${k}.${name}`).data as Uint8Array)).toEqual({ pixels: 0, max: 0 });
        for (let i = 3; i < out.length; i += 4) expect(out[i]).toBe(255);
      });
    }
  }

  it("the blur kernel is OpenCV's 8-bit fixed-point one (sums to 256, symmetric)", () => {
    const k = gaussianKernelFixed(15);
    expect(k.reduce((s, v) => s + v, 0)).toBe(256);
    expect(Array.from(k)).toEqual(Array.from(k).reverse());
    // getGaussianKernelFixedPoint_ED(7, sigma 2) as OpenCV 4.x prints it.
    expect(Array.from(gaussianKernelFixed(7, 2))).toEqual([18, 34, 48, 56, 48, 34, 18]);
  });

  it('a flat image stays flat under the blur; the alpha channel is kept', () => {
    const flat = new Uint8Array(20 * 9 * 4).fill(77);
    expect(gaussianBlurU8(flat, 20, 9, 4).every((v) => v === 77)).toBe(true);
  });

  it('refuses bad input naming the argument', () => {
    const img = new Uint8Array(4 * 4 * 4);
    const mask = new Uint8Array(16);
    expect(() => applyVisualPrompts(img, 4, 4, mask, ['glow' as VisualPromptType])).toThrow(/unknown visual prompt type "glow"/);
    expect(() => applyVisualPrompts(img, 4, 4, mask, [])).toThrow(/non-empty list/);
    expect(() => applyVisualPrompts(img, 4, 4, new Uint8Array(15), ['circle'])).toThrow(/mask must hold width·height = 16/);
    expect(() => applyVisualPrompts(img.subarray(1), 4, 4, mask, ['circle'])).toThrow(/rgba must be a Uint8Array of width·height·4 = 64/);
    expect(applyVisualPrompts(img, 4, 4, mask, 'circle,rectangle')).toEqual(img); // empty mask: nothing drawn
  });
});
