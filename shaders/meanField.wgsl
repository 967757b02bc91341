// Mean-field inference of a fully connected CRF with Potts compatibility and Gaussian pairwise
// terms filtered through permutohedral lattices, as Krähenbühl's densecrf (DenseCRF::inference):
//   init    Q = softmax(-unary) per point
//   then, every iteration, for each pairwise term (lattice):
//   splat   values[v] = Σ weight · norm[p] · Q[p] over the lattice entries of vertex v (a gather:
//           entries are grouped by vertex, so no float atomics are needed)
//   blur    one lattice axis: dst[v] = src[v] + (src[n1] + src[n2]) / 2, a missing neighbour is 0
//   slice   energy[p] = (first term: -unary[p], else energy[p]) + w · norm[p] · alpha · Σ weight ·
//           values[vertex] over p's d+1 vertices; after the last term Q[p] = softmax(energy[p])
// Q, unary and energy are [N, L]; lattice values [M, L]; every loop over labels stays in one
// invocation, so a point's or vertex's L values are read together.

struct Params {
  points: u32,    // N
  labels: u32,    // L
  corners: u32,   // d + 1 vertices per point
  vertices: u32,  // M of this lattice
  axis: u32,      // blur: which of the d + 1 axes
  first: u32,     // slice: 1 for the first term (start from -unary)
  last: u32,      // slice: 1 for the last term (write Q)
  weight: f32,    // slice: the term's Potts weight
  alpha: f32,     // slice: densecrf's 1 / (1 + 2^-d)
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;

fn flat_id(wid: vec3u, nwg: vec3u, lid: u32) -> u32 {
  return (wid.y * nwg.x + wid.x) * WG + lid;
}

// ---- init ----
@group(0) @binding(1) var<storage, read> unary_in: array<f32>;
@group(0) @binding(2) var<storage, read_write> q_init: array<f32>;

@compute @workgroup_size(WG)
fn init(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let i = flat_id(wid, nwg, lid);
  if (i >= p.points) { return; }
  let base = i * p.labels;
  var m = -unary_in[base];
  for (var l = 1u; l < p.labels; l++) { m = max(m, -unary_in[base + l]); }
  var s = 0.0;
  for (var l = 0u; l < p.labels; l++) { s += exp(-unary_in[base + l] - m); }
  for (var l = 0u; l < p.labels; l++) { q_init[base + l] = exp(-unary_in[base + l] - m) / s; }
}

// ---- splat ----
@group(0) @binding(1) var<storage, read> splat_start: array<u32>;    // [M + 1]
@group(0) @binding(2) var<storage, read> splat_entries: array<u32>;  // [N (d+1)] flat point-corner
@group(0) @binding(3) var<storage, read> splat_weights: array<f32>;  // [N (d+1)] barycentric
@group(0) @binding(4) var<storage, read> splat_norm: array<f32>;     // [N]
@group(0) @binding(5) var<storage, read> q_splat: array<f32>;        // [N, L]
@group(0) @binding(6) var<storage, read_write> splat_values: array<f32>; // [M, L]

@compute @workgroup_size(WG)
fn splat(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
         @builtin(local_invocation_index) lid: u32) {
  let v = flat_id(wid, nwg, lid);
  if (v >= p.vertices) { return; }
  let begin = splat_start[v];
  let end = splat_start[v + 1u];
  for (var l = 0u; l < p.labels; l++) {
    var s = 0.0;
    for (var e = begin; e < end; e++) {
      let flat = splat_entries[e];
      let point = flat / p.corners;
      s += splat_weights[flat] * (splat_norm[point] * q_splat[point * p.labels + l]);
    }
    splat_values[v * p.labels + l] = s;
  }
}

// ---- blur ----
@group(0) @binding(1) var<storage, read> blur_neighbors: array<vec2i>; // [d+1, M]
@group(0) @binding(2) var<storage, read> blur_src: array<f32>;         // [M, L]
@group(0) @binding(3) var<storage, read_write> blur_dst: array<f32>;   // [M, L]

@compute @workgroup_size(WG)
fn blur(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let v = flat_id(wid, nwg, lid);
  if (v >= p.vertices) { return; }
  let nb = blur_neighbors[p.axis * p.vertices + v];
  for (var l = 0u; l < p.labels; l++) {
    var a = 0.0;
    var b = 0.0;
    if (nb.x >= 0) { a = blur_src[u32(nb.x) * p.labels + l]; }
    if (nb.y >= 0) { b = blur_src[u32(nb.y) * p.labels + l]; }
    blur_dst[v * p.labels + l] = blur_src[v * p.labels + l] + 0.5 * (a + b);
  }
}

// ---- slice ----
@group(0) @binding(1) var<storage, read> slice_offsets: array<i32>;  // [N, d+1]
@group(0) @binding(2) var<storage, read> slice_weights: array<f32>;  // [N, d+1]
@group(0) @binding(3) var<storage, read> slice_values: array<f32>;   // [M, L]
@group(0) @binding(4) var<storage, read> slice_norm: array<f32>;     // [N]
@group(0) @binding(5) var<storage, read> slice_unary: array<f32>;    // [N, L]
@group(0) @binding(6) var<storage, read_write> energy: array<f32>;   // [N, L]
@group(0) @binding(7) var<storage, read_write> q_out: array<f32>;    // [N, L]

@compute @workgroup_size(WG)
fn slice(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
         @builtin(local_invocation_index) lid: u32) {
  let i = flat_id(wid, nwg, lid);
  if (i >= p.points) { return; }
  let base = i * p.labels;
  let corner0 = i * p.corners;
  let norm = slice_norm[i];
  for (var l = 0u; l < p.labels; l++) {
    var s = 0.0;
    for (var j = 0u; j < p.corners; j++) {
      s += slice_weights[corner0 + j] * slice_values[u32(slice_offsets[corner0 + j]) * p.labels + l] * p.alpha;
    }
    var e = energy[base + l];
    if (p.first == 1u) { e = -slice_unary[base + l]; }
    energy[base + l] = e + p.weight * (s * norm);
  }
  if (p.last == 1u) {
    var m = energy[base];
    for (var l = 1u; l < p.labels; l++) { m = max(m, energy[base + l]); }
    var total = 0.0;
    for (var l = 0u; l < p.labels; l++) { total += exp(energy[base + l] - m); }
    for (var l = 0u; l < p.labels; l++) { q_out[base + l] = exp(energy[base + l] - m) / total; }
  }
}
