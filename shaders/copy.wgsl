// Strided copy: for every index of `shape` (row-major, 1 to 8 dims),
//   dst[dst_offset + idx·dst_strides] = src[src_offset + idx·src_strides].
// Transpose, slice and concat are all this with different strides and offsets. Pure data
// movement, so T may be any 32- or 16-bit type.
alias T = f32;

struct Params {
  count: u32,
  rank: u32,
  src_offset: u32,
  dst_offset: u32,
  shape: array<vec4u, 2>,
  src_strides: array<vec4u, 2>,
  dst_strides: array<vec4u, 2>,
}

override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<T>;
@group(0) @binding(2) var<storage, read_write> dst: array<T>;

// Each invocation copies RUN consecutive elements of the innermost dimension: the index
// decomposition (divisions over every dimension) is paid once per run, not per element.
override RUN: u32 = 16u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let inner = p.shape[(p.rank - 1u) / 4u][(p.rank - 1u) % 4u];
  let runs_per_row = (inner + RUN - 1u) / RUN;
  let run = (wid.y * nwg.x + wid.x) * WG + lid;
  let row = run / runs_per_row;
  let first = (run % runs_per_row) * RUN;
  if (row * inner >= p.count) { return; }
  var rest = row;
  var s = p.src_offset + first * p.src_strides[(p.rank - 1u) / 4u][(p.rank - 1u) % 4u];
  var d = p.dst_offset + first * p.dst_strides[(p.rank - 1u) / 4u][(p.rank - 1u) % 4u];
  for (var k = i32(p.rank) - 2; k >= 0; k--) {
    let n = p.shape[k / 4][k % 4];
    let idx = rest % n;
    rest /= n;
    s += idx * p.src_strides[k / 4][k % 4];
    d += idx * p.dst_strides[k / 4][k % 4];
  }
  let ss = p.src_strides[(p.rank - 1u) / 4u][(p.rank - 1u) % 4u];
  let ds = p.dst_strides[(p.rank - 1u) / 4u][(p.rank - 1u) % 4u];
  for (var j = 0u; j < min(RUN, inner - first); j++) {
    dst[d + j * ds] = src[s + j * ss];
  }
}

// pad's first pass: dst[i] = 0 for i < count (its second pass is `main`).
@compute @workgroup_size(WG)
fn zero(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * WG + lid;
  if (i < p.count) { dst[i] = T(0); }
}
