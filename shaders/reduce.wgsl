// Sum (or mean: the sum times p.scale = 1/n) of x over some of its axes. The TS module folds x's
// shape into "kept" dimensions (the output's) and "reduced" dimensions, merging neighbours of the
// same kind, each with its element strides in x. One invocation per (output element, chunk): it
// sums reduced elements [chunk·per, (chunk+1)·per) in order, so results are deterministic. With
// one chunk it writes y; with several it writes partial sums [out, chunks], which a second dispatch
// of the same shader reduces (kept = [out] with stride chunks, reduced = [chunks]).
alias T = f32;

struct Params {
  out_count: u32,   // output elements
  chunks: u32,      // chunks per output element
  per: u32,         // reduced elements per chunk
  red_count: u32,   // reduced elements per output element
  kept_rank: u32,
  red_rank: u32,    // at least 1 (a size-1 dimension when nothing is reduced)
  scale: f32,       // 1, or 1/n for a mean (applied where y is written)
  kept_shape: array<vec4u, 2>,
  kept_strides: array<vec4u, 2>,
  red_shape: array<vec4u, 2>,
  red_strides: array<vec4u, 2>,
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read_write> y: array<T>;

fn at(a: array<vec4u, 2>, k: u32) -> u32 { return a[k / 4u][k % 4u]; }

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * WG + lid;
  if (i >= p.out_count * p.chunks) { return; }
  let o = i / p.chunks;
  var base = 0u;
  var rest = o;
  for (var k = p.kept_rank; k > 0u; k--) {
    let n = at(p.kept_shape, k - 1u);
    base += (rest % n) * at(p.kept_strides, k - 1u);
    rest /= n;
  }
  // The innermost reduced dimension is walked in a tight loop; the others are decomposed once
  // per run along it.
  let inner = at(p.red_shape, p.red_rank - 1u);
  let step = at(p.red_strides, p.red_rank - 1u);
  var r = (i % p.chunks) * p.per;
  let end = min(r + p.per, p.red_count);
  var acc = 0.0;
  while (r < end) {
    var off = base;
    var outer = r / inner;
    for (var k = p.red_rank - 1u; k > 0u; k--) {
      let n = at(p.red_shape, k - 1u);
      off += (outer % n) * at(p.red_strides, k - 1u);
      outer /= n;
    }
    let j0 = r % inner;
    let j1 = min(inner, j0 + end - r);
    for (var j = j0; j < j1; j++) { acc += f32(x[off + j * step]); }
    r += j1 - j0;
  }
  y[i] = T(select(acc, acc * p.scale, p.chunks == 1u));
}
