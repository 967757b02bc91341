// The oracle of test/fixtures/densecrf.json: Krähenbühl's densecrf C++ (the copy pydensecrf
// vendors, pydensecrf/densecrf/) run as CaR's crf.py calls it through pydensecrf: unary
// -log(clip(p, 1e-5, 1)), addPairwiseGaussian(sxy 1, Potts 3), addPairwiseBilateral(sxy 67, srgb 3,
// Potts 4), inference(10). Build against a checkout of pydensecrf (D=pydensecrf/densecrf):
//   g++ -O2 -I$D/include -I$D/src -o oracle oracle.cpp $D/src/{densecrf,permutohedral,pairwise,labelcompatibility,unary,util}.cpp
// then `node scripts/densecrf/make-fixture.mjs ./oracle` (after `npm run build`).
// stdin: int32 W, H, L; uint8 colours [H*W*3]; float32 probabilities [L*H*W] (label-major).
// stdout: float32 Q [L*H*W] (label-major).
#include "densecrf.h"
#include <cstdio>
#include <cmath>
#include <vector>
#include <algorithm>
int main() {
  int dims[3];
  if (fread(dims, 4, 3, stdin) != 3) return 1;
  const int W = dims[0], H = dims[1], L = dims[2], N = W * H;
  std::vector<unsigned char> im(N * 3);
  std::vector<float> p((size_t)L * N);
  if (fread(im.data(), 1, im.size(), stdin) != im.size()) return 1;
  if (fread(p.data(), 4, p.size(), stdin) != p.size()) return 1;
  MatrixXf u(L, N);
  for (int l = 0; l < L; l++)
    for (int i = 0; i < N; i++) u(l, i) = -logf(std::min(1.0f, std::max(1e-5f, p[(size_t)l * N + i])));
  DenseCRF2D crf(W, H, L);
  crf.setUnaryEnergy(u);
  crf.addPairwiseGaussian(1, 1, new PottsCompatibility(3));
  crf.addPairwiseBilateral(67, 67, 3, 3, 3, im.data(), new PottsCompatibility(4));
  MatrixXf q = crf.inference(10);
  std::vector<float> out((size_t)L * N);
  for (int l = 0; l < L; l++)
    for (int i = 0; i < N; i++) out[(size_t)l * N + i] = q(l, i);
  fwrite(out.data(), 4, out.size(), stdout);
  return 0;
}
