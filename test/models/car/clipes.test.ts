import { describe, expect, it } from 'vitest';
import { clipEsAttention, clipEsTransition, refineCamClipEs, scaleCamToImage, scoremapBoxes } from '../../../src/models/car/index.js';
import { expectClose } from '../../util/check.js';
import { fixtureTensors } from '../../util/grad.js';

// CaR's own code on clip_tiny (../shared/fixtures/clip_tiny/car_gradcam.*): two resolutions, three targets.
const t = fixtureTensors('clip_tiny', 'car_gradcam.safetensors');
const f64 = (name: string) => t(name).data as Float64Array;
const GRIDS = { native: [4, 4], ns: [5, 7] } as const;
const ORI = { native: [30, 27], ns: [53, 38] } as const; // (width, height) of cam_*_highres

describe('CLIP-ES refinement against CaR (car_gradcam fixture)', () => {
  for (const res of ['native', 'ns'] as const) {
    const grid = GRIDS[res];
    const n = grid[0] * grid[1];
    it(`${res}: the affinity input from per-block attention`, () => {
      const blocks = t(`${res}.attn_blocks_f64`).shape[0]! + 1;
      const tokens = n + 1;
      const all = new Float64Array(blocks * tokens * tokens);
      all.set(f64(`${res}.attn_blocks_f64`));
      all.set(f64(`${res}.attn_last_f64`), (blocks - 1) * tokens * tokens);
      expectClose(clipEsAttention(all, blocks, tokens), f64(`${res}.attn_avg_f64`), { scaleTol: 1e-12, label: `${res} attn_avg` });
    });
    it(`${res}: transition matrices`, () => {
      const { symmetric, transition } = clipEsTransition(f64(`${res}.attn_avg_f64`), n);
      expectClose(symmetric, f64(`${res}.t0.trans_mat_sym_f64`), { scaleTol: 1e-10, label: 'trans_mat_sym' });
      expectClose(transition, f64(`${res}.t0.trans_mat_sq_f64`), { scaleTol: 1e-10, label: 'trans_mat_sq' });
    });
    for (const k of [0, 1, 2]) {
      it(`${res} target ${k}: boxes, affinity mask, masked transition, refined grid and map`, () => {
        const cam = f64(`${res}.t${k}.cam_scaled_f64`);
        const r = refineCamClipEs(cam, grid, f64(`${res}.attn_avg_f64`));
        const boxes = t(`${res}.t${k}.boxes`);
        expect(r.boxes).toEqual(Array.from({ length: boxes.shape[0]! }, (_, b) => Array.from(boxes.data.slice(b * 4, b * 4 + 4), Number)));
        expect(Array.from(r.affinityMask)).toEqual(Array.from(t(`${res}.t${k}.aff_mask`).data as Float32Array));
        expectClose(r.maskedTransition, f64(`${res}.t${k}.trans_mat_masked_f64`), { scaleTol: 1e-10, label: 'trans_mat_masked' });
        expectClose(r.refined, f64(`${res}.t${k}.cam_refined_grid_f64`), { scaleTol: 1e-10, label: 'cam_refined_grid' });
        // From the float32 CAM CaR computed (the path a GPU gradCAM feeds): same boxes, grid within 1e-4.
        const r32 = refineCamClipEs(t(`${res}.t${k}.cam_scaled_f32`).data as Float32Array, grid, f64(`${res}.attn_avg_f64`));
        expect(r32.boxes).toEqual(r.boxes);
        expectClose(r32.refined, f64(`${res}.t${k}.cam_refined_grid_f64`), { scaleTol: 1e-4, label: 'cam_refined_grid from f32' });
        const [w, h] = ORI[res];
        expectClose(scaleCamToImage(r.refined, grid, w, h), f64(`${res}.t${k}.cam_refined_highres_f64`), { scaleTol: 1e-5, label: 'cam_refined_highres' });
        expectClose(scaleCamToImage(cam, grid, w, h), f64(`${res}.t${k}.cam_highres_f64`), { scaleTol: 1e-6, label: 'cam_highres' });
      });
    }
  }

  it('scoremapBoxes: nothing above the threshold gives [0, 0, 0, 0]; holes are contours too', () => {
    expect(scoremapBoxes(new Float32Array(6), [2, 3])).toEqual([[0, 0, 0, 0]]);
    // A 5×5 block with one low pixel in the middle: the outer border, then its hole's border (the
    // four pixels around the hole: boundingRect x 1..3, so x1 = 4).
    const holed = Float32Array.from({ length: 25 }, (_, i) => (i === 12 ? 0 : 1));
    expect(scoremapBoxes(holed, [5, 5])).toEqual([[0, 0, 4, 4], [1, 1, 4, 4]]);
  });

  it('refuses bad input naming the argument', () => {
    expect(() => refineCamClipEs(new Float32Array(3), [2, 2], new Float32Array(16))).toThrow(/cam must hold gh·gw = 4/);
    expect(() => refineCamClipEs(new Float32Array(4), [2, 2], new Float32Array(9))).toThrow(/attention must be the \[n, n\]/);
    expect(() => refineCamClipEs(new Float32Array(4), [2, 0], new Float32Array(16))).toThrow(/grid must be/);
    expect(() => refineCamClipEs(Float32Array.of(0, NaN, 0, 0), [2, 2], new Float32Array(16))).toThrow(/cam holds NaN at index 1/);
    expect(() => refineCamClipEs(new Float32Array(4), [2, 2], new Float32Array(16), { threshold: 2 })).toThrow(/threshold must be in \[0, 1\]/);
  });
});
