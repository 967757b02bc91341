// Row gather: out[i, :] = table[indices[i], :]. Token embeddings and pooling at given positions.
// An index outside [0, rows) yields a zero row rather than reading out of bounds.
alias T = f32;

struct Params {
  count: u32,   // elements of out
  width: u32,   // row length
  rows: u32,    // rows in table
}

override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> table: array<T>;
@group(0) @binding(2) var<storage, read> indices: array<i32>;
@group(0) @binding(3) var<storage, read_write> out: array<T>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * WG + lid;
  if (i >= p.count) { return; }
  let row = indices[i / p.width];
  if (row < 0 || u32(row) >= p.rows) {
    out[i] = T(0);
    return;
  }
  out[i] = table[u32(row) * p.width + i % p.width];
}
