// The part of the NCCL API flexattn uses, resolved at run time with
// dlopen/dlsym (nccl.cc): the addon includes no nccl.h and links no NCCL.
// Declarations written from NCCL's documented, stable C ABI (NCCL user guide,
// "API > Types" and "API > Communicator creation / Group calls / Point-to-point
// / Collectives"): ncclComm_t is an opaque pointer, ncclUniqueId a 128-byte
// struct passed by value, ncclResult_t and ncclDataType_t C enums (int).
#pragma once
#include <cstddef>
#include <string>

#include "cuda/cuda_api.h"

namespace flexattn::nccl {

using ncclComm_t = struct ncclComm*;
using ncclResult_t = int;
using ncclDataType_t = int;
constexpr size_t kUniqueIdBytes = 128;  // NCCL_UNIQUE_ID_BYTES
struct ncclUniqueId {
  char internal[kUniqueIdBytes];
};

// ncclResult_t values.
constexpr ncclResult_t ncclSuccess = 0;
constexpr ncclResult_t ncclInProgress = 7;

// ncclDataType_t values (the aliases ncclChar/ncclInt/ncclHalf/ncclFloat/ncclDouble share these).
constexpr ncclDataType_t ncclInt8 = 0, ncclUint8 = 1, ncclInt32 = 2, ncclUint32 = 3, ncclInt64 = 4,
                         ncclUint64 = 5, ncclFloat16 = 6, ncclFloat32 = 7, ncclFloat64 = 8, ncclBfloat16 = 9;

// NCCL_VERSION(X, Y, Z) for X.Y >= 2.9 is X*10000 + Y*100 + Z.
constexpr int kMinVersionCode = 21800;  // 2.18.0
constexpr const char* kMinVersion = "2.18";

struct Api {
  ncclResult_t (*ncclGetVersion)(int*);
  ncclResult_t (*ncclGetUniqueId)(ncclUniqueId*);
  ncclResult_t (*ncclCommInitRank)(ncclComm_t*, int, ncclUniqueId, int);
  ncclResult_t (*ncclCommInitAll)(ncclComm_t*, int, const int*);
  ncclResult_t (*ncclCommDestroy)(ncclComm_t);
  ncclResult_t (*ncclCommAbort)(ncclComm_t);
  ncclResult_t (*ncclCommGetAsyncError)(ncclComm_t, ncclResult_t*);
  const char* (*ncclGetErrorString)(ncclResult_t);
  ncclResult_t (*ncclSend)(const void*, size_t, ncclDataType_t, int, ncclComm_t, cu::CUstream);
  ncclResult_t (*ncclRecv)(void*, size_t, ncclDataType_t, int, ncclComm_t, cu::CUstream);
  ncclResult_t (*ncclAllGather)(const void*, void*, size_t, ncclDataType_t, ncclComm_t, cu::CUstream);
  ncclResult_t (*ncclGroupStart)();
  ncclResult_t (*ncclGroupEnd)();
  // Optional (NCCL 2.13+): the last error's text on a communicator; nullptr when absent.
  const char* (*ncclGetLastError)(ncclComm_t);
  int versionCode = 0;
};

// "2.21.5" from a version code (both the >= 2.9 and the older encoding).
std::string VersionString(int code);

// Loads libnccl on first use (thread-safe, once; search order in nccl.cc).
// Throws NativeError kNcclUnavailable (nothing found: every place searched and
// how to install), kNcclVersion (older than 2.18) or kNcclSymbol (an NCCL
// library without a symbol flexattn needs).
const Api& Nccl();
// Same, never throws: nullptr and the error's message in *error.
const Api* TryNccl(std::string* error);
// Path of the loaded library ("" when not loaded).
std::string NcclPath();

// The name of an ncclResult_t ("ncclInvalidUsage"), or "ncclResult_t N".
std::string ResultName(ncclResult_t r);
// Throws NativeError(kNccl) unless r is ncclSuccess: `call` names the NCCL
// function, the message carries the result's name, ncclGetErrorString and,
// where the library has it, ncclGetLastError(comm).
void Check(ncclResult_t r, const std::string& call, ncclComm_t comm = nullptr);

}  // namespace flexattn::nccl
