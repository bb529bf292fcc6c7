// Test and introspection hooks over the disk cache (@internal in
// lib/native.ts). They call the same functions the JIT does (disk::Store,
// disk::Get, ...) on a directory of the caller's choosing, so CI checks the
// format, verification, eviction and concurrency without a GPU.
#include <cstring>
#include <string>

#include "addon/addon.h"
#include "addon/errors.h"
#include "jit/disk_cache.h"
#include "jit/jit.h"

namespace flexattn::jit {
namespace {

std::string ArgDir(const Napi::CallbackInfo& info) {
  if (!info[0].IsString() || info[0].As<Napi::String>().Utf8Value().empty()) {
    ThrowInvalidArgument("dir", "a non-empty directory path", DescribeValue(info[0]));
  }
  return info[0].As<Napi::String>();
}

std::string ArgKey(const Napi::CallbackInfo& info) {
  if (!info[1].IsString() || !disk::ValidKey(info[1].As<Napi::String>())) {
    ThrowInvalidArgument("key", "1-200 characters of [A-Za-z0-9_.-], not starting with '.'", DescribeValue(info[1]));
  }
  return info[1].As<Napi::String>();
}

Napi::Object Evicted(Napi::Env env, Napi::Object o, const disk::EvictResult& e) {
  o.Set("evictedEntries", Napi::Number::New(env, e.entries));
  o.Set("evictedBytes", Napi::Number::New(env, static_cast<double>(e.bytes)));
  return o;
}

// diskCachePut(dir, key, bytes, maxBytes?) -> {ok, error, evictedEntries, evictedBytes}
// Without maxBytes the cap comes from FLEXATTN_CACHE_MAX_MB, as for the JIT.
Napi::Value DiskCachePut(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string dir = ArgDir(info), key = ArgKey(info);
  if (!info[2].IsTypedArray()) ThrowInvalidArgument("bytes", "a Uint8Array", DescribeValue(info[2]));
  Napi::TypedArray t = info[2].As<Napi::TypedArray>();
  std::string payload(static_cast<const char*>(t.ArrayBuffer().Data()) + t.ByteOffset(), t.ByteLength());
  disk::Config cfg = info.Length() > 3 && !info[3].IsUndefined() ? disk::Config{} : CacheConfig();
  if (info.Length() > 3 && !info[3].IsUndefined()) {
    cfg.maxBytes = static_cast<uint64_t>(ArgIndex(info, 3, "maxBytes"));
    cfg.enabled = cfg.maxBytes > 0;
  }
  cfg.dir = dir;
  disk::PutResult r = disk::Store(cfg, key, payload);
  Napi::Object o = Napi::Object::New(env);
  o.Set("ok", Napi::Boolean::New(env, r.ok));
  o.Set("error", Napi::String::New(env, r.error));
  return Evicted(env, o, r.evicted);
}

// diskCacheGet(dir, key) -> {status, detail, removed, bytes: Uint8Array | null}
Napi::Value DiskCacheGet(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string dir = ArgDir(info), key = ArgKey(info);
  disk::GetResult r = disk::Get(dir, key);
  Napi::Object o = Napi::Object::New(env);
  o.Set("status", Napi::String::New(env, disk::StatusName(r.status)));
  o.Set("detail", Napi::String::New(env, r.detail));
  o.Set("removed", Napi::Boolean::New(env, r.removed));
  if (r.status == disk::Status::kHit) {
    Napi::Uint8Array a = Napi::Uint8Array::New(env, r.payload.size());
    if (!r.payload.empty()) std::memcpy(a.Data(), r.payload.data(), r.payload.size());
    o.Set("bytes", a);
  } else {
    o.Set("bytes", env.Null());
  }
  return o;
}

// diskCacheStats(dir) -> {entries: [{key, bytes, mtimeMs}] (oldest first), bytes, tempFiles}
Napi::Value DiskCacheStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  disk::Listing l = disk::List(ArgDir(info));
  Napi::Array entries = Napi::Array::New(env, l.entries.size());
  for (size_t i = 0; i < l.entries.size(); i++) {
    Napi::Object e = Napi::Object::New(env);
    e.Set("key", Napi::String::New(env, l.entries[i].key));
    e.Set("bytes", Napi::Number::New(env, static_cast<double>(l.entries[i].bytes)));
    e.Set("mtimeMs", Napi::Number::New(env, static_cast<double>(l.entries[i].mtimeNs) / 1e6));
    entries.Set(static_cast<uint32_t>(i), e);
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("entries", entries);
  o.Set("bytes", Napi::Number::New(env, static_cast<double>(l.bytes)));
  o.Set("tempFiles", Napi::Number::New(env, l.tempFiles));
  return o;
}

// diskCacheEvict(dir, maxBytes) -> {evictedEntries, evictedBytes}
Napi::Value DiskCacheEvict(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string dir = ArgDir(info);
  uint64_t maxBytes = static_cast<uint64_t>(ArgIndex(info, 1, "maxBytes"));
  return Evicted(env, Napi::Object::New(env), disk::Evict(dir, maxBytes));
}

// diskCacheEncode(key, bytes) -> Uint8Array: an entry's file content, for tests that forge entries.
Napi::Value DiskCacheEncode(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString() || !disk::ValidKey(info[0].As<Napi::String>())) {
    ThrowInvalidArgument("key", "a valid cache key", DescribeValue(info[0]));
  }
  if (!info[1].IsTypedArray()) ThrowInvalidArgument("bytes", "a Uint8Array", DescribeValue(info[1]));
  Napi::TypedArray t = info[1].As<Napi::TypedArray>();
  std::string payload(static_cast<const char*>(t.ArrayBuffer().Data()) + t.ByteOffset(), t.ByteLength());
  std::string enc = disk::Encode(info[0].As<Napi::String>(), payload);
  Napi::Uint8Array a = Napi::Uint8Array::New(env, enc.size());
  std::memcpy(a.Data(), enc.data(), enc.size());
  return a;
}

}  // namespace

void RegisterDiskCacheHooks(Napi::Env env, Napi::Object exports) {
  exports.Set("diskCachePut", Napi::Function::New<Guarded<DiskCachePut>>(env, "diskCachePut"));
  exports.Set("diskCacheGet", Napi::Function::New<Guarded<DiskCacheGet>>(env, "diskCacheGet"));
  exports.Set("diskCacheStats", Napi::Function::New<Guarded<DiskCacheStats>>(env, "diskCacheStats"));
  exports.Set("diskCacheEvict", Napi::Function::New<Guarded<DiskCacheEvict>>(env, "diskCacheEvict"));
  exports.Set("diskCacheEncode", Napi::Function::New<Guarded<DiskCacheEncode>>(env, "diskCacheEncode"));
}

}  // namespace flexattn::jit
