// Elementwise ops over a flat tensor, and row-wise L2 normalisation. OP picks the op at pipeline
// creation (the switch folds away): 0 add, 1 mul, 2 scale, 3 gelu, 4 quick_gelu, 5 cast.
// Binary ops broadcast numpy-style. The common case (x has the output's shape and b's shape is a
// suffix of it, as a bias add) indexes b with i % b_count; BROADCAST = true walks the output
// index through per-dimension strides (0 where an input is broadcast) for everything else.
// U is the output's storage type: T except for cast.
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

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read> b: array<T>;
@group(0) @binding(3) var<storage, read_write> y: array<U>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * WG + lid;
  if (i >= p.count) { return; }
  var xi = i;
  var bi = i % p.b_count;
  if (BROADCAST) {
    xi = 0u;
    bi = 0u;
    var rest = i;
    for (var d = p.rank; d > 0u; d--) {
      let k = d - 1u;
      let n = p.shape[k / 4u][k % 4u];
      let c = rest % n;
      rest /= n;
      xi += c * p.x_strides[k / 4u][k % 4u];
      bi += c * p.b_strides[k / 4u][k % 4u];
    }
  }
  let v = f32(x[xi]);
  var r: f32;
  switch OP {
    case 0u: { r = v + f32(b[bi]); }
    case 1u: { r = v * f32(b[bi]); }
    case 2u: { r = v * p.scalar; }
    case 3u: { r = activate(v, 1u); }
    case 4u: { r = activate(v, 2u); }
    default: { r = v; }
  }
  y[i] = U(r);
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
    y[base + j] = U(f32(x[base + j]) * inv);
  }
}
