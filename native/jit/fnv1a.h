// FNV-1a 64: the hash behind JIT cache keys and disk-cache checksums. Not a
// cryptographic hash: it guards against truncation, bit rot and torn writes,
// not against someone who can write the cache directory.
#pragma once
#include <cstddef>
#include <cstdint>

namespace flexattn::jit {

constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ull;

inline uint64_t Fnv1a64(const void* data, size_t n, uint64_t h = kFnvOffset) {
  const unsigned char* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; i++) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

}  // namespace flexattn::jit
