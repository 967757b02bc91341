// RoIAlign with torchvision.ops.roi_align semantics. One invocation per (box, bin, group of
// 4 · E channels): the sample coordinates and bilinear weights depend only on the box and bin, so
// each is computed once and applied to E vec4s of channels. Channels past C (a C that is not a
// multiple of 4 · E) repeat channel C - 1 and are not stored.
// Output is [K, C, PH, PW] for both feature layouts. NHWC (a ViT's token grid [N, H, W, C]) orders
// invocations channel-fastest so neighbouring invocations read neighbouring channels of the same
// pixels (main_vec4 reads them as vec4s when C % 4 == 0); NCHW orders them bin-fastest so they
// read neighbouring pixels of the same planes.
// A box whose batch index (truncated like torchvision's int cast) is outside [0, N), or with a
// non-finite coordinate, gives zeros: the eager wrapper rejects such boxes before dispatch, this
// only keeps graph runs in bounds and their sample loops finite.
alias T = f32;

struct Params {
  count: u32,     // K · PH · PW · ceil(C / (4 · E)) invocations
  n: u32,
  c: u32,
  h: u32,
  w: u32,
  ph: u32,        // pooled (output) height and width
  pw: u32,
  aligned: u32,   // 1: shift by -0.5 and do not clamp the RoI size to >= 1
  spatial_scale: f32,
  sampling_ratio: i32,  // <= 0: adaptive ceil(roi size / bins) samples per bin
  k: u32,         // boxes (backward only)
  accumulate: u32, // backward: 1 adds to the gradient (a later chunk of boxes), 0 overwrites it
}

override NHWC: bool = false;
override WG: u32 = 256u;
// Cap on adaptive samples per bin axis (ROI_ALIGN_MAX_SAMPLES in the TS module).
override MAX_SAMPLES: f32 = 64.0;
// vec4s of channels per invocation (a constant: private arrays cannot be override-sized).
const E = 4u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> features: array<T>;
@group(0) @binding(2) var<storage, read> boxes: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<T>;
// The same buffer as vec4s (main_vec4). Different entry points may declare the same binding.
@group(0) @binding(1) var<storage, read> features4: array<vec4<T>>;

// One output bin of one box and the first channel of this invocation's group.
struct Bin {
  o: u32,         // output index of (box, channel ch, bin)
  ch: u32,
  plane: u32,     // features index of (batch, channel 0, pixel 0)
  col: u32,       // features stride of x (y's is col · W)
  y0: f32,        // bin's top-left corner in feature coordinates
  x0: f32,
  bin_h: f32,
  bin_w: f32,
  grid_h: i32,    // samples per side; 0 for a box that gives zeros
  grid_w: i32,
  samples: f32,
}

// A box's geometry in feature coordinates; `valid` false for a box that gives zeros.
struct Box {
  valid: bool,
  batch: u32,
  start_h: f32,
  start_w: f32,
  bin_h: f32,
  bin_w: f32,
  grid_h: i32,
  grid_w: i32,
  samples: f32,
}

fn box_of(k: u32) -> Box {
  var r: Box;
  r.samples = 1.0;
  let batch = i32(boxes[5u * k]);
  let coords = vec4f(boxes[5u * k + 1u], boxes[5u * k + 2u], boxes[5u * k + 3u], boxes[5u * k + 4u]);
  // Exponent bits all set: inf or NaN (tested on the bits, which compilers may not fold away).
  let non_finite = any((bitcast<vec4u>(coords) & vec4u(0x7f800000u)) == vec4u(0x7f800000u));
  if (batch < 0 || batch >= i32(p.n) || non_finite) { return r; }
  // Box in feature coordinates; the same f32 operations as torchvision's CPU kernel.
  let offset = select(0.0, 0.5, p.aligned == 1u);
  r.start_w = coords.x * p.spatial_scale - offset;
  r.start_h = coords.y * p.spatial_scale - offset;
  var roi_w = coords.z * p.spatial_scale - offset - r.start_w;
  var roi_h = coords.w * p.spatial_scale - offset - r.start_h;
  if (p.aligned == 0u) {
    roi_w = max(roi_w, 1.0);
    roi_h = max(roi_h, 1.0);
  }
  r.bin_h = roi_h / f32(p.ph);
  r.bin_w = roi_w / f32(p.pw);
  // Negative (inverted aligned boxes) or zero grids sample nothing and divide by 1, as torchvision.
  // Adaptive grids are capped (in f32, before the i32 conversion of a possibly huge count).
  r.grid_h = select(i32(min(ceil(roi_h / f32(p.ph)), MAX_SAMPLES)), p.sampling_ratio, p.sampling_ratio > 0);
  r.grid_w = select(i32(min(ceil(roi_w / f32(p.pw)), MAX_SAMPLES)), p.sampling_ratio, p.sampling_ratio > 0);
  r.samples = f32(max(r.grid_h * r.grid_w, 1));
  r.batch = u32(batch);
  r.valid = true;
  return r;
}

fn bin_of(i: u32) -> Bin {
  let groups = (p.c + 4u * E - 1u) / (4u * E);
  let bins = p.ph * p.pw;
  var g: u32;
  var bin: u32;  // ph_index · PW + pw_index
  if (NHWC) {
    g = i % groups;
    bin = (i / groups) % bins;
  } else {
    bin = i % bins;
    g = (i / bins) % groups;
  }
  let k = i / (groups * bins);
  let ch = 4u * E * g;
  var b: Bin;
  b.o = (k * p.c + ch) * bins + bin;
  b.ch = ch;
  let r = box_of(k);
  b.samples = r.samples;
  if (!r.valid) { return b; }
  b.bin_h = r.bin_h;
  b.bin_w = r.bin_w;
  b.grid_h = r.grid_h;
  b.grid_w = r.grid_w;
  b.y0 = r.start_h + f32(bin / p.pw) * b.bin_h;
  b.x0 = r.start_w + f32(bin % p.pw) * b.bin_w;
  b.plane = r.batch * p.c * p.h * p.w;
  b.col = select(1u, p.c, NHWC);
  return b;
}

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

// The samples [x, y) of one axis of a bin that can fall in [-1, n]: each is still checked, so the
// range only needs to be conservative (a margin of 1 to 2 covers rounding). A box far larger than
// the map then costs what its part on the map costs. Full range where the math might not stay
// finite (a step under 0.5 happens only with 1 adaptive sample or an explicit sampling ratio).
fn sample_range(v0: f32, bin: f32, grid: i32, n: u32) -> vec2i {
  let step = bin / f32(grid);
  if (grid <= 1 || !(step >= 0.5 && step < 1e30 && abs(v0) < 1e30)) { return vec2i(0, max(grid, 0)); }
  let lo = (-1.0 - v0) / step - 0.5;
  let hi = (f32(n) - v0) / step - 0.5;
  return vec2i(i32(clamp(floor(lo) - 1.0, 0.0, f32(grid))), i32(clamp(ceil(hi) + 2.0, 0.0, f32(grid))));
}

// Sample (iy, ix) of a bin: whether it is inside, the offsets of its 4 taps (top-left, top-right,
// bottom-left, bottom-right) from a channel's pixel 0, and its x and y fractions.
struct Sample { inside: bool, at: vec4u, fx: f32, fy: f32 }

fn sample_of(b: Bin, iy: i32, ix: i32) -> Sample {
  let sy = sample_axis(b.y0 + (f32(iy) + 0.5) * b.bin_h / f32(b.grid_h), p.h);
  let sx = sample_axis(b.x0 + (f32(ix) + 0.5) * b.bin_w / f32(b.grid_w), p.w);
  let row = p.w * b.col;
  let at = vec4u(sy.low, sy.low, sy.high, sy.high) * row + vec4u(sx.low, sx.high, sx.low, sx.high) * b.col;
  return Sample(sy.inside && sx.inside, at, sx.frac, sy.frac);
}

// The bilinear blend of one sample's taps, for 4 channels at once.
fn blend(s: Sample, tl: vec4f, tr: vec4f, bl: vec4f, br: vec4f) -> vec4f {
  let top = (1.0 - s.fx) * tl + s.fx * tr;
  let bottom = (1.0 - s.fx) * bl + s.fx * br;
  return (1.0 - s.fy) * top + s.fy * bottom;
}

fn store(b: Bin, sum: array<vec4f, E>) {
  let bins = p.ph * p.pw;
  for (var j = 0u; j < min(p.c - b.ch, 4u * E); j++) {
    out[b.o + j * bins] = T(sum[j / 4u][j % 4u] / b.samples);
  }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * WG + lid;
  if (i >= p.count) { return; }
  let b = bin_of(i);
  // features index of pixel 0 of each channel of the group.
  let cstride = select(p.h * p.w, 1u, NHWC);
  var base: array<vec4u, E>;
  for (var e = 0u; e < E; e++) {
    base[e] = b.plane + min(vec4u(b.ch + 4u * e) + vec4u(0u, 1u, 2u, 3u), vec4u(p.c - 1u)) * cstride;
  }
  var sum: array<vec4f, E>;
  let ry = sample_range(b.y0, b.bin_h, b.grid_h, p.h);
  let rx = sample_range(b.x0, b.bin_w, b.grid_w, p.w);
  for (var iy = ry.x; iy < ry.y; iy++) {
    for (var ix = rx.x; ix < rx.y; ix++) {
      let s = sample_of(b, iy, ix);
      if (!s.inside) { continue; }
      for (var e = 0u; e < E; e++) {
        let a = base[e];
        sum[e] += blend(s,
          vec4f(f32(features[a.x + s.at.x]), f32(features[a.y + s.at.x]), f32(features[a.z + s.at.x]), f32(features[a.w + s.at.x])),
          vec4f(f32(features[a.x + s.at.y]), f32(features[a.y + s.at.y]), f32(features[a.z + s.at.y]), f32(features[a.w + s.at.y])),
          vec4f(f32(features[a.x + s.at.z]), f32(features[a.y + s.at.z]), f32(features[a.z + s.at.z]), f32(features[a.w + s.at.z])),
          vec4f(f32(features[a.x + s.at.w]), f32(features[a.y + s.at.w]), f32(features[a.z + s.at.w]), f32(features[a.w + s.at.w])));
      }
    }
  }
  store(b, sum);
}

// NHWC with C % 4 == 0: the same, reading each vec4 of channels with one load.
@compute @workgroup_size(WG)
fn main_vec4(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
             @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * WG + lid;
  if (i >= p.count) { return; }
  let b = bin_of(i);
  let last = p.c / 4u - 1u;
  var sum: array<vec4f, E>;
  let ry = sample_range(b.y0, b.bin_h, b.grid_h, p.h);
  let rx = sample_range(b.x0, b.bin_w, b.grid_w, p.w);
  for (var iy = ry.x; iy < ry.y; iy++) {
    for (var ix = rx.x; ix < rx.y; ix++) {
      let s = sample_of(b, iy, ix);
      if (!s.inside) { continue; }
      let at = (b.plane + s.at) / 4u;
      for (var e = 0u; e < E; e++) {
        let c4 = min(b.ch / 4u + e, last);
        sum[e] += blend(s, vec4f(features4[at.x + c4]), vec4f(features4[at.y + c4]), vec4f(features4[at.z + c4]), vec4f(features4[at.w + c4]));
      }
    }
  }
  store(b, sum);
}

// ---- Backward (roiAlignBackward): d features from dy [K, C, PH, PW] ----
// torchvision scatters each output's gradient, times a sample's bilinear weights / samples, into the
// sample's 4 taps with atomic adds; WGSL has no float atomics. Here each invocation owns 4 · E
// channels of one feature pixel (q_y, q_x), which share every sample's weights, and gathers instead: for every box of its image, it visits only
// the samples that can touch that pixel. A sample's coordinate along an axis grows with its index
// s = bin · grid + i by `step` = bin size / grid, and touches pixel q only when it lies in
// [q - 1, q + 1] (wider at the borders, where coordinates in [-1, 0] and [n - 1, n] clamp), so
// the candidates are the indices within 2 pixels of q plus one index of margin; each candidate's
// weight is then evaluated exactly as the forward does (sample_axis), so nothing is missed or
// double-counted. The sum runs in a fixed order: deterministic.

// The weight of pixel q in the bilinear sample at coordinate v (0 when v does not touch it).
fn axis_weight(v: f32, n: u32, q: u32) -> f32 {
  let a = sample_axis(v, n);
  if (!a.inside) { return 0.0; }
  return select(0.0, 1.0 - a.frac, a.low == q) + select(0.0, a.frac, a.high == q);
}

// Candidate sample indices [first, last] along one axis for pixel q (first > last: none).
fn window(start: f32, bin: f32, grid: i32, bins: u32, q: u32) -> vec2i {
  let total = grid * i32(bins);
  if (grid <= 0) { return vec2i(0, -1); }
  let step = bin / f32(grid);
  if (step == 0.0) { return vec2i(0, total - 1); }
  let a = (f32(q) - 2.0 - start) / step - 0.5;
  let b = (f32(q) + 2.0 - start) / step - 0.5;
  let lo = max(i32(floor(min(a, b))) - 1, 0);
  let hi = min(i32(ceil(max(a, b))) + 1, total - 1);
  return vec2i(lo, hi);
}

// One sample coordinate of a box along an axis, in the forward's operation order.
fn coord(start: f32, bin: f32, grid: i32, s: i32) -> f32 {
  return start + f32(s / grid) * bin + (f32(s % grid) + 0.5) * bin / f32(grid);
}

@group(0) @binding(3) var<storage, read> dy: array<T>;
@group(0) @binding(4) var<storage, read_write> grad: array<T>;

@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
            @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * WG + lid;
  if (i >= p.count) { return; }
  let groups = (p.c + 4u * E - 1u) / (4u * E);
  let pixels = p.h * p.w;
  var g: u32;
  var pix: u32;
  if (NHWC) {
    g = i % groups;
    pix = (i / groups) % pixels;
  } else {
    pix = i % pixels;
    g = (i / pixels) % groups;
  }
  let n = i / (groups * pixels);
  let qy = pix / p.w;
  let qx = pix % p.w;
  let ch = 4u * E * g;
  let bins = p.ph * p.pw;
  // dy offsets of the group's channels (past C: channel C - 1, not stored).
  var chans: array<vec4u, E>;
  for (var e = 0u; e < E; e++) {
    chans[e] = min(vec4u(ch + 4u * e) + vec4u(0u, 1u, 2u, 3u), vec4u(p.c - 1u)) * bins;
  }
  var sum: array<vec4f, E>;
  for (var k = 0u; k < p.k; k++) {
    let r = box_of(k);
    if (!r.valid || r.batch != n) { continue; }
    let wy_range = window(r.start_h, r.bin_h, r.grid_h, p.ph, qy);
    let wx_range = window(r.start_w, r.bin_w, r.grid_w, p.pw, qx);
    for (var sy = wy_range.x; sy <= wy_range.y; sy++) {
      let wy = axis_weight(coord(r.start_h, r.bin_h, r.grid_h, sy), p.h, qy);
      if (wy == 0.0) { continue; }
      let row = k * p.c * bins + u32(sy / r.grid_h) * p.pw;
      for (var sx = wx_range.x; sx <= wx_range.y; sx++) {
        let wx = axis_weight(coord(r.start_w, r.bin_w, r.grid_w, sx), p.w, qx);
        if (wx == 0.0) { continue; }
        let at = row + u32(sx / r.grid_w);
        let weight = wy * wx / r.samples;
        for (var e = 0u; e < E; e++) {
          let a = chans[e] + at;
          sum[e] += weight * vec4f(f32(dy[a.x]), f32(dy[a.y]), f32(dy[a.z]), f32(dy[a.w]));
        }
      }
    }
  }
  let cstride = select(pixels, 1u, NHWC);
  let base = select((n * p.c + ch) * pixels + pix, (n * pixels + pix) * p.c + ch, NHWC);
  for (var j = 0u; j < min(p.c - ch, 4u * E); j++) {
    let at = base + j * cstride;
    var prior = 0.0;
    if (p.accumulate == 1u) { prior = f32(grad[at]); }
    grad[at] = T(prior + sum[j / 4u][j % 4u]);
  }
}
