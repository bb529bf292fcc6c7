// CPU reference backward (see attention_backward.h).
//
// With P = exp(s - lse) recomputed from q, k and the forward's LSE,
// D_i = rowsum(dO_i * O_i), dP = dO v^T and dS = P * (dP - D) (the gradient
// with respect to score_mod's result), the gradient with respect to the raw
// score is dS * score_mod'(raw), and
//   dq_i = scale * sum_j dScore_ij k_j,  dk_j = scale * sum_i dScore_ij q_i,
//   dv_j = sum_i P_ij dO_i,  dT[idx_s] += dS_ij * weight_s  (captured tensors).
// Two passes, each parallel and each with a fixed summation order: pass 1 walks
// query rows (dq, captured tensors), pass 2 walks kv rows of one KV head
// (dk, dv summed over the query heads of its GQA group), recomputing P and dP
// instead of storing them. Captured-tensor gradients go to per-task partial
// sums over a fixed partition of the rows (independent of the thread count),
// added in task order, so they are the same bits run after run.
//
// Which positions are kept is the forward's rule (attention.cc): the block
// mask's partial (mask_mod applied) and full blocks, a full listing overriding
// a partial one; isCausal keeps kv <= q; a bool dense mask keeps where true;
// a float dense mask is added after score_mod; a score of -inf is masked.
#include "cpu/attention_backward.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu/attention_internal.h"
#include "cpu/parallel.h"

namespace flexattn::cpu {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

std::string Str(int64_t v) { return std::to_string(v); }

void CheckLike(const HostView& x, const char* name, const int64_t want[], int rank, DType dt, const char* what) {
  bool ok = x.rank == rank;
  for (int i = 0; ok && i < rank; ++i) ok = x.shape[i] == want[i];
  if (!ok) {
    std::string s = "[";
    for (int i = 0; i < rank; ++i) s += (i ? ", " : "") + Str(want[i]);
    throw ArgError(name, std::string("shape ") + s + "] (" + what + ")", "shape " + ShapeString(x));
  }
  if (x.dtype != dt) throw ArgError(name, "dtype " + DTypeName(dt), DTypeName(x.dtype));
}

// Block classes of the block mask: 0 not listed, 1 partial (mask_mod applied
// when there is one), 2 full; per (B, H, q block, kv block).
std::vector<uint8_t> BlockClasses(const CpuBlockMask& bm, bool hasMaskMod) {
  const int64_t rows = int64_t(bm.B) * bm.H * bm.numQBlocks;
  std::vector<uint8_t> cls(static_cast<size_t>(rows * bm.numKvBlocks), 0);
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* c = cls.data() + r * bm.numKvBlocks;
    for (int32_t t = 0; t < bm.kvNumBlocks[r]; ++t) c[bm.kvIndices[r * bm.numKvBlocks + t]] = hasMaskMod ? 1 : 2;
    if (bm.fullKvNumBlocks) {
      for (int32_t t = 0; t < bm.fullKvNumBlocks[r]; ++t) c[bm.fullKvIndices[r * bm.numKvBlocks + t]] = 2;
    }
  }
  return cls;
}

// Contiguous f32 copy of a 4-D view.
std::vector<float> ToF32(const HostView& x, int nthreads, const int32_t* cancel) {
  const int64_t B = x.shape[0], H = x.shape[1], S = x.shape[2], Dx = x.shape[3];
  std::vector<float> buf(static_cast<size_t>(B * H * S * Dx));
  RunParallel(nthreads, B * H, [&](int, int64_t bh) {
    if (StopRequested(cancel)) throw Cancelled();
    const int64_t b = bh / H, h = bh % H;
    for (int64_t j = 0; j < S; ++j) {
      LoadRow(x, b * x.strides[0] + h * x.strides[1] + j * x.strides[2], x.strides[3], Dx,
              buf.data() + ((b * H + h) * S + j) * Dx);
    }
  });
  return buf;
}

double DotD(const float* a, const float* b, int64_t n) {
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) s += double(a[i]) * double(b[i]);
  return s;
}

// Everything both passes need to evaluate one (b, h, i, j) pair.
struct Problem {
  const CpuBackwardArgs* a;
  int64_t B, Hq, Hkv, Sq, Skv, D, Dv, group;
  std::vector<float> q, k, v, dO, lse;  // contiguous f32
  std::vector<double> delta;            // rowsum(dO * O) per row
  std::vector<uint8_t> cls;             // block classes (with a block mask)
  bool hasScoreMod = false, hasMaskMod = false;

  const float* Q(int64_t b, int64_t h, int64_t i) const { return q.data() + ((b * Hq + h) * Sq + i) * D; }
  const float* DO(int64_t b, int64_t h, int64_t i) const { return dO.data() + ((b * Hq + h) * Sq + i) * Dv; }
  const float* K(int64_t b, int64_t hk, int64_t j) const { return k.data() + ((b * Hkv + hk) * Skv + j) * D; }
  const float* V(int64_t b, int64_t hk, int64_t j) const { return v.data() + ((b * Hkv + hk) * Skv + j) * Dv; }

  // Kept pair: sets the raw (scaled) score and the score the softmax saw;
  // false when masked (then nothing of it is read).
  bool Score(int64_t b, int64_t h, int64_t i, int64_t j, const float* qi, const float* kj, float* raw, float* x) const {
    const CpuBackwardArgs& A = *a;
    if (A.isCausal && j > i) return false;
    bool applyMaskMod = hasMaskMod;
    if (A.blockMask) {
      const CpuBlockMask& bm = *A.blockMask;
      const int64_t br = ((bm.B == 1 ? 0 : b) * bm.H + (bm.H == 1 ? 0 : h)) * bm.numQBlocks + i / bm.qBlock;
      const uint8_t c = cls[static_cast<size_t>(br * bm.numKvBlocks + j / bm.kvBlock)];
      if (c == 0) return false;
      applyMaskMod = c == 1;
    }
    if (applyMaskMod && !A.maskMod(int(b), int(h), int(i), int(j))) return false;
    float m = 0.0f;
    if (A.hasMask) {
      const HostView& mv = A.mask;
      m = ReadFloat(mv.data, mv.dtype, b * mv.strides[0] + h * mv.strides[1] + i * mv.strides[2] + j * mv.strides[3]);
      if (mv.dtype == kBool && m == 0.0f) return false;
    }
    *raw = static_cast<float>(DotD(qi, kj, D) * A.scale);
    float s = hasScoreMod ? A.scoreMod(*raw, int(b), int(h), int(i), int(j)) : *raw;
    if (A.hasMask && A.mask.dtype != kBool) s += m;
    if (s == kNegInf) return false;
    *x = s;
    return true;
  }

  // dS (gradient w.r.t. the score the softmax saw) and P for a kept pair.
  void Grad(int64_t r, float x, const float* dOi, const float* vj, double* p, double* dS) const {
    *p = std::exp(double(x) - double(lse[static_cast<size_t>(r)]));
    *dS = *p * (DotD(dOi, vj, Dv) - delta[static_cast<size_t>(r)]);
  }

  double ScoreGrad(float raw, int64_t b, int64_t h, int64_t i, int64_t j) const {
    return hasScoreMod ? double(a->scoreGrad(raw, int(b), int(h), int(i), int(j))) : 1.0;
  }
};

// Pass 1 row count per task: with captured gradients, a fixed number of tasks
// (each keeps a partial sum of every captured element); else small chunks.
int64_t Pass1Tasks(int64_t rows, int64_t capturedNumel) {
  if (capturedNumel == 0) return std::min<int64_t>(rows, 4096);
  const int64_t byMemory = std::max<int64_t>(1, (int64_t(1) << 22) / capturedNumel);
  return std::max<int64_t>(1, std::min<int64_t>({rows, 64, byMemory}));
}

}  // namespace

void ValidateBackwardArgs(const CpuBackwardArgs& a, bool scanBlockMask) {
  CpuAttentionArgs f;
  f.q = a.q;
  f.k = a.k;
  f.v = a.v;
  f.scale = a.scale;
  f.isCausal = a.isCausal;
  f.hasMask = a.hasMask;
  f.mask = a.mask;
  f.blockMask = a.blockMask;
  f.outDtype = a.gradDtype;
  f.out = a.dq ? a.dq : reinterpret_cast<void*>(1);  // dq is checked below
  ValidateAttentionArgs(f, scanBlockMask);
  const int64_t B = a.q.shape[0], Hq = a.q.shape[1], Sq = a.q.shape[2], D = a.q.shape[3];
  const int64_t Hkv = a.k.shape[1], Skv = a.k.shape[2], Dv = a.v.shape[3];
  const int64_t o[4] = {B, Hq, Sq, Dv}, l[3] = {B, Hq, Sq};
  CheckLike(a.out, "out", o, 4, a.q.dtype, "[B, Hq, Sq, Dv] of the forward, q's dtype");
  CheckLike(a.dOut, "dOut", o, 4, a.q.dtype, "like out");
  CheckLike(a.lse, "lse", l, 3, kF32, "[B, Hq, Sq] of the forward");
  if (a.hasMask) {
    const int64_t m[4] = {B, Hq, Sq, Skv};
    bool ok = a.mask.rank == 4;
    for (int i = 0; ok && i < 4; ++i) ok = a.mask.shape[i] == m[i];
    if (!ok) throw ArgError("mask", "a rank-4 view [B, Hq, Sq, Skv] (stride 0 to broadcast)", "shape " + ShapeString(a.mask));
  }
  if (a.scoreMod && !a.scoreGrad) throw ArgError("scoreGrad", "the derivative program of scoreMod", "none");
  if (a.gradDtype != a.q.dtype) throw ArgError("gradDtype", "q's dtype " + DTypeName(a.q.dtype), DTypeName(a.gradDtype));
  if (B * Hq * Sq * D > 0 && !a.dq) throw ArgError("dq", "an output buffer", "null");
  if (B * Hkv * Skv * D > 0 && !a.dk) throw ArgError("dk", "an output buffer", "null");
  if (B * Hkv * Skv * Dv > 0 && !a.dv) throw ArgError("dv", "an output buffer", "null");
  for (size_t c = 0; c < a.captured.size(); ++c) {
    const CapturedGradArgs& g = a.captured[c];
    const std::string name = "captured[" + Str(int64_t(c)) + "]";
    if (g.numel < 0 || g.numel > (int64_t(1) << 24)) throw ArgError(name + ".numel", "a size in [0, 2^24]", Str(g.numel));
    if (g.dtype != kF32 && g.dtype != kBF16 && g.dtype != kF16) throw ArgError(name + ".dtype", "bf16, f16 or f32", DTypeName(g.dtype));
    if (g.numel > 0 && !g.out) throw ArgError(name + ".out", "an output buffer", "null");
    if (!a.scoreMod) throw ArgError(name, "a scoreMod that reads the tensor", "no scoreMod");
  }
}

void AttentionBackward(const CpuBackwardArgs& a) {
  ValidateBackwardArgs(a);
  Problem p;
  p.a = &a;
  p.B = a.q.shape[0];
  p.Hq = a.q.shape[1];
  p.Sq = a.q.shape[2];
  p.D = a.q.shape[3];
  p.Hkv = a.k.shape[1];
  p.Skv = a.k.shape[2];
  p.Dv = a.v.shape[3];
  p.group = p.Hkv > 0 ? p.Hq / p.Hkv : 1;
  p.hasScoreMod = static_cast<bool>(a.scoreMod);
  p.hasMaskMod = static_cast<bool>(a.maskMod);
  const int64_t B = p.B, Hq = p.Hq, Sq = p.Sq, D = p.D, Hkv = p.Hkv, Skv = p.Skv, Dv = p.Dv;
  const int64_t rows = B * Hq * Sq;
  const int nthreads = a.numThreads > 0 ? a.numThreads : DefaultThreads();
  const int32_t* cancel = a.cancel;

  p.q = ToF32(a.q, nthreads, cancel);
  p.k = ToF32(a.k, nthreads, cancel);
  p.v = ToF32(a.v, nthreads, cancel);
  p.dO = ToF32(a.dOut, nthreads, cancel);
  if (a.blockMask) p.cls = BlockClasses(*a.blockMask, p.hasMaskMod);
  p.lse.resize(static_cast<size_t>(rows));
  p.delta.resize(static_cast<size_t>(rows));
  {
    const std::vector<float> o = ToF32(a.out, nthreads, cancel);
    const HostView& l = a.lse;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t b = r / (Hq * Sq), h = (r / Sq) % Hq, i = r % Sq;
      p.lse[static_cast<size_t>(r)] = ReadFloat(l.data, kF32, b * l.strides[0] + h * l.strides[1] + i * l.strides[2]);
      p.delta[static_cast<size_t>(r)] = DotD(p.dO.data() + r * Dv, o.data() + r * Dv, Dv);
    }
  }

  // Captured gradients: offsets of each tensor in one flat partial buffer.
  std::vector<int64_t> capOff(a.captured.size() + 1, 0);
  for (size_t c = 0; c < a.captured.size(); ++c) capOff[c + 1] = capOff[c] + a.captured[c].numel;
  const int64_t capNumel = capOff.back();
  const int64_t tasks1 = Pass1Tasks(rows, capNumel);
  std::vector<double> partial(static_cast<size_t>(capNumel > 0 ? tasks1 * capNumel : 0), 0.0);

  // Pass 1: dq (and captured partials), one query row at a time.
  RunParallel(nthreads, tasks1, [&](int, int64_t task) {
    std::vector<double> acc(static_cast<size_t>(std::max<int64_t>(D, 1)));
    std::vector<float> outRow(static_cast<size_t>(std::max<int64_t>(D, 1)));
    double* part = capNumel > 0 ? partial.data() + task * capNumel : nullptr;
    const int64_t r0 = task * rows / tasks1, r1 = (task + 1) * rows / tasks1;
    for (int64_t r = r0; r < r1; ++r) {
      if (StopRequested(cancel)) throw Cancelled();
      const int64_t b = r / (Hq * Sq), h = (r / Sq) % Hq, i = r % Sq, hk = h / p.group;
      std::fill(acc.begin(), acc.end(), 0.0);
      if (p.lse[static_cast<size_t>(r)] != kNegInf) {
        const float* qi = p.Q(b, h, i);
        const float* dOi = p.DO(b, h, i);
        for (int64_t j = 0; j < Skv; ++j) {
          const float* kj = p.K(b, hk, j);
          float raw, x;
          if (!p.Score(b, h, i, j, qi, kj, &raw, &x)) continue;
          double P, dS;
          p.Grad(r, x, dOi, p.V(b, hk, j), &P, &dS);
          const double g = dS * p.ScoreGrad(raw, b, h, i, j);
          for (int64_t d = 0; d < D; ++d) acc[size_t(d)] += g * kj[d];
          for (size_t c = 0; c < a.captured.size(); ++c) {
            const CapturedGradArgs& cg = a.captured[c];
            if (cg.numel == 0) continue;
            for (const auto& s : cg.sites) {
              const float fi = s.index(raw, int(b), int(h), int(i), int(j));
              if (!(fi >= 0.0f && fi < float(cg.numel))) {
                throw std::runtime_error("captured gradient index out of range (a bug in the index program)");
              }
              part[capOff[c] + int64_t(fi)] += dS * double(s.weight(raw, int(b), int(h), int(i), int(j)));
            }
          }
        }
      }
      for (int64_t d = 0; d < D; ++d) outRow[size_t(d)] = static_cast<float>(acc[size_t(d)] * a.scale);
      StoreRow(a.dq, a.gradDtype, r * D, outRow.data(), D);
    }
  });

  // Pass 2: dk, dv for tiles of kv rows of one (b, KV head), over every query
  // head of its group and every query row, in that order.
  constexpr int64_t kTile = 16;
  const int64_t tilesPerHead = (Skv + kTile - 1) / kTile;
  RunParallel(nthreads, B * Hkv * tilesPerHead, [&](int, int64_t task) {
    const int64_t bh = task / tilesPerHead, t = task % tilesPerHead;
    const int64_t b = bh / Hkv, hk = bh % Hkv;
    const int64_t j0 = t * kTile, j1 = std::min(Skv, j0 + kTile);
    std::vector<double> dk(static_cast<size_t>(kTile * D), 0.0), dv(static_cast<size_t>(kTile * Dv), 0.0);
    for (int64_t h = hk * p.group; h < (hk + 1) * p.group; ++h) {
      if (StopRequested(cancel)) throw Cancelled();
      for (int64_t i = a.isCausal ? std::min(j0, Sq) : 0; i < Sq; ++i) {
        const int64_t r = (b * Hq + h) * Sq + i;
        if (p.lse[static_cast<size_t>(r)] == kNegInf) continue;
        const float* qi = p.Q(b, h, i);
        const float* dOi = p.DO(b, h, i);
        for (int64_t j = j0; j < j1; ++j) {
          float raw, x;
          if (!p.Score(b, h, i, j, qi, p.K(b, hk, j), &raw, &x)) continue;
          double P, dS;
          p.Grad(r, x, dOi, p.V(b, hk, j), &P, &dS);
          const double g = dS * p.ScoreGrad(raw, b, h, i, j);
          double* dkj = dk.data() + (j - j0) * D;
          double* dvj = dv.data() + (j - j0) * Dv;
          for (int64_t d = 0; d < D; ++d) dkj[d] += g * qi[d];
          for (int64_t d = 0; d < Dv; ++d) dvj[d] += P * dOi[d];
        }
      }
    }
    std::vector<float> row(static_cast<size_t>(std::max(D, Dv)));
    for (int64_t j = j0; j < j1; ++j) {
      const int64_t base = (b * Hkv + hk) * Skv + j;
      for (int64_t d = 0; d < D; ++d) row[size_t(d)] = static_cast<float>(dk[size_t((j - j0) * D + d)] * a.scale);
      StoreRow(a.dk, a.gradDtype, base * D, row.data(), D);
      for (int64_t d = 0; d < Dv; ++d) row[size_t(d)] = static_cast<float>(dv[size_t((j - j0) * Dv + d)]);
      StoreRow(a.dv, a.gradDtype, base * Dv, row.data(), Dv);
    }
  });

  // Captured gradients: partials added in task order (fixed), rounded once.
  for (size_t c = 0; c < a.captured.size(); ++c) {
    const CapturedGradArgs& cg = a.captured[c];
    std::vector<float> g(static_cast<size_t>(cg.numel));
    for (int64_t e = 0; e < cg.numel; ++e) {
      double s = 0.0;
      for (int64_t t = 0; t < tasks1; ++t) s += partial[size_t(t * capNumel + capOff[c] + e)];
      g[size_t(e)] = static_cast<float>(s);
    }
    if (cg.numel > 0) StoreRow(cg.out, cg.dtype, 0, g.data(), cg.numel);
  }
}

}  // namespace flexattn::cpu
