#!/usr/bin/env python3
"""Writes small raw-detector HDF5 files with the compression filters beamline file writers
use, for Donut's tests (Tests/DonutIOTests/RawDetectorTests.swift) and for trying
`donut inspect` by hand. Fixtures only: the donut binary never needs Python.

    scripts/make_raw_fixtures.py OUTDIR [--frames 6] [--height 40] [--width 48]

One file per filter, OUTDIR/raw_<name>.h5, each holding the same uint32 frames twice:
  /entry/instrument/detector/data   (N, H, W) chunks (1, H, W), compressed with <name>
  /entry/reference/data             (N, H, W) the same values, uncompressed (the truth)
  /entry/data/data                  soft link to the detector's data (NXdata)
Filters: gzip (1), lz4 (32004), blosc-lz4 (32001), bitshuffle-lz4 (32008, compression 2),
bitshuffle-zstd (32008, compression 3), zstd (32015). Debian 12 ships decoders for the
first four (scripts/setup installs them); the last two test the "filter unavailable"
refusal. Python's `hdf5plugin` (pip, installed by scripts/setup) can write all of them.

Frame values: (7·n + 3·y + x) mod 1000, with row 5 of every frame at the uint32 sentinel
2³² − 1 (a module gap) so that sentinels survive each filter too.
"""
import argparse
import os
import sys

import h5py
import hdf5plugin
import numpy as np

FILTERS = {
    "gzip": dict(compression="gzip", compression_opts=4),
    "lz4": hdf5plugin.LZ4(),
    "blosc-lz4": hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE),
    "bitshuffle-lz4": hdf5plugin.Bitshuffle(cname="lz4"),
    "bitshuffle-zstd": hdf5plugin.Bitshuffle(cname="zstd"),
    "zstd": hdf5plugin.Zstd(),
}


def frames(n, h, w):
    k, y, x = np.meshgrid(np.arange(n), np.arange(h), np.arange(w), indexing="ij")
    a = ((7 * k + 3 * y + x) % 1000).astype(np.uint32)
    a[:, 5, :] = np.iinfo(np.uint32).max
    return a


def write(path, name, data):
    tmp = path + ".tmp"
    with h5py.File(tmp, "w") as f:
        f.attrs["default"] = "entry"
        e = f.create_group("entry")
        e.attrs["NX_class"] = "NXentry"
        e.attrs["default"] = "data"
        inst = e.create_group("instrument")
        inst.attrs["NX_class"] = "NXinstrument"
        det = inst.create_group("detector")
        det.attrs["NX_class"] = "NXdetector"
        opts = dict(FILTERS[name])
        det.create_dataset("data", data=data, chunks=(1,) + data.shape[1:], **opts)
        ref = e.create_group("reference")
        ref.attrs["NX_class"] = "NXcollection"
        ref.create_dataset("data", data=data)
        d = e.create_group("data")
        d.attrs["NX_class"] = "NXdata"
        d.attrs["signal"] = "data"
        d["data"] = h5py.SoftLink("/entry/instrument/detector/data")
    os.replace(tmp, path)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("outdir")
    p.add_argument("--frames", type=int, default=6)
    p.add_argument("--height", type=int, default=40)
    p.add_argument("--width", type=int, default=48)
    a = p.parse_args()
    os.makedirs(a.outdir, exist_ok=True)
    data = frames(a.frames, a.height, a.width)
    for name in FILTERS:
        path = os.path.join(a.outdir, f"raw_{name}.h5")
        write(path, name, data)
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
