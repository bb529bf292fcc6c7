// Keeps the prebuilt addon loadable on glibc 2.34 (Ubuntu 22.04, RHEL 9).
//
// The statically linked libstdc++ of gcc 12 references arc4random (glibc 2.36)
// from std::random_device, which flexattn never uses; the reference alone would
// make the dynamic loader reject the addon on older hosts. This local, hidden
// definition satisfies it at link time with getrandom(2) (glibc 2.25), so the
// addon imports no symbol newer than GLIBC_2.34.
#include <sys/random.h>

#include <cstdint>

extern "C" __attribute__((visibility("hidden"))) uint32_t arc4random(void) {
  uint32_t v = 0;
  while (getrandom(&v, sizeof v, 0) != static_cast<ssize_t>(sizeof v)) {
  }
  return v;
}
