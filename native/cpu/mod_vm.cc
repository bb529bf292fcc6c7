// Bytecode VM for mods; see mod_vm.h and lib/mods/bytecode.ts.
#include "cpu/mod_vm.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <string>

namespace flexattn::cpu {
namespace {

constexpr int32_t kMagic = 0x464c5831;

// Keep in sync with OPCODES in lib/mods/bytecode.ts.
enum Op : int32_t {
  CONST_F = 1, CONST_I = 2, PARAM_F = 3, PARAM_I = 4, LOAD = 5, MOV = 6,
  ADD_I = 10, SUB_I = 11, MUL_I = 12, FLOORDIV_I = 13, MOD_I = 14, MIN_I = 15, MAX_I = 16, NEG_I = 17, ABS_I = 18,
  ADD_F = 20, SUB_F = 21, MUL_F = 22, DIV_F = 23, FLOORDIV_F = 24, MOD_F = 25, MIN_F = 26, MAX_F = 27, NEG_F = 28, ABS_F = 29,
  EXP_F = 30, EXP2_F = 31, LOG_F = 32, TANH_F = 33, SIGMOID_F = 34, SQRT_F = 35,
  LT_I = 40, LE_I = 41, GT_I = 42, GE_I = 43, EQ_I = 44, NE_I = 45,
  LT_F = 50, LE_F = 51, GT_F = 52, GE_F = 53, EQ_F = 54, NE_F = 55,
  AND = 60, OR = 61, NOT = 62, WHERE = 63,
  I2F = 70, F2I = 71, B2F = 72, B2I = 73,
  RET = 90,
};

// Number of register operands after dst (-1: special).
int Arity(int32_t op) {
  switch (op) {
    case CONST_F: case CONST_I: case PARAM_F: case PARAM_I: case LOAD: return -1;
    case MOV: case NEG_I: case ABS_I: case NEG_F: case ABS_F: case EXP_F: case EXP2_F: case LOG_F:
    case TANH_F: case SIGMOID_F: case SQRT_F: case NOT: case I2F: case F2I: case B2F: case B2I:
      return 1;
    case ADD_I: case SUB_I: case MUL_I: case FLOORDIV_I: case MOD_I: case MIN_I: case MAX_I:
    case ADD_F: case SUB_F: case MUL_F: case DIV_F: case FLOORDIV_F: case MOD_F: case MIN_F: case MAX_F:
    case LT_I: case LE_I: case GT_I: case GE_I: case EQ_I: case NE_I:
    case LT_F: case LE_F: case GT_F: case GE_F: case EQ_F: case NE_F: case AND: case OR:
      return 2;
    case WHERE: return 3;
    default: return -2;
  }
}

inline int32_t Wrap(uint32_t u) { int32_t r; std::memcpy(&r, &u, 4); return r; }
inline int32_t IAdd(int32_t a, int32_t b) { return Wrap(static_cast<uint32_t>(a) + static_cast<uint32_t>(b)); }
inline int32_t ISub(int32_t a, int32_t b) { return Wrap(static_cast<uint32_t>(a) - static_cast<uint32_t>(b)); }
inline int32_t IMul(int32_t a, int32_t b) { return Wrap(static_cast<uint32_t>(a) * static_cast<uint32_t>(b)); }
inline int32_t INeg(int32_t a) { return Wrap(0u - static_cast<uint32_t>(a)); }
inline int32_t IFloorDiv(int32_t a, int32_t b) {
  if (b == 0) return 0;
  if (b == -1) return INeg(a);
  int32_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}
inline int32_t IMod(int32_t a, int32_t b) {
  if (b == 0 || b == -1) return 0;
  int32_t r = a % b;
  return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r;
}
inline float F(double x) { return static_cast<float>(x); }
inline float FMin(float a, float b) {
  if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<float>::quiet_NaN();
  if (a == b) return std::signbit(a) ? a : b;
  return a < b ? a : b;
}
inline float FMax(float a, float b) {
  if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<float>::quiet_NaN();
  if (a == b) return std::signbit(a) ? b : a;
  return a > b ? a : b;
}
inline int32_t FloatToInt(float x) {
  if (std::isnan(x)) return 0;
  if (x >= 2147483647.0f) return std::numeric_limits<int32_t>::max();
  if (x <= -2147483648.0f) return std::numeric_limits<int32_t>::min();
  return static_cast<int32_t>(std::trunc(x));
}
inline float Bf16ToF32(uint16_t bits) {
  uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline float F16ToF32(uint16_t bits) {
  const int s = (bits & 0x8000) ? -1 : 1;
  const int e = (bits >> 10) & 0x1f;
  const int m = bits & 0x3ff;
  if (e == 0) return F(s * std::ldexp(static_cast<double>(m), -24));
  if (e == 31) return m ? std::numeric_limits<float>::quiet_NaN() : s * std::numeric_limits<float>::infinity();
  return F(s * std::ldexp(1.0 + m / 1024.0, e - 15));
}

int ElemSize(int dtype) {
  switch (dtype) {
    case 0: case 1: return 2;
    case 2: case 3: return 4;
    case 4: return 1;
    default: return 0;
  }
}

[[noreturn]] void Fail(Napi::Env env, const std::string& msg) {
  throw Napi::Error::New(env, "mod program: " + msg);
}

template <typename T>
std::vector<T> CopyTyped(Napi::Env env, const Napi::Object& obj, const char* key, napi_typedarray_type want) {
  Napi::Value v = obj.Get(key);
  if (!v.IsTypedArray()) Fail(env, std::string(key) + " must be a typed array");
  Napi::TypedArray ta = v.As<Napi::TypedArray>();
  if (ta.TypedArrayType() != want) Fail(env, std::string(key) + " has the wrong typed-array type");
  const size_t n = ta.ElementLength();
  std::vector<T> out(n);
  if (n) {
    const uint8_t* base = static_cast<const uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
    std::memcpy(out.data(), base, n * sizeof(T));
  }
  return out;
}

int64_t ToInt64(Napi::Env env, Napi::Value v, const std::string& what) {
  if (!v.IsNumber()) Fail(env, what + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d == std::floor(d)) || d < -9007199254740991.0 || d > 9007199254740991.0) Fail(env, what + " must be an integer");
  return static_cast<int64_t>(d);
}

}  // namespace

std::shared_ptr<const ModVm> ModVm::FromJs(const Napi::Object& program) {
  Napi::Env env = program.Env();
  std::shared_ptr<ModVm> vm(new ModVm());
  std::vector<int32_t> code = CopyTyped<int32_t>(env, program, "code", napi_int32_array);
  vm->consts_ = CopyTyped<double>(env, program, "consts", napi_float64_array);
  vm->params_ = CopyTyped<double>(env, program, "params", napi_float64_array);
  if (code.size() < 4 || code[0] != kMagic) Fail(env, "bad code header (expected magic 'FLX1')");
  vm->kind_ = code[1];
  if (vm->kind_ != 0 && vm->kind_ != 1) Fail(env, "kind must be 0 (score) or 1 (mask)");
  vm->numRegs_ = code[2];
  if (vm->numRegs_ < 5 || vm->numRegs_ > (1 << 22)) Fail(env, "bad register count");
  if (code[3] < 0 || static_cast<size_t>(code[3]) != code.size() - 4) Fail(env, "instruction length mismatch");
  vm->code_.assign(code.begin() + 4, code.end());

  // Captured tensors.
  Napi::Value tv = program.Get("tensors");
  if (!tv.IsArray()) Fail(env, "tensors must be an array");
  Napi::Array tarr = tv.As<Napi::Array>();
  for (uint32_t i = 0; i < tarr.Length(); i++) {
    const std::string what = "tensors[" + std::to_string(i) + "]";
    Napi::Value ov = tarr.Get(i);
    if (!ov.IsObject()) Fail(env, what + " must be an object");
    Napi::Object o = ov.As<Napi::Object>();
    Tensor t;
    t.dtype = static_cast<int>(ToInt64(env, o.Get("dtype"), what + ".dtype"));
    const int es = ElemSize(t.dtype);
    if (!es) Fail(env, what + ".dtype must be 0..4");
    Napi::Value sv = o.Get("shape"), stv = o.Get("strides");
    if (!sv.IsArray() || !stv.IsArray()) Fail(env, what + ".shape/.strides must be arrays");
    Napi::Array sa = sv.As<Napi::Array>(), sta = stv.As<Napi::Array>();
    if (sa.Length() > 8 || sa.Length() != sta.Length()) Fail(env, what + ": rank must be <= 8 and match strides");
    t.rank = static_cast<int>(sa.Length());
    int64_t maxOff = 0;
    for (int d = 0; d < t.rank; d++) {
      t.shape[d] = ToInt64(env, sa.Get(d), what + ".shape");
      t.strides[d] = ToInt64(env, sta.Get(d), what + ".strides");
      if (t.shape[d] < 0 || t.strides[d] < 0) Fail(env, what + ": negative size or stride");
      if (t.shape[d] == 0) t.empty = true;
      else maxOff += (t.shape[d] - 1) * t.strides[d];
    }
    Napi::Value dv = o.Get("data");
    if (!dv.IsTypedArray()) Fail(env, what + ".data must be a typed array");
    Napi::TypedArray ta = dv.As<Napi::TypedArray>();
    const size_t nbytes = ta.ByteLength();
    if (!t.empty && static_cast<uint64_t>(maxOff + 1) * es > nbytes) Fail(env, what + ": data is smaller than shape/strides require");
    t.bytes.resize(nbytes);
    if (nbytes) std::memcpy(t.bytes.data(), static_cast<const uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset(), nbytes);
    vm->tensors_.push_back(std::move(t));
  }

  // Validate the instruction stream once so Run() needs no checks.
  const auto& c = vm->code_;
  const int nr = vm->numRegs_;
  auto reg = [&](size_t at) {
    if (at >= c.size() || c[at] < 0 || c[at] >= nr) Fail(env, "bad register operand at word " + std::to_string(at));
  };
  size_t pc = 0;
  bool ret = false;
  while (pc < c.size()) {
    const int32_t op = c[pc];
    if (op == RET) {
      reg(pc + 1);
      vm->retReg_ = c[pc + 1];
      if (pc + 2 != c.size()) Fail(env, "RET must be the last instruction");
      ret = true;
      break;
    }
    const int ar = Arity(op);
    if (ar == -2) Fail(env, "unknown opcode " + std::to_string(op));
    reg(pc + 1);
    if (pc + 1 < c.size() && c[pc + 1] < 5) Fail(env, "instruction writes an argument register");
    if (ar >= 0) {
      for (int k = 0; k < ar; k++) reg(pc + 2 + k);
      pc += 2 + ar;
      continue;
    }
    if (pc + 2 >= c.size()) Fail(env, "truncated instruction");
    const int32_t k = c[pc + 2];
    switch (op) {
      case CONST_F: case CONST_I:
        if (k < 0 || static_cast<size_t>(k) >= vm->consts_.size()) Fail(env, "const index out of range");
        pc += 3; break;
      case PARAM_F: case PARAM_I:
        if (k < 0 || static_cast<size_t>(k) >= vm->params_.size()) Fail(env, "param index out of range");
        pc += 3; break;
      default: {  // LOAD dst slot n idx...
        if (k < 0 || static_cast<size_t>(k) >= vm->tensors_.size()) Fail(env, "tensor slot out of range");
        if (pc + 3 >= c.size() || c[pc + 3] != vm->tensors_[k].rank) Fail(env, "LOAD index count does not match the tensor's rank");
        const int n = c[pc + 3];
        for (int d = 0; d < n; d++) reg(pc + 4 + d);
        pc += 4 + n;
      }
    }
  }
  if (!ret) Fail(env, "missing RET");
  return vm;
}

void ModVm::Run(Cell* r) const {
  const int32_t* c = code_.data();
  size_t pc = 0;
  for (;;) {
    const int32_t op = c[pc];
    const int32_t d = c[pc + 1];
    switch (op) {
      case RET: return;
      case CONST_F: r[d].f = F(consts_[c[pc + 2]]); pc += 3; continue;
      case CONST_I: r[d].i = static_cast<int32_t>(consts_[c[pc + 2]]); pc += 3; continue;
      case PARAM_F: r[d].f = F(params_[c[pc + 2]]); pc += 3; continue;
      case PARAM_I: r[d].i = static_cast<int32_t>(params_[c[pc + 2]]); pc += 3; continue;
      case LOAD: {
        const Tensor& t = tensors_[c[pc + 2]];
        const int n = c[pc + 3];
        int64_t off = 0;
        for (int k = 0; k < n; k++) {
          int64_t i = r[c[pc + 4 + k]].i;
          if (i < 0) i = 0;
          if (i >= t.shape[k]) i = t.shape[k] - 1;
          off += i * t.strides[k];
        }
        pc += 4 + n;
        if (t.empty) { r[d].i = 0; continue; }
        const uint8_t* p = t.bytes.data();
        switch (t.dtype) {
          case 0: { uint16_t v; std::memcpy(&v, p + off * 2, 2); r[d].f = Bf16ToF32(v); break; }
          case 1: { uint16_t v; std::memcpy(&v, p + off * 2, 2); r[d].f = F16ToF32(v); break; }
          case 2: { float v; std::memcpy(&v, p + off * 4, 4); r[d].f = v; break; }
          case 3: { int32_t v; std::memcpy(&v, p + off * 4, 4); r[d].i = v; break; }
          default: r[d].i = p[off] != 0 ? 1 : 0; break;
        }
        continue;
      }
      default: break;
    }
    const int ar = Arity(op);
    const Cell a = r[c[pc + 2]];
    const Cell b = ar >= 2 ? r[c[pc + 3]] : Cell{0};
    const Cell e = ar >= 3 ? r[c[pc + 4]] : Cell{0};
    Cell o;
    o.i = 0;
    switch (op) {
      case MOV: o = a; break;
      case ADD_I: o.i = IAdd(a.i, b.i); break;
      case SUB_I: o.i = ISub(a.i, b.i); break;
      case MUL_I: o.i = IMul(a.i, b.i); break;
      case FLOORDIV_I: o.i = IFloorDiv(a.i, b.i); break;
      case MOD_I: o.i = IMod(a.i, b.i); break;
      case MIN_I: o.i = a.i < b.i ? a.i : b.i; break;
      case MAX_I: o.i = a.i > b.i ? a.i : b.i; break;
      case NEG_I: o.i = INeg(a.i); break;
      case ABS_I: o.i = a.i < 0 ? INeg(a.i) : a.i; break;
      case ADD_F: o.f = F(static_cast<double>(a.f) + b.f); break;
      case SUB_F: o.f = F(static_cast<double>(a.f) - b.f); break;
      case MUL_F: o.f = F(static_cast<double>(a.f) * b.f); break;
      case DIV_F: o.f = F(static_cast<double>(a.f) / b.f); break;
      case FLOORDIV_F: o.f = std::floor(F(static_cast<double>(a.f) / b.f)); break;
      case MOD_F: {
        const float fl = std::floor(F(static_cast<double>(a.f) / b.f));
        o.f = F(static_cast<double>(a.f) - F(static_cast<double>(b.f) * fl));
        break;
      }
      case MIN_F: o.f = FMin(a.f, b.f); break;
      case MAX_F: o.f = FMax(a.f, b.f); break;
      case NEG_F: o.f = -a.f; break;
      case ABS_F: o.f = std::fabs(a.f); break;
      case EXP_F: o.f = F(std::exp(static_cast<double>(a.f))); break;
      case EXP2_F: o.f = F(std::exp2(static_cast<double>(a.f))); break;
      case LOG_F: o.f = F(std::log(static_cast<double>(a.f))); break;
      case TANH_F: o.f = F(std::tanh(static_cast<double>(a.f))); break;
      case SIGMOID_F: o.f = F(1.0 / (1.0 + std::exp(-static_cast<double>(a.f)))); break;
      case SQRT_F: o.f = F(std::sqrt(static_cast<double>(a.f))); break;
      case LT_I: o.i = a.i < b.i; break;
      case LE_I: o.i = a.i <= b.i; break;
      case GT_I: o.i = a.i > b.i; break;
      case GE_I: o.i = a.i >= b.i; break;
      case EQ_I: o.i = a.i == b.i; break;
      case NE_I: o.i = a.i != b.i; break;
      case LT_F: o.i = a.f < b.f; break;
      case LE_F: o.i = a.f <= b.f; break;
      case GT_F: o.i = a.f > b.f; break;
      case GE_F: o.i = a.f >= b.f; break;
      case EQ_F: o.i = a.f == b.f; break;
      case NE_F: o.i = a.f != b.f; break;
      case AND: o.i = (a.i != 0) && (b.i != 0); break;
      case OR: o.i = (a.i != 0) || (b.i != 0); break;
      case NOT: o.i = a.i == 0; break;
      case WHERE: o = a.i != 0 ? b : e; break;
      case I2F: o.f = static_cast<float>(a.i); break;
      case F2I: o.i = FloatToInt(a.f); break;
      case B2F: o.f = a.i != 0 ? 1.0f : 0.0f; break;
      case B2I: o.i = a.i != 0 ? 1 : 0; break;
      default: return;  // unreachable after validation
    }
    r[d] = o;
    pc += 2 + ar;
  }
}

float ModVm::Score(float score, int b, int h, int q, int kv) const {
  if (kind_ != 0) return score;
  constexpr int kStack = 256;
  Cell stack[kStack];
  std::vector<Cell> heap;
  Cell* r = stack;
  if (numRegs_ > kStack) { heap.resize(numRegs_); r = heap.data(); }
  std::memset(r, 0, sizeof(Cell) * numRegs_);
  r[0].f = score; r[1].i = b; r[2].i = h; r[3].i = q; r[4].i = kv;
  Run(r);
  return r[retReg_].f;
}

bool ModVm::Mask(int b, int h, int q, int kv) const {
  if (kind_ != 1) return true;
  constexpr int kStack = 256;
  Cell stack[kStack];
  std::vector<Cell> heap;
  Cell* r = stack;
  if (numRegs_ > kStack) { heap.resize(numRegs_); r = heap.data(); }
  std::memset(r, 0, sizeof(Cell) * numRegs_);
  r[1].i = b; r[2].i = h; r[3].i = q; r[4].i = kv;
  Run(r);
  return r[retReg_].i != 0;
}

}  // namespace flexattn::cpu
