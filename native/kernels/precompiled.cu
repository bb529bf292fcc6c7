// Translation unit nvcc compiles into the embedded fatbin (see CMakeLists.txt).
// Every module NVRTC can build at run time must be included here with the same
// extern "C" kernel names, so the loader finds them in the fatbin first:
//   - util.cuh: randn, strided cast/copy
//   - paged_append.cuh: flexattn_paged_append (KvCache.append on the GPU)
//   - flash_fwd.cuh: dense attention variants flexattn_fwd_d{32,64,96,128,256}_{bf16,f16}[_causal]
//   - flash_fwd_sm90.cuh: Hopper (wgmma) dense variants flexattn_fwd_sm90_d{64,128}_{bf16,f16}[_causal]
//     (real code only in the sm_90a image; trapping stubs in the others)
//   - decode.cuh: decode / ragged kernels flexattn_decode[_combine]_d{64,128}_{bf16,f16}
//   - flash_bwd.cuh: backward kernels flexattn_bwd_{pre,dkdv,dq}_d{32,64,96,128}_{bf16,f16}[_causal]
// Flex variants (block-sparse with generated mods) are always JIT-compiled, and so are the
// warp-specialised Hopper kernels (sm90_ws_entry.cuh, family sm90ws: not yet run on a GPU, opt-in).
#include "util.cuh"
#include "paged_append.cuh"
#include "flash_fwd.cuh"
#include "flash_fwd_sm90.cuh"
#include "decode.cuh"
#include "flash_bwd.cuh"
// JIT-only parameter blocks: included here so that nvcc checks their layout
// (static_asserts) once per build; they add no code.
#include "generated/blockmask_classify_params.cuh"
#include "sm90_ws_entry.cuh"   // WsParams / WsFwdArgs layout; templates only, no kernel

FLEXATTN_FWD_ALL_DENSE()
FLEXATTN_FWD_SM90_ALL_DENSE()
FLEXATTN_DECODE_ALL()
FLEXATTN_BWD_ALL_DENSE()
