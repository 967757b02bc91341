// Strided copy: for every index of `shape` (row-major, up to 8 dims),
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

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * WG + lid;
  if (i >= p.count) { return; }
  var rest = i;
  var s = p.src_offset;
  var d = p.dst_offset;
  for (var k = i32(p.rank) - 1; k >= 0; k--) {
    let n = p.shape[k / 4][k % 4];
    let idx = rest % n;
    rest /= n;
    s += idx * p.src_strides[k / 4][k % 4];
    d += idx * p.dst_strides[k / 4][k % 4];
  }
  dst[d] = src[s];
}
