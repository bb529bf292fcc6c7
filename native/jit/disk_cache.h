// The on-disk kernel cache: one file per compiled kernel, written atomically,
// checked on every read, kept under a size cap by least-recently-used
// eviction. Plain POSIX file code with no CUDA, NVRTC or Node-API dependency,
// so CI exercises it without a GPU (native/jit/disk_cache_js.cc exposes it).
//
// Entry file `<dir>/<key>.cubin`, integers little-endian:
//   0  magic "FXKCACHE"
//   8  u32 format version (kFormatVersion)
//  12  u32 key length K
//  16  u64 payload length N
//  24  u64 FNV-1a 64 of the payload
//  32  u64 FNV-1a 64 of bytes 0..31 followed by the key
//  40  the key (K bytes), then the payload (N bytes); the file is exactly 40+K+N bytes.
// A reader that finds anything else (wrong magic or version, bad checksum, a
// short or long file, another key) removes the file and reports a miss, so
// the caller recompiles and rewrites it: a damaged entry is never loaded.
//
// Concurrency (threads and processes): a writer fills a uniquely named temp
// file in the same directory, fsyncs it and renames it over the entry, so a
// reader sees the old file or the new one, never part of one. Files vanish
// at any time (another process evicting or replacing them): ENOENT is a
// normal outcome everywhere. Recency is the entry's mtime, set on write and
// touched on every hit (atime is unreliable under noatime/relatime).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace flexattn::jit::disk {

constexpr uint32_t kFormatVersion = 2;
constexpr const char* kEntrySuffix = ".cubin";
constexpr uint64_t kDefaultMaxBytes = 1024ull << 20;  // FLEXATTN_CACHE_MAX_MB default: 1024

// Where the cache lives and how large it may grow (from the environment).
struct Config {
  std::string dir;        // $FLEXATTN_CACHE_DIR, else ~/.cache/flexattn
  uint64_t maxBytes = kDefaultMaxBytes;
  bool enabled = true;    // FLEXATTN_CACHE_MAX_MB=0 turns the disk cache off
};

// Reads FLEXATTN_CACHE_DIR and FLEXATTN_CACHE_MAX_MB. Returns false with
// `error` describing the bad value when FLEXATTN_CACHE_MAX_MB is not a
// non-negative number of megabytes (2^20 bytes); `cfg` then holds defaults.
bool ReadConfig(Config* cfg, std::string* error);

// Parses a FLEXATTN_CACHE_MAX_MB value ("512", "0.5", "0"); false if invalid.
bool ParseMaxMb(const std::string& text, uint64_t* bytes);

// Keys are file stems: 1-200 characters of [A-Za-z0-9_.-], not starting with '.'.
bool ValidKey(const std::string& key);
std::string EntryPath(const std::string& dir, const std::string& key);

enum class Status {
  kHit,
  kMissing,   // no such entry (or no cache directory)
  kCorrupt,   // checksum, length or header damage: removed
  kStale,     // another format (magic or version): removed
  kWrongKey,  // stored under another key: removed
  kError,     // the file exists but could not be read (e.g. permissions)
};
const char* StatusName(Status s);

struct GetResult {
  Status status = Status::kMissing;
  std::string payload;  // kHit only
  std::string detail;   // why it was not a hit, in words
  bool removed = false; // the bad entry was deleted
};

// Reads and verifies an entry; on a hit, marks it most recently used.
GetResult Get(const std::string& dir, const std::string& key);

// Cheap check (header and length, not the payload checksum): would Get
// probably hit? Used to decide whether a compile is needed at all.
bool Probably(const std::string& dir, const std::string& key);

struct EvictResult {
  int entries = 0;
  uint64_t bytes = 0;
};

struct PutResult {
  bool ok = false;
  std::string error;  // why the entry was not written (errno text, size over the cap)
  EvictResult evicted;
};

// Writes an entry (temp file + fsync + rename), first evicting least recently
// used entries so that the cache, this entry included, stays within
// `maxBytes`. Never throws; failure (unwritable or full disk, entry larger
// than the cap) is reported in the result and leaves no temp file behind.
PutResult Put(const std::string& dir, const std::string& key, const std::string& payload, uint64_t maxBytes);

struct EntryInfo {
  std::string key;
  uint64_t bytes = 0;
  int64_t mtimeNs = 0;
};

struct Listing {
  std::vector<EntryInfo> entries;  // oldest (least recently used) first
  uint64_t bytes = 0;
  int tempFiles = 0;               // writes in progress (or left by a crashed process)
};

// Lists entries; temp files older than an hour (a crashed writer's) are removed.
Listing List(const std::string& dir);

// Removes least recently used entries until the cache holds at most
// `maxBytes`. `keepKey` (may be empty) is neither counted nor removed: Put
// passes the key it is about to replace.
EvictResult Evict(const std::string& dir, uint64_t maxBytes, const std::string& keepKey = "");

// The JIT's paths: Put/Get under `cfg` (nothing when the cache is off). A
// failure that costs the user something (an entry not written, a file that
// cannot be read) is recorded; TakeProblem hands the first one out once per
// process, and lib/jit.ts turns it into a warning: no silent data loss.
PutResult Store(const Config& cfg, const std::string& key, const std::string& payload);
GetResult Load(const Config& cfg, const std::string& key);
bool TakeProblem(std::string* message);

// Builds an entry's bytes (header + key + payload); exposed for tests that
// forge entries of another format.
std::string Encode(const std::string& key, const std::string& payload);

}  // namespace flexattn::jit::disk
