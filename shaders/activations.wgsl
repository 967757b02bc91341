// Activation functions shared by kernels that fuse them (elementwise, matmul epilogues).
// Prepended to a kernel's source by its TypeScript module; math is in f32 whatever the storage type.

// erfc(z) for z >= 0 with relative error < 1.2e-7 (Numerical Recipes' Chebyshev fit). Working
// with erfc rather than 1 + erf keeps GELU's negative tail accurate instead of cancelling to 0.
fn erfc_nonneg(z: f32) -> f32 {
  let t = 1.0 / (1.0 + 0.5 * z);
  return t * exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
         t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
         t * (-0.82215223 + t * 0.17087277)))))))));
}

// Exact GELU, 0.5 x (1 + erf(x / sqrt 2)), as PyTorch's default nn.GELU.
fn gelu_f32(x: f32) -> f32 {
  let r = erfc_nonneg(abs(x) * 0.70710678118654752);
  return 0.5 * x * select(r, 2.0 - r, x >= 0.0);
}

// CLIP's QuickGELU: x * sigmoid(1.702 x).
fn quick_gelu_f32(x: f32) -> f32 {
  return x / (1.0 + exp(-1.702 * x));
}

// ACTIVATION: 0 none, 1 gelu (erf), 2 quick_gelu.
fn activate(x: f32, activation: u32) -> f32 {
  switch activation {
    case 1u: { return gelu_f32(x); }
    case 2u: { return quick_gelu_f32(x); }
    default: { return x; }
  }
}

// d activation / dx, for backward passes (ACTIVATION codes as `activate`).
fn activate_grad(x: f32, activation: u32) -> f32 {
  switch activation {
    case 1u: {
      // Phi(x) + x phi(x), Phi from erfc as in gelu_f32.
      let r = erfc_nonneg(abs(x) * 0.70710678118654752);
      let cdf = select(0.5 * r, 1.0 - 0.5 * r, x >= 0.0);
      return cdf + x * 0.39894228040143268 * exp(-0.5 * x * x);
    }
    case 2u: {
      let s = 1.0 / (1.0 + exp(-1.702 * x));
      return s + 1.702 * x * s * (1.0 - s);
    }
    default: { return 1.0; }
  }
}
