// Softmax backward over the last dimension: dx = y * (dy - sum_j y_j dy_j), from the forward's
// output y and the upstream gradient dy. Masked entries (y = 0, -inf logits included) get 0.
// Rows are laid out as the forward's: WG / TPR rows per workgroup, TPR invocations per row (TPR = WG:
// a workgroup per row, reduced through workgroup memory; TPR = 1: an invocation per row, no
// workgroup memory or barriers, for CPU adapters).
alias T = f32;

struct Params {
  rows: u32,  // rows of y
  row: u32,   // row length N
}

override WG: u32 = 128u;
override TPR: u32 = WG;   // invocations per row, a power of two dividing WG

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> y: array<T>;
@group(0) @binding(2) var<storage, read> dy: array<T>;
@group(0) @binding(3) var<storage, read_write> dx: array<T>;

var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let row = (wid.y * nwg.x + wid.x) * (WG / TPR) + lid / TPR;
  let slot = lid % TPR;
  // Rows past the end read nothing but still take part in the barriers.
  let n = select(0u, p.row, row < p.rows);
  let base = row * p.row;
  var s = 0.0;
  for (var j = slot; j < n; j += TPR) { s += f32(y[base + j]) * f32(dy[base + j]); }
  if (TPR > 1u) {
    partial[lid] = s;
    workgroupBarrier();
    for (var stride = TPR / 2u; stride > 0u; stride >>= 1u) {
      if (slot < stride) { partial[lid] += partial[lid + stride]; }
      workgroupBarrier();
    }
    s = partial[lid - slot];
  }
  for (var j = slot; j < n; j += TPR) {
    dx[base + j] = T(f32(y[base + j]) * (f32(dy[base + j]) - s));
  }
}
