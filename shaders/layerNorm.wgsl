// LayerNorm over the last dimension: out = (s - mean) / sqrt(var + eps) * weight + bias, with
// s = x (entry `main`) or s = x + residual, also written to `sum` (entry `main_residual`, for
// pre-LN blocks that need both). WG / TPR rows per workgroup, TPR invocations per row (TPR = WG:
// a workgroup per row; TPR = 1: an invocation per row, no workgroup memory). Mean and variance
// come from Welford's update per invocation merged pairwise (Chan et al.), all in f32: no
// E[x²] - E[x]² cancellation. The values are shifted by the row's first one, so rounding errors
// scale with the spread of the row rather than its offset: rows with mean 1000 and std 1 keep
// their precision even when one invocation runs through a whole row (a long chain of updates).
// The two entry points use different bindings: `sum` is written only with a residual, and a
// writable binding cannot be aliased to fill the gap, so the optional ones come last.
alias T = f32;

struct Params {
  rows: u32,  // rows of x (product of the leading dimensions)
  dim: u32,   // row length D
  eps: f32,
}

override WG: u32 = 128u;
override TPR: u32 = WG;   // invocations per row, a power of two dividing WG

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read> weight: array<T>;
@group(0) @binding(3) var<storage, read> bias: array<T>;
@group(0) @binding(4) var<storage, read_write> out: array<T>;
@group(0) @binding(5) var<storage, read> residual: array<T>;
@group(0) @binding(6) var<storage, read_write> sum: array<T>;

// Running statistics of a set of values: count, mean, sum of squared deviations.
struct Stats { n: f32, mean: f32, m2: f32 }

fn push(a: Stats, v: f32) -> Stats {
  let n = a.n + 1.0;
  let d = v - a.mean;
  let mean = a.mean + d / n;
  return Stats(n, mean, a.m2 + d * (v - mean));
}

fn merge(a: Stats, b: Stats) -> Stats {
  if (b.n == 0.0) { return a; }
  if (a.n == 0.0) { return b; }
  let n = a.n + b.n;
  let d = b.mean - a.mean;
  let f = b.n / n;
  return Stats(n, a.mean + d * f, a.m2 + b.m2 + d * d * a.n * f);
}

var<workgroup> partial: array<Stats, WG>;

// Merge over the row's TPR invocations (every invocation must call it: barriers); returns
// (mean, 1 / sqrt(var + eps)) of values that were pushed less `shift`.
fn row_stats(lid: u32, own: Stats, shift: f32) -> vec2f {
  var total = own;
  if (TPR > 1u) {
    let slot = lid % TPR;
    partial[lid] = own;
    workgroupBarrier();
    for (var stride = TPR / 2u; stride > 0u; stride >>= 1u) {
      if (slot < stride) { partial[lid] = merge(partial[lid], partial[lid + stride]); }
      workgroupBarrier();
    }
    total = partial[lid - slot];
  }
  return vec2f(total.mean + shift, inverseSqrt(total.m2 / f32(p.dim) + p.eps));
}

fn normed(v: f32, j: u32, st: vec2f) -> T {
  return T((v - st.x) * st.y * f32(weight[j]) + f32(bias[j]));
}

// The invocation's row, its first element and the row's length (0 past the last row, whose
// invocations still take part in the barriers).
fn row_of(wid: vec3u, nwg: vec3u, lid: u32) -> vec3u {
  let row = (wid.y * nwg.x + wid.x) * (WG / TPR) + lid / TPR;
  return vec3u(row * p.dim, lid % TPR, select(0u, p.dim, row < p.rows));
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let r = row_of(wid, nwg, lid);
  let base = r.x;
  var shift = 0.0;
  if (r.z > 0u) { shift = f32(x[base]); }
  var own = Stats(0.0, 0.0, 0.0);
  for (var j = r.y; j < r.z; j += TPR) { own = push(own, f32(x[base + j]) - shift); }
  let st = row_stats(lid, own, shift);
  for (var j = r.y; j < r.z; j += TPR) { out[base + j] = normed(f32(x[base + j]), j, st); }
}

@compute @workgroup_size(WG)
fn main_residual(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                 @builtin(local_invocation_index) lid: u32) {
  let r = row_of(wid, nwg, lid);
  let base = r.x;
  var shift = 0.0;
  if (r.z > 0u) { shift = f32(T(f32(x[base]) + f32(residual[base]))); }
  var own = Stats(0.0, 0.0, 0.0);
  for (var j = r.y; j < r.z; j += TPR) {
    // Normalise the stored (rounded) sum, so `out` is exactly layerNorm(sum) in f16 too.
    let s = T(f32(x[base + j]) + f32(residual[base + j]));
    sum[base + j] = s;
    own = push(own, f32(s) - shift);
  }
  let st = row_stats(lid, own, shift);
  // Each invocation rereads only the elements it wrote itself.
  for (var j = r.y; j < r.z; j += TPR) { out[base + j] = normed(f32(sum[base + j]), j, st); }
}
