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

// ---- Backward (gatherBackward): d table[rows, width] from dy [count / width rows, width] ----
// WGSL has no float atomics, so repeated indices cannot add into one row concurrently. Instead,
// deterministically: (1) link: for each index position i (of N), whether it is the first position
// with its index, and the next position with the same index (-1 at the last; out-of-range indices
// are never first); (2) zero: the whole gradient table; (3) accumulate: the first position of each
// distinct index walks its chain, summing dy in position order, and writes that row once.
// Work: N^2 index comparisons at most, plus one add per element of dy.
@group(0) @binding(1) var<storage, read> dy: array<T>;
@group(0) @binding(3) var<storage, read_write> grad: array<T>;
// [N]: next position with the same index or -1; [N + i]: 1 where position i is the first.
@group(0) @binding(4) var<storage, read_write> chain: array<i32>;

fn flat(wid: vec3u, nwg: vec3u, lid: u32) -> u32 { return (wid.y * nwg.x + wid.x) * WG + lid; }

// p.count here is N, the number of index positions.
@compute @workgroup_size(WG)
fn link(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let i = flat(wid, nwg, lid);
  let n = p.count;
  if (i >= n) { return; }
  let row = indices[i];
  var first = row >= 0 && u32(row) < p.rows;
  for (var j = 0u; j < i && first; j++) { first = indices[j] != row; }
  var next = -1;
  for (var j = i + 1u; j < n; j++) {
    if (indices[j] == row) {
      next = i32(j);
      break;
    }
  }
  chain[i] = next;
  chain[n + i] = select(0, 1, first);
}

// p.count here is rows x width of the gradient table, zeroed 16 elements per invocation (a
// vocabulary-sized table is tens of millions of elements).
@compute @workgroup_size(WG)
fn zero(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let first = flat(wid, nwg, lid) * 16u;
  for (var i = first; i < min(first + 16u, p.count); i++) { grad[i] = T(0); }
}

// p.count here is N x width: one invocation per (position, column).
@compute @workgroup_size(WG)
fn accumulate(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
              @builtin(local_invocation_index) lid: u32) {
  let e = flat(wid, nwg, lid);
  if (e >= p.count) { return; }
  let i = e / p.width;
  let col = e % p.width;
  let n = p.count / p.width;
  if (chain[n + i] == 0) { return; }
  var s = 0.0;
  for (var k = i32(i); k >= 0; k = chain[k]) { s += f32(dy[u32(k) * p.width + col]); }
  grad[u32(indices[i]) * p.width + col] = T(s);
}
