// The bias gradient of a matmul: dbias[n] = sum over rows m of dz[m, n], dz the gradient at the
// pre-activation ([rows, N], every batch's rows together). One invocation per column walks all
// rows in order: no workgroup memory or atomics, and the sum's rounding does not depend on the
// adapter. (The a and b gradients are plain matmuls: see matmulBackward.ts.)
alias T = f32;

struct Params {
  rows: u32,
  N: u32,
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dz: array<T>;
@group(0) @binding(2) var<storage, read_write> dbias: array<T>;

@compute @workgroup_size(WG)
fn bias_grad(@builtin(global_invocation_id) gid: vec3u) {
  let n = gid.x;
  if (n >= p.N) { return; }
  var s = 0.0;
  for (var m = 0u; m < p.rows; m++) { s += f32(dz[m * p.N + n]); }
  dbias[n] = T(s);
}
