"""Vectorizable math for generated code: exp, log, tanh, sigmoid, erf, softplus in f32, built
with llvmlite's IRBuilder as polynomial approximations (Cephes-style, ~1-2 ulp for exp/log).

LLVM has no vector library for `exp` on this path (a call to expf would scalarize every SIMD
lane), so these are emitted inline. f64 and the rarer functions call libm per lane.
"""

from __future__ import annotations

from typing import Callable

from llvmlite import ir

F32 = ir.FloatType()
I32 = ir.IntType(32)


_VCONST: dict[tuple[str, object], ir.Constant] = {}


def vconst(ty: ir.VectorType, value: object) -> ir.Constant:
    """The vector constant `value` (ir.Undefined, a list of lanes, or one value for every lane),
    made once per type and value, so llvmlite formats it once (it caches a constant's text per
    object), and an undef vector printed as `undef`: each new vector constant was formatted
    lane by lane at its use, and the undef operands of shuffles and the zero masks of splats
    were 22,800 such constants in resnet50's IR, a tenth of the compile's Python time."""
    # (by repr: -0.0 == 0.0, and 1 == 1.0 == True)
    key = (str(ty), "undef" if value is ir.Undefined else repr(value))
    got = _VCONST.get(key)
    if got is None:
        if value is ir.Undefined:
            got = ir.Constant(ty, None)
            got.constant = ir.Undefined
        else:     # (lane by lane: llvmlite reads a shuffle mask's lanes; printed once, cached)
            got = ir.Constant(ty, list(value) if isinstance(value, (list, tuple))
                              else [value] * ty.count)
        _VCONST[key] = got
    return got


def _splat(ty: ir.Type, v: float | int) -> ir.Constant:
    if isinstance(ty, ir.VectorType):
        return vconst(ty, v)
    return ir.Constant(ty, v)


def _int_ty(ty: ir.Type) -> ir.Type:
    return ir.VectorType(I32, ty.count) if isinstance(ty, ir.VectorType) else I32


def _intrinsic(b: ir.IRBuilder, name: str, ty: ir.Type, args: list[ir.Value]) -> ir.Value:
    suffix = f"v{ty.count}f32" if isinstance(ty, ir.VectorType) else "f32"
    m = b.module
    full = f"llvm.{name}.{suffix}"
    fn = m.globals.get(full)
    if fn is None:
        fn = ir.Function(m, ir.FunctionType(ty, [ty] * len(args)), full)
    return b.call(fn, args)


def _fma(b: ir.IRBuilder, a: ir.Value, x: ir.Value, c: ir.Value) -> ir.Value:
    """a * x + c as `llvm.fmuladd`: one FMA where the CPU has them (half the instructions of a
    Horner step, and one rounding), a multiply and an add where it does not."""
    return _intrinsic(b, "fmuladd", a.type, [a, x, c])


def _poly(b: ir.IRBuilder, x: ir.Value, coefs: list[float]) -> ir.Value:
    """Horner: coefs[0]*x^(n-1) + ... + coefs[-1]."""
    ty = x.type
    acc: ir.Value = _splat(ty, coefs[0])
    for c in coefs[1:]:
        acc = _fma(b, acc, x, _splat(ty, c))
    return acc


EXP_LO, EXP_HI = -87.3365478515625, 88.3762626647949
EXP_MAX = 88.72283172607421875       # the largest f32 whose exp is finite (FLT_MAX = 3.4e38)


def _exp_core(b: ir.IRBuilder, x: ir.Value, hi: float = EXP_HI) -> ir.Value:
    """exp of x clamped to [EXP_LO, hi] (Cephes expf): finite and normal for every input but
    NaN, whose lanes come out as exp(EXP_LO) (minnum and maxnum drop NaN). Above EXP_HI the
    power of two 2^n needs n = 128, one past the largest exponent: it is applied as 2^127
    and a doubling."""
    ty = x.type
    it = _int_ty(ty)
    xc = _intrinsic(b, "minnum", ty, [_intrinsic(b, "maxnum", ty, [x, _splat(ty, EXP_LO)]),
                                      _splat(ty, hi)])
    n = _intrinsic(b, "roundeven", ty, [b.fmul(xc, _splat(ty, 1.44269504088896341))])
    r = _fma(b, n, _splat(ty, -0.693359375), xc)          # ln 2 in two parts: exact first
    r = _fma(b, n, _splat(ty, 2.12194440e-4), r)
    z = b.fmul(r, r)
    p = _poly(b, r, [1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
                     1.6666665459e-1, 5.0000001201e-1])
    p = b.fadd(_fma(b, p, z, r), _splat(ty, 1.0))
    ni = b.fptosi(n, it)
    if hi > EXP_HI:
        big = b.icmp_signed(">", ni, _splat(it, 127))
        p = b.select(big, b.fmul(p, _splat(ty, 2.0)), p)
        ni = b.select(big, _splat(it, 127), ni)
    scale = b.bitcast(b.shl(b.add(ni, _splat(it, 127)), _splat(it, 23)), ty)
    return b.fmul(p, scale)


def _keep_nan(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
    return b.select(b.fcmp_unordered("uno", x, x), x, y)


def emit_exp(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """exp: 0 below EXP_LO (the denormal tail is flushed), inf past EXP_MAX, NaN kept."""
    ty = x.type
    y = _exp_core(b, x, EXP_MAX)
    y = b.select(b.fcmp_ordered("<", x, _splat(ty, EXP_LO)), _splat(ty, 0.0), y)
    y = b.select(b.fcmp_ordered(">", x, _splat(ty, EXP_MAX)), _splat(ty, float("inf")), y)
    return _keep_nan(b, x, y)


def emit_log(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    ty = x.type
    it = _int_ty(ty)
    bits = b.bitcast(x, it)
    e = b.sub(b.lshr(bits, _splat(it, 23)), _splat(it, 126))
    m = b.bitcast(b.or_(b.and_(bits, _splat(it, 0x807FFFFF)), _splat(it, 0x3F000000)), ty)
    small = b.fcmp_ordered("<", m, _splat(ty, 0.707106781186547524))
    e = b.select(small, b.sub(e, _splat(it, 1)), e)
    m = b.select(small, b.fadd(m, m), m)
    m = b.fsub(m, _splat(ty, 1.0))
    ef = b.sitofp(e, ty)
    z = b.fmul(m, m)
    y = _poly(b, m, [7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
                     1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
                     3.3333331174e-1])
    y = b.fmul(b.fmul(y, m), z)
    y = b.fadd(y, b.fmul(ef, _splat(ty, -2.12194440e-4)))
    y = b.fsub(y, b.fmul(z, _splat(ty, 0.5)))
    out = b.fadd(b.fadd(m, y), b.fmul(ef, _splat(ty, 0.693359375)))
    out = b.select(b.fcmp_ordered("==", x, _splat(ty, 0.0)), _splat(ty, float("-inf")), out)
    out = b.select(b.fcmp_ordered("<", x, _splat(ty, 0.0)), _splat(ty, float("nan")), out)
    out = b.select(b.fcmp_ordered("==", x, _splat(ty, float("inf"))), x, out)
    return b.select(b.fcmp_unordered("uno", x, x), x, out)


def emit_sigmoid(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """1 / (1 + exp(-x)) with the clamped exp: above the clamp the quotient rounds to 1, so
    exp's underflow fix-up is not needed; below it the quotient would be a denormal where
    exp(-x) overflows, and it is 0 (as numpy and onnxruntime give it, so x * sigmoid(x) at
    -inf is NaN there too); NaN is kept."""
    ty = x.type
    e = _exp_core(b, b.fneg(x))
    y = b.fdiv(_splat(ty, 1.0), b.fadd(_splat(ty, 1.0), e))
    y = b.select(b.fcmp_ordered("<", x, _splat(ty, -EXP_HI)), _splat(ty, 0.0), y)
    return _keep_nan(b, x, y)


def emit_tanh(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    ty = x.type
    ax = _intrinsic(b, "fabs", ty, [x])
    # exp(-2|x|) is in (0, 1]: below the clamp 1 - e and 1 + e round to 1 anyway
    e = _exp_core(b, b.fmul(ax, _splat(ty, -2.0)))
    t = b.fdiv(b.fsub(_splat(ty, 1.0), e), b.fadd(_splat(ty, 1.0), e))
    # small |x|: the odd polynomial avoids cancellation in 1 - e
    z = b.fmul(x, x)
    p = _poly(b, z, [-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2, 1.33314422036e-1,
                     -3.33332819422e-1])
    small = b.fadd(x, b.fmul(b.fmul(p, z), x))
    big = _intrinsic(b, "copysign", ty, [t, x])
    return _keep_nan(b, x, b.select(b.fcmp_ordered("<", ax, _splat(ty, 0.625)), small, big))


def emit_erf(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """Abramowitz & Stegun 7.1.26 on |x| (abs error < 1.5e-7), with a series near 0."""
    ty = x.type
    ax = _intrinsic(b, "fabs", ty, [x])
    t = b.fdiv(_splat(ty, 1.0), b.fadd(_splat(ty, 1.0), b.fmul(ax, _splat(ty, 0.3275911))))
    p = _poly(b, t, [1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592])
    p = b.fmul(p, t)
    e = emit_exp(b, b.fneg(b.fmul(ax, ax)))
    y = _intrinsic(b, "copysign", ty, [b.fsub(_splat(ty, 1.0), b.fmul(p, e)), x])
    # |x| < 0.5: erf(x) = 2/sqrt(pi) * (x - x^3/3 + x^5/10 - x^7/42 + x^9/216)
    z = b.fmul(x, x)
    s = _poly(b, z, [1.0 / 216, -1.0 / 42, 1.0 / 10, -1.0 / 3, 1.0])
    small = b.fmul(b.fmul(s, x), _splat(ty, 1.1283791670955126))
    return b.select(b.fcmp_ordered("<", ax, _splat(ty, 0.5)), small, y)


def emit_softplus(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    ty = x.type
    ax = _intrinsic(b, "fabs", ty, [x])
    l1p = emit_log(b, b.fadd(_splat(ty, 1.0), emit_exp(b, b.fneg(ax))))
    return b.fadd(l1p, _intrinsic(b, "maxnum", ty, [x, _splat(ty, 0.0)]))


F32_MATH: dict[str, Callable[[ir.IRBuilder, ir.Value], ir.Value]] = {
    "exp": emit_exp, "log": emit_log, "sigmoid": emit_sigmoid, "tanh": emit_tanh,
    "erf": emit_erf, "softplus": emit_softplus,
}

# libm names for per-lane calls (f32 name, f64 name)
LIBM = {"exp": ("expf", "exp"), "log": ("logf", "log"), "tanh": ("tanhf", "tanh"),
        "erf": ("erff", "erf"), "sin": ("sinf", "sin"), "cos": ("cosf", "cos"),
        "tan": ("tanf", "tan"), "asin": ("asinf", "asin"), "acos": ("acosf", "acos"),
        "atan": ("atanf", "atan"), "sinh": ("sinhf", "sinh"), "cosh": ("coshf", "cosh"),
        "asinh": ("asinhf", "asinh"), "acosh": ("acoshf", "acosh"), "atanh": ("atanhf", "atanh"),
        "pow": ("powf", "pow"), "fmod": ("fmodf", "fmod"), "log1p": ("log1pf", "log1p")}
