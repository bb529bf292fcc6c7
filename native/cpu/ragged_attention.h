// CPU reference attention over a ragged batch whose KV is addressed through a
// page table (lib/serving/paged-kv.ts's RaggedKv): paged KV caches, batched
// contiguous KV and packed (varlen) KV alike. The oracle for the GPU decode /
// paged kernels and the CPU backend of pagedAttention / varlenAttention.
//
// Sequence s has n = seqLens[s] KV tokens and m = queryStart[s+1] -
// queryStart[s] query tokens (rows queryStart[s] .. of the packed q
// [T, Hq, D]); its query token i sits at absolute position n - m + i. KV token
// j of s is at element offset
//   pageTable[s * maxPagesPerSeq + j / pageSize] * pageStride
//   + (j % pageSize) * tokenStride + hk * headStride   (+ d, contiguous)
// of k and v, with hk = h / (Hq / Hkv). Causal rows see kv <= their position.
// Mods get (b = s, h, q = that position, kv = j). Output [T, Hq, D] in
// outDtype, LSE [T, Hq] f32 natural log; rows with every key masked give 0 and
// -inf; NaN propagates as in PyTorch (a NaN score makes its row NaN).
#pragma once
#include <cstdint>

#include "cpu/attention.h"

namespace flexattn::cpu {

struct CpuRaggedArgs {
  HostView q;                      // [T, Hq, D] (float dtype, any strides)
  const void* k = nullptr;         // element 0 of the K pool (kvDtype)
  const void* v = nullptr;         // element 0 of the V pool
  int64_t kElems = 0, vElems = 0;  // elements readable from k / v (bounds of every table entry)
  DType kvDtype = kF32;
  int64_t pageSize = 0, pageStride = 0, tokenStride = 0, headStride = 0;
  int64_t numKvHeads = 0;
  const int32_t* pageTable = nullptr;  // [numSeqs, maxPagesPerSeq]
  int64_t maxPagesPerSeq = 0;
  const int32_t* seqLens = nullptr;     // [numSeqs]
  const int32_t* queryStart = nullptr;  // [numSeqs + 1]
  int64_t numSeqs = 0;
  float scale = 1.0f;
  bool causal = true;
  ScoreModFn scoreMod;  // optional
  MaskModFn maskMod;    // optional
  void* out = nullptr;  // [T, Hq, D] contiguous in outDtype
  DType outDtype = kF32;
  float* lse = nullptr;  // optional [T, Hq]
  int numThreads = 0;    // 0 = every CPU this process may use
  const int32_t* cancel = nullptr;  // nonzero -> Cancelled at the next chunk
};

// Shapes, strides and dtypes (cheap: independent of the data sizes). Throws ArgError.
void ValidateRaggedShapes(const CpuRaggedArgs& a);
// The tables (O(numSeqs * pages)): lengths, offsets, and every page entry a
// sequence uses inside k / v. Throws ArgError naming the table and the entry.
void ValidateRaggedTables(const CpuRaggedArgs& a);

// Validates both, then computes. Throws ArgError or Cancelled.
void RaggedAttention(const CpuRaggedArgs& a);

}  // namespace flexattn::cpu
