"""Tests of donutplot's forward-model port against independent truth: the golden box-model
patterns of the published brute-force simulation (Tests/Fixtures/reference), and, when given a
library written by `donut simulate library` (Swift ForwardModel), its patterns.

    python3 test_donutplot.py [LIBRARY.h5 ...]

Prints one line per check and '<n> passed, <m> failed'; exits 1 on any failure.
Run by Tests/DonutCLITests/NotebookTests.swift (with box and smooth libraries)."""
import json
import os
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import donutplot as dp  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REFERENCE = os.path.join(HERE, "..", "Tests", "Fixtures", "reference")
results = []


def check(name, ok, detail):
    results.append(ok)
    print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}")


def preset_config(preset):
    """The golden preset in Donut's config keys (Sources/DonutPhysics/Config.swift)."""
    return {
        "instrument": {"energy_keV": preset["energy_keV"], "detector_distance_m": preset["detector_distance_m"],
                       "pixel_size_m": preset["pixel_size_m"] / 2, "binning": 2, "X0": preset["X0"],
                       "Xcen": preset["Xcen"], "delta_theta_deg": 0.0},
        "zone_plate": {"focal_length_m": preset["focal_length_m"], "diameter_m": preset["zone_plate_diameter_m"],
                       "central_stop_diameter_m": preset["central_stop_diameter_m"],
                       "upsampling": preset["zone_plate_grid"] // preset["detector"]},
        "sample": {"lattice_c_A": preset["lattice_c_A"], "reflection_l": preset["reflection_l"], "thickness_A": 117},
        "model": {"frame_size": preset["detector"], "box_half_width_invA": preset["box_half_width_invA"],
                  "smooth_sigma_invA": 4.1e-4},
    }


def test_golden():
    meta = json.load(open(os.path.join(REFERENCE, "box_patterns.json")))
    golden = np.load(os.path.join(REFERENCE, "box_patterns.npy"))
    geo = dp.Geometry(preset_config(meta["preset"]))
    worst = 0.0
    for i, p in enumerate(meta["params"]):
        mine = geo.pattern(p["strain"], p["tilt_lr_deg"], p["tilt_ud_deg"], p["thickness_A"], "box")
        worst = max(worst, np.abs(mine - golden[i]).max() / np.abs(golden[i]).max())
    check("box model vs golden patterns", worst < 1e-9, f"{len(meta['params'])} patterns, worst max-relative error {worst:.2e}")


def test_library(path):
    with h5py.File(path, "r") as f:
        cfg = json.loads(f["/entry/process/config/data"][()].decode())
        method = f["/entry/process/method"][()].decode()
        lib = f["/entry/library"]
        pats = lib["patterns"]
        axes = {n: lib[n][()] for n in ("strain", "tilt_lr", "tilt_ud")}
        profile = method.replace("library-", "")
        geo = dp.Geometry(cfg)
        rng = np.random.default_rng(3)
        worst = 0.0
        idx = [tuple(int(rng.integers(0, s)) for s in pats.shape[:3]) for _ in range(6)]
        for (a, b, c) in idx:
            swift = pats[(a, b, c) + (0,) * (pats.ndim - 5)].astype(float)
            t = lib["thickness"][0] if "thickness" in lib else None
            mine = geo.pattern(axes["strain"][a], axes["tilt_lr"][b], axes["tilt_ud"][c], t, profile)
            worst = max(worst, np.abs(mine - swift).max() / max(np.abs(swift).max(), 1e-300))
        # float32 library: agreement to single precision
        check(f"{profile} model vs Swift library {os.path.basename(path)}", worst < 1e-4,
              f"{len(idx)} patterns, worst max-relative error {worst:.2e}")


def test_limits():
    lo, hi = dp.robust_limits(np.r_[np.linspace(-1, 3, 1000), np.nan, 1e9], signed=True)
    check("signed limits symmetric", lo == -hi and 2.9 < hi < 3.1, f"({lo:.3f}, {hi:.3f})")


if __name__ == "__main__":
    test_golden()
    test_limits()
    for p in sys.argv[1:]:
        test_library(p)
    failed = results.count(False)
    print(f"{len(results) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
