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

import numpy as np  # noqa: F401

from symcurv.runtime import vecmath as vm  # noqa: F401  (logsumexp_rows)
from symcurv.runtime.gemm import gemm  # noqa: F401  (out = a·b by BLAS)
from symcurv.runtime.validate import all_finite_flat  # noqa: F401  (batch guards)
from symcurv.runtime.shared_kernels import importer

kernel = importer(__file__)  # loads kernels/shared/<name>.py

# k0_gemm_a_W: gemm -> a_W [s0]
#   IR nodes: n4 a_W
#   DSL: models.py:46: code = sc.logistic(W @ x + b)

# k1_map_logistic: map -> logistic [s1], logistic_d0 [s2]
#   IR nodes: n5 add, n6 logistic, n23 logistic_d0
#   DSL: models.py:46: code = sc.logistic(W @ x + b)
k1_map_logistic = kernel('map_logistic_8a6096cfb3ae')  # (B, s0, p_b, s1, s2)

# k2_gemm_a_WT: gemm -> a_WT [s3]
#   IR nodes: n8 a_WT
#   DSL: models.py:47: m.minimize(sc.losses.sigmoid_cross_entropy(W.T @ code + c, x))

# k3_map_bbcast: map -> bbcast [s4]
#   IR nodes: n13 bbcast
#   DSL: models.py:47: m.minimize(sc.losses.sigmoid_cross_entropy(W.T @ code + c, x))
k3_map_bbcast = kernel('map_bbcast_fc91bb33dc93')  # (B, s4)

# k4_map_mul: map -> mul [s5], sigmoid_cross_entropy_2 [s6]
#   IR nodes: n9 add_1, n14 loss_sigmoid_cross_entropy_d0, n15 mul, n31 sigmoid_cross_entropy_1, n32 sigmoid_cross_entropy_2
#   DSL: models.py:47: m.minimize(sc.losses.sigmoid_cross_entropy(W.T @ code + c, x))
k4_map_mul = kernel('map_mul_4c7dd149d0f5')  # (B, s3, p_c, in_x, s4, s5, s6)

# k5_reduce_bsum: reduce batch_sum -> bsum [out_grad_c]
#   IR nodes: n18 bsum
#   DSL: models.py:47: m.minimize(sc.losses.sigmoid_cross_entropy(W.T @ code + c, x))
k5_reduce_bsum = kernel('reduce_bsum_5919ea96935d')  # (B, s5, out_grad_c)

# k6_gemm_WTg: gemm -> WTg [s0]
#   IR nodes: n21 WTg
#   DSL: models.py:47: m.minimize(sc.losses.sigmoid_cross_entropy(W.T @ code + c, x))

# k7_map_mul_1: map -> mul_1 [s7]
#   IR nodes: n24 mul_1
#   DSL: models.py:46: code = sc.logistic(W @ x + b)
k7_map_mul_1 = kernel('map_mul_e5f1ca880d24')  # (B, s0, s2, s7)

# k8_reduce_bsum_1: reduce batch_sum -> bsum_1 [out_grad_b]
#   IR nodes: n27 bsum_1
#   DSL: models.py:46: code = sc.logistic(W @ x + b)
k8_reduce_bsum_1 = kernel('reduce_bsum_07d8e331c927')  # (B, s7, out_grad_b)

# k9_gemm_dW: gemm -> dW [s8]
#   IR nodes: n28 dW
#   DSL: models.py:46: code = sc.logistic(W @ x + b)

# k10_gemm_dWTT_1: gemm -> dWTT_1 [s9]
#   IR nodes: n30 dWTT_1
#   DSL: models.py:47: m.minimize(sc.losses.sigmoid_cross_entropy(W.T @ code + c, x))

# k11_map_acc: map -> acc [out_grad_W]
#   IR nodes: n29 acc
#   DSL: models.py:46: code = sc.logistic(W @ x + b)
k11_map_acc = kernel('map_acc_d79bb57110b1')  # (B, s9, s8, out_grad_W)

# k12_reduce_objective: reduce batch_mean -> objective [out_objective]
#   IR nodes: n11 objective
#   DSL: models.py:47: m.minimize(sc.losses.sigmoid_cross_entropy(W.T @ code + c, x))
k12_reduce_objective = kernel('reduce_objective_eb17733eb6a0')  # (B, out_objective, s6)


def run(theta, in_x, out_grad, out_objective, s0, s1, s2, s3, s4, s5, s6, s7, s8, s9):
    """Run program 'grad': inputs/targets are (B, n) arrays, θ is flat; results are written into out_* arrays; s* are scratch buffers. Returns whether a product that reads x whole held NaN/inf (codegen/guards.py)."""
    B = in_x.shape[0]
    p_b = theta[18:21]
    p_c = theta[21:27]
    out_grad_W = out_grad[0:18]
    out_grad_b = out_grad[18:21]
    out_grad_c = out_grad[21:27]
    p_W_3x6 = theta[0:18].reshape((3, 6))
    s8_3x6 = s8.reshape((3, 6))
    s9_3x6 = s9.reshape((3, 6))
    nonfinite = False
    # k0_gemm_a_W  (models.py:46)
    gemm(in_x, p_W_3x6.T, s0)
    nonfinite |= not all_finite_flat(s0.reshape(-1))  # a non-finite batch entry?
    # k1_map_logistic  (models.py:46)
    k1_map_logistic(B, s0, p_b, s1, s2)
    # k2_gemm_a_WT  (models.py:47)
    gemm(s1, p_W_3x6, s3)
    # k3_map_bbcast  (models.py:47)
    k3_map_bbcast(B, s4)
    # k4_map_mul  (models.py:47)
    k4_map_mul(B, s3, p_c, in_x, s4, s5, s6)
    # k5_reduce_bsum  (models.py:47)
    k5_reduce_bsum(B, s5, out_grad_c)
    # k6_gemm_WTg  (models.py:47)
    gemm(s5, p_W_3x6.T, s0)
    # k7_map_mul_1  (models.py:46)
    k7_map_mul_1(B, s0, s2, s7)
    # k8_reduce_bsum_1  (models.py:46)
    k8_reduce_bsum_1(B, s7, out_grad_b)
    # k9_gemm_dW  (models.py:46)
    gemm(s7.T, in_x, s8_3x6)
    # k10_gemm_dWTT_1  (models.py:47)
    gemm(s1.T, s5, s9_3x6)
    # k11_map_acc  (models.py:46)
    k11_map_acc(B, s9, s8, out_grad_W)
    # k12_reduce_objective  (models.py:47)
    k12_reduce_objective(B, out_objective, s6)
    return nonfinite
