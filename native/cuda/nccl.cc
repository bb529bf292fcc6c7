// Lazy NCCL loading, like the driver and NVRTC: nothing is opened when the
// addon loads, only on the first NCCL use (or ncclStatus for `flexattn info`).
// Search order:
//   1. $FLEXATTN_NCCL (a file path); when set it is the only candidate.
//   2. libnccl.so.2 through the system loader (LD_LIBRARY_PATH, ldconfig).
//   3. Python wheels: nvidia/nccl/lib/libnccl.so.2 (pip install nvidia-nccl-cu13
//      or -cu12) and torch/lib/libnccl.so.2 (bundled by some PyTorch builds),
//      under $VIRTUAL_ENV, $CONDA_PREFIX, each $PYTHONPATH entry, ~/.local and
//      the system site-/dist-packages folders. Globbed, never by running python.
// A library that opens but is not usable (too old, a symbol missing) is
// skipped; when nothing usable is found, the error names the most telling
// failure: a version or symbol problem before "not found".
#include <dlfcn.h>
#include <glob.h>

#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#include "addon/errors.h"
#include "cuda/dl_symbol.h"
#include "cuda/nccl_api.h"

namespace flexattn::nccl {

namespace {
std::once_flag g_once;
Api g_api;
bool g_ok = false;
std::string g_path;
NativeError g_error;

std::vector<std::string> Glob(const std::string& pattern) {
  std::vector<std::string> out;
  glob_t g;
  if (glob(pattern.c_str(), 0, nullptr, &g) == 0) {
    for (size_t i = g.gl_pathc; i-- > 0;) out.push_back(g.gl_pathv[i]);  // highest version first
  }
  globfree(&g);
  return out;
}

std::vector<std::string> PythonRoots() {
  std::vector<std::string> roots;
  auto env = [](const char* n) -> std::string {
    const char* v = std::getenv(n);
    return v && *v ? v : "";
  };
  if (!env("VIRTUAL_ENV").empty()) roots.push_back(env("VIRTUAL_ENV") + "/lib/python3*/site-packages");
  if (!env("CONDA_PREFIX").empty()) roots.push_back(env("CONDA_PREFIX") + "/lib/python3*/site-packages");
  std::string pp = env("PYTHONPATH");
  for (size_t start = 0; !pp.empty() && start <= pp.size();) {
    size_t colon = pp.find(':', start);
    std::string entry = pp.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
    if (!entry.empty()) roots.push_back(entry);
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  if (!env("HOME").empty()) roots.push_back(env("HOME") + "/.local/lib/python3*/site-packages");
  for (const char* r : {"/usr/local/lib/python3*/dist-packages", "/usr/local/lib/python3*/site-packages",
                        "/usr/lib/python3/dist-packages", "/usr/lib/python3*/site-packages",
                        "/usr/lib/python3*/dist-packages", "/opt/conda/lib/python3*/site-packages"}) {
    roots.push_back(r);
  }
  return roots;
}

// Candidates to dlopen, and the patterns that matched nothing (for the error message).
std::vector<std::string> Candidates(std::string& nomatch, bool& fromEnv) {
  std::vector<std::string> c;
  const char* env = std::getenv("FLEXATTN_NCCL");
  fromEnv = env && *env;
  if (fromEnv) {
    c.push_back(env);
    return c;
  }
  c.push_back("libnccl.so.2");
  for (const auto& r : PythonRoots()) {
    for (const char* sub : {"/nvidia/nccl/lib/libnccl.so.2", "/torch/lib/libnccl.so.2"}) {
      auto found = Glob(r + sub);
      if (found.empty()) nomatch += "  - " + r + sub + ": no match\n";
      for (auto& p : found) c.push_back(p);
    }
  }
  return c;
}

const char* kInstall =
    "Possible solutions:\n"
    "  - Install NCCL with pip: `pip install nvidia-nccl-cu13` (CUDA 12 drivers: `pip install nvidia-nccl-cu12`)\n"
    "  - Install it from NVIDIA's packages (libnccl2) so that libnccl.so.2 is on the loader path\n"
    "  - Point flexattn at it: FLEXATTN_NCCL=/path/to/libnccl.so.2";

// Opens one candidate. Returns true when usable; otherwise describes the
// failure in `tried` and, for a library that is NCCL but unusable, sets *bad.
bool TryOne(const std::string& c, std::string& tried, NativeError* bad) {
  dlerror();
  void* h = dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    const char* e = dlerror();
    tried += "  - " + c + ": " + (e ? e : "not found") + "\n";
    return false;
  }
  std::string where = c;
  Api api;
  std::string missing;
  if (!cu::LoadSymbol(h, api.ncclGetVersion, "ncclGetVersion", missing)) {
    tried += "  - " + c + ": opens but is not NCCL (no ncclGetVersion)\n";
    dlclose(h);
    return false;
  }
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(api.ncclGetVersion), &info) && info.dli_fname) where = info.dli_fname;
  int code = 0;
  if (api.ncclGetVersion(&code) != ncclSuccess || code < kMinVersionCode) {
    std::string v = code > 0 ? VersionString(code) : "unknown";
    tried += "  - " + where + ": NCCL " + v + ", older than " + kMinVersion + "\n";
    if (bad && bad->message.empty()) {
      *bad = NativeError(ErrKind::kNcclVersion,
                         "flexattn: the NCCL at " + where + " is version " + v + "; flexattn needs NCCL " + kMinVersion +
                             " or newer.\n" + kInstall,
                         v, where);
    }
    dlclose(h);
    return false;
  }
  cu::LoadSymbol(h, api.ncclGetUniqueId, "ncclGetUniqueId", missing);
  cu::LoadSymbol(h, api.ncclCommInitRank, "ncclCommInitRank", missing);
  cu::LoadSymbol(h, api.ncclCommInitAll, "ncclCommInitAll", missing);
  cu::LoadSymbol(h, api.ncclCommDestroy, "ncclCommDestroy", missing);
  cu::LoadSymbol(h, api.ncclCommAbort, "ncclCommAbort", missing);
  cu::LoadSymbol(h, api.ncclCommGetAsyncError, "ncclCommGetAsyncError", missing);
  cu::LoadSymbol(h, api.ncclGetErrorString, "ncclGetErrorString", missing);
  cu::LoadSymbol(h, api.ncclSend, "ncclSend", missing);
  cu::LoadSymbol(h, api.ncclRecv, "ncclRecv", missing);
  cu::LoadSymbol(h, api.ncclAllGather, "ncclAllGather", missing);
  cu::LoadSymbol(h, api.ncclGroupStart, "ncclGroupStart", missing);
  cu::LoadSymbol(h, api.ncclGroupEnd, "ncclGroupEnd", missing);
  if (!missing.empty()) {
    tried += "  - " + where + ": NCCL " + VersionString(code) + " without " + missing + "\n";
    if (bad && bad->message.empty()) {
      *bad = NativeError(ErrKind::kNcclSymbol,
                         "flexattn: the NCCL at " + where + " (version " + VersionString(code) +
                             ") lacks symbols flexattn needs: " + missing +
                             ". Is it a complete libnccl.so.2?\n" + kInstall,
                         missing, where);
    }
    dlclose(h);
    return false;
  }
  api.ncclGetLastError = reinterpret_cast<decltype(api.ncclGetLastError)>(dlsym(h, "ncclGetLastError"));
  api.versionCode = code;
  g_api = api;
  g_path = where;
  return true;
}

void DoLoad() {
  std::string nomatch, tried;
  bool fromEnv = false;
  NativeError bad;
  for (const auto& c : Candidates(nomatch, fromEnv)) {
    if (TryOne(c, tried, &bad)) {
      g_ok = true;
      return;
    }
  }
  if (!bad.message.empty()) {
    // Show every place looked at too: a usable NCCL may be hidden by an old one.
    bad.message += "\nSearched:\n" + tried + nomatch;
    g_error = bad;
    return;
  }
  g_error = NativeError(ErrKind::kNcclUnavailable,
                        std::string("flexattn: NCCL (libnccl.so.2) could not be loaded; it is needed for communication "
                                    "between GPUs (createCommunicator).\n") +
                            (fromEnv ? "FLEXATTN_NCCL is set, so only that path was tried:\n" : "Searched:\n") + tried +
                            nomatch + kInstall);
}
}  // namespace

std::string VersionString(int code) {
  if (code >= 10000) {
    return std::to_string(code / 10000) + "." + std::to_string(code % 10000 / 100) + "." + std::to_string(code % 100);
  }
  return std::to_string(code / 1000) + "." + std::to_string(code % 1000 / 100) + "." + std::to_string(code % 100);
}

const Api* TryNccl(std::string* error) {
  std::call_once(g_once, DoLoad);
  if (g_ok) return &g_api;
  if (error) *error = g_error.message;
  return nullptr;
}

const Api& Nccl() {
  std::call_once(g_once, DoLoad);
  if (!g_ok) throw g_error;
  return g_api;
}

std::string NcclPath() {
  std::call_once(g_once, DoLoad);
  return g_ok ? g_path : "";
}

std::string ResultName(ncclResult_t r) {
  switch (r) {
    case 0: return "ncclSuccess";
    case 1: return "ncclUnhandledCudaError";
    case 2: return "ncclSystemError";
    case 3: return "ncclInternalError";
    case 4: return "ncclInvalidArgument";
    case 5: return "ncclInvalidUsage";
    case 6: return "ncclRemoteError";
    case 7: return "ncclInProgress";
    default: return "ncclResult_t " + std::to_string(r);
  }
}

void Check(ncclResult_t r, const std::string& call, ncclComm_t comm) {
  if (r == ncclSuccess) return;
  const Api& a = g_api;  // Check is only reached through a loaded table
  std::string text = a.ncclGetErrorString ? a.ncclGetErrorString(r) : "";
  std::string last = a.ncclGetLastError ? (a.ncclGetLastError(comm) ? a.ncclGetLastError(comm) : "") : "";
  std::string detail = text + (last.empty() || last == text ? "" : ": " + last);
  std::string hint = r == 6 ? "A peer rank failed or exited; every rank must call the same operations in the same order."
                     : r == 5 || r == 4 ? "Check that every rank passes the same size, unique id and matching buffers."
                                        : "Run with NCCL_DEBUG=WARN for NCCL's own diagnostics.";
  throw NativeError(ErrKind::kNccl,
                    "flexattn: " + call + " failed with " + ResultName(r) + (detail.empty() ? "" : " (" + detail + ")") +
                        ". " + hint,
                    call, ResultName(r), detail);
}

}  // namespace flexattn::nccl
