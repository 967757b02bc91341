// Peak-rate microbenchmarks for the bench harness (not a kernel): f32 FMA throughput and copy
// bandwidth. Entry points: fma_peak, copy_peak.

struct Params {
  iterations: u32,  // fma_peak: loop trips
  count: u32,       // copy_peak: vec4 elements
  mul: f32,         // fma_peak: a = a * mul + add (from the uniform, so nothing folds)
  add: f32,
}

override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4f>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4f>;

// Eight independent chains of dependent vec4 FMAs per invocation: enough independent work to hide
// FMA latency, with one store per 8 * 4 * iterations FMAs. mul < 1 makes every chain converge to
// add / (1 - mul): no overflow, no denormals (which are slow on CPUs).
@compute @workgroup_size(WG)
fn fma_peak(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
            @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * WG + lid;
  let x = f32(i & 1023u) * 1e-3;
  let m = vec4f(p.mul);
  let c = vec4f(p.add);
  var a0 = vec4f(x, x + 0.1, x + 0.2, x + 0.3);
  var a1 = a0 + 1.0;
  var a2 = a0 + 2.0;
  var a3 = a0 + 3.0;
  var a4 = a0 + 4.0;
  var a5 = a0 + 5.0;
  var a6 = a0 + 6.0;
  var a7 = a0 + 7.0;
  for (var k = 0u; k < p.iterations; k++) {
    a0 = fma(a0, m, c);
    a1 = fma(a1, m, c);
    a2 = fma(a2, m, c);
    a3 = fma(a3, m, c);
    a4 = fma(a4, m, c);
    a5 = fma(a5, m, c);
    a6 = fma(a6, m, c);
    a7 = fma(a7, m, c);
  }
  dst[i] = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7));
}

override PER: u32 = 1u;

// PER vec4s per invocation, strided by the invocation count so that neighbours touch neighbours.
@compute @workgroup_size(WG)
fn copy_peak(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
             @builtin(local_invocation_index) lid: u32) {
  let threads = nwg.x * nwg.y * WG;
  var i = (wid.y * nwg.x + wid.x) * WG + lid;
  for (var k = 0u; k < PER; k++) {
    if (i < p.count) {
      dst[i] = src[i];
    }
    i += threads;
  }
}
