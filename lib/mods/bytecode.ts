/**
 * Bytecode for the native mod VM (native/cpu/mod_vm.h).
 *
 * `code` (Int32Array) layout:
 * ```
 * [0] MAGIC 0x464c5831 ('FLX1')   [1] kind: 0 = score, 1 = mask
 * [2] numRegs                     [3] number of instruction words that follow
 * then instructions: [opcode, dst, operands...]
 * ```
 * Registers are 32-bit cells (f32, int32, or bool as 0/1), all zero-initialised.
 * Registers 0..4 are preloaded with score (f32), b, h, q, kv. Operand layout by opcode:
 * - `CONST_F/CONST_I dst k` (consts[k]); `PARAM_F/PARAM_I dst k` (params[k])
 * - `LOAD dst slot n r_0 … r_{n-1}` (n = rank of tensors[slot]; indices clamped per dim)
 * - unary `op dst a`; binary `op dst a b`; `WHERE dst c a b`; `RET src`
 * Opcode numbers are {@link OPCODES} (mirrored in mod_vm.cc).
 * @module
 */
import { InternalError, InvalidArgumentError } from '../errors.js';
import type { NativeHostView, NativeModProgram } from '../native.js';
import { DTYPE_CODE } from '../native.js';
import type { ModBase, Op, ValueType } from './ir.js';
import { resolveParams } from './ir.js';
import type { HostTensor } from './interpret.js';

/** Magic number at code[0]. */
export const BYTECODE_MAGIC = 0x464c5831;

/** Opcode numbers (keep in sync with native/cpu/mod_vm.cc). */
export const OPCODES = {
  CONST_F: 1, CONST_I: 2, PARAM_F: 3, PARAM_I: 4, LOAD: 5, MOV: 6,
  ADD_I: 10, SUB_I: 11, MUL_I: 12, FLOORDIV_I: 13, MOD_I: 14, MIN_I: 15, MAX_I: 16, NEG_I: 17, ABS_I: 18,
  ADD_F: 20, SUB_F: 21, MUL_F: 22, DIV_F: 23, FLOORDIV_F: 24, MOD_F: 25, MIN_F: 26, MAX_F: 27, NEG_F: 28, ABS_F: 29,
  EXP_F: 30, EXP2_F: 31, LOG_F: 32, TANH_F: 33, SIGMOID_F: 34, SQRT_F: 35,
  LT_I: 40, LE_I: 41, GT_I: 42, GE_I: 43, EQ_I: 44, NE_I: 45,
  LT_F: 50, LE_F: 51, GT_F: 52, GE_F: 53, EQ_F: 54, NE_F: 55,
  AND: 60, OR: 61, NOT: 62, WHERE: 63,
  I2F: 70, F2I: 71, B2F: 72, B2I: 73,
  RET: 90,
} as const;

const ARG_REG: Record<string, number> = { score: 0, b: 1, h: 2, q: 3, kv: 4 };

function opcodeFor(op: Op, operandType: ValueType, resultType: ValueType): number {
  const O = OPCODES;
  const sfx = operandType === 'float' ? 'F' : 'I';
  switch (op) {
    case 'add': case 'sub': case 'mul': case 'floorDiv': case 'mod': case 'min': case 'max': case 'neg': case 'abs':
      return O[`${op === 'floorDiv' ? 'FLOORDIV' : op.toUpperCase()}_${sfx}` as keyof typeof O];
    case 'div': return O.DIV_F;
    case 'exp': case 'exp2': case 'log': case 'tanh': case 'sigmoid': case 'sqrt':
      return O[`${op.toUpperCase()}_F` as keyof typeof O];
    case 'lt': case 'le': case 'gt': case 'ge': case 'eq': case 'ne':
      // bool == bool compares 0/1 cells like ints
      return O[`${op.toUpperCase()}_${operandType === 'float' ? 'F' : 'I'}` as keyof typeof O];
    case 'and': return O.AND;
    case 'or': return O.OR;
    case 'not': return O.NOT;
    case 'where': return O.WHERE;
    case 'toFloat': return operandType === 'bool' ? O.B2F : O.I2F;
    case 'toInt': return operandType === 'bool' ? O.B2I : O.F2I;
    default: throw new InternalError(`bytecode: no opcode for ${op} (${operandType} -> ${resultType})`);
  }
}

/**
 * Encodes a mod for the native VM. `hostTensors` are the captured tensors' host
 * data in slot order (e.g. from `bindHost(mod).tensors`); `params` the runtime
 * param values (a missing one is an InvalidArgumentError naming it).
 */
export function encodeProgram(mod: ModBase, hostTensors: readonly HostTensor[], params?: Readonly<Record<string, number>>): NativeModProgram {
  const p = mod.ir;
  const paramVals = resolveParams(p.params, params);
  if (hostTensors.length !== p.tensors.length) {
    throw new InvalidArgumentError('hostTensors', `${p.tensors.length} captured tensor(s)`, String(hostTensors.length));
  }
  const tensors: NativeHostView[] = p.tensors.map((info, i) => {
    const t = hostTensors[i]!;
    if (t.dtype !== info.dtype || t.shape.length !== info.rank) {
      throw new InvalidArgumentError(`hostTensors[${i}]`, `a rank-${info.rank} ${info.dtype} tensor`, `rank ${t.shape.length} ${t.dtype}`);
    }
    return { data: t.data, dtype: DTYPE_CODE[t.dtype], shape: [...t.shape], strides: [...t.strides] };
  });
  const consts: number[] = [];
  const words: number[] = [];
  // Node i lives in register 5 + i (args are copied with MOV from 0..4 for simplicity).
  const reg = (i: number): number => 5 + i;
  p.nodes.forEach((n, i) => {
    const d = reg(i);
    switch (n.op) {
      case 'const':
        words.push(n.type === 'float' ? OPCODES.CONST_F : OPCODES.CONST_I, d, consts.length);
        consts.push(n.value!);
        break;
      case 'arg': words.push(OPCODES.MOV, d, ARG_REG[n.name!]!); break;
      case 'param': {
        const k = p.params.findIndex((x) => x.name === n.name);
        words.push(n.type === 'float' ? OPCODES.PARAM_F : OPCODES.PARAM_I, d, k);
        break;
      }
      case 'load': words.push(OPCODES.LOAD, d, n.slot!, n.args.length, ...n.args.map(reg)); break;
      default: {
        const operandType = n.op === 'where' ? p.nodes[n.args[1]!]!.type : p.nodes[n.args[0]!]!.type;
        words.push(opcodeFor(n.op, operandType, n.type), d, ...n.args.map(reg));
      }
    }
  });
  words.push(OPCODES.RET, reg(p.root));
  const code = new Int32Array(4 + words.length);
  code[0] = BYTECODE_MAGIC;
  code[1] = p.kind === 'score' ? 0 : 1;
  code[2] = 5 + p.nodes.length;
  code[3] = words.length;
  code.set(words, 4);
  return { code, consts: Float64Array.from(consts), tensors, params: Float64Array.from(paramVals) };
}

const fr = Math.fround;

/**
 * Executes a {@link NativeModProgram} in JS exactly as native/cpu/mod_vm.cc does
 * (same opcode semantics; used to test the encoder without the addon).
 * Returns the f32 score (score programs) or 0/1 (mask programs).
 * @internal
 */
export function runBytecode(prog: NativeModProgram, score: number, b: number, h: number, q: number, kv: number): number {
  const c = prog.code;
  if (c[0] !== BYTECODE_MAGIC) throw new InternalError('bytecode: bad magic');
  const nregs = c[2]!;
  const f = new Float32Array(nregs);
  const iv = new Int32Array(f.buffer);
  f[0] = score; iv[1] = b; iv[2] = h; iv[3] = q; iv[4] = kv;
  const O = OPCODES;
  const half = (bits: number): number => {
    const s = bits & 0x8000 ? -1 : 1, e = (bits >> 10) & 0x1f, m = bits & 0x3ff;
    return e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? NaN : s * Infinity) : s * (1 + m / 1024) * 2 ** (e - 15);
  };
  const nan = (a: number, x: number): boolean => Number.isNaN(a) || Number.isNaN(x);
  let pc = 4;
  for (;;) {
    const op = c[pc]!, d = c[pc + 1]!;
    if (op === O.RET) return prog.code[1] === 0 ? f[d]! : iv[d]! !== 0 ? 1 : 0;
    if (op === O.CONST_F) { f[d] = prog.consts[c[pc + 2]!]!; pc += 3; continue; }
    if (op === O.CONST_I) { iv[d] = prog.consts[c[pc + 2]!]!; pc += 3; continue; }
    if (op === O.PARAM_F) { f[d] = prog.params[c[pc + 2]!]!; pc += 3; continue; }
    if (op === O.PARAM_I) { iv[d] = prog.params[c[pc + 2]!]!; pc += 3; continue; }
    if (op === O.LOAD) {
      const t = prog.tensors[c[pc + 2]!]!;
      const n = c[pc + 3]!;
      let off = 0;
      let empty = false;
      for (let k = 0; k < n; k++) {
        const N = t.shape[k]!;
        if (N <= 0) empty = true;
        const i = Math.min(Math.max(iv[c[pc + 4 + k]!]!, 0), N - 1);
        off += i * t.strides[k]!;
      }
      pc += 4 + n;
      if (empty) { iv[d] = 0; continue; }
      const data = t.data as unknown as ArrayLike<number>;
      const raw = data[off]!;
      if (t.dtype === 0) { iv[d] = (raw & 0xffff) << 16; } else if (t.dtype === 1) f[d] = half(raw);
      else if (t.dtype === 2) f[d] = raw; else if (t.dtype === 3) iv[d] = raw; else iv[d] = raw ? 1 : 0;
      continue;
    }
    const a = c[pc + 2]!, x = c[pc + 3]!, y = c[pc + 4]!;
    const fa = f[a]!, fb = f[x]!, ia = iv[a]!, ib = iv[x]!;
    let width = 2;
    switch (op) {
      case O.MOV: iv[d] = ia; width = 1; break;
      case O.ADD_I: iv[d] = ia + ib; break;
      case O.SUB_I: iv[d] = ia - ib; break;
      case O.MUL_I: iv[d] = Math.imul(ia, ib); break;
      case O.FLOORDIV_I: iv[d] = ib === 0 ? 0 : ib === -1 ? -ia : Math.floor(ia / ib); break;
      case O.MOD_I: { if (ib === 0 || ib === -1) { iv[d] = 0; break; } const r = ia % ib; iv[d] = r !== 0 && (r < 0) !== (ib < 0) ? r + ib : r; break; }
      case O.MIN_I: iv[d] = Math.min(ia, ib); break;
      case O.MAX_I: iv[d] = Math.max(ia, ib); break;
      case O.NEG_I: iv[d] = -ia; width = 1; break;
      case O.ABS_I: iv[d] = Math.abs(ia); width = 1; break;
      case O.ADD_F: f[d] = fa + fb; break;
      case O.SUB_F: f[d] = fa - fb; break;
      case O.MUL_F: f[d] = fa * fb; break;
      case O.DIV_F: f[d] = fa / fb; break;
      case O.FLOORDIV_F: f[d] = Math.floor(fr(fa / fb)); break;
      case O.MOD_F: f[d] = fa - fr(fb * Math.floor(fr(fa / fb))); break;
      case O.MIN_F: f[d] = nan(fa, fb) ? NaN : Math.min(fa, fb); break;
      case O.MAX_F: f[d] = nan(fa, fb) ? NaN : Math.max(fa, fb); break;
      case O.NEG_F: f[d] = -fa; width = 1; break;
      case O.ABS_F: f[d] = Math.abs(fa); width = 1; break;
      case O.EXP_F: f[d] = Math.exp(fa); width = 1; break;
      case O.EXP2_F: f[d] = 2 ** fa; width = 1; break;
      case O.LOG_F: f[d] = Math.log(fa); width = 1; break;
      case O.TANH_F: f[d] = Math.tanh(fa); width = 1; break;
      case O.SIGMOID_F: f[d] = 1 / (1 + Math.exp(-fa)); width = 1; break;
      case O.SQRT_F: f[d] = Math.sqrt(fa); width = 1; break;
      case O.LT_I: iv[d] = +(ia < ib); break;
      case O.LE_I: iv[d] = +(ia <= ib); break;
      case O.GT_I: iv[d] = +(ia > ib); break;
      case O.GE_I: iv[d] = +(ia >= ib); break;
      case O.EQ_I: iv[d] = +(ia === ib); break;
      case O.NE_I: iv[d] = +(ia !== ib); break;
      case O.LT_F: iv[d] = +(fa < fb); break;
      case O.LE_F: iv[d] = +(fa <= fb); break;
      case O.GT_F: iv[d] = +(fa > fb); break;
      case O.GE_F: iv[d] = +(fa >= fb); break;
      case O.EQ_F: iv[d] = +(fa === fb); break;
      case O.NE_F: iv[d] = +(fa !== fb); break;
      case O.AND: iv[d] = +(ia !== 0 && ib !== 0); break;
      case O.OR: iv[d] = +(ia !== 0 || ib !== 0); break;
      case O.NOT: iv[d] = +(ia === 0); width = 1; break;
      case O.WHERE: iv[d] = ia !== 0 ? iv[x]! : iv[y]!; width = 3; break;
      case O.I2F: f[d] = ia; width = 1; break;
      case O.F2I: iv[d] = Number.isNaN(fa) ? 0 : fa >= 2147483647 ? 2147483647 : fa <= -2147483648 ? -2147483648 : Math.trunc(fa); width = 1; break;
      case O.B2F: f[d] = ia ? 1 : 0; width = 1; break;
      case O.B2I: iv[d] = ia ? 1 : 0; width = 1; break;
      default: throw new InternalError(`bytecode: bad opcode ${op}`);
    }
    pc += 2 + width;
  }
}
