// Mean-field inference of a fully connected CRF with Potts compatibility and Gaussian pairwise
// terms filtered through permutohedral lattices, as Krähenbühl's densecrf (DenseCRF::inference):
//   init    Q = softmax(-unary) per point
//   then, every iteration, for each pairwise term (lattice):
//   splat   values[v] = Σ weight · norm[p] · Q[p] over the lattice entries of vertex v (a gather:
//           entries are grouped by vertex, so no float atomics are needed; in two passes, pieces
//           then vertices, where a vertex has many entries)
//   blur    one lattice axis: dst[v] = src[v] + (src[n1] + src[n2]) / 2, a missing neighbour is 0
//   slice   energy[p] = (first term: -unary[p], else energy[p]) + w · norm[p] · Σ weight · values
//           [vertex] · alpha over p's d+1 vertices; after the last term Q[p] = softmax(energy[p])
// Labels travel in chunks of four: Q, energy and lattice values are vec4 arrays [items, C] with
// C = ceil(L / 4), lanes past L zero, so one load moves four labels. unary is [N, L] as given; the
// marginals are written to out [N, L] by init and by the final iteration's last slice.

struct Params {
  points: u32,    // N
  labels: u32,    // L
  chunks: u32,    // C = ceil(L / 4)
  corners: u32,   // d + 1 vertices per point
  vertices: u32,  // M of this lattice
  pieces: u32,    // P splat pieces of this lattice
  axis: u32,      // blur: which of the d + 1 axes
  first: u32,     // slice: 1 for the first term (start from -unary)
  last: u32,      // slice: 1 for the last term (take the softmax into Q)
  output: u32,    // init / slice: 1 to also write the marginals to out [N, L]
  weight: f32,    // slice: the term's Potts weight
  alpha: f32,     // slice: densecrf's 1 / (1 + 2^-d)
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;

fn flat_id(wid: vec3u, nwg: vec3u, lid: u32) -> u32 {
  return (wid.y * nwg.x + wid.x) * WG + lid;
}

// Lanes of chunk c that hold labels.
fn valid(c: u32) -> vec4<bool> {
  return vec4u(4u * c) + vec4u(0u, 1u, 2u, 3u) < vec4u(p.labels);
}

// ---- init ----
@group(0) @binding(1) var<storage, read> unary_in: array<f32>;      // [N, L]
@group(0) @binding(2) var<storage, read_write> q_init: array<vec4f>; // [N, C]
@group(0) @binding(3) var<storage, read_write> out_init: array<f32>; // [N, L]

fn unary_chunk(i: u32, c: u32) -> vec4f {
  var u = vec4f(0.0);
  for (var k = 0u; k < 4u; k++) {
    let l = 4u * c + k;
    if (l < p.labels) { u[k] = unary_in[i * p.labels + l]; }
  }
  return u;
}

@compute @workgroup_size(WG)
fn init(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let i = flat_id(wid, nwg, lid);
  if (i >= p.points) { return; }
  var m = -unary_in[i * p.labels];
  for (var l = 1u; l < p.labels; l++) { m = max(m, -unary_in[i * p.labels + l]); }
  var s = 0.0;
  for (var c = 0u; c < p.chunks; c++) {
    s += dot(select(vec4f(0.0), exp(-unary_chunk(i, c) - m), valid(c)), vec4f(1.0));
  }
  for (var c = 0u; c < p.chunks; c++) {
    let q = select(vec4f(0.0), exp(-unary_chunk(i, c) - m) / s, valid(c));
    q_init[i * p.chunks + c] = q;
    for (var k = 0u; k < 4u; k++) {
      if (4u * c + k < p.labels) { out_init[i * p.labels + 4u * c + k] = q[k]; }
    }
  }
}

// ---- splat ----
// A vertex in a flat region of the image gathers thousands of entries, so the entries are cut into
// pieces of at most a few hundred (never spanning two vertices): `splat` sums each piece, then
// `gather` sums each vertex's pieces. Where no vertex needs more than one piece, `splat` writes
// the vertex sums directly and `gather` is skipped.
@group(0) @binding(1) var<storage, read> piece_start: array<u32>;    // [P + 1] entry ranges
@group(0) @binding(2) var<storage, read> splat_points: array<u32>;   // [N (d+1)] point of each entry
@group(0) @binding(3) var<storage, read> splat_weights: array<f32>;  // [N (d+1)] its barycentric weight
@group(0) @binding(4) var<storage, read> splat_norm: array<f32>;     // [N]
@group(0) @binding(5) var<storage, read> q_splat: array<vec4f>;      // [N, C]
@group(0) @binding(6) var<storage, read_write> piece_sums: array<vec4f>; // [P, C]

@compute @workgroup_size(WG)
fn splat(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
         @builtin(local_invocation_index) lid: u32) {
  let piece = flat_id(wid, nwg, lid);
  if (piece >= p.pieces) { return; }
  let begin = piece_start[piece];
  let end = piece_start[piece + 1u];
  for (var c = 0u; c < p.chunks; c++) {
    var s = vec4f(0.0);
    for (var e = begin; e < end; e++) {
      let point = splat_points[e];
      s += splat_weights[e] * (splat_norm[point] * q_splat[point * p.chunks + c]);
    }
    piece_sums[piece * p.chunks + c] = s;
  }
}

@group(0) @binding(1) var<storage, read> vertex_pieces: array<u32>;      // [M + 1] piece ranges
@group(0) @binding(2) var<storage, read> gather_sums: array<vec4f>;      // [P, C]
@group(0) @binding(3) var<storage, read_write> gather_values: array<vec4f>; // [M, C]

@compute @workgroup_size(WG)
fn gather(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
          @builtin(local_invocation_index) lid: u32) {
  let v = flat_id(wid, nwg, lid);
  if (v >= p.vertices) { return; }
  let begin = vertex_pieces[v];
  let end = vertex_pieces[v + 1u];
  for (var c = 0u; c < p.chunks; c++) {
    var s = vec4f(0.0);
    for (var k = begin; k < end; k++) { s += gather_sums[k * p.chunks + c]; }
    gather_values[v * p.chunks + c] = s;
  }
}

// ---- blur ----
@group(0) @binding(1) var<storage, read> blur_neighbors: array<vec2i>; // [d+1, M]
@group(0) @binding(2) var<storage, read> blur_src: array<vec4f>;       // [M, C]
@group(0) @binding(3) var<storage, read_write> blur_dst: array<vec4f>; // [M, C]

@compute @workgroup_size(WG)
fn blur(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let v = flat_id(wid, nwg, lid);
  if (v >= p.vertices) { return; }
  let nb = blur_neighbors[p.axis * p.vertices + v];
  for (var c = 0u; c < p.chunks; c++) {
    var a = vec4f(0.0);
    var b = vec4f(0.0);
    if (nb.x >= 0) { a = blur_src[u32(nb.x) * p.chunks + c]; }
    if (nb.y >= 0) { b = blur_src[u32(nb.y) * p.chunks + c]; }
    blur_dst[v * p.chunks + c] = blur_src[v * p.chunks + c] + 0.5 * (a + b);
  }
}

// ---- slice ----
@group(0) @binding(1) var<storage, read> slice_offsets: array<i32>;   // [N, d+1]
@group(0) @binding(2) var<storage, read> slice_weights: array<f32>;   // [N, d+1]
@group(0) @binding(3) var<storage, read> slice_values: array<vec4f>;  // [M, C]
@group(0) @binding(4) var<storage, read> slice_norm: array<f32>;      // [N]
@group(0) @binding(5) var<storage, read> slice_unary: array<f32>;     // [N, L]
@group(0) @binding(6) var<storage, read_write> energy: array<vec4f>;  // [N, C]
@group(0) @binding(7) var<storage, read_write> q_out: array<vec4f>;   // [N, C]
@group(0) @binding(8) var<storage, read_write> out_slice: array<f32>; // [N, L]

@compute @workgroup_size(WG)
fn slice(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
         @builtin(local_invocation_index) lid: u32) {
  let i = flat_id(wid, nwg, lid);
  if (i >= p.points) { return; }
  let corner0 = i * p.corners;
  let norm = slice_norm[i];
  var m = -3.4e38;
  for (var c = 0u; c < p.chunks; c++) {
    var s = vec4f(0.0);
    for (var j = 0u; j < p.corners; j++) {
      s += slice_weights[corner0 + j] * slice_values[u32(slice_offsets[corner0 + j]) * p.chunks + c] * p.alpha;
    }
    var e = energy[i * p.chunks + c];
    if (p.first == 1u) {
      for (var k = 0u; k < 4u; k++) {
        let l = 4u * c + k;
        e[k] = select(0.0, -slice_unary[i * p.labels + l], l < p.labels);
      }
    }
    e += p.weight * (s * norm);
    energy[i * p.chunks + c] = e;
    let ok = valid(c);
    m = max(m, max(max(select(m, e.x, ok.x), select(m, e.y, ok.y)), max(select(m, e.z, ok.z), select(m, e.w, ok.w))));
  }
  if (p.last == 0u) { return; }
  var total = 0.0;
  for (var c = 0u; c < p.chunks; c++) {
    total += dot(select(vec4f(0.0), exp(energy[i * p.chunks + c] - m), valid(c)), vec4f(1.0));
  }
  for (var c = 0u; c < p.chunks; c++) {
    let q = select(vec4f(0.0), exp(energy[i * p.chunks + c] - m) / total, valid(c));
    q_out[i * p.chunks + c] = q;
    if (p.output == 1u) {
      for (var k = 0u; k < 4u; k++) {
        if (4u * c + k < p.labels) { out_slice[i * p.labels + 4u * c + k] = q[k]; }
      }
    }
  }
}
