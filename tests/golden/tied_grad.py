"""symcurv generated kernels.

model:    tied
program:  grad
backend:  cpu (Numba)
dtype:    float64
symcurv:  0.1.0
IR hash:  dd396cf760b06df6

Kernels in execution order:
  k0_gemm_a_W                        a_W
  k1_map_logistic                    add, logistic, logistic_d0
  k2_gemm_a_WT                       a_WT
  k3_map_bbcast                      bbcast
  k4_map_mul                         add_1, loss_sigmoid_cross_entropy_d0, mul, sigmoid_cross_entrop
  k5_reduce_bsum                     bsum
  k6_gemm_WTg                        WTg
  k7_map_mul_1                       mul_1
  k8_reduce_bsum_1                   bsum_1
  k9_gemm_dW                         dW
  k10_gemm_dWTT_1                    dWTT_1
  k11_map_acc                        acc
  k12_reduce_objective               objective

Do not edit: sc.load() checks this file's sha256 against manifest.json.
"""

import math  # noqa: F401

import numpy as np  # noqa: F401
from numba import njit, prange  # noqa: F401

from symcurv.runtime import vecmath as vm  # noqa: F401  (vectorisable exp, log)

PARALLEL = False  # prange loops run on Numba threads when True


@njit(cache=True, inline='always', error_model='numpy')
def f_k1_map_logistic(a_W, b):
    """Scalar formulas of k1_map_logistic: add, logistic, logistic_d0."""
    texp0 = vm.exp(a_W + b)
    t0 = (1.0/(1.0 + (1.0/texp0)))
    return t0, t0/(texp0 + 1.0)


@njit(cache=True, inline='always', error_model='numpy')
def f_k3_map_bbcast(B):
    """Scalar formulas of k3_map_bbcast: bbcast."""
    return 1.0/B


@njit(cache=True, inline='always', error_model='numpy')
def f_k4_map_mul(a_WT, c, x, bbcast):
    """Scalar formulas of k4_map_mul: add_1, loss_sigmoid_cross_entropy_d0, mul, sigmoid_cross_entropy_1, sigmoid_cross_entropy_2."""
    t0 = a_WT + c
    t1 = vm.exp(-abs(t0))
    t2 = t1 + 1.0
    return bbcast*(-t1*(1.0 if t0 > 0 else (-1.0 if t0 < 0 else 0.0))/t2 - x + (1.0 if t0 > 0 else (0.5 if t0 == 0 else 0.0))), -t0*x + vm.log(t2) + max(0.0, t0)


@njit(cache=True, inline='always', error_model='numpy')
def f_k7_map_mul_1(WTg, logistic_d0):
    """Scalar formulas of k7_map_mul_1: mul_1."""
    return WTg*logistic_d0


@njit(cache=True, inline='always', error_model='numpy')
def f_k11_map_acc(dWTT_1, dW):
    """Scalar formulas of k11_map_acc: acc."""
    return dW + dWTT_1


# k0_gemm_a_W: gemm -> a_W [s0]
#   IR nodes: n4 a_W
#   DSL: models.py:46: code = sc.logistic(W @ x + b)

# k1_map_logistic: map -> logistic [s1], logistic_d0 [s2]
#   IR nodes: n5 add, n6 logistic, n23 logistic_d0
#   DSL: models.py:46: code = sc.logistic(W @ x + b)
@njit(cache=True, parallel=PARALLEL, error_model='numpy')
def k1_map_logistic(B, s0, p_b, s1, s2):
    # rows in blocks of 32: one flat loop of 96 elements per block, long
    # enough to vectorise whole (a 3-wide row is not); the last may be shorter
    tile_p_b = np.empty(96, dtype=p_b.dtype)
    for e in range(96):
        tile_p_b[e] = p_b[e % 3]
    flat_s0 = s0.reshape(-1)
    flat_s1 = s1.reshape(-1)
    flat_s2 = s2.reshape(-1)
    for blk in prange((B + 31) // 32):
        o = blk * 96
        for e in range(min(96, B * 3 - o)):
            flat_s1[o + e], flat_s2[o + e] = f_k1_map_logistic(flat_s0[o + e], tile_p_b[e])


# k2_gemm_a_WT: gemm -> a_WT [s3]
#   IR nodes: n8 a_WT
#   DSL: models.py:47: m.minimize(sc.losses.sigmoid_cross_entropy(W.T @ code + c, x))

# k3_map_bbcast: map -> bbcast [s4]
#   IR nodes: n13 bbcast
#   DSL: models.py:47: m.minimize(sc.losses.sigmoid_cross_entropy(W.T @ code + c, x))
@njit(cache=True, parallel=PARALLEL, error_model='numpy')
def k3_map_bbcast(B, s4):
    for i in prange(B):
        for j in range(1):
            s4[i, 0] = f_k3_map_bbcast(B)


# k4_map_mul: map -> mul [s5], sigmoid_cross_entropy_2 [s6]
#   IR nodes: n9 add_1, n14 loss_sigmoid_cross_entropy_d0, n15 mul, n31 sigmoid_cross_entropy_1, n32 sigmoid_cross_entropy_2
#   DSL: models.py:47: m.minimize(sc.losses.sigmoid_cross_entropy(W.T @ code + c, x))
@njit(cache=True, parallel=PARALLEL, error_model='numpy')
def k4_map_mul(B, s3, p_c, in_x, s4, s5, s6):
    # cases in blocks of 64: one row buffer per block (an allocation per case
    # costs as much as the arithmetic of a narrow row)
    for blk in prange((B + 63) // 64):
        row0 = np.empty(6)
        for i in range(blk * 64, min(B, blk * 64 + 64)):
            for j in range(6):
                s5[i, j], row0[j] = f_k4_map_mul(s3[i, j], p_c[j], in_x[i, j], s4[i, 0])
            acc = 0.0
            for j in range(6):
                acc += row0[j]
            s6[i, 0] = acc


# k5_reduce_bsum: reduce batch_sum -> bsum [out_grad_c]
#   IR nodes: n18 bsum
#   DSL: models.py:47: m.minimize(sc.losses.sigmoid_cross_entropy(W.T @ code + c, x))
@njit(cache=True, error_model='numpy')
def k5_reduce_bsum(B, s5, out_grad_c):
    for j in range(6):
        out_grad_c[j] = 0.0
    for i in range(B):
        for j in range(6):
            out_grad_c[j] += s5[i, j]


# k6_gemm_WTg: gemm -> WTg [s0]
#   IR nodes: n21 WTg
#   DSL: models.py:47: m.minimize(sc.losses.sigmoid_cross_entropy(W.T @ code + c, x))

# k7_map_mul_1: map -> mul_1 [s7]
#   IR nodes: n24 mul_1
#   DSL: models.py:46: code = sc.logistic(W @ x + b)
@njit(cache=True, parallel=PARALLEL, error_model='numpy')
def k7_map_mul_1(B, s0, s2, s7):
    # the rows as one flat loop: long enough to vectorise (a 3-wide row is not)
    flat_s0 = s0.reshape(-1)
    flat_s2 = s2.reshape(-1)
    flat_s7 = s7.reshape(-1)
    for e in prange(B * 3):
        flat_s7[e] = f_k7_map_mul_1(flat_s0[e], flat_s2[e])


# k8_reduce_bsum_1: reduce batch_sum -> bsum_1 [out_grad_b]
#   IR nodes: n27 bsum_1
#   DSL: models.py:46: code = sc.logistic(W @ x + b)
@njit(cache=True, error_model='numpy')
def k8_reduce_bsum_1(B, s7, out_grad_b):
    for j in range(3):
        out_grad_b[j] = 0.0
    for i in range(B):
        for j in range(3):
            out_grad_b[j] += s7[i, j]


# k9_gemm_dW: gemm -> dW [s8]
#   IR nodes: n28 dW
#   DSL: models.py:46: code = sc.logistic(W @ x + b)

# k10_gemm_dWTT_1: gemm -> dWTT_1 [s9]
#   IR nodes: n30 dWTT_1
#   DSL: models.py:47: m.minimize(sc.losses.sigmoid_cross_entropy(W.T @ code + c, x))

# k11_map_acc: map -> acc [out_grad_W]
#   IR nodes: n29 acc
#   DSL: models.py:46: code = sc.logistic(W @ x + b)
@njit(cache=True, parallel=PARALLEL, error_model='numpy')
def k11_map_acc(B, s9, s8, out_grad_W):
    for j in range(18):
        out_grad_W[j] = f_k11_map_acc(s9[j], s8[j])


# k12_reduce_objective: reduce batch_mean -> objective [out_objective]
#   IR nodes: n11 objective
#   DSL: models.py:47: m.minimize(sc.losses.sigmoid_cross_entropy(W.T @ code + c, x))
@njit(cache=True, error_model='numpy')
def k12_reduce_objective(B, out_objective, s6):
    for j in range(1):
        out_objective[j] = 0.0
    for i in range(B):
        for j in range(1):
            out_objective[j] += s6[i, j]
    for j in range(1):
        out_objective[j] = out_objective[j] / B


def run(theta, in_x, out_grad, out_objective, s0, s1, s2, s3, s4, s5, s6, s7, s8, s9):
    """Run program 'grad': inputs/targets are (B, n) arrays, θ is flat; results are written into out_* arrays; s* are scratch buffers."""
    B = in_x.shape[0]
    p_W = theta[0:18]
    p_b = theta[18:21]
    p_c = theta[21:27]
    out_grad_W = out_grad[0:18]
    out_grad_b = out_grad[18:21]
    out_grad_c = out_grad[21:27]
    # k0_gemm_a_W  (models.py:46)
    np.dot(in_x, p_W.reshape((3, 6)).T, s0)
    # k1_map_logistic  (models.py:46)
    k1_map_logistic(B, s0, p_b, s1, s2)
    # k2_gemm_a_WT  (models.py:47)
    np.dot(s1, p_W.reshape((3, 6)), s3)
    # k3_map_bbcast  (models.py:47)
    k3_map_bbcast(B, s4)
    # k4_map_mul  (models.py:47)
    k4_map_mul(B, s3, p_c, in_x, s4, s5, s6)
    # k5_reduce_bsum  (models.py:47)
    k5_reduce_bsum(B, s5, out_grad_c)
    # k6_gemm_WTg  (models.py:47)
    np.dot(s5, p_W.reshape((3, 6)).T, s0)
    # k7_map_mul_1  (models.py:46)
    k7_map_mul_1(B, s0, s2, s7)
    # k8_reduce_bsum_1  (models.py:46)
    k8_reduce_bsum_1(B, s7, out_grad_b)
    # k9_gemm_dW  (models.py:46)
    np.dot(s7.T, in_x, s8.reshape((3, 6)))
    # k10_gemm_dWTT_1  (models.py:47)
    np.dot(s1.T, s5, s9.reshape((3, 6)))
    # k11_map_acc  (models.py:46)
    k11_map_acc(B, s9, s8, out_grad_W)
    # k12_reduce_objective  (models.py:47)
    k12_reduce_objective(B, out_objective, s6)
