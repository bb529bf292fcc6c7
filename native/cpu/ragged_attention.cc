// CPU reference attention over a ragged, paged KV batch (see ragged_attention.h).
//
// Work is split into tasks of (sequence, KV head, a few query tokens): the
// Hq/Hkv query heads that share the KV head, times those tokens, are the rows
// of one task (GQA packing, as the decode kernels do), so each task walks its
// sequence's KV once, in tiles of kKvTile tokens converted to f32 and reused
// by every row. Per row the softmax is exact and two-pass, with the same
// numerics as attention.cc: fp32 scores (q.k with 16 partial sums, times
// scale, then mask_mod / score_mod), a row max that propagates NaN, exp in
// fp32, the row sum and the output accumulated in double. A masked position's
// v is never read. Results do not depend on the thread count.
#include "cpu/ragged_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu/attention_internal.h"
#include "cpu/parallel.h"

namespace flexattn::cpu {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr int64_t kKvTile = 64;
// Rows per task when the GQA group is smaller (more tokens of one sequence share a task).
constexpr int64_t kRowsPerTask = 16;

std::string Str(int64_t v) { return std::to_string(v); }

bool IsFloat(int dt) { return dt == kBF16 || dt == kF16 || dt == kF32; }

// dst[i] = element (off + i) of data, as f32, for i in [0, n).
void ConvertRow(const void* data, DType dt, int64_t off, int64_t n, float* dst) {
  switch (dt) {
    case kBF16: {
      const uint16_t* p = static_cast<const uint16_t*>(data) + off;
      for (int64_t i = 0; i < n; ++i) dst[i] = Bf16ToF32(p[i]);
      break;
    }
    case kF16: {
      const uint16_t* p = static_cast<const uint16_t*>(data) + off;
      for (int64_t i = 0; i < n; ++i) dst[i] = F16ToF32(p[i]);
      break;
    }
    default: std::memcpy(dst, static_cast<const float*>(data) + off, size_t(n) * sizeof(float)); break;
  }
}

// a . b over n floats with 16 independent partial sums (vectorizes without -ffast-math).
float Dot(const float* __restrict a, const float* __restrict b, int64_t n) {
  float acc[16] = {0};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    for (int t = 0; t < 16; ++t) acc[t] += a[i + t] * b[i + t];
  }
  float tail = 0.0f;
  for (; i < n; ++i) tail += a[i] * b[i];
  for (int t = 0; t < 8; ++t) acc[t] += acc[t + 8];
  for (int t = 0; t < 4; ++t) acc[t] += acc[t + 4];
  for (int t = 0; t < 2; ++t) acc[t] += acc[t + 2];
  return acc[0] + acc[1] + tail;
}

struct Task {
  int64_t seq, hk, t0, t1;  // query tokens [t0, t1) of sequence seq (global token indices)
};

struct Row {
  int64_t token = 0, h = 0, pos = 0, hi = 0;  // kv [0, hi) visible
  float m = 0.0f;
  double sum = 0.0;
};

struct Scratch {
  std::vector<float> q;      // rows x D
  std::vector<float> s;      // rows x n: scores
  std::vector<float> tile;   // kKvTile x D
  std::vector<double> acc;   // rows x D
  std::vector<float> outf;   // D
  std::vector<Row> rows;
};

// Element offset of kv token j of sequence s, head hk (before the D index).
inline int64_t KvOffset(const CpuRaggedArgs& a, int64_t s, int64_t hk, int64_t j) {
  const int64_t page = a.pageTable[s * a.maxPagesPerSeq + j / a.pageSize];
  return page * a.pageStride + (j % a.pageSize) * a.tokenStride + hk * a.headStride;
}

}  // namespace

void ValidateRaggedShapes(const CpuRaggedArgs& a) {
  const HostView& q = a.q;
  if (q.rank != 3) throw ArgError("q", "a 3-D view [T, Hq, D]", "rank " + Str(q.rank));
  if (!IsFloat(q.dtype)) throw ArgError("q", "dtype bf16, f16 or f32", DTypeName(q.dtype));
  if (!IsFloat(a.kvDtype)) throw ArgError("kvDtype", "bf16, f16 or f32", DTypeName(a.kvDtype));
  if (!IsFloat(a.outDtype)) throw ArgError("outDtype", "bf16, f16 or f32", DTypeName(a.outDtype));
  const int64_t T = q.shape[0], Hq = q.shape[1], D = q.shape[2];
  if (a.numKvHeads <= 0 || Hq % a.numKvHeads != 0) {
    throw ArgError("numKvHeads", "a positive number of KV heads dividing q's " + Str(Hq) + " heads (GQA)",
                   Str(a.numKvHeads));
  }
  if (D <= 0) throw ArgError("q", "a non-zero head dimension", "shape " + ShapeString(q));
  if (a.pageSize < 1) throw ArgError("pageSize", "a positive number of tokens per page", Str(a.pageSize));
  if (a.pageStride < 0 || a.tokenStride < 0 || a.headStride < 0) {
    throw ArgError("pageStride", "non-negative page, token and head strides",
                   Str(a.pageStride) + ", " + Str(a.tokenStride) + ", " + Str(a.headStride));
  }
  if (a.numSeqs < 0) throw ArgError("numSeqs", "a non-negative count", Str(a.numSeqs));
  if (a.maxPagesPerSeq < 0) throw ArgError("maxPagesPerSeq", "a non-negative count", Str(a.maxPagesPerSeq));
  if (a.numSeqs > 0 && a.maxPagesPerSeq > 0 && !a.pageTable) throw ArgError("pageTable", "an Int32Array", "null");
  if (a.numSeqs > 0 && !a.seqLens) throw ArgError("seqLens", "an Int32Array", "null");
  if (!a.queryStart) throw ArgError("queryStart", "an Int32Array of numSeqs + 1 offsets", "null");
  if (T * Hq * D > 0 && !a.out) throw ArgError("out", "an output buffer", "null");
  if (T * Hq * D > 0 && !q.data) throw ArgError("q", "data", "null");
}

void ValidateRaggedTables(const CpuRaggedArgs& a) {
  const int64_t T = a.q.shape[0], D = a.q.shape[2];
  if (a.queryStart[0] != 0) throw ArgError("queryStart", "queryStart[0] = 0", Str(a.queryStart[0]));
  if (a.queryStart[a.numSeqs] != T) {
    throw ArgError("queryStart", "queryStart[numSeqs] = " + Str(T) + " (q's tokens)", Str(a.queryStart[a.numSeqs]));
  }
  // Largest element offset within a token's [Hkv, D] block.
  const int64_t inToken = (a.numKvHeads - 1) * a.headStride + D - 1;
  for (int64_t s = 0; s < a.numSeqs; ++s) {
    const int64_t m = int64_t(a.queryStart[s + 1]) - a.queryStart[s];
    if (m < 0) {
      throw ArgError("queryStart", "non-decreasing offsets",
                     Str(a.queryStart[s]) + " then " + Str(a.queryStart[s + 1]) + " at sequence " + Str(s));
    }
    const int64_t n = a.seqLens[s];
    if (n < 0) throw ArgError("seqLens", "non-negative lengths", Str(n) + " at sequence " + Str(s));
    const int64_t pages = (n + a.pageSize - 1) / a.pageSize;
    if (pages > a.maxPagesPerSeq) {
      throw ArgError("seqLens", "at most maxPagesPerSeq * pageSize = " + Str(a.maxPagesPerSeq * a.pageSize) +
                                    " tokens", Str(n) + " at sequence " + Str(s));
    }
    for (int64_t p = 0; p < pages; ++p) {
      const int64_t page = a.pageTable[s * a.maxPagesPerSeq + p];
      const int64_t tokens = std::min(a.pageSize, n - p * a.pageSize);
      const int64_t hi = page * a.pageStride + (tokens - 1) * a.tokenStride + inToken;
      if (page < 0 || hi >= a.kElems || hi >= a.vElems) {
        throw ArgError("pageTable", "page entries whose tokens lie inside k (" + Str(a.kElems) + " elements) and v (" +
                                        Str(a.vElems) + ")",
                       Str(page) + " at [" + Str(s) + ", " + Str(p) + "]");
      }
    }
  }
}

void RaggedAttention(const CpuRaggedArgs& a) {
  ValidateRaggedShapes(a);
  ValidateRaggedTables(a);
  const int64_t T = a.q.shape[0], Hq = a.q.shape[1], D = a.q.shape[2];
  const int64_t Hkv = a.numKvHeads, G = Hq / Hkv;
  if (T == 0 || Hq == 0) return;
  const int64_t tokensPerTask = std::max<int64_t>(1, kRowsPerTask / G);

  std::vector<Task> tasks;
  for (int64_t s = 0; s < a.numSeqs; ++s) {
    const int64_t q0 = a.queryStart[s], q1 = a.queryStart[s + 1];
    for (int64_t hk = 0; hk < Hkv; ++hk) {
      for (int64_t t = q0; t < q1; t += tokensPerTask) tasks.push_back({s, hk, t, std::min(q1, t + tokensPerTask)});
    }
  }
  int nthreads = a.numThreads > 0 ? a.numThreads : DefaultThreads();
  std::vector<Scratch> scratch(static_cast<size_t>(nthreads));
  const bool hasScore = static_cast<bool>(a.scoreMod), hasMask = static_cast<bool>(a.maskMod);

  RunParallel(nthreads, static_cast<int64_t>(tasks.size()), [&](int worker, int64_t ti) {
    if (StopRequested(a.cancel)) throw Cancelled();
    const Task& task = tasks[static_cast<size_t>(ti)];
    Scratch& sc = scratch[static_cast<size_t>(worker)];
    const int64_t s = task.seq, hk = task.hk;
    const int64_t n = a.seqLens[s];
    const int64_t mq = int64_t(a.queryStart[s + 1]) - a.queryStart[s];
    const int64_t nrows = (task.t1 - task.t0) * G;
    sc.rows.resize(static_cast<size_t>(nrows));
    sc.q.resize(static_cast<size_t>(nrows * D));
    sc.acc.assign(static_cast<size_t>(nrows * D), 0.0);
    sc.tile.resize(static_cast<size_t>(kKvTile * D));
    sc.outf.resize(static_cast<size_t>(D));
    int64_t hiMax = 0;
    for (int64_t r = 0; r < nrows; ++r) {
      Row& row = sc.rows[static_cast<size_t>(r)];
      row.token = task.t0 + r / G;
      row.h = hk * G + r % G;
      row.pos = n - mq + (row.token - a.queryStart[s]);
      row.hi = a.causal ? std::clamp<int64_t>(row.pos + 1, 0, n) : n;
      row.sum = 0.0;
      hiMax = std::max(hiMax, row.hi);
      LoadRow(a.q, row.token * a.q.strides[0] + row.h * a.q.strides[1], a.q.strides[2], D,
              sc.q.data() + r * D);
    }
    const int64_t sp = std::max<int64_t>(hiMax, 1);
    if (static_cast<int64_t>(sc.s.size()) < nrows * sp) sc.s.resize(static_cast<size_t>(nrows * sp));

    // Pass 1: scaled scores, K tile by K tile.
    for (int64_t j0 = 0; j0 < hiMax; j0 += kKvTile) {
      if (StopRequested(a.cancel)) throw Cancelled();
      const int64_t j1 = std::min(hiMax, j0 + kKvTile);
      for (int64_t j = j0; j < j1; ++j) ConvertRow(a.k, a.kvDtype, KvOffset(a, s, hk, j), D, sc.tile.data() + (j - j0) * D);
      for (int64_t r = 0; r < nrows; ++r) {
        const Row& row = sc.rows[static_cast<size_t>(r)];
        float* sr = sc.s.data() + r * sp;
        for (int64_t j = j0; j < std::min(j1, row.hi); ++j) sr[j] = Dot(sc.q.data() + r * D, sc.tile.data() + (j - j0) * D, D) * a.scale;
      }
    }
    // Mods, then the row max (NaN-propagating, like torch.max).
    for (int64_t r = 0; r < nrows; ++r) {
      Row& row = sc.rows[static_cast<size_t>(r)];
      float* sr = sc.s.data() + r * sp;
      const int ib = int(s), ih = int(row.h), iq = int(row.pos);
      float m = kNegInf;
      bool nan = false;
      for (int64_t j = 0; j < row.hi; ++j) {
        float x = sr[j];
        if (hasMask && !a.maskMod(ib, ih, iq, int(j))) {
          x = kNegInf;
        } else if (hasScore) {
          x = a.scoreMod(x, ib, ih, iq, int(j));
        }
        sr[j] = x;
        if (x > m) m = x;
        else if (x != x) nan = true;
      }
      row.m = nan ? std::numeric_limits<float>::quiet_NaN() : m;
    }
    // Pass 2: p = exp(s - m), p @ V, V tile by V tile (masked positions skipped: their v is never read).
    for (int64_t j0 = 0; j0 < hiMax; j0 += kKvTile) {
      if (StopRequested(a.cancel)) throw Cancelled();
      const int64_t j1 = std::min(hiMax, j0 + kKvTile);
      bool loaded = false;
      for (int64_t r = 0; r < nrows; ++r) {
        Row& row = sc.rows[static_cast<size_t>(r)];
        if (row.m == kNegInf) continue;
        const float* sr = sc.s.data() + r * sp;
        double* acc = sc.acc.data() + r * D;
        for (int64_t j = j0; j < std::min(j1, row.hi); ++j) {
          if (sr[j] == kNegInf) continue;
          if (!loaded) {
            for (int64_t jj = j0; jj < j1; ++jj) ConvertRow(a.v, a.kvDtype, KvOffset(a, s, hk, jj), D, sc.tile.data() + (jj - j0) * D);
            loaded = true;
          }
          const float p = std::exp(sr[j] - row.m);
          row.sum += p;
          const float* vr = sc.tile.data() + (j - j0) * D;
          for (int64_t d = 0; d < D; ++d) acc[d] += double(p) * vr[d];
        }
      }
    }
    // Outputs: [T, Hq, D] and [T, Hq]; a row with nothing kept gives 0 and -inf.
    for (int64_t r = 0; r < nrows; ++r) {
      const Row& row = sc.rows[static_cast<size_t>(r)];
      const int64_t orow = row.token * Hq + row.h;
      float* out = a.outDtype == kF32 ? static_cast<float*>(a.out) + orow * D : sc.outf.data();
      if (row.m == kNegInf) {
        std::fill(out, out + D, 0.0f);
        if (a.lse) a.lse[orow] = kNegInf;
      } else {
        const double* acc = sc.acc.data() + r * D;
        const double inv = 1.0 / row.sum;
        for (int64_t d = 0; d < D; ++d) out[d] = static_cast<float>(acc[d] * inv);
        if (a.lse) a.lse[orow] = static_cast<float>(double(row.m) + std::log(row.sum));
      }
      if (a.outDtype != kF32) StoreRow(a.out, a.outDtype, orow * D, out, D);
    }
  });
}

}  // namespace flexattn::cpu
