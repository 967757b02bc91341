// Elementwise ops over a flat tensor, and row-wise L2 normalisation. OP picks the op at pipeline
// creation (the switch folds away): 0 add, 1 mul, 2 scale, 3 gelu, 4 quick_gelu, 5 cast, and the
// backward ops 6 gelu_grad, 7 quick_gelu_grad (x, and b = the upstream gradient dy of x's shape).
// Binary ops broadcast numpy-style. The common case (x has the output's shape and b's shape is a
// suffix of it, as a bias add) indexes b by the position in b's row; BROADCAST = true walks the
// output index through per-dimension strides (0 where an input is broadcast) for everything else.
// U is the output's storage type: T except for cast.
//
// Entry points:
//   main       one element per invocation, any shape.
//   main_vec4  E vec4s per invocation, when the element counts (and b's row, or the output's last
//              dimension when BROADCAST) are multiples of 4. On lavapipe, where a workgroup runs as
//              SIMD lanes on one thread, per-invocation overhead and a u32 modulo per element
//              (scalarised) dominated memory-bound ops; vec4s and a running column in b's row
//              remove both (see the TS module for measurements).
//   l2norm     RPW = WG / TPR rows per workgroup, TPR invocations per row (reduced through
//              workgroup memory when TPR > 1); l2norm_vec4 the same with vec4 loads.
//   l2norm_grad  its backward, laid out the same: b holds dy, y gets dx.
alias T = f32;
alias U = f32;

struct Params {
  count: u32,      // elements of y
  b_count: u32,    // elements of b (divides count on the suffix path)
  row: u32,        // row length for l2norm
  scalar: f32,     // scale factor, or eps for l2norm
  rank: u32,       // output rank (BROADCAST), at most 8
  shape: array<vec4u, 2>,     // output dimensions (BROADCAST)
  x_strides: array<vec4u, 2>, // element strides of x per output dimension, 0 where broadcast
  b_strides: array<vec4u, 2>, // the same for b
}

override OP: u32 = 0u;
override WG: u32 = 256u;
override BROADCAST: bool = false;
override E: u32 = 4u;        // main_vec4: vec4s per invocation, consecutive
override TPR: u32 = 256u;    // l2norm: invocations per row, a power of two dividing WG

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read> b: array<T>;
@group(0) @binding(3) var<storage, read_write> y: array<U>;
// The same buffers as vec4s. Different entry points may declare the same binding.
@group(0) @binding(1) var<storage, read> x4: array<vec4<T>>;
@group(0) @binding(2) var<storage, read> b4: array<vec4<T>>;
@group(0) @binding(3) var<storage, read_write> y4: array<vec4<U>>;

fn apply(v: f32, w: f32) -> f32 {
  switch OP {
    case 0u: { return v + w; }
    case 1u: { return v * w; }
    case 2u: { return v * p.scalar; }
    case 3u: { return activate(v, 1u); }
    case 4u: { return activate(v, 2u); }
    case 6u: { return w * activate_grad(v, 1u); }
    case 7u: { return w * activate_grad(v, 2u); }
    default: { return v; }
  }
}

// Whether the op reads b (binary ops and the backward ops' dy).
fn reads_b() -> bool { return OP <= 1u || OP >= 6u; }

fn apply4(v: vec4f, w: vec4f) -> vec4f {
  return vec4f(apply(v.x, w.x), apply(v.y, w.y), apply(v.z, w.z), apply(v.w, w.w));
}

// Flat indices into x and b of output element i (BROADCAST).
fn sources(i: u32) -> vec2u {
  var at = vec2u(0u);
  var rest = i;
  for (var d = p.rank; d > 0u; d--) {
    let k = d - 1u;
    let n = p.shape[k / 4u][k % 4u];
    let c = rest % n;
    rest /= n;
    at += c * vec2u(p.x_strides[k / 4u][k % 4u], p.b_strides[k / 4u][k % 4u]);
  }
  return at;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * WG + lid;
  if (i >= p.count) { return; }
  var at = vec2u(i, i % p.b_count);
  if (BROADCAST) { at = sources(i); }
  var w = 0.0;
  if (reads_b()) { w = f32(b[at.y]); }
  y[i] = U(apply(f32(x[at.x]), w));
}

@compute @workgroup_size(WG)
fn main_vec4(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
             @builtin(local_invocation_index) lid: u32) {
  let n4 = p.count / 4u;
  let first = ((wid.y * nwg.x + wid.x) * WG + lid) * E;
  if (first >= n4) { return; }
  let last = min(first + E, n4);
  if (BROADCAST) {
    // The output's last dimension is a multiple of 4, so each vec4 lies in one row: an input
    // either reads 4 consecutive, aligned elements or, broadcast along that dimension, one. The
    // source positions advance by 4 (or 0) along a row; the strides are walked again at each row start.
    let k = p.rank - 1u;
    let row = p.shape[k / 4u][k % 4u];
    let step = vec2u(p.x_strides[k / 4u][k % 4u], p.b_strides[k / 4u][k % 4u]);
    var at = sources(4u * first);
    var c = (4u * first) % row;
    for (var i = first; i < last; i++) {
      var v = vec4f(x4[at.x / 4u]);
      if (step.x == 0u) { v = vec4f(v[at.x % 4u]); }
      var w = vec4f(b4[at.y / 4u]);
      if (step.y == 0u) { w = vec4f(w[at.y % 4u]); }
      y4[i] = vec4<U>(apply4(v, w));
      c += 4u;
      at += 4u * step;
      if (c == row && i + 1u < last) {
        c = 0u;
        at = sources(4u * (i + 1u));
      }
    }
    return;
  }
  // b's row (b_count / 4 vec4s) is walked with a running column: one modulo per invocation, none
  // when b has the output's size.
  let b4_count = p.b_count / 4u;
  var col = first;
  if (b4_count != n4) { col = first % b4_count; }
  for (var i = first; i < last; i++) {
    var w = vec4f(0.0);
    if (reads_b()) { w = vec4f(b4[col]); }
    y4[i] = vec4<U>(apply4(vec4f(x4[i]), w));
    col += 1u;
    if (col == b4_count) { col = 0u; }
  }
}

var<workgroup> partial: array<f32, WG>;

// Which row an l2norm invocation works on, and its place among the row's TPR invocations.
fn l2_row(wid: vec3u, nwg: vec3u, lid: u32) -> vec2u {
  return vec2u((wid.y * nwg.x + wid.x) * (WG / TPR) + lid / TPR, lid % TPR);
}

// Sum of `s` over the TPR invocations of a row. Every invocation must call it (barriers).
fn row_sum(lid: u32, s: f32) -> f32 {
  if (TPR == 1u) { return s; }
  partial[lid] = s;
  workgroupBarrier();
  let slot = lid % TPR;
  for (var stride = TPR / 2u; stride > 0u; stride >>= 1u) {
    if (slot < stride) { partial[lid] += partial[lid + stride]; }
    workgroupBarrier();
  }
  return partial[lid - slot];
}

// y = x / (||x|| + eps) per row of p.row elements.
@compute @workgroup_size(WG)
fn l2norm(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
          @builtin(local_invocation_index) lid: u32) {
  let r = l2_row(wid, nwg, lid);
  // Rows past the end sum nothing but still take part in the barriers.
  let n = select(0u, p.row, r.x * p.row < p.count);
  let base = r.x * p.row;
  var s = 0.0;
  for (var j = r.y; j < n; j += TPR) {
    let v = f32(x[base + j]);
    s += v * v;
  }
  let inv = 1.0 / (sqrt(row_sum(lid, s)) + p.scalar);
  for (var j = r.y; j < n; j += TPR) { y[base + j] = U(f32(x[base + j]) * inv); }
}

@compute @workgroup_size(WG)
fn l2norm_vec4(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
               @builtin(local_invocation_index) lid: u32) {
  let r = l2_row(wid, nwg, lid);
  let row4 = p.row / 4u;
  let n = select(0u, row4, r.x * p.row < p.count);
  let base = r.x * row4;
  var s = 0.0;
  for (var j = r.y; j < n; j += TPR) {
    let v = vec4f(x4[base + j]);
    s += dot(v, v);
  }
  let inv = 1.0 / (sqrt(row_sum(lid, s)) + p.scalar);
  for (var j = r.y; j < n; j += TPR) { y4[base + j] = vec4<U>(vec4f(x4[base + j]) * inv); }
}

// dx of y = x / (||x|| + eps) per row, with dy in b:
//   dx = dy / (n + eps) - x (x . dy) / (n (n + eps)^2),   n = ||x||.
// A zero row takes the first term only, as PyTorch's norm backward gives 0 at a zero norm.
@compute @workgroup_size(WG)
fn l2norm_grad(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
               @builtin(local_invocation_index) lid: u32) {
  let r = l2_row(wid, nwg, lid);
  let n = select(0u, p.row, r.x * p.row < p.count);
  let base = r.x * p.row;
  var s = 0.0;
  var t = 0.0;
  for (var j = r.y; j < n; j += TPR) {
    let v = f32(x[base + j]);
    s += v * v;
    t += v * f32(b[base + j]);
  }
  let norm = sqrt(row_sum(lid, s));
  // row_sum's result must be read by the whole row before `partial` is reused.
  if (TPR > 1u) { workgroupBarrier(); }
  let dot = row_sum(lid, t);
  let inv = 1.0 / (norm + p.scalar);
  let k = select(0.0, dot * inv * inv / norm, norm > 0.0);
  for (var j = r.y; j < n; j += TPR) { y[base + j] = U(f32(b[base + j]) * inv - f32(x[base + j]) * k); }
}
