// CPU reference attention: the oracle for GPU tests and the CPU backend.
//
// Per query row (b, h, q): scores s[kv] = score_mod(q.k * scale) (+ additive
// mask) over the kv positions the row may see, then an exact two-pass softmax
// in fp32 with the row sum and the output accumulated in double. K and V are
// read as contiguous f32 rows (converted once per call when they are not f32
// with a contiguous last dim), so the inner loops are plain float loops the
// compiler vectorizes (multi-versioned for AVX-512 / AVX2+FMA / baseline).
// Work is split over row chunks of the flattened (b, h, q) index and handed out
// dynamically to a small thread pool; within a chunk, up to 8 rows of one
// (b, h) walk kv in tiles of 64 so each K/V tile is reused from L1. Results are
// bit-identical for any thread count.
// The output is written in its final dtype (bf16/f16 rounded here, in the
// worker threads) and the optional stop flag is checked per task, per group of
// rows and per kv tile, so a cancelled job ends within one tile of work.
//
// Which kv positions a row sees:
//  - without a block mask: all of [0, Skv), mask_mod (if any) everywhere;
//  - with a block mask (PyTorch layout, B/H broadcast when 1): the kv blocks in
//    kvIndices[0..kvNumBlocks) (score_mod + mask_mod) and in
//    fullKvIndices[0..fullKvNumBlocks) (score_mod only); positions >= Skv and
//    blocks not listed are masked. A block listed twice counts once; if it is
//    both partial and full, it is treated as full.
//  - isCausal keeps kv <= q (top-left aligned, like SDPA).
//  - a bool dense mask keeps where true; a float dense mask is added to the
//    score after score_mod.
// Numerics follow PyTorch: a kept position's score is used as the fp32 math
// gives it, so a NaN score (NaN in q or k, or from score_mod) makes its row and
// LSE NaN and a +inf score gives exp(inf - inf) = NaN; a score of -inf (from
// score_mod, an additive mask or q.k) is the same as a masked position. A
// masked position never contributes: its v is not read, even if it is NaN.
// A row with no kept position (or only -inf scores) gives out = 0, lse = -inf.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <exception>
#include <limits>
#include <mutex>
#include <thread>
#include <vector>

#include "cpu/attention_internal.h"
#include "cpu/parallel.h"


namespace flexattn::cpu {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

std::string Str(int64_t v) { return std::to_string(v); }

bool IsFloatDType(int dt) { return dt == kBF16 || dt == kF16 || dt == kF32; }

void CheckQkv(const HostView& v, const char* name) {
  if (v.rank != 4) throw ArgError(name, "a 4-D view", "rank " + Str(v.rank));
  if (!IsFloatDType(v.dtype)) throw ArgError(name, "dtype bf16, f16 or f32", DTypeName(v.dtype));
  int64_t numel = 1;
  for (int i = 0; i < 4; ++i) {
    if (v.shape[i] < 0) throw ArgError(name, "non-negative sizes", "shape " + ShapeString(v));
    if (v.shape[i] > 0x7fffffff) throw ArgError(name, "sizes below 2^31", "shape " + ShapeString(v));
    numel *= v.shape[i];
  }
  if (numel > 0 && v.data == nullptr) throw ArgError(name, "data", "null");
}

// The dense mask as a 4-D view over [B, Hq, Sq, Skv] (stride 0 = broadcast).
struct Mask4 {
  bool present = false;
  bool isBool = false;
  HostView view;  // rank 4
};

Mask4 NormalizeMask(const CpuAttentionArgs& a, const int64_t target[4], bool check) {
  Mask4 m;
  if (!a.hasMask) return m;
  const HostView& v = a.mask;
  if (check) {
    if (v.rank < 0 || v.rank > 4) {
      throw ArgError("mask", "a view of rank <= 4 broadcastable to [B, Hq, Sq, Skv]", "rank " + Str(v.rank));
    }
    if (!(v.dtype == kBool || IsFloatDType(v.dtype))) {
      throw ArgError("mask", "dtype bool, f32, f16 or bf16", DTypeName(v.dtype));
    }
  }
  m.present = true;
  m.isBool = v.dtype == kBool;
  m.view.data = v.data;
  m.view.dtype = v.dtype;
  m.view.rank = 4;
  const int off = 4 - v.rank;
  for (int i = 0; i < 4; ++i) {
    m.view.shape[i] = target[i];
    if (i < off) {
      m.view.strides[i] = 0;
      continue;
    }
    const int64_t s = v.shape[i - off];
    if (s == target[i]) {
      m.view.strides[i] = s == 1 ? 0 : v.strides[i - off];
    } else if (s == 1) {
      m.view.strides[i] = 0;
    } else {
      throw ArgError("mask",
                     "a shape broadcastable to [" + Str(target[0]) + ", " + Str(target[1]) + ", " +
                         Str(target[2]) + ", " + Str(target[3]) + "]",
                     "shape " + ShapeString(v));
    }
  }
  if (check) {
    int64_t numel = 1;
    for (int i = 0; i < 4; ++i) numel *= target[i];
    if (numel > 0 && v.data == nullptr) throw ArgError("mask", "data", "null");
  }
  return m;
}

void CheckBlockMask(const CpuBlockMask& bm, int64_t B, int64_t Hq, int64_t Sq, int64_t Skv, bool scan) {
  if (!(bm.B == 1 || bm.B == B)) throw ArgError("blockMask.B", "1 or " + Str(B) + " (q's batch)", Str(bm.B));
  if (!(bm.H == 1 || bm.H == Hq)) throw ArgError("blockMask.H", "1 or " + Str(Hq) + " (q's heads)", Str(bm.H));
  if (bm.qBlock <= 0) throw ArgError("blockMask.qBlock", "a positive block size", Str(bm.qBlock));
  if (bm.kvBlock <= 0) throw ArgError("blockMask.kvBlock", "a positive block size", Str(bm.kvBlock));
  const int64_t needQ = (Sq + bm.qBlock - 1) / bm.qBlock;
  const int64_t needKv = (Skv + bm.kvBlock - 1) / bm.kvBlock;
  if (bm.numQBlocks < needQ) {
    throw ArgError("blockMask.numQBlocks", "at least " + Str(needQ) + " q blocks of " + Str(bm.qBlock) +
                                               " for Sq = " + Str(Sq), Str(bm.numQBlocks));
  }
  if (bm.numKvBlocks < needKv) {
    throw ArgError("blockMask.numKvBlocks", "at least " + Str(needKv) + " kv blocks of " + Str(bm.kvBlock) +
                                                " for Skv = " + Str(Skv), Str(bm.numKvBlocks));
  }
  const int64_t rows = int64_t(bm.B) * bm.H * bm.numQBlocks;
  if (rows > 0 && (bm.kvNumBlocks == nullptr || (bm.kvIndices == nullptr && bm.numKvBlocks > 0))) {
    throw ArgError("blockMask.kvNumBlocks", "kvNumBlocks and kvIndices arrays", "null");
  }
  if ((bm.fullKvNumBlocks == nullptr) != (bm.fullKvIndices == nullptr)) {
    throw ArgError("blockMask.fullKvIndices", "fullKvNumBlocks and fullKvIndices given together");
  }
  if (!scan) return;
  auto check = [&](const int32_t* num, const int32_t* idx, const char* numName, const char* idxName) {
    for (int64_t r = 0; r < rows; ++r) {
      const int32_t n = num[r];
      if (n < 0 || n > bm.numKvBlocks) {
        throw ArgError(numName, "counts in [0, " + Str(bm.numKvBlocks) + "]", Str(n) + " at flat index " + Str(r));
      }
      for (int32_t t = 0; t < n; ++t) {
        const int32_t kb = idx[r * bm.numKvBlocks + t];
        if (kb < 0 || kb >= bm.numKvBlocks) {
          throw ArgError(idxName, "block indices in [0, " + Str(bm.numKvBlocks) + ")",
                         Str(kb) + " at flat index " + Str(r * bm.numKvBlocks + t));
        }
      }
    }
  };
  check(bm.kvNumBlocks, bm.kvIndices, "blockMask.kvNumBlocks", "blockMask.kvIndices");
  if (bm.fullKvNumBlocks) {
    check(bm.fullKvNumBlocks, bm.fullKvIndices, "blockMask.fullKvNumBlocks", "blockMask.fullKvIndices");
  }
}

// Rows of K or V as f32 with a contiguous last dim: row (b, h, j) starts at
// base + b * sB + h * sH + j * sS.
struct RowSrc {
  const float* base = nullptr;
  int64_t sB = 0, sH = 0, sS = 0;
};

// Points at x directly when it is f32 with a contiguous last dim; otherwise
// sizes buf for a contiguous copy (filled by ConvertRows) and points at it.
RowSrc PrepareRows(const HostView& x, std::vector<float>& buf, bool* needsConvert) {
  const int64_t B = x.shape[0], H = x.shape[1], S = x.shape[2], Dx = x.shape[3];
  if (x.dtype == kF32 && (x.strides[3] == 1 || Dx <= 1)) {
    *needsConvert = false;
    return RowSrc{static_cast<const float*>(x.data), x.strides[0], x.strides[1], x.strides[2]};
  }
  *needsConvert = true;
  buf.assign(static_cast<size_t>(B * H * S * Dx), 0.0f);
  return RowSrc{buf.data(), H * S * Dx, S * Dx, Dx};
}

// The hot loops are compiled for AVX-512, AVX2+FMA and baseline x86-64 and
// picked at load time (GCC function multi-versioning); elsewhere they are
// plain portable loops.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#define FLEXATTN_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FLEXATTN_CLONES
#endif

// Sum of 16 partial sums (explicit halving steps so the compiler keeps them in
// vector registers).
inline float Hsum16(float* a) {
  for (int t = 0; t < 8; ++t) a[t] += a[t + 8];
  for (int t = 0; t < 4; ++t) a[t] += a[t + 4];
  for (int t = 0; t < 2; ++t) a[t] += a[t + 2];
  return a[0] + a[1];
}

// a . b over n floats with 16 independent partial sums (vectorizes without
// -ffast-math).
inline float Dot(const float* __restrict a, const float* __restrict b, int64_t n) {
  float acc[16] = {0};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    for (int t = 0; t < 16; ++t) acc[t] += a[i + t] * b[i + t];
  }
  float tail = 0.0f;
  for (; i < n; ++i) tail += a[i] * b[i];
  return Hsum16(acc) + tail;
}

// raw[j] = (q . k_j) * scale for j in [j0, j1); k_j = kbase + j * sS. Four kv
// rows at a time share the loads of q (same per-dot summation order as Dot).
FLEXATTN_CLONES
void DotRange(const float* __restrict q, const float* __restrict kbase, int64_t sS, int64_t D, int64_t j0,
              int64_t j1, float scale, float* __restrict raw) {
  int64_t j = j0;
  for (; j + 4 <= j1; j += 4) {
    const float* k0 = kbase + j * sS;
    const float* k1 = k0 + sS;
    const float* k2 = k1 + sS;
    const float* k3 = k2 + sS;
    float a0[16] = {0}, a1[16] = {0}, a2[16] = {0}, a3[16] = {0};
    int64_t i = 0;
    for (; i + 16 <= D; i += 16) {
      for (int t = 0; t < 16; ++t) {
        const float x = q[i + t];
        a0[t] += x * k0[i + t];
        a1[t] += x * k1[i + t];
        a2[t] += x * k2[i + t];
        a3[t] += x * k3[i + t];
      }
    }
    float t0 = 0.0f, t1 = 0.0f, t2 = 0.0f, t3 = 0.0f;
    for (; i < D; ++i) {
      t0 += q[i] * k0[i];
      t1 += q[i] * k1[i];
      t2 += q[i] * k2[i];
      t3 += q[i] * k3[i];
    }
    raw[j] = (Hsum16(a0) + t0) * scale;
    raw[j + 1] = (Hsum16(a1) + t1) * scale;
    raw[j + 2] = (Hsum16(a2) + t2) * scale;
    raw[j + 3] = (Hsum16(a3) + t3) * scale;
  }
  for (; j < j1; ++j) raw[j] = Dot(q, kbase + j * sS, D) * scale;
}

// For j in [j0, j1) with s[j] != -inf (masked positions are skipped, so their
// v is never read): p = exp(s[j] - m), *sum += p and acc += p * v_j
// (v_j = vbase + j * sS). m may be NaN or +inf (then p is NaN). At most 64
// positions per call.
FLEXATTN_CLONES
void PvChunk(const float* __restrict s, float m, const float* __restrict vbase, int64_t sS, int64_t Dv, int64_t j0,
             int64_t j1, float* __restrict acc, double* sum) {
  float p[64];
  int64_t idx[64];
  int n = 0;
  double total = 0.0;
  for (int64_t j = j0; j < j1; ++j) {
    if (s[j] == kNegInf) continue;
    const float e = std::exp(s[j] - m);
    total += e;
    p[n] = e;
    idx[n++] = j;
  }
  *sum += total;
  int t = 0;
  for (; t + 8 <= n; t += 8) {
    const float* v[8];
    float q[8];
    for (int u = 0; u < 8; ++u) {
      v[u] = vbase + idx[t + u] * sS;
      q[u] = p[t + u];
    }
    for (int64_t d = 0; d < Dv; ++d) {
      acc[d] += ((q[0] * v[0][d] + q[1] * v[1][d]) + (q[2] * v[2][d] + q[3] * v[3][d])) +
                ((q[4] * v[4][d] + q[5] * v[5][d]) + (q[6] * v[6][d] + q[7] * v[7][d]));
    }
  }
  for (; t < n; ++t) {
    const float* v0 = vbase + idx[t] * sS;
    const float p0 = p[t];
    for (int64_t d = 0; d < Dv; ++d) acc[d] += p0 * v0[d];
  }
}

struct KvRange {
  int64_t lo, hi;
  bool maskMod;  // apply mask_mod in this range
};

// Rows are processed in groups of up to kGroup consecutive query rows of one
// (b, h) (and one q block of the block mask), walking kv in blocks of kKvTile
// so a tile of K or V is reused from L1 by every row of the group. Per-row
// results do not depend on the grouping (same summation order either way).
constexpr int kGroup = 8;
constexpr int64_t kKvTile = 64;

struct RowState {
  int64_t b = 0, h = 0, qi = 0, r = 0;
  int64_t lo = 0, hi = 0;  // visited kv extent [lo, hi)
  float m = 0.0f;          // row max
  double sum = 0.0;
  std::vector<KvRange> ranges;
};

struct Scratch {
  std::vector<float> q, raw, s, mrow, accf;  // per row of the group: D, Skv, Skv, Skv, Dv
  std::vector<double> accd;                  // per row of the group: Dv
  std::vector<float> outf;                   // one output row (Dv) before rounding to bf16/f16
  RowState rows[kGroup];
};

}  // namespace

void ValidateAttentionArgs(const CpuAttentionArgs& a, bool scanBlockMask) {
  CheckQkv(a.q, "q");
  CheckQkv(a.k, "k");
  CheckQkv(a.v, "v");
  const int64_t B = a.q.shape[0], Hq = a.q.shape[1], Sq = a.q.shape[2], D = a.q.shape[3];
  const int64_t Hkv = a.k.shape[1], Skv = a.k.shape[2];
  if (a.k.shape[0] != B) {
    throw ArgError("k", "batch size " + Str(B) + " (q.shape[0])", "shape " + ShapeString(a.k));
  }
  if (Hkv == 0 ? Hq != 0 : Hq % Hkv != 0) {
    throw ArgError("k", "a number of heads dividing q's " + Str(Hq) + " heads (GQA)", "shape " + ShapeString(a.k));
  }
  if (a.v.shape[0] != B) {
    throw ArgError("v", "batch size " + Str(B) + " (q.shape[0])", "shape " + ShapeString(a.v));
  }
  if (a.k.shape[3] != D) {
    throw ArgError("k", "head dim " + Str(D) + " (q.shape[3])", "shape " + ShapeString(a.k));
  }
  if (a.v.shape[1] != Hkv || a.v.shape[2] != Skv) {
    throw ArgError("v", "[B, Hkv, Skv] = [" + Str(B) + ", " + Str(Hkv) + ", " + Str(Skv) + "] like k",
                   "shape " + ShapeString(a.v));
  }
  const int64_t target[4] = {B, Hq, Sq, Skv};
  NormalizeMask(a, target, true);
  if (a.blockMask) CheckBlockMask(*a.blockMask, B, Hq, Sq, Skv, scanBlockMask);
  if (!IsFloatDType(a.outDtype)) throw ArgError("outDtype", "bf16, f16 or f32", DTypeName(a.outDtype));
  if (B * Hq * Sq * a.v.shape[3] > 0 && a.out == nullptr) throw ArgError("out", "an output buffer", "null");
}

void Attention(const CpuAttentionArgs& a) {
  ValidateAttentionArgs(a);
  const int64_t B = a.q.shape[0], Hq = a.q.shape[1], Sq = a.q.shape[2], D = a.q.shape[3];
  const int64_t Hkv = a.k.shape[1], Skv = a.k.shape[2], Dv = a.v.shape[3];
  const int64_t rows = B * Hq * Sq;
  if (rows == 0) return;
  const int64_t group = Hq / Hkv;

  int nthreads = a.numThreads;
  if (nthreads <= 0) nthreads = DefaultThreads();

  // K and V as f32 rows with a contiguous last dim.
  std::vector<float> kbuf, vbuf;
  bool convK = false, convV = false;
  const RowSrc ks = PrepareRows(a.k, kbuf, &convK);
  const RowSrc vs = PrepareRows(a.v, vbuf, &convV);
  if (convK || convV) {
    constexpr int64_t kRowsPerTask = 256;
    const int64_t chunks = (Skv + kRowsPerTask - 1) / kRowsPerTask;
    RunParallel(nthreads, B * Hkv * chunks, [&](int, int64_t t) {
      if (StopRequested(a.cancel)) throw Cancelled();
      const int64_t bh = t / chunks, c = t % chunks;
      const int64_t b = bh / Hkv, h = bh % Hkv;
      const int64_t j1 = std::min(Skv, (c + 1) * kRowsPerTask);
      for (int64_t j = c * kRowsPerTask; j < j1; ++j) {
        if (convK) {
          const HostView& x = a.k;
          LoadRow(x, b * x.strides[0] + h * x.strides[1] + j * x.strides[2], x.strides[3], D,
                  kbuf.data() + b * ks.sB + h * ks.sH + j * ks.sS);
        }
        if (convV) {
          const HostView& x = a.v;
          LoadRow(x, b * x.strides[0] + h * x.strides[1] + j * x.strides[2], x.strides[3], Dv,
                  vbuf.data() + b * vs.sB + h * vs.sH + j * vs.sS);
        }
      }
    });
  }

  const int64_t target[4] = {B, Hq, Sq, Skv};
  const Mask4 mask = NormalizeMask(a, target, false);
  const CpuBlockMask* bm = a.blockMask;
  const bool hasScoreMod = static_cast<bool>(a.scoreMod);
  const bool hasMaskMod = static_cast<bool>(a.maskMod);
  const float scale = a.scale;

  std::vector<Scratch> scratch(static_cast<size_t>(nthreads));
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(64, rows / (8 * int64_t(nthreads))));
  const int64_t ntasks = (rows + chunk - 1) / chunk;
  const int64_t Dp = std::max<int64_t>(D, 1), Sp = std::max<int64_t>(Skv, 1), Dvp = std::max<int64_t>(Dv, 1);

  RunParallel(nthreads, ntasks, [&](int worker, int64_t task) {
    Scratch& sc = scratch[static_cast<size_t>(worker)];
    if (sc.s.empty()) {
      sc.q.resize(static_cast<size_t>(kGroup * Dp));
      sc.s.resize(static_cast<size_t>(kGroup * Sp));
      sc.raw.resize(static_cast<size_t>(kGroup * Sp));
      if (mask.present) sc.mrow.resize(static_cast<size_t>(kGroup * Sp));
      sc.accf.resize(static_cast<size_t>(kGroup * Dvp));
      sc.accd.resize(static_cast<size_t>(kGroup * Dvp));
      if (a.outDtype != kF32) sc.outf.resize(static_cast<size_t>(Dvp));
    }
    const int64_t rEnd = std::min(rows, (task + 1) * chunk);
    int64_t r = task * chunk;
    while (r < rEnd) {
      // A stopped job ends here, at a group of rows, or at a kv tile below
      // (a group can take long when Skv is large).
      if (StopRequested(a.cancel)) throw Cancelled();
      // Next group: consecutive rows of one (b, h) and one q block.
      const int64_t bh = r / Sq;
      int n = 0;
      for (; n < kGroup && r + n < rEnd; ++n) {
        const int64_t rr = r + n;
        if (rr / Sq != bh) break;
        if (bm && (rr % Sq) / bm->qBlock != (r % Sq) / bm->qBlock) break;
      }
      const int64_t b = bh / Hq, h = bh % Hq, hk = h / group;
      const float* kbase = ks.base + b * ks.sB + hk * ks.sH;
      const float* vbase = vs.base + b * vs.sB + hk * vs.sH;
      int64_t gLo = Skv, gHi = 0;

      // Per row: visited ranges, q, dense mask row.
      for (int g = 0; g < n; ++g) {
        RowState& row = sc.rows[g];
        row.r = r + g;
        row.b = b;
        row.h = h;
        row.qi = row.r % Sq;
        row.ranges.clear();
        if (bm) {
          const int64_t qb = row.qi / bm->qBlock;
          const int64_t br = ((bm->B == 1 ? 0 : b) * bm->H + (bm->H == 1 ? 0 : h)) * bm->numQBlocks + qb;
          auto add = [&](const int32_t* num, const int32_t* idx, bool mm) {
            const int32_t cnt = num[br];
            for (int32_t t = 0; t < cnt; ++t) {
              const int64_t kb = idx[br * bm->numKvBlocks + t];
              row.ranges.push_back({kb * bm->kvBlock, std::min(Skv, (kb + 1) * bm->kvBlock), mm});
            }
          };
          add(bm->kvNumBlocks, bm->kvIndices, hasMaskMod);  // partial blocks first,
          if (bm->fullKvNumBlocks) add(bm->fullKvNumBlocks, bm->fullKvIndices, false);  // full ones override
        } else {
          row.ranges.push_back({0, Skv, hasMaskMod});
        }
        const int64_t end = a.isCausal ? std::min(Skv, row.qi + 1) : Skv;
        row.lo = Skv;
        row.hi = 0;
        for (auto& rg : row.ranges) {
          rg.hi = std::min(rg.hi, end);
          if (rg.lo < rg.hi) {
            row.lo = std::min(row.lo, rg.lo);
            row.hi = std::max(row.hi, rg.hi);
          }
        }
        if (row.lo >= row.hi) continue;
        gLo = std::min(gLo, row.lo);
        gHi = std::max(gHi, row.hi);
        float* s = sc.s.data() + g * Sp;
        std::fill(s + row.lo, s + row.hi, kNegInf);
        LoadRow(a.q, b * a.q.strides[0] + h * a.q.strides[1] + row.qi * a.q.strides[2], a.q.strides[3], D,
                sc.q.data() + g * Dp);
        if (mask.present) {
          const HostView& mv = mask.view;
          LoadRow(mv, b * mv.strides[0] + h * mv.strides[1] + row.qi * mv.strides[2] + row.lo * mv.strides[3],
                  mv.strides[3], row.hi - row.lo, sc.mrow.data() + g * Sp + row.lo);
        }
      }

      // Pass 1: scaled dot products, kv tile by tile, every row of the group.
      for (int64_t t0 = gLo - gLo % kKvTile; t0 < gHi; t0 += kKvTile) {
        if (StopRequested(a.cancel)) throw Cancelled();
        const int64_t t1 = t0 + kKvTile;
        for (int g = 0; g < n; ++g) {
          const RowState& row = sc.rows[g];
          if (row.lo >= row.hi || row.hi <= t0 || row.lo >= t1) continue;
          for (const auto& rg : row.ranges) {
            const int64_t j0 = std::max(rg.lo, t0), j1 = std::min(rg.hi, t1);
            if (j0 < j1) DotRange(sc.q.data() + g * Dp, kbase, ks.sS, D, j0, j1, scale, sc.raw.data() + g * Sp);
          }
        }
      }

      // Masks and score_mod range by range (a later range overrides an earlier
      // one), then the row max.
      for (int g = 0; g < n; ++g) {
        RowState& row = sc.rows[g];
        row.m = kNegInf;
        if (row.lo >= row.hi) continue;
        float* s = sc.s.data() + g * Sp;
        const float* raw = sc.raw.data() + g * Sp;
        const float* mrow = mask.present ? sc.mrow.data() + g * Sp : nullptr;
        const int ib = int(b), ih = int(h), iq = int(row.qi);
        for (const auto& rg : row.ranges) {
          for (int64_t j = rg.lo; j < rg.hi; ++j) {
            if (rg.maskMod && !a.maskMod(ib, ih, iq, int(j))) {
              s[j] = kNegInf;
              continue;
            }
            if (mrow && mask.isBool && mrow[j] == 0.0f) {
              s[j] = kNegInf;
              continue;
            }
            float x = raw[j];
            if (hasScoreMod) x = a.scoreMod(x, ib, ih, iq, int(j));
            if (mrow && !mask.isBool) x += mrow[j];
            s[j] = x;
          }
        }
        // The row max propagates NaN, like torch.max: one NaN score makes every
        // p = exp(s - NaN) NaN, so the whole row and its LSE are NaN (and a row of
        // NaN scores is not mistaken for a fully masked one). Only a row whose
        // every score is -inf (masked, or -inf from score_mod / an additive mask)
        // keeps m = -inf and is written as 0 with LSE -inf below.
        float m = kNegInf;
        bool nan = false;
        for (int64_t j = row.lo; j < row.hi; ++j) {
          const float x = s[j];
          if (x > m) m = x;
          else if (x != x) nan = true;
        }
        row.m = nan ? std::numeric_limits<float>::quiet_NaN() : m;
      }

      // Pass 2: p = exp(s - m) and p @ V, kv tile by tile; float partial sums
      // per tile, flushed to double.
      for (int g = 0; g < n; ++g) {
        sc.rows[g].sum = 0.0;
        std::fill(sc.accd.data() + g * Dvp, sc.accd.data() + g * Dvp + Dv, 0.0);
      }
      for (int64_t t0 = gLo - gLo % kKvTile; t0 < gHi; t0 += kKvTile) {
        if (StopRequested(a.cancel)) throw Cancelled();
        const int64_t t1 = t0 + kKvTile;
        for (int g = 0; g < n; ++g) {
          RowState& row = sc.rows[g];
          if (row.m == kNegInf || row.hi <= t0 || row.lo >= t1) continue;
          float* accf = sc.accf.data() + g * Dvp;
          double* accd = sc.accd.data() + g * Dvp;
          std::fill(accf, accf + Dv, 0.0f);
          PvChunk(sc.s.data() + g * Sp, row.m, vbase, vs.sS, Dv, std::max(row.lo, t0), std::min(row.hi, t1), accf,
                  &row.sum);
          for (int64_t d = 0; d < Dv; ++d) accd[d] += accf[d];
        }
      }

      // Outputs, in the requested dtype (f32 written in place; bf16/f16 rounded
      // from an f32 row). A row with nothing kept: out = 0, lse = -inf (a NaN
      // row has m = NaN and its NaN sum gives NaN out and lse).
      for (int g = 0; g < n; ++g) {
        const RowState& row = sc.rows[g];
        float* out = a.outDtype == kF32 ? static_cast<float*>(a.out) + row.r * Dv : sc.outf.data();
        if (row.m == kNegInf) {
          std::fill(out, out + Dv, 0.0f);
          if (a.lse) a.lse[row.r] = kNegInf;
        } else {
          const double* accd = sc.accd.data() + g * Dvp;
          const double inv = 1.0 / row.sum;
          for (int64_t d = 0; d < Dv; ++d) out[d] = static_cast<float>(accd[d] * inv);
          if (a.lse) a.lse[row.r] = static_cast<float>(double(row.m) + std::log(row.sum));
        }
        if (a.outDtype != kF32) StoreRow(a.out, a.outDtype, row.r * Dv, out, Dv);
      }
      r += n;
    }
  });
}

}  // namespace flexattn::cpu
