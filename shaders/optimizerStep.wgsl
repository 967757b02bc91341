// Optimizer updates in place, with PyTorch's formulas (torch.optim sgd.py / adam.py, single-tensor
// path, maximize and amsgrad off), one invocation per element of one parameter tensor. `step`
// holds the number of steps this parameter has taken (PyTorch's state['step']); the update reads
// it and a separate one-invocation dispatch (`count`) increments it afterwards, so the whole state
// stays on the GPU and a plan can replay the update every run.
//   sgd:  d = g + wd·p;  buf = d on the first step, else momentum·buf + (1 − dampening)·d;
//         d = d + momentum·buf (nesterov) or buf;  p -= lr·d
//   adam: t = step + 1;  AdamW: p ·= 1 − lr·wd, else g += wd·p;  m = β1·m + (1 − β1)·g;
//         v = β2·v + (1 − β2)·g²;  p -= lr / (1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + eps)
// 1 − βᵗ comes from ln β (computed in float64 on the host): −expm1(t ln β), so β2 = 0.999 loses
// no precision to its f32 rounding.

struct Params {
  n: u32,          // elements of the parameter
  lr: f32,
  wd: f32,         // weight decay
  a: f32,          // sgd: momentum      adam: β1
  b: f32,          // sgd: 1 − dampening adam: 1 − β1
  c: f32,          //                    adam: β2
  d: f32,          //                    adam: 1 − β2
  eps: f32,
  ln_b1: f32,      // adam: ln β1
  ln_b2: f32,      // adam: ln β2
  flag: u32,       // sgd: nesterov      adam: decoupled weight decay (AdamW)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> step: array<i32>;
@group(0) @binding(4) var<storage, read_write> s1: array<f32>;   // sgd: momentum buffer  adam: m
@group(0) @binding(5) var<storage, read_write> s2: array<f32>;   // adam: v

override WG: u32 = 64u;

fn index(wid: vec3u, nwg: vec3u, lid: u32) -> u32 { return (wid.y * nwg.x + wid.x) * WG + lid; }

@compute @workgroup_size(WG)
fn sgd_plain(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = index(wid, nwg, lid);
  if (i >= p.n) { return; }
  param[i] -= p.lr * (grad[i] + p.wd * param[i]);
}

@compute @workgroup_size(WG)
fn sgd_momentum(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = index(wid, nwg, lid);
  if (i >= p.n) { return; }
  let d = grad[i] + p.wd * param[i];
  let buf = select(p.a * s1[i] + p.b * d, d, step[0] == 0);
  s1[i] = buf;
  param[i] -= p.lr * select(buf, d + p.a * buf, p.flag != 0u);
}

// 1 − βᵗ from ln β: −expm1(t ln β), by its series where exp(y) − 1 would cancel.
fn one_minus_pow(ln_beta: f32, t: f32) -> f32 {
  let y = t * ln_beta;
  if (abs(y) < 1e-2) { return -y * (1.0 + y * (0.5 + y * (1.0 / 6.0 + y / 24.0))); }
  return 1.0 - exp(y);
}

@compute @workgroup_size(WG)
fn adam(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = index(wid, nwg, lid);
  if (i >= p.n) { return; }
  let t = f32(step[0] + 1);
  var w = param[i];
  var g = grad[i];
  if (p.flag != 0u) { w *= 1.0 - p.lr * p.wd; } else { g += p.wd * w; }
  let m = p.a * s1[i] + p.b * g;
  let v = p.c * s2[i] + p.d * g * g;
  s1[i] = m;
  s2[i] = v;
  let denom = sqrt(v) / sqrt(one_minus_pow(p.ln_b2, t)) + p.eps;
  param[i] = w - p.lr / one_minus_pow(p.ln_b1, t) * m / denom;
}

@group(0) @binding(1) var<storage, read_write> counter: array<i32>;

@compute @workgroup_size(1)
fn count() { counter[0] += 1; }
