// RoIAlign with torchvision.ops.roi_align semantics, one invocation per output element.
// Output is [K, C, PH, PW] for both feature layouts. NHWC (a ViT's token grid [N, H, W, C]) orders
// invocations channel-fastest so neighbouring invocations read neighbouring channels of the same
// pixels; NCHW orders them like the output so they read neighbouring pixels of one plane.
// A box whose batch index (truncated like torchvision's int cast) is outside [0, N), or with a
// non-finite coordinate, gives zeros: the eager wrapper rejects such boxes before dispatch, this
// only keeps graph runs in bounds and their sample loops finite.
alias T = f32;

struct Params {
  count: u32,     // K · C · PH · PW
  n: u32,
  c: u32,
  h: u32,
  w: u32,
  ph: u32,        // pooled (output) height and width
  pw: u32,
  aligned: u32,   // 1: shift by -0.5 and do not clamp the RoI size to >= 1
  spatial_scale: f32,
  sampling_ratio: i32,  // <= 0: adaptive ceil(roi size / bins) samples per bin
}

override NHWC: bool = false;
override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> features: array<T>;
@group(0) @binding(2) var<storage, read> boxes: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<T>;

// One axis of a bilinear sample at coordinate v on an axis of n pixels, as torchvision: outside
// [-1, n] contributes nothing; inside, v is clamped to [0, n - 1] and split into two neighbours.
struct AxisSample { inside: bool, low: u32, high: u32, frac: f32 }

fn sample_axis(v_in: f32, n: u32) -> AxisSample {
  if (v_in < -1.0 || v_in > f32(n)) { return AxisSample(false, 0u, 0u, 0.0); }
  var v = max(v_in, 0.0);
  var low = u32(v);
  var high = low + 1u;
  if (low >= n - 1u) {
    low = n - 1u;
    high = low;
    v = f32(low);
  }
  return AxisSample(true, low, high, v - f32(low));
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * WG + lid;
  if (i >= p.count) { return; }
  var ch: u32;
  var bin: u32;  // ph_index · PW + pw_index
  var k: u32;
  if (NHWC) {
    ch = i % p.c;
    bin = (i / p.c) % (p.ph * p.pw);
    k = i / (p.c * p.ph * p.pw);
  } else {
    bin = i % (p.ph * p.pw);
    ch = (i / (p.ph * p.pw)) % p.c;
    k = i / (p.c * p.ph * p.pw);
  }
  let o = (k * p.c + ch) * p.ph * p.pw + bin;
  let batch = i32(boxes[5u * k]);
  let coords = vec4f(boxes[5u * k + 1u], boxes[5u * k + 2u], boxes[5u * k + 3u], boxes[5u * k + 4u]);
  // Exponent bits all set: inf or NaN (tested on the bits, which compilers may not fold away).
  let non_finite = any((bitcast<vec4u>(coords) & vec4u(0x7f800000u)) == vec4u(0x7f800000u));
  if (batch < 0 || batch >= i32(p.n) || non_finite) {
    out[o] = T(0.0);
    return;
  }

  // Box in feature coordinates; the same f32 operations as torchvision's CPU kernel.
  let offset = select(0.0, 0.5, p.aligned == 1u);
  let start_w = coords.x * p.spatial_scale - offset;
  let start_h = coords.y * p.spatial_scale - offset;
  var roi_w = coords.z * p.spatial_scale - offset - start_w;
  var roi_h = coords.w * p.spatial_scale - offset - start_h;
  if (p.aligned == 0u) {
    roi_w = max(roi_w, 1.0);
    roi_h = max(roi_h, 1.0);
  }
  let bin_h = roi_h / f32(p.ph);
  let bin_w = roi_w / f32(p.pw);
  // Negative (inverted aligned boxes) or zero grids sample nothing and divide by 1, as torchvision.
  let grid_h = select(i32(ceil(roi_h / f32(p.ph))), p.sampling_ratio, p.sampling_ratio > 0);
  let grid_w = select(i32(ceil(roi_w / f32(p.pw))), p.sampling_ratio, p.sampling_ratio > 0);
  let samples = f32(max(grid_h * grid_w, 1));

  // Element (y, x) of this box's plane is features[base + y · row + x · col].
  var base: u32;
  var col: u32;
  if (NHWC) {
    base = u32(batch) * p.h * p.w * p.c + ch;
    col = p.c;
  } else {
    base = (u32(batch) * p.c + ch) * p.h * p.w;
    col = 1u;
  }
  let row = p.w * col;
  let y0 = start_h + f32(bin / p.pw) * bin_h;
  let x0 = start_w + f32(bin % p.pw) * bin_w;

  var sum = 0.0;
  for (var iy = 0; iy < grid_h; iy++) {
    let sy = sample_axis(y0 + (f32(iy) + 0.5) * bin_h / f32(grid_h), p.h);
    if (!sy.inside) { continue; }
    for (var ix = 0; ix < grid_w; ix++) {
      let sx = sample_axis(x0 + (f32(ix) + 0.5) * bin_w / f32(grid_w), p.w);
      if (!sx.inside) { continue; }
      let top = (1.0 - sx.frac) * f32(features[base + sy.low * row + sx.low * col]) + sx.frac * f32(features[base + sy.low * row + sx.high * col]);
      let bottom = (1.0 - sx.frac) * f32(features[base + sy.high * row + sx.low * col]) + sx.frac * f32(features[base + sy.high * row + sx.high * col]);
      sum += (1.0 - sy.frac) * top + sy.frac * bottom;
    }
  }
  out[o] = T(sum / samples);
}
