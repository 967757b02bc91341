// LayerNorm over the last dimension: out = (s - mean) / sqrt(var + eps) * weight + bias, with
// s = x (entry `main`) or s = x + residual, also written to `sum` (entry `main_residual`, for
// pre-LN blocks that need both). One workgroup per row. Mean and variance come from Welford's
// update per invocation merged pairwise (Chan et al.), all in f32: no E[x²] - E[x]² cancellation,
// so rows with a large offset (mean 1000, std 1) keep their precision.
// The two entry points use different bindings: `sum` is written only with a residual, and a
// writable binding cannot be aliased to fill the gap, so the optional ones come last.
alias T = f32;

struct Params {
  rows: u32,  // rows of x (product of the leading dimensions)
  dim: u32,   // row length D
  eps: f32,
}

override WG: u32 = 128u;

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

// Workgroup-wide merge; returns (mean, 1 / sqrt(var + eps)) to every invocation.
fn row_stats(lid: u32, own: Stats) -> vec2f {
  partial[lid] = own;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
    if (lid < stride) { partial[lid] = merge(partial[lid], partial[lid + stride]); }
    workgroupBarrier();
  }
  let total = partial[0];
  return vec2f(total.mean, inverseSqrt(total.m2 / f32(p.dim) + p.eps));
}

fn normed(v: f32, j: u32, st: vec2f) -> T {
  return T((v - st.x) * st.y * f32(weight[j]) + f32(bias[j]));
}

fn row_index(wid: vec3u, nwg: vec3u) -> u32 { return wid.y * nwg.x + wid.x; }

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let row = row_index(wid, nwg);
  if (row >= p.rows) { return; }
  let base = row * p.dim;
  var own = Stats(0.0, 0.0, 0.0);
  for (var j = lid; j < p.dim; j += WG) { own = push(own, f32(x[base + j])); }
  let st = row_stats(lid, own);
  for (var j = lid; j < p.dim; j += WG) { out[base + j] = normed(f32(x[base + j]), j, st); }
}

@compute @workgroup_size(WG)
fn main_residual(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                 @builtin(local_invocation_index) lid: u32) {
  let row = row_index(wid, nwg);
  if (row >= p.rows) { return; }
  let base = row * p.dim;
  var own = Stats(0.0, 0.0, 0.0);
  for (var j = lid; j < p.dim; j += WG) {
    // Normalise the stored (rounded) sum, so `out` is exactly layerNorm(sum) in f16 too.
    let s = T(f32(x[base + j]) + f32(residual[base + j]));
    sum[base + j] = s;
    own = push(own, f32(s));
  }
  let st = row_stats(lid, own);
  // Each invocation rereads only the elements it wrote itself.
  for (var j = lid; j < p.dim; j += WG) { out[base + j] = normed(f32(sum[base + j]), j, st); }
}
