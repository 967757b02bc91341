// Row-wise log-softmax and losses over the last dimension, forward and backward. One invocation
// per row (rows of a loss are short: classes), so no workgroup memory. Every entry point sees the
// same four storage bindings, unused ones bound to any input:
//   a: x / y / logits,  b: dy / targets (labels: the same binding as i32),  c: dL (the scalar
//   upstream gradient of a loss),  out: the result.
// The forward losses write one value per row (the row's loss; for BCE its mean over the row); the
// TS module appends the reduce kernel's mean over rows, so the loss is mean over every element.
// Math in f32 (storage is f32 only).
struct Params {
  rows: u32,
  row: u32,      // row length (classes)
  scale: f32,    // backward: 1 / (elements the loss averages over)
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

// A label outside [0, row) contributes nothing (loss 0, gradient 0).
fn label_of(r: u32) -> i32 {
  let k = labels[r];
  return select(-1, k, k >= 0 && u32(k) < p.row);
}

// Row loss logsumexp(x) - x[label].
@compute @workgroup_size(WG)
fn cross_entropy_rows(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let r = row_index(wid, nwg, lid);
  if (r >= p.rows) { return; }
  let k = label_of(r);
  let base = r * p.row;
  let l = lse(base);
  out[r] = select(0.0, l.x + l.y - a[base + u32(max(k, 0))], k >= 0);
}

// dx = dL · scale · (softmax(x) - onehot(label)).
@compute @workgroup_size(WG)
fn cross_entropy_grad(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let r = row_index(wid, nwg, lid);
  if (r >= p.rows) { return; }
  let k = label_of(r);
  let base = r * p.row;
  let l = lse(base);
  let g = select(0.0, c[0] * p.scale, k >= 0);
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
