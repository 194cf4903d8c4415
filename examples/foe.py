"""Fields of Experts (Roth & Black 2009) as Kingma & LeCun (2010, eq. 9) train it:

    E(x) = Σ_p Σ_{i=1..M} α_i g(w_iᵀ x_(p)),   α_i = exp β_i,   g(z) = log((c z)² / 2 + 1),

p running over every position where a k × k patch x_(p) fits the image (a "valid"
correlation: sc.conv2d), c = e^1.5 (fixed), M = 24 filters of 5 × 5. One case is one whole
image, flat (row-major), so the same model serves training on crops and MAP denoising of a
full photograph (sc.denoise). The energy is Σ over the responses of g, weighted per filter:
with Y the per-case (M, positions) response matrix, E = Σ_p (g(Y)ᵀ α)_p.

    symcurv build examples/foe.py -o build/foe

The paper normalises the PoE filters to unit L2 norm; this FoE keeps them free (the
product's scale is then carried by F and α together).
"""

import sympy

import symcurv as sc

C = sympy.exp(sympy.Rational(3, 2))  # the Student-t's fixed horizontal scale, c = e^1.5
student = sc.elementwise("student_t", lambda z: sympy.log((C * z) ** 2 / 2 + 1))


def model(image=(64, 64), filters=24, size=5, name="foe", std=0.1):
    """The FoE energy over one ``image = (H, W)`` picture (flat input ``x`` of H·W pixels);
    parameters ``F`` (filters, size²), one filter per row, and ``beta`` (filters,)."""
    H, W = image
    m = sc.Model(name)
    x = m.input("x", H * W)
    F = m.param("F", (filters, size * size), init=sc.init.normal(std))
    beta = m.param("beta", filters, init=sc.init.zeros())
    Y = sc.conv2d(F, x, image=(H, W))  # (filters, positions): w_iᵀ x_(p)
    energy = sc.sum(student(Y).T @ sc.exp(beta))
    # The per-case energy as the objective (its mean over the images of a batch); once
    # m.energy exists (score matching, issue 17) this line becomes m.energy(energy).
    m.minimize(energy)
    return m


def tiny():
    """3 filters of 3 × 3 on 6 × 7 images: for tests."""
    return model(image=(6, 7), filters=3, size=3, name="foe_tiny", std=0.5)
