// Paged-KV append: writes a ragged batch of new key/value tokens into their
// pages in one launch (KvCache.append on the GPU; lib/serving/append-gpu.ts).
// One warp per (token, KV head) row: lane 0's binary search over cuTokens
// finds the row's sequence (all lanes run it: the few loads are cached), the
// page table gives the destination page, and the lanes copy the D elements
// (16-byte vectors when both rows are 16-byte aligned, else element by
// element). Pages are allocated and copy-on-write copies made by the host
// before the launch, so the kernel only writes positions no sequence reads yet.
// Self-contained (no toolkit headers) so NVRTC can build it too.
#pragma once
#include "generated/paged_append_params.cuh"

namespace paged_append_detail {

// 16 bytes moved as one load/store (no toolkit vector types: NVRTC builds this too).
struct alignas(16) Vec16 { unsigned int x, y, z, w; };

// The sequence s with cuTokens[s] <= t < cuTokens[s + 1] (sequences with no new token are skipped over).
__device__ __forceinline__ int SequenceOf(const int* __restrict__ cuTokens, int numSeqs, int t) {
  int lo = 0, hi = numSeqs - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (__ldg(cuTokens + mid) <= t) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

template <typename T>
__device__ __forceinline__ void CopyRow(const char* __restrict__ src, char* __restrict__ dst, int n, int lane) {
  const T* s = reinterpret_cast<const T*>(src);
  T* d = reinterpret_cast<T*>(dst);
  for (int i = lane; i < n; i += 32) d[i] = s[i];
}

}  // namespace paged_append_detail

// The 8-int config every kernel module carries (lib/jit.ts reads <name>_cfg when it loads a kernel):
// threads, dynamic smem, then no tile, head dim or stages, and the parameter block's size (no tail).
extern "C" __constant__ int flexattn_paged_append_cfg[8] = {
    256, 0, 0, 0, 0, 0, static_cast<int>(sizeof(::flexattn::PagedAppendParams)), static_cast<int>(sizeof(::flexattn::PagedAppendParams))};

extern "C" __global__ void __launch_bounds__(256) flexattn_paged_append(::flexattn::PagedAppendParams p) {
  using namespace paged_append_detail;
  const int lane = threadIdx.x & 31;
  const long long warpsPerGrid = (long long)gridDim.x * (blockDim.x >> 5);
  const long long rows = (long long)p.numTokens * p.numKvHeads;
  const int* cuTokens = reinterpret_cast<const int*>(p.cuTokens);
  const int* startLens = reinterpret_cast<const int*>(p.startLens);
  const int* pageTable = reinterpret_cast<const int*>(p.pageTable);
  const long long rowBytes = (long long)p.headDim * p.elemBytes;
  for (long long r = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); r < rows; r += warpsPerGrid) {
    const int t = (int)(r / p.numKvHeads), h = (int)(r % p.numKvHeads);
    const int s = SequenceOf(cuTokens, p.numSeqs, t);
    const long long pos = (long long)__ldg(startLens + s) + (t - __ldg(cuTokens + s));
    const long long page = __ldg(pageTable + (long long)s * p.maxPagesPerSeq + pos / p.pageSize);
    const long long dstElem = page * p.pageStride + (pos % p.pageSize) * p.tokenStride + (long long)h * p.headStride;
    const long long srcElem = (long long)t * p.srcTokenStride + (long long)h * p.srcHeadStride;
    for (int which = 0; which < 2; ++which) {
      const char* src = reinterpret_cast<const char*>(which ? p.vSrc : p.kSrc) + srcElem * p.elemBytes;
      char* dst = reinterpret_cast<char*>(which ? p.vPool : p.kPool) + dstElem * p.elemBytes;
      if (((reinterpret_cast<unsigned long long>(src) | reinterpret_cast<unsigned long long>(dst) | rowBytes) & 15) == 0) {
        CopyRow<Vec16>(src, dst, (int)(rowBytes >> 4), lane);
      } else if (p.elemBytes == 4) {
        CopyRow<unsigned int>(src, dst, p.headDim, lane);
      } else {
        CopyRow<unsigned short>(src, dst, p.headDim, lane);
      }
    }
  }
}
