#include "jit/disk_cache.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "jit/fnv1a.h"

namespace flexattn::jit::disk {

namespace {

constexpr char kMagic[8] = {'F', 'X', 'K', 'C', 'A', 'C', 'H', 'E'};
constexpr size_t kHeaderBytes = 40;
constexpr size_t kMaxKeyBytes = 200;
constexpr uint64_t kMaxPayloadBytes = 1ull << 31;
constexpr const char* kTempMarker = ".cubin.tmp";  // "<key>.cubin.tmp-<pid>-<n>"
constexpr int64_t kStaleTempNs = 3600ll * 1000000000ll;

void PutU32(char* p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}
void PutU64(char* p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}
uint32_t GetU32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}
uint64_t GetU64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

std::string Errno(const std::string& what, int err) { return what + ": " + std::strerror(err); }

int64_t MtimeNs(const struct stat& st) {
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000ll + st.st_mtim.tv_nsec;
}

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Reads exactly n bytes at offset; false on error or end of file.
bool ReadAt(int fd, char* buf, size_t n, off_t off) {
  while (n > 0) {
    ssize_t r = pread(fd, buf, n, off);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    buf += r;
    n -= static_cast<size_t>(r);
    off += r;
  }
  return true;
}

bool WriteAll(int fd, const char* buf, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, buf, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    buf += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// Removes `path` only if it still is the file open as `fd`: another process
// may have renamed a fresh entry over the bad one since it was opened.
void RemoveIfSame(const std::string& path, int fd) {
  struct stat a, b;
  if (fstat(fd, &a) == 0 && stat(path.c_str(), &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
    unlink(path.c_str());  // ENOENT: someone else removed it first, fine
  }
}

// mkdir -p; true when `dir` exists as a directory afterwards.
bool MakeDirs(const std::string& dir, std::string* error) {
  std::string cur;
  size_t pos = 0;
  while (pos <= dir.size()) {
    size_t next = dir.find('/', pos);
    if (next == std::string::npos) next = dir.size();
    cur = dir.substr(0, next);
    if (!cur.empty() && mkdir(cur.c_str(), 0755) != 0 && errno != EEXIST) {
      *error = Errno("cannot create " + cur, errno);
      return false;
    }
    pos = next + 1;
  }
  struct stat st;
  if (stat(dir.c_str(), &st) != 0) {
    *error = Errno("cannot create " + dir, errno);
    return false;
  }
  if (!S_ISDIR(st.st_mode)) {
    *error = dir + " is not a directory";
    return false;
  }
  return true;
}

std::string TempPath(const std::string& dir, const std::string& key) {
  static std::atomic<uint64_t> counter{0};
  uint64_t n = counter.fetch_add(1) ^ (static_cast<uint64_t>(NowNs()) << 16);
  char buf[64];
  snprintf(buf, sizeof buf, "-%d-%016llx", static_cast<int>(getpid()), static_cast<unsigned long long>(n));
  return dir + "/" + key + kTempMarker + buf;
}

std::mutex g_problem_mu;
std::string g_problem;
bool g_problem_taken = false;

void NoteProblem(const std::string& message) {
  std::lock_guard<std::mutex> lock(g_problem_mu);
  if (g_problem.empty()) g_problem = message;
}

}  // namespace

const char* StatusName(Status s) {
  switch (s) {
    case Status::kHit: return "hit";
    case Status::kMissing: return "missing";
    case Status::kCorrupt: return "corrupt";
    case Status::kStale: return "stale";
    case Status::kWrongKey: return "wrong-key";
    case Status::kError: return "error";
  }
  return "error";
}

bool ParseMaxMb(const std::string& text, uint64_t* bytes) {
  // Digits with at most one '.', nothing else: no sign, exponent, unit or spaces,
  // so "1G" or "-1" is an error instead of a surprise.
  if (text.empty()) return false;
  int dots = 0, digits = 0;
  for (char c : text) {
    if (c == '.') dots++;
    else if (c >= '0' && c <= '9') digits++;
    else return false;
  }
  if (dots > 1 || digits == 0) return false;
  double mb = std::strtod(text.c_str(), nullptr);
  double b = std::floor(mb * 1048576.0);
  if (!std::isfinite(b) || b >= 9.0e18) return false;
  *bytes = static_cast<uint64_t>(b);
  return true;
}

bool ReadConfig(Config* cfg, std::string* error) {
  *cfg = Config{};
  const char* dir = std::getenv("FLEXATTN_CACHE_DIR");
  const char* home = std::getenv("HOME");
  if (dir && *dir) cfg->dir = dir;
  else if (home && *home) cfg->dir = std::string(home) + "/.cache/flexattn";
  else cfg->dir = "/tmp/flexattn-cache-" + std::to_string(getuid());
  while (cfg->dir.size() > 1 && cfg->dir.back() == '/') cfg->dir.pop_back();
  const char* max = std::getenv("FLEXATTN_CACHE_MAX_MB");
  if (!max || !*max) return true;
  uint64_t bytes = 0;
  if (!ParseMaxMb(max, &bytes)) {
    *error = std::string("\"") + max + "\"";
    return false;
  }
  cfg->maxBytes = bytes;
  cfg->enabled = bytes > 0;
  return true;
}

bool ValidKey(const std::string& key) {
  if (key.empty() || key.size() > kMaxKeyBytes || key[0] == '.') return false;
  for (char c : key) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
              c == '.';
    if (!ok) return false;
  }
  return true;
}

std::string EntryPath(const std::string& dir, const std::string& key) { return dir + "/" + key + kEntrySuffix; }

std::string Encode(const std::string& key, const std::string& payload) {
  std::string out(kHeaderBytes + key.size() + payload.size(), '\0');
  char* p = &out[0];
  std::memcpy(p, kMagic, 8);
  PutU32(p + 8, kFormatVersion);
  PutU32(p + 12, static_cast<uint32_t>(key.size()));
  PutU64(p + 16, payload.size());
  PutU64(p + 24, Fnv1a64(payload.data(), payload.size()));
  PutU64(p + 32, Fnv1a64(key.data(), key.size(), Fnv1a64(p, 32)));
  std::memcpy(p + kHeaderBytes, key.data(), key.size());
  std::memcpy(p + kHeaderBytes + key.size(), payload.data(), payload.size());
  return out;
}

namespace {

// Checks everything but the payload checksum. On success `payloadLen` is set.
// Order matters: the version is checked before the header checksum, because
// another format may lay out (and checksum) its header differently.
Status CheckHeader(int fd, const struct stat& st, const std::string& key, uint64_t* payloadLen,
                   std::string* detail) {
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  char h[kHeaderBytes];
  if (size < 12 || !ReadAt(fd, h, size < kHeaderBytes ? 12 : kHeaderBytes, 0)) {
    *detail = "truncated: " + std::to_string(size) + " bytes, shorter than a header";
    return Status::kCorrupt;
  }
  if (std::memcmp(h, kMagic, 8) != 0) {
    *detail = "not a cache entry of this format (magic bytes differ)";
    return Status::kStale;
  }
  uint32_t version = GetU32(h + 8);
  if (version != kFormatVersion) {
    *detail = "format version " + std::to_string(version) + ", expected " + std::to_string(kFormatVersion);
    return Status::kStale;
  }
  if (size < kHeaderBytes) {
    *detail = "truncated: " + std::to_string(size) + " bytes, shorter than a header";
    return Status::kCorrupt;
  }
  uint32_t keyLen = GetU32(h + 12);
  uint64_t len = GetU64(h + 16);
  if (keyLen == 0 || keyLen > kMaxKeyBytes || len > kMaxPayloadBytes) {
    *detail = "header damaged (key or payload length out of range)";
    return Status::kCorrupt;
  }
  std::string stored(keyLen, '\0');
  if (size < kHeaderBytes + keyLen || !ReadAt(fd, &stored[0], keyLen, kHeaderBytes)) {
    *detail = "truncated inside the key";
    return Status::kCorrupt;
  }
  if (Fnv1a64(stored.data(), stored.size(), Fnv1a64(h, 32)) != GetU64(h + 32)) {
    *detail = "header checksum mismatch";
    return Status::kCorrupt;
  }
  uint64_t want = kHeaderBytes + keyLen + len;
  if (size != want) {
    *detail = (size < want ? "truncated: " : "trailing bytes: ") + std::to_string(size) + " bytes, expected " +
              std::to_string(want);
    return Status::kCorrupt;
  }
  if (stored != key) {
    *detail = "stored under key " + stored;
    return Status::kWrongKey;
  }
  *payloadLen = len;
  return Status::kHit;
}

}  // namespace

GetResult Get(const std::string& dir, const std::string& key) {
  GetResult r;
  const std::string path = EntryPath(dir, key);
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT || err == ENOTDIR) {
      r.status = Status::kMissing;
      r.detail = "no entry";
    } else {
      r.status = Status::kError;
      r.detail = Errno("cannot read " + path, err);
    }
    return r;
  }
  struct stat st;
  uint64_t len = 0;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    r.status = Status::kError;
    r.detail = path + " is not a readable regular file";
    close(fd);
    return r;
  }
  r.status = CheckHeader(fd, st, key, &len, &r.detail);
  if (r.status == Status::kHit) {
    std::string payload(len, '\0');
    if (len > 0 && !ReadAt(fd, &payload[0], len, static_cast<off_t>(kHeaderBytes + key.size()))) {
      r.status = Status::kCorrupt;
      r.detail = "short read of the payload";
    } else {
      char h[32];
      if (!ReadAt(fd, h, 32, 0) || Fnv1a64(payload.data(), payload.size()) != GetU64(h + 24)) {
        r.status = Status::kCorrupt;
        r.detail = "payload checksum mismatch";
      } else {
        r.payload = std::move(payload);
        // Most recently used now. Fails harmlessly on a read-only cache.
        futimens(fd, nullptr);
      }
    }
  }
  if (r.status != Status::kHit) {
    RemoveIfSame(path, fd);
    r.removed = true;
  }
  close(fd);
  return r;
}

bool Probably(const std::string& dir, const std::string& key) {
  int fd = open(EntryPath(dir, key).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  struct stat st;
  uint64_t len = 0;
  std::string detail;
  bool ok = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && CheckHeader(fd, st, key, &len, &detail) == Status::kHit;
  close(fd);
  return ok;
}

Listing List(const std::string& dir) {
  Listing out;
  DIR* d = opendir(dir.c_str());
  if (!d) return out;
  const std::string suffix = kEntrySuffix;
  const int64_t now = NowNs();
  while (struct dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name.empty() || name[0] == '.') continue;
    bool temp = name.find(kTempMarker) != std::string::npos;
    if (!temp && !EndsWith(name, suffix)) continue;
    std::string path = dir + "/" + name;
    struct stat st;
    if (lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;  // ENOENT: gone meanwhile
    if (temp) {
      // A live write takes milliseconds; an hour-old temp file is a crashed writer's.
      if (now - MtimeNs(st) > kStaleTempNs && unlink(path.c_str()) == 0) continue;
      out.tempFiles++;
      continue;
    }
    out.entries.push_back({name.substr(0, name.size() - suffix.size()), static_cast<uint64_t>(st.st_size),
                           MtimeNs(st)});
    out.bytes += static_cast<uint64_t>(st.st_size);
  }
  closedir(d);
  std::sort(out.entries.begin(), out.entries.end(), [](const EntryInfo& a, const EntryInfo& b) {
    return a.mtimeNs != b.mtimeNs ? a.mtimeNs < b.mtimeNs : a.key < b.key;
  });
  return out;
}

EvictResult Evict(const std::string& dir, uint64_t maxBytes, const std::string& keepKey) {
  EvictResult r;
  Listing l = List(dir);
  uint64_t total = 0;
  for (const auto& e : l.entries) {
    if (e.key != keepKey) total += e.bytes;
  }
  for (const auto& e : l.entries) {
    if (total <= maxBytes) break;
    if (e.key == keepKey) continue;
    const std::string path = EntryPath(dir, e.key);
    // Skip a file that changed since it was listed (another process renamed a
    // fresh entry in, or a reader touched it): it is not the one judged oldest.
    struct stat st;
    if (lstat(path.c_str(), &st) != 0) {
      total -= e.bytes;  // already gone
      continue;
    }
    if (MtimeNs(st) != e.mtimeNs || static_cast<uint64_t>(st.st_size) != e.bytes) continue;
    if (unlink(path.c_str()) == 0) {
      r.entries++;
      r.bytes += e.bytes;
    }
    total -= e.bytes;  // removed by us or by someone else (ENOENT)
  }
  return r;
}

PutResult Put(const std::string& dir, const std::string& key, const std::string& payload, uint64_t maxBytes) {
  PutResult r;
  if (!ValidKey(key)) {
    r.error = "invalid cache key \"" + key + "\"";
    return r;
  }
  if (payload.size() > kMaxPayloadBytes) {
    r.error = "entry of " + std::to_string(payload.size()) + " bytes is too large to cache";
    return r;
  }
  const std::string bytes = Encode(key, payload);
  if (bytes.size() > maxBytes) {
    r.error = "entry of " + std::to_string(bytes.size()) + " bytes exceeds FLEXATTN_CACHE_MAX_MB (" +
              std::to_string(maxBytes) + " bytes)";
    return r;
  }
  if (!MakeDirs(dir, &r.error)) return r;
  r.evicted = Evict(dir, maxBytes - bytes.size(), key);
  const std::string tmp = TempPath(dir, key);
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    r.error = Errno("cannot write in " + dir, errno);
    return r;
  }
  bool ok = WriteAll(fd, bytes.data(), bytes.size());
  int err = errno;
  if (ok && fsync(fd) != 0) {
    ok = false;
    err = errno;
  }
  if (close(fd) != 0 && ok) {
    ok = false;
    err = errno;
  }
  if (ok && rename(tmp.c_str(), EntryPath(dir, key).c_str()) != 0) {
    ok = false;
    err = errno;
  }
  if (!ok) {
    unlink(tmp.c_str());
    r.error = Errno("cannot write " + EntryPath(dir, key), err);
    return r;
  }
  r.ok = true;
  return r;
}

PutResult Store(const Config& cfg, const std::string& key, const std::string& payload) {
  if (!cfg.enabled) {
    PutResult r;
    r.error = "the disk cache is off (FLEXATTN_CACHE_MAX_MB=0)";
    return r;
  }
  PutResult r = Put(cfg.dir, key, payload, cfg.maxBytes);
  if (!r.ok) NoteProblem("the kernel disk cache was not written (" + r.error + ")");
  return r;
}

GetResult Load(const Config& cfg, const std::string& key) {
  if (!cfg.enabled) {
    GetResult r;
    r.detail = "the disk cache is off (FLEXATTN_CACHE_MAX_MB=0)";
    return r;
  }
  GetResult r = Get(cfg.dir, key);
  if (r.status == Status::kError) NoteProblem("the kernel disk cache could not be read (" + r.detail + ")");
  return r;
}

bool TakeProblem(std::string* message) {
  std::lock_guard<std::mutex> lock(g_problem_mu);
  if (g_problem.empty() || g_problem_taken) return false;
  g_problem_taken = true;
  *message = g_problem;
  return true;
}

}  // namespace flexattn::jit::disk
