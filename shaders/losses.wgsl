// Row-wise log-softmax and losses over the last dimension, forward and backward. One invocation
// per row (rows of a loss are short: classes), so no workgroup memory. Every entry point sees the
// same four storage bindings, unused ones bound to any input:
//   a: x / y / logits,  b: dy / targets (labels: the same binding as i32),  c: dL (the scalar
//   upstream gradient of a loss),  out: the result.
// The forward losses write one value per row (the row's loss; for BCE its mean over the row); BCE's
// TS module appends the reduce kernel's mean over rows, cross-entropy its own mean over the rows
// whose label is not ignored (cross_entropy_mean). Math in f32 (storage is f32 only).
struct Params {
  rows: u32,
  row: u32,      // row length (classes)
  scale: f32,    // BCE backward: 1 / (elements the loss averages over)
  ignore: i32,   // cross-entropy: the label of rows that contribute nothing (ignore_index)
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<i32>;
@group(0) @binding(3) var<storage, read> c: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

fn row_index(wid: vec3u, nwg: vec3u, lid: u32) -> u32 { return (wid.y * nwg.x + wid.x) * WG + lid; }

// max and log(sum exp(v - max)) of a's row starting at base: log-sum-exp = m + l.
fn lse(base: u32) -> vec2f {
  var m = a[base];
  for (var j = 1u; j < p.row; j++) { m = max(m, a[base + j]); }
  var s = 0.0;
  for (var j = 0u; j < p.row; j++) { s += exp(a[base + j] - m); }
  return vec2f(m, log(s));
}

// y = x - logsumexp(x).
@compute @workgroup_size(WG)
fn log_softmax(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let r = row_index(wid, nwg, lid);
  if (r >= p.rows) { return; }
  let base = r * p.row;
  let l = lse(base);
  for (var j = 0u; j < p.row; j++) { out[base + j] = a[base + j] - l.x - l.y; }
}

// dx = dy - softmax · sum(dy), from the forward's output y (softmax = exp(y)).
@compute @workgroup_size(WG)
fn log_softmax_grad(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let r = row_index(wid, nwg, lid);
  if (r >= p.rows) { return; }
  let base = r * p.row;
  var s = 0.0;
  for (var j = 0u; j < p.row; j++) { s += b[base + j]; }
  for (var j = 0u; j < p.row; j++) { out[base + j] = b[base + j] - exp(a[base + j]) * s; }
}

// Cross-entropy as PyTorch's F.cross_entropy with ignore_index: a row labelled p.ignore
// contributes nothing and is left out of the mean's count; any other label outside [0, row) makes
// its row's loss and gradient NaN (PyTorch raises; a shader cannot, so the loss shows it).
const IGNORED = -1;
const INVALID = -2;
fn label_of(r: u32) -> i32 {
  let k = labels[r];
  if (k == p.ignore) { return IGNORED; }
  return select(INVALID, k, k >= 0 && u32(k) < p.row);
}

fn nan() -> f32 {
  var bits = 0x7fc00000u;  // a var: WGSL refuses NaN as a constant expression
  return bitcast<f32>(bits);
}

// Row loss logsumexp(x) - x[label] (0 for an ignored row).
@compute @workgroup_size(WG)
fn cross_entropy_rows(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let r = row_index(wid, nwg, lid);
  if (r >= p.rows) { return; }
  let k = label_of(r);
  let base = r * p.row;
  let l = lse(base);
  out[r] = select(select(nan(), 0.0, k == IGNORED), l.x + l.y - a[base + u32(max(k, 0))], k >= 0);
}

// One workgroup sums (sum of `a` over rows if `with_sum`, count of rows not ignored) through
// workgroup memory; a strided loop first, so any row count fits.
const RED = 64u;
var<workgroup> partial: array<vec2f, RED>;
fn sum_and_kept(lid: u32, with_sum: bool) -> vec2f {
  var acc = vec2f(0.0);
  for (var r = lid; r < p.rows; r += RED) {
    acc += vec2f(select(0.0, a[r], with_sum), select(1.0, 0.0, labels[r] == p.ignore));
  }
  partial[lid] = acc;
  for (var s = RED / 2u; s > 0u; s >>= 1u) {
    workgroupBarrier();
    if (lid < s) { partial[lid] += partial[lid + s]; }
  }
  workgroupBarrier();
  return partial[0];
}

// The loss: row losses (a) summed over the kept rows' count; NaN when every row is ignored (0 / 0,
// as PyTorch).
@compute @workgroup_size(RED)
fn cross_entropy_mean(@builtin(local_invocation_index) lid: u32) {
  let t = sum_and_kept(lid, true);
  if (lid == 0u) { out[0] = select(nan(), t.x / t.y, t.y > 0.0); }
}

// The backward's per-row factor dL / kept rows (c: dL); unused when every row is ignored.
@compute @workgroup_size(RED)
fn cross_entropy_scale(@builtin(local_invocation_index) lid: u32) {
  let t = sum_and_kept(lid, false);
  if (lid == 0u) { out[0] = c[0] / max(t.y, 1.0); }
}

// dx = (dL / kept rows) · (softmax(x) - onehot(label)), c[0] holding cross_entropy_scale's factor.
@compute @workgroup_size(WG)
fn cross_entropy_grad(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let r = row_index(wid, nwg, lid);
  if (r >= p.rows) { return; }
  let k = label_of(r);
  let base = r * p.row;
  let l = lse(base);
  let g = select(select(nan(), 0.0, k == IGNORED), c[0], k >= 0);
  for (var j = 0u; j < p.row; j++) {
    out[base + j] = g * (exp(a[base + j] - l.x - l.y) - select(0.0, 1.0, i32(j) == k));
  }
}

// log(1 + u) for u in [0, 1], without losing a tiny u to the rounding of 1 + u.
fn log1p_small(u: f32) -> f32 {
  return select(log(1.0 + u), u * (1.0 - u * (0.5 - u / 3.0)), u < 1e-4);
}

// Row mean of max(x, 0) - x·t + log(1 + exp(-|x|)) (PyTorch's stable form).
@compute @workgroup_size(WG)
fn bce_rows(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let r = row_index(wid, nwg, lid);
  if (r >= p.rows) { return; }
  let base = r * p.row;
  var s = 0.0;
  for (var j = 0u; j < p.row; j++) {
    let x = a[base + j];
    s += max(x, 0.0) - x * b[base + j] + log1p_small(exp(-abs(x)));
  }
  out[r] = s / f32(p.row);
}

// dx = dL · scale · (sigmoid(x) - t).
@compute @workgroup_size(WG)
fn bce_grad(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let r = row_index(wid, nwg, lid);
  if (r >= p.rows) { return; }
  let base = r * p.row;
  let g = c[0] * p.scale;
  for (var j = 0u; j < p.row; j++) {
    let x = a[base + j];
    let e = exp(-abs(x));
    let sig = select(e / (1.0 + e), 1.0 / (1.0 + e), x >= 0.0);
    out[base + j] = g * (sig - b[base + j]);
  }
}
