"""symcurv generated kernels.

model:    tied
program:  grad
backend:  cuda (Numba-CUDA)
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
from numba import cuda, float64  # noqa: F401

from symcurv.runtime import cuda_kernels as ck  # noqa: F401  (GEMM, reductions, copies)

DTYPE = np.float64  # host and device arrays
FTYPE = float64  # the same as a Numba type (shared-memory arrays)
THREADS = ck.THREADS  # threads per block of maps (runtime/cuda_geometry.py)
_DEVICE = {}  # batch size -> device arrays in _launch's argument order, reused


@cuda.jit(device=True)
def _segment_sum(buf, x, lanes):
    """Σ of x over each run of ``lanes`` consecutive threads (a tree in shared memory with
    a fixed order); every thread of the block must call it."""
    t = cuda.threadIdx.x
    buf[t] = x
    cuda.syncthreads()
    s = lanes // 2
    while s > 0:
        if t % lanes < s:
            buf[t] += buf[t + s]
        cuda.syncthreads()
        s //= 2
    total = buf[t - t % lanes]
    cuda.syncthreads()  # buf is free again before anyone writes it
    return total


@cuda.jit(device=True, inline=True)
def f_k1_map_logistic(a_W, b):
    """Scalar formulas of k1_map_logistic: add, logistic, logistic_d0."""
    texp0 = math.exp(a_W + b)
    t0 = (1.0/(1.0 + (1.0/texp0)))
    return t0, t0/(texp0 + 1.0)


@cuda.jit(device=True, inline=True)
def f_k3_map_bbcast(B):
    """Scalar formulas of k3_map_bbcast: bbcast."""
    return 1.0/B


@cuda.jit(device=True, inline=True)
def f_k4_map_mul(a_WT, c, x, bbcast):
    """Scalar formulas of k4_map_mul: add_1, loss_sigmoid_cross_entropy_d0, mul, sigmoid_cross_entropy_1, sigmoid_cross_entropy_2."""
    t0 = a_WT + c
    t1 = math.exp(-abs(t0))
    t2 = t1 + 1.0
    return bbcast*(-t1*(1.0 if t0 > 0 else (-1.0 if t0 < 0 else 0.0))/t2 - x + (1.0 if t0 > 0 else (0.5 if t0 == 0 else 0.0))), -t0*x + math.log(t2) + (t0 if t0 > 0.0 else 0.0)


@cuda.jit(device=True, inline=True)
def f_k7_map_mul_1(WTg, logistic_d0):
    """Scalar formulas of k7_map_mul_1: mul_1."""
    return WTg*logistic_d0


@cuda.jit(device=True, inline=True)
def f_k11_map_acc(dWTT_1, dW):
    """Scalar formulas of k11_map_acc: acc."""
    return dW + dWTT_1


# k0_gemm_a_W: gemm -> a_W [s0]
#   IR nodes: n4 a_W
#   DSL: models.py:46: code = sc.logistic(W @ x + b)
#   launch: 16×16 (4×4 outputs each, k-step 16) threads per block; grid ceil(3/64) × ceil(B/64)

# k1_map_logistic: map -> logistic [s1], logistic_d0 [s2]
#   IR nodes: n5 add, n6 logistic, n23 logistic_d0
#   DSL: models.py:46: code = sc.logistic(W @ x + b)
#   launch: 128 threads per block; grid ceil(B·3/128)
@cuda.jit(cache=True)
def k1_map_logistic(B, s0, p_b, s1, s2):
    for ij in range(cuda.grid(1), B * 3, cuda.gridsize(1)):
        i = ij // 3
        j = ij - i * 3
        s1[i, j], s2[i, j] = f_k1_map_logistic(s0[i, j], p_b[j])


# k2_gemm_a_WT: gemm -> a_WT [s3]
#   IR nodes: n8 a_WT
#   DSL: models.py:47: m.minimize(sc.losses.sigmoid_cross_entropy(W.T @ code + c, x))
#   launch: 16×16 (4×4 outputs each, k-step 16) threads per block; grid ceil(6/64) × ceil(B/64)

# k3_map_bbcast: map -> bbcast [s4]
#   IR nodes: n13 bbcast
#   DSL: models.py:47: m.minimize(sc.losses.sigmoid_cross_entropy(W.T @ code + c, x))
#   launch: 128 threads per block; grid ceil(B/128)
@cuda.jit(cache=True)
def k3_map_bbcast(B, s4):
    for i in range(cuda.grid(1), B, cuda.gridsize(1)):
        s4[i, 0] = f_k3_map_bbcast(B)


# k4_map_mul: map -> mul [s5], sigmoid_cross_entropy_2 [s6]
#   IR nodes: n9 add_1, n14 loss_sigmoid_cross_entropy_d0, n15 mul, n31 sigmoid_cross_entropy_1, n32 sigmoid_cross_entropy_2
#   DSL: models.py:47: m.minimize(sc.losses.sigmoid_cross_entropy(W.T @ code + c, x))
#   launch: 128 (16 rows × 8 lanes) threads per block; grid ceil(B/16)
@cuda.jit(cache=True)
def k4_map_mul(B, lanes, s3, p_c, in_x, s4, s5, s6):
    part = cuda.shared.array(THREADS, FTYPE)  # one partial sum per thread
    lane = cuda.threadIdx.x % lanes
    rows = cuda.blockDim.x // lanes  # cases per block
    for i0 in range(cuda.blockIdx.x * rows, B, cuda.gridDim.x * rows):
        i = i0 + cuda.threadIdx.x // lanes
        acc0 = 0.0
        if i < B:
            for j in range(lane, 6, lanes):
                s5[i, j], e0 = f_k4_map_mul(s3[i, j], p_c[j], in_x[i, j], s4[i, 0])
                acc0 += e0
        acc0 = _segment_sum(part, acc0, lanes)
        if i < B and lane == 0:
            s6[i, 0] = acc0


# k5_reduce_bsum: reduce batch_sum -> bsum [out_grad_c]
#   IR nodes: n18 bsum
#   DSL: models.py:47: m.minimize(sc.losses.sigmoid_cross_entropy(W.T @ code + c, x))
#   launch: 128 (8 col × 16 row lanes) threads per block; grid ceil(6/8)

# k6_gemm_WTg: gemm -> WTg [s0]
#   IR nodes: n21 WTg
#   DSL: models.py:47: m.minimize(sc.losses.sigmoid_cross_entropy(W.T @ code + c, x))
#   launch: 16×16 (4×4 outputs each, k-step 16) threads per block; grid ceil(3/64) × ceil(B/64)

# k7_map_mul_1: map -> mul_1 [s7]
#   IR nodes: n24 mul_1
#   DSL: models.py:46: code = sc.logistic(W @ x + b)
#   launch: 128 threads per block; grid ceil(B·3/128)
@cuda.jit(cache=True)
def k7_map_mul_1(B, s0, s2, s7):
    for ij in range(cuda.grid(1), B * 3, cuda.gridsize(1)):
        i = ij // 3
        j = ij - i * 3
        s7[i, j] = f_k7_map_mul_1(s0[i, j], s2[i, j])


# k8_reduce_bsum_1: reduce batch_sum -> bsum_1 [out_grad_b]
#   IR nodes: n27 bsum_1
#   DSL: models.py:46: code = sc.logistic(W @ x + b)
#   launch: 128 (4 col × 32 row lanes) threads per block; grid ceil(3/4)

# k9_gemm_dW: gemm -> dW [s8]
#   IR nodes: n28 dW
#   DSL: models.py:46: code = sc.logistic(W @ x + b)
#   launch: 16×16 (4×4 outputs each, k-step 16) threads per block; grid ceil(6/64) × ceil(3/64)

# k10_gemm_dWTT_1: gemm -> dWTT_1 [s9]
#   IR nodes: n30 dWTT_1
#   DSL: models.py:47: m.minimize(sc.losses.sigmoid_cross_entropy(W.T @ code + c, x))
#   launch: 16×16 (4×4 outputs each, k-step 16) threads per block; grid ceil(6/64) × ceil(3/64)

# k11_map_acc: map -> acc [out_grad_W]
#   IR nodes: n29 acc
#   DSL: models.py:46: code = sc.logistic(W @ x + b)
#   launch: 128 threads per block; grid ceil(18/128)
@cuda.jit(cache=True)
def k11_map_acc(B, s9, s8, out_grad_W):
    for j in range(cuda.grid(1), 18, cuda.gridsize(1)):
        out_grad_W[j] = f_k11_map_acc(s9[j], s8[j])


# k12_reduce_objective: reduce batch_mean -> objective [out_objective]
#   IR nodes: n11 objective
#   DSL: models.py:47: m.minimize(sc.losses.sigmoid_cross_entropy(W.T @ code + c, x))
#   launch: 128 (1 col × 128 row lanes) threads per block; grid ceil(1/1)


def _launch(B, theta, in_x, out_grad, out_objective, s0, s1, s2, s3, s4, s5, s6, s7, s8, s9):
    """The kernels in order, over device arrays (named as in the CPU driver)."""
    p_W = theta[0:18]
    p_b = theta[18:21]
    p_c = theta[21:27]
    out_grad_W = out_grad[0:18]
    out_grad_b = out_grad[18:21]
    out_grad_c = out_grad[21:27]
    # k0_gemm_a_W  (models.py:46)
    ck.gemm(in_x, p_W.reshape((3, 6)), s0, trans_b=True)
    # k1_map_logistic  (models.py:46)
    k1_map_logistic[ck.blocks(B * 3), THREADS](B, s0, p_b, s1, s2)
    # k2_gemm_a_WT  (models.py:47)
    ck.gemm(s1, p_W.reshape((3, 6)), s3)
    # k3_map_bbcast  (models.py:47)
    k3_map_bbcast[ck.blocks(B), THREADS](B, s4)
    # k4_map_mul  (models.py:47)
    k4_map_mul[ck.row_blocks(B, 6), THREADS](B, ck.lanes(6), s3, p_c, in_x, s4, s5, s6)
    # k5_reduce_bsum  (models.py:47)
    ck.batch_reduce("batch_sum", s5, out_grad_c)
    # k6_gemm_WTg  (models.py:47)
    ck.gemm(s5, p_W.reshape((3, 6)), s0, trans_b=True)
    # k7_map_mul_1  (models.py:46)
    k7_map_mul_1[ck.blocks(B * 3), THREADS](B, s0, s2, s7)
    # k8_reduce_bsum_1  (models.py:46)
    ck.batch_reduce("batch_sum", s7, out_grad_b)
    # k9_gemm_dW  (models.py:46)
    ck.gemm(s7, in_x, s8.reshape((3, 6)), trans_a=True)
    # k10_gemm_dWTT_1  (models.py:47)
    ck.gemm(s1, s5, s9.reshape((3, 6)), trans_a=True)
    # k11_map_acc  (models.py:46)
    k11_map_acc[ck.blocks(18), THREADS](B, s9, s8, out_grad_W)
    # k12_reduce_objective  (models.py:47)
    ck.batch_reduce("batch_mean", s6, out_objective)


def run(theta, in_x, out_grad, out_objective, s0, s1, s2, s3, s4, s5, s6, s7, s8, s9):
    """Run program 'grad' on the GPU, with the CPU driver's arguments.

    Host inputs are copied to device arrays (allocated once per batch size and
    reused), the kernels run there, and the results are copied back into out_*;
    an argument that is a device array already (a State's cache, CP noise) is used
    in place. The host scratch s* is not used: the scratch lives on the device."""
    B = in_x.shape[0]
    ck.run_on_device(
        _launch,
        _DEVICE,
        B,
        inputs=(theta, in_x),
        outputs=(out_grad, out_objective),
        scratch=[(B, 3), (B, 3), (B, 3), (B, 6), (B, 1), (B, 6), (B, 1), (B, 3), (18,), (18,)],
        dtype=DTYPE,
    )
