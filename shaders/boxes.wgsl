// Small box kernels for detection post-processing, f32 only (pixel coordinates need the bits).
// A box is 4 consecutive floats: (x1, y1, x2, y2) or (cx, cy, w, h). Every entry point writes `y`
// (binding 1) and reads `a` and `b` (bindings 2, 3; unary ops bind their input to both). Arrays
// are scalar because [N, M] and [B, 2] buffers need not be multiples of 16 bytes.
//   convert   OP 0: cxcywh → xyxy, 1: xyxy → cxcywh, 2: sigmoid(a + b[i % n]) (OWL-ViT box
//             decoding, b the box bias), 3: a · (w, h, w, h) of its image (b holds (h, w) pairs,
//             n boxes per image)
//   pairwise  OP 0: IoU, 1: generalized IoU of a[i] and b[j]; y is [N, M] with M = n
//   box_bias  OWL-ViT's box bias for a g×g patch grid, y is [g·g, 4]

struct Params {
  count: u32,  // invocations: boxes, pairs or patches
  n: u32,      // boxes per image (scale), bias boxes (decode), M (pairwise), g (box_bias)
}

override OP: u32 = 0u;
override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;

fn box_a(i: u32) -> vec4f {
  return vec4f(a[4u * i], a[4u * i + 1u], a[4u * i + 2u], a[4u * i + 3u]);
}

fn box_b(i: u32) -> vec4f {
  return vec4f(b[4u * i], b[4u * i + 1u], b[4u * i + 2u], b[4u * i + 3u]);
}

fn store_box(i: u32, v: vec4f) {
  y[4u * i] = v.x;
  y[4u * i + 1u] = v.y;
  y[4u * i + 2u] = v.z;
  y[4u * i + 3u] = v.w;
}

fn flat_index(wid: vec3u, nwg: vec3u, lid: u32) -> u32 {
  return (wid.y * nwg.x + wid.x) * WG + lid;
}

@compute @workgroup_size(WG)
fn convert(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
           @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  if (i >= p.count) { return; }
  let v = box_a(i);
  switch OP {
    case 0u: { store_box(i, vec4f(v.xy - 0.5 * v.zw, v.xy + 0.5 * v.zw)); }
    case 1u: { store_box(i, vec4f(0.5 * (v.xy + v.zw), v.zw - v.xy)); }
    case 2u: { store_box(i, 1.0 / (1.0 + exp(-(v + box_b(i % p.n))))); }
    default: {
      let k = i / p.n;  // image k's (h, w) is b[2k], b[2k + 1]
      let hw = vec2f(b[2u * k], b[2u * k + 1u]);
      store_box(i, v * hw.yxyx);
    }
  }
}

fn area(v: vec4f) -> f32 {
  return (v.z - v.x) * (v.w - v.y);
}

@compute @workgroup_size(WG)
fn pairwise(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
            @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  if (i >= p.count) { return; }
  let u = box_a(i / p.n);
  let v = box_b(i % p.n);
  let wh = max(min(u.zw, v.zw) - max(u.xy, v.xy), vec2f(0.0));
  let inter = wh.x * wh.y;
  let uni = area(u) + area(v) - inter;
  // 0/0 (two degenerate boxes) is 0, where torchvision gives NaN.
  var r = select(0.0, inter / uni, uni != 0.0);
  if (OP == 1u) {
    let hull = max(max(u.zw, v.zw) - min(u.xy, v.xy), vec2f(0.0));
    let enclosing = hull.x * hull.y;
    r -= select(0.0, (enclosing - uni) / enclosing, enclosing != 0.0);
  }
  y[i] = r;
}

// Inverse sigmoid as HF computes it in f32: log(t + 1e-4) - log1p(-t + 1e-4). The argument of
// log1p is rounded to f32 first, and 1 + u is exact for u in [-1, -0.5] (so log is log1p there).
fn inverse_sigmoid(t: f32) -> f32 {
  let u = -t + 1e-4;
  return log(t + 1e-4) - log(1.0 + u);
}

@compute @workgroup_size(WG)
fn box_bias(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
            @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  if (i >= p.count) { return; }
  let g = f32(p.n);
  // Patch i = row · g + col; its bottom-right corner ((col + 1)/g, (row + 1)/g) is the center.
  let corner = vec2f(f32(i % p.n + 1u), f32(i / p.n + 1u)) / g;
  let size = inverse_sigmoid(1.0 / g);
  store_box(i, vec4f(inverse_sigmoid(corner.x), inverse_sigmoid(corner.y), size, size));
}
