// Shared helper for the dlopen'ed libraries (driver.cc, nvrtc.cc).
#pragma once
#include <dlfcn.h>

#include <string>

namespace flexattn::cu {

// Resolves `name` in `lib` into `fn`; appends the name to `missing` when absent.
template <typename T>
bool LoadSymbol(void* lib, T& fn, const char* name, std::string& missing) {
  void* p = dlsym(lib, name);
  fn = reinterpret_cast<T>(p);
  if (!p) missing += std::string(missing.empty() ? "" : ", ") + name;
  return p != nullptr;
}

}  // namespace flexattn::cu
