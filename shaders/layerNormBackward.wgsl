// LayerNorm backward over the last dimension, for out = (s - mean) * rstd * weight + bias with
// rstd = 1 / sqrt(var + eps) and upstream gradient dout (s = x, or the forward's `sum` output for
// addLayerNorm, whose own upstream gradient dsum is added to dx).
//
// `row_pass`: one row per WG / TPR invocations, as the forward (TPR = 1 on CPU adapters: no workgroup
// memory or barriers). The statistics are recomputed in two passes over values shifted by the
// row's first one (s - shift is exact for rows with a large offset), then with g = dout * weight
// and x̂ = (s - mean) * rstd:  dx = rstd * (g - mean(g) - x̂ * mean(g * x̂)) (+ dsum).
// (shift, mean - shift, rstd) of every row go to `stats` for the second entry point.
// `param_pass`: one invocation per column walks every row in order (no atomics, deterministic):
// dweight = sum over rows of dout * x̂, dbias = sum of dout.
alias T = f32;

struct Params {
  rows: u32,
  dim: u32,
  eps: f32,
}

override WG: u32 = 128u;
override TPR: u32 = WG;   // invocations per row, a power of two dividing WG
override HAS_SUM_GRAD: bool = false;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read> weight: array<T>;
@group(0) @binding(3) var<storage, read> dout: array<T>;
@group(0) @binding(4) var<storage, read> dsum: array<T>;   // dout again without HAS_SUM_GRAD
@group(0) @binding(5) var<storage, read_write> dx: array<T>;
@group(0) @binding(6) var<storage, read_write> stats: array<vec4f>;

var<workgroup> partial: array<vec2f, WG>;

// Sum of v over the row's TPR invocations (every invocation must call it: barriers).
fn row_sum(lid: u32, v: vec2f) -> vec2f {
  if (TPR == 1u) { return v; }
  let slot = lid % TPR;
  partial[lid] = v;
  workgroupBarrier();
  for (var stride = TPR / 2u; stride > 0u; stride >>= 1u) {
    if (slot < stride) { partial[lid] += partial[lid + stride]; }
    workgroupBarrier();
  }
  let total = partial[lid - slot];
  workgroupBarrier();  // all have read it before the next call writes
  return total;
}

@compute @workgroup_size(WG)
fn row_pass(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let row = (wid.y * nwg.x + wid.x) * (WG / TPR) + lid / TPR;
  let slot = lid % TPR;
  // Rows past the end read nothing but still take part in the barriers.
  let n = select(0u, p.dim, row < p.rows);
  let base = row * p.dim;
  let inv_dim = 1.0 / f32(p.dim);
  var shift = 0.0;
  if (n > 0u) { shift = f32(x[base]); }
  var s = vec2f(0.0);
  for (var j = slot; j < n; j += TPR) { s.x += f32(x[base + j]) - shift; }
  let mean = row_sum(lid, s).x * inv_dim;
  s = vec2f(0.0);
  for (var j = slot; j < n; j += TPR) { let d = f32(x[base + j]) - shift - mean; s.x += d * d; }
  let rstd = inverseSqrt(row_sum(lid, s).x * inv_dim + p.eps);
  s = vec2f(0.0);
  for (var j = slot; j < n; j += TPR) {
    let g = f32(dout[base + j]) * f32(weight[j]);
    s += vec2f(g, g * (f32(x[base + j]) - shift - mean) * rstd);
  }
  let m = row_sum(lid, s) * inv_dim;
  for (var j = slot; j < n; j += TPR) {
    let g = f32(dout[base + j]) * f32(weight[j]);
    let xh = (f32(x[base + j]) - shift - mean) * rstd;
    var d = rstd * (g - m.x - xh * m.y);
    if (HAS_SUM_GRAD) { d += f32(dsum[base + j]); }
    dx[base + j] = T(d);
  }
  if (slot == 0u && n > 0u) { stats[row] = vec4f(shift, mean, rstd, 0.0); }
}

@group(0) @binding(1) var<storage, read> px: array<T>;
@group(0) @binding(2) var<storage, read> pdout: array<T>;
@group(0) @binding(3) var<storage, read> pstats: array<vec4f>;
@group(0) @binding(4) var<storage, read_write> dweight: array<T>;
@group(0) @binding(5) var<storage, read_write> dbias: array<T>;

@compute @workgroup_size(64)
fn param_pass(@builtin(global_invocation_id) gid: vec3u) {
  let j = gid.x;
  if (j >= p.dim) { return; }
  var dw = 0.0;
  var db = 0.0;
  for (var r = 0u; r < p.rows; r++) {
    let st = pstats[r];
    let g = f32(pdout[r * p.dim + j]);
    dw += g * (f32(px[r * p.dim + j]) - st.x - st.y) * st.z;
    db += g;
  }
  dweight[j] = T(dw);
  dbias[j] = T(db);
}
