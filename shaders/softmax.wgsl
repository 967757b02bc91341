// Softmax over the last dimension of x (+ an optional additive mask broadcast over x's leading
// dimensions). WG / TPR rows per workgroup, TPR invocations per row (TPR = WG: a workgroup per row;
// TPR = 1: an invocation per row, no workgroup memory, for CPU adapters). A single read pass keeps a running (max, sum of
// exp(v - max)) per invocation, merged pairwise, so nothing is exponentiated above 0: logits near
// 100 do not overflow, in f32 or f16 storage.
// Values at or below MASKED (-Infinity included) are clamped to it, so a masked entry contributes
// exp(MASKED - max) = 0 and no inf - inf ever reaches the arithmetic; a row with nothing above
// MASKED is fully masked and gets zeros rather than NaN. A NaN anywhere in a row (x or mask) makes
// the whole row NaN, as PyTorch: it is found from its bits (WGSL's max and comparisons may drop
// NaN) and carried as a negative sum, which no real sum of exponentials can be.
alias T = f32;

struct Params {
  rows: u32,       // rows of x
  row: u32,        // row length N
  mask_rows: u32,  // rows of the mask (its size / N); row r uses mask row r % mask_rows
}

override WG: u32 = 128u;
override TPR: u32 = WG;   // invocations per row, a power of two dividing WG
override HAS_MASK: bool = false;
const MASKED = -1e30;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read> mask: array<T>;  // x itself when there is no mask
@group(0) @binding(3) var<storage, read_write> y: array<T>;

// Running max m and s = sum of exp(v - m); s < 0: the row holds a NaN.
struct Acc { m: f32, s: f32 }

fn is_nan(v: f32) -> bool {
  return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

fn merge(a: Acc, b: Acc) -> Acc {
  let m = max(a.m, b.m);
  if (a.s < 0.0 || b.s < 0.0) { return Acc(m, -1.0); }
  return Acc(m, a.s * exp(a.m - m) + b.s * exp(b.m - m));
}

// One more value: rescale only when the max grows, so most values cost a single exp.
fn push(a: Acc, raw: f32) -> Acc {
  if (a.s < 0.0 || is_nan(raw)) { return Acc(a.m, -1.0); }
  let v = max(raw, MASKED);
  if (v > a.m) { return Acc(v, a.s * exp(a.m - v) + 1.0); }
  return Acc(a.m, a.s + exp(v - a.m));
}

var<workgroup> partial: array<Acc, WG>;

// x + mask, not yet clamped to MASKED (push and the output clamp it, after looking for NaN).
fn value(base: u32, mask_base: u32, j: u32) -> f32 {
  var v = f32(x[base + j]);
  if (HAS_MASK) { v += f32(mask[mask_base + j]); }
  return v;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let row = (wid.y * nwg.x + wid.x) * (WG / TPR) + lid / TPR;
  let slot = lid % TPR;
  // Rows past the end read nothing but still take part in the barriers.
  let n = select(0u, p.row, row < p.rows);
  let base = row * p.row;
  let mask_base = (row % p.mask_rows) * p.row;
  var total = Acc(MASKED, 0.0);
  for (var j = slot; j < n; j += TPR) { total = push(total, value(base, mask_base, j)); }
  if (TPR > 1u) {
    partial[lid] = total;
    workgroupBarrier();
    for (var stride = TPR / 2u; stride > 0u; stride >>= 1u) {
      if (slot < stride) { partial[lid] = merge(partial[lid], partial[lid + stride]); }
      workgroupBarrier();
    }
    total = partial[lid - slot];
  }
  if (total.s < 0.0) {
    var nan_bits = 0x7fc00000u;  // a var: WGSL refuses NaN as a constant expression
    for (var j = slot; j < n; j += TPR) { y[base + j] = T(bitcast<f32>(nan_bits)); }
    return;
  }
  let inv = select(1.0 / total.s, 0.0, total.m <= MASKED);
  for (var j = slot; j < n; j += TPR) {
    y[base + j] = T(exp(max(value(base, mask_base, j), MASKED) - total.m) * inv);
  }
}
