// Elementwise ops over a flat tensor, and row-wise L2 normalisation. OP picks the op at pipeline
// creation (the switch folds away): 0 add, 1 mul, 2 scale, 3 gelu, 4 quick_gelu.
// Binary ops broadcast b over a's leading dimensions: b's shape is a suffix of a's (bias add).
alias T = f32;

struct Params {
  count: u32,      // elements of x and y
  b_count: u32,    // elements of b (divides count)
  row: u32,        // row length for l2norm
  scalar: f32,     // scale factor, or eps for l2norm
}

override OP: u32 = 0u;
override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read> b: array<T>;
@group(0) @binding(3) var<storage, read_write> y: array<T>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * WG + lid;
  if (i >= p.count) { return; }
  let v = f32(x[i]);
  var r: f32;
  switch OP {
    case 0u: { r = v + f32(b[i % p.b_count]); }
    case 1u: { r = v * f32(b[i % p.b_count]); }
    case 2u: { r = v * p.scalar; }
    case 3u: { r = activate(v, 1u); }
    default: { r = activate(v, 2u); }
  }
  y[i] = T(r);
}

var<workgroup> partial: array<f32, WG>;

// One workgroup per row: y = x / (||x|| + eps).
@compute @workgroup_size(WG)
fn l2norm(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
          @builtin(local_invocation_index) lid: u32) {
  let rowIndex = wid.y * nwg.x + wid.x;
  let base = rowIndex * p.row;
  if (base >= p.count) { return; }
  var s = 0.0;
  for (var j = lid; j < p.row; j += WG) {
    let v = f32(x[base + j]);
    s += v * v;
  }
  partial[lid] = s;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
    if (lid < stride) { partial[lid] += partial[lid + stride]; }
    workgroupBarrier();
  }
  let inv = 1.0 / (sqrt(partial[0]) + p.scalar);
  for (var j = lid; j < p.row; j += WG) {
    y[base + j] = T(f32(x[base + j]) * inv);
  }
}
