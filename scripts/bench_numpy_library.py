"""Reference timing: the published box-model library (41³) with numpy, separable form.

The same physics as DonutPhysics (checked: its first patterns match Tests/Fixtures/reference),
written the way a numpy user would: per strain, stack A for every ω and B for every χ and
take two matrix products. float64 (numpy's default). Prints seconds and a checksum.
"""
import sys
import time

import numpy as np

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 41
lam = 12.398 / 11.3; k = 2 * np.pi / lam; c = 4.013; l = 2; D = 0.85; p = 110e-6; f = 0.021874
th = np.arcsin(lam * l / (2 * c)); h = 5e-4
x = np.arange(64) - 31.5; y = np.arange(64) - 31.5
gam = np.arcsin(x * p / D) + th
DQx = k * (np.cos(th) - np.cos(gam)); DQz = k * (np.sin(gam) + np.sin(th)); DQy = k * y * p / D
s = p / (2 * D); u = np.arange(128) - 63.5
OQx = -u * s * k * np.sin(th); OQz = u * s * k * np.cos(th); OQy = u * s * k
R = np.sqrt(u[None, :] ** 2 + u[:, None] ** 2) * s
M = ((R > 77e-6 / (2 * f)) & (R < 149e-6 / (2 * f))).astype(float)
E = np.linspace(-0.005, 0.005, steps); W = np.deg2rad(np.linspace(-0.05, 0.05, steps))
C = np.deg2rad(np.linspace(-0.1, 0.1, steps)); t = 117.0

t0 = time.perf_counter()
out = np.empty((steps, steps, steps, 64, 64), np.float32)
for i, e in enumerate(E):
    G = 2 * np.pi * l / (c * (1 + e))
    qx = DQx[None, :, None] + G * W[:, None, None] - OQx[None, None, :]          # (ω, x, u)
    qz = DQz[:, None] - G - OQz[None, :]                                           # (x, u)
    A = t * np.sinc(t * qz / (2 * np.pi)) ** 2 * (np.abs(qx) < h)                  # (ω, x, u)
    B = (np.abs(DQy[None, :, None] + G * C[:, None, None] - OQy[None, None, :]) < h).astype(float)  # (χ, y, v)
    MA = np.einsum('vu,wxu->vwx', M, A).reshape(128, -1)                           # (v, ω·x)
    I = B.reshape(-1, 128) @ MA                                                    # (χ·y, ω·x)
    out[i] = I.reshape(steps, 64, steps, 64).transpose(2, 0, 1, 3)                 # (ω, χ, y, x)
dt = time.perf_counter() - t0
print(f"numpy separable library {steps}^3: {dt:.2f} s, checksum {out.astype(np.float64).sum():.6e}")
