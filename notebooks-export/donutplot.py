"""Figures of Donut's files: result maps, comparisons against ground truth, training curves,
sweeps, and measured frames beside the forward model's frames.

Plain numpy + h5py + matplotlib, used by the notebooks in this folder (and importable from
any Python session that has this folder on sys.path). The donut binary never needs it.

Files read (layouts: docs/design.md "Files", Sources/DonutIO/ResultMaps.swift, ScanFiles.swift):

- result maps   /entry/result (NXdata): strain, tilt_lr [deg], tilt_ud [deg], [thickness [angstrom]],
                [residual], valid (uint8), [<map>_sigma], [goodness_of_fit], axes y, x [um or ""];
                /entry/process: method, config (JSON), inputs
- scan          /entry/data/data (rows, cols, H, W) counts; /entry/ground_truth/{strain, tilt_lr, ...}
- loss log      <model>.loss.csv: step,epoch,train_loss,validation_loss,decoder_mae,physics_mae
- sweep         <dir>/points.tsv (index, one column per key) + <dir>/run-NNN/model.loss.csv

Colour conventions: signed quantities (strain, tilts, their errors) in a diverging map centred
on 0 with symmetric limits; unsigned ones (σ, thickness, goodness of fit) in viridis. Limits
are robust (1st/99th percentile of the finite valid pixels) so one hot pixel does not flatten
a map. Invalid pixels (valid = 0 or NaN) are grey. Axes are in µm when the file knows the
scan positions, else scan indices.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field

import h5py
import numpy as np
import matplotlib.pyplot as plt
from matplotlib import colors

# Maps whose sign means something (diverging colour map, centred on 0).
SIGNED = {"strain", "tilt_lr", "tilt_ud"}
PARAMETERS = ("strain", "tilt_lr", "tilt_ud", "thickness")
LABELS = {"strain": "strain ε", "tilt_lr": "tilt_lr ω", "tilt_ud": "tilt_ud χ", "thickness": "thickness t",
          "residual": "residual", "goodness_of_fit": "goodness of fit D/E[D]", "valid": "valid"}
UNIT_TEXT = {"deg": "°", "angstrom": "Å", "um": "µm", "counts": "counts", "": ""}
DIVERGING = "RdBu_r"
SEQUENTIAL = "viridis"


def _text(v) -> str:
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray) and v.shape == ():
        return _text(v[()])
    return str(v)


def unit_text(units: str) -> str:
    """How units appear on a figure: 'deg' → '°', 'angstrom' → 'Å', 'um' → 'µm'."""
    return UNIT_TEXT.get(units, units)


def label(name: str, units: str = "") -> str:
    """'tilt_lr ω (°)' — a map's axis/colour-bar label with its units."""
    base = LABELS.get(name, name.replace("_sigma", " σ") if name.endswith("_sigma") else name)
    if name.endswith("_sigma"):
        base = "σ " + LABELS.get(name[:-6], name[:-6])
    u = unit_text(units)
    return f"{base} ({u})" if u else base


@dataclass
class Result:
    """One result file read whole: 2-D maps (float, NaN where invalid), units, axes."""
    path: str
    maps: dict
    units: dict
    x: np.ndarray
    y: np.ndarray
    axis_units: str
    method: str = ""
    config: dict = field(default_factory=dict)
    inputs: list = field(default_factory=list)
    label: str = ""          # shown in legends and titles instead of the method when set

    @property
    def shape(self):
        return self.maps["strain"].shape

    @property
    def valid(self) -> np.ndarray:
        return self.maps["valid"].astype(bool)

    @property
    def name(self) -> str:
        return self.label or self.method or os.path.basename(self.path)

    def extent(self):
        """imshow extent [left, right, bottom, top] in the file's axis units (pixel centres
        at the positions), row 0 at the top."""
        return _extent(self.x, self.y)

    @property
    def axis_label(self) -> str:
        return unit_text(self.axis_units) or "index"


def _extent(x, y):
    def edges(a):
        a = np.asarray(a, float)
        if a.size == 1:
            return a[0] - 0.5, a[0] + 0.5
        step = (a[-1] - a[0]) / (a.size - 1)
        return a[0] - step / 2, a[-1] + step / 2
    x0, x1 = edges(x)
    y0, y1 = edges(y)
    return [x0, x1, y1, y0]


def open_result(path: str) -> Result:
    """Reads a Donut result file by following its NeXus @default chain to the NXdata."""
    with h5py.File(path, "r") as f:
        entry = f[_text(f.attrs.get("default", "entry"))]
        data = entry[_text(entry.attrs.get("default", "result"))]
        if _text(data.attrs.get("NX_class", "")) != "NXdata":
            raise ValueError(f"{path}: {data.name} is not an NXdata group (not a Donut result file?)")
        names = [_text(data.attrs["signal"])] + [_text(a) for a in data.attrs.get("auxiliary_signals", [])]
        if "goodness_of_fit" in data and "goodness_of_fit" not in names:
            names.append("goodness_of_fit")   # older writers did not list every map
        maps, units = {}, {}
        for n in names:
            d = data[n]
            maps[n] = d[()].astype(float) if n != "valid" else d[()].astype(np.uint8)
            units[n] = _text(d.attrs.get("units", ""))
        for n in ("strain", "tilt_lr", "tilt_ud", "valid"):
            if n not in maps:
                raise ValueError(f"{path}: {data.name}/{n} missing")
        x, y = data["x"][()].astype(float), data["y"][()].astype(float)
        axis_units = _text(data["x"].attrs.get("units", ""))
        method, config, inputs = "", {}, []
        if "process" in entry:
            p = entry["process"]
            method = _text(p["method"][()]) if "method" in p else ""
            if "config/data" in p:
                try:
                    config = json.loads(_text(p["config/data"][()]))
                except json.JSONDecodeError:
                    config = {}
            if "inputs" in p:
                for k in sorted(p["inputs"]):
                    g = p["inputs"][k]
                    inputs.append({n: _text(g[n][()]) for n in g})
    return Result(path, maps, units, x, y, axis_units, method, config, inputs)


def read_truth(scan_path: str) -> dict:
    """Ground-truth maps of a simulated scan (/entry/ground_truth/*), {} when it has none."""
    with h5py.File(scan_path, "r") as f:
        if "/entry/ground_truth" not in f:
            return {}
        g = f["/entry/ground_truth"]
        return {n: g[n][()].astype(float) for n in g}


def truth_units(name: str) -> str:
    return {"tilt_lr": "deg", "tilt_ud": "deg", "thickness": "angstrom"}.get(name, "")


# MARK: - Colour limits and one map

def robust_limits(values, signed: bool):
    """(lo, hi): 1st/99th percentiles of the finite values; symmetric ±max(|lo|,|hi|) when
    signed, so 0 sits at the centre of a diverging map. (0, 1) when nothing is finite."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return (-1.0, 1.0) if signed else (0.0, 1.0)
    lo, hi = np.percentile(v, [1, 99])
    if signed:
        m = max(abs(lo), abs(hi))
        m = m if m > 0 else 1e-12
        return -m, m
    if hi <= lo:
        d = abs(lo) * 1e-3 or 1e-12
        return lo - d, hi + d
    return lo, hi


def draw_map(ax, values, *, x, y, axis_label="index", title="", units="", signed=None, name="",
             limits=None, valid=None, colorbar=True):
    """One map on `ax` with a colour bar labelled with the units. Signed maps diverge from 0."""
    a = np.array(values, float)
    if valid is not None:
        a[~np.asarray(valid, bool)] = np.nan
    signed = (name in SIGNED) if signed is None else signed
    lo, hi = limits if limits is not None else robust_limits(a, signed)
    cmap = plt.get_cmap(DIVERGING if signed else SEQUENTIAL).copy()
    cmap.set_bad("0.6")
    norm = colors.TwoSlopeNorm(0, lo, hi) if signed and lo < 0 < hi else colors.Normalize(lo, hi)
    im = ax.imshow(np.ma.masked_invalid(a), cmap=cmap, norm=norm, extent=_extent(x, y),
                   interpolation="nearest", aspect="equal")
    ax.set_xlabel(f"x ({axis_label})")
    ax.set_ylabel(f"y ({axis_label})")
    ax.set_title(title or label(name, units))
    if colorbar:
        cb = ax.figure.colorbar(im, ax=ax, shrink=0.85)
        cb.set_label(label(name, units) if name else unit_text(units))
    return im


def _grid(n, ncols=3, size=3.6):
    ncols = min(ncols, n)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * 1.3 * ncols, size * nrows), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes.flat


# MARK: - Figures of one result

def plot_maps(r: Result, names=None, title=None):
    """The parameter maps (strain, tilts, thickness when present); invalid pixels grey."""
    names = names or [n for n in PARAMETERS if n in r.maps]
    fig, axes = _grid(len(names))
    for ax, n in zip(axes, names):
        draw_map(ax, r.maps[n], x=r.x, y=r.y, axis_label=r.axis_label, name=n, units=r.units.get(n, ""),
                 valid=r.valid)
    fig.suptitle(title or f"{r.name}: {os.path.basename(r.path)} ({r.valid.sum()}/{r.valid.size} valid)")
    return fig


def plot_quality(r: Result):
    """σ maps, goodness of fit, residual and valid — whatever the file has (None if nothing)."""
    names = [n for n in r.maps if n.endswith("_sigma")] + [n for n in ("goodness_of_fit", "residual") if n in r.maps]
    names.append("valid")
    fig, axes = _grid(len(names))
    for ax, n in zip(axes, names):
        draw_map(ax, r.maps[n], x=r.x, y=r.y, axis_label=r.axis_label, name=n, units=r.units.get(n, ""),
                 signed=False, limits=(0, 1) if n == "valid" else None)
    fig.suptitle(f"{r.name}: uncertainties and fit quality")
    return fig


def plot_histograms(results, names=None, bins=60):
    """Histogram of each parameter map over the valid pixels, one curve per result."""
    results = _as_list(results)
    names = names or [n for n in PARAMETERS if all(n in r.maps for r in results)]
    fig, axes = _grid(len(names), size=3.2)
    for ax, n in zip(axes, names):
        allv = np.concatenate([r.maps[n][r.valid & np.isfinite(r.maps[n])] for r in results])
        if allv.size == 0:
            ax.set_title(f"{n}: no valid pixel")
            continue
        edges = np.histogram_bin_edges(allv, bins=bins, range=tuple(np.percentile(allv, [0.5, 99.5])))
        for r in results:
            v = r.maps[n][r.valid & np.isfinite(r.maps[n])]
            ax.hist(v, bins=edges, histtype="step", label=r.name)
        ax.set_xlabel(label(n, results[0].units.get(n, "")))
        ax.set_ylabel("pixels")
    axes[0].legend(fontsize="small")
    fig.suptitle("distributions of the valid pixels")
    return fig


def _as_list(results):
    return list(results) if isinstance(results, (list, tuple)) else [results]


# MARK: - Against ground truth

def rmse(est, truth):
    """√mean (est − truth)² over the pixels where both are finite (as Donut's MapMetrics)."""
    e, t = np.asarray(est, float).ravel(), np.asarray(truth, float).ravel()
    ok = np.isfinite(e) & np.isfinite(t)
    return float(np.sqrt(np.mean((e[ok] - t[ok]) ** 2))) if ok.any() else float("nan")


def pearson(a, b):
    a, b = np.asarray(a, float).ravel(), np.asarray(b, float).ravel()
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 2 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def crosstalk(est, truth, other_truth):
    """|r| between a map's error and another parameter's true map (as MapMetrics.crosstalk):
    near 0 when the errors in one parameter do not follow another."""
    return abs(pearson(np.asarray(est, float) - truth, other_truth))


def metrics_table(results, truth) -> str:
    """RMSE per map and both crosstalks per result, as the table `donut demo` prints."""
    results = _as_list(results)
    head = f"{'method':28s} {'RMSE strain':>12s} {'RMSE tilt_lr°':>14s} {'RMSE tilt_ud°':>14s} " \
           f"{'|r| ω err~ε':>12s} {'|r| ε err~ω':>12s} {'valid':>11s}"
    lines = [head]
    for r in results:
        m = {n: np.where(r.valid, r.maps[n], np.nan) for n in ("strain", "tilt_lr", "tilt_ud")}
        lines.append(f"{r.name:28s} {rmse(m['strain'], truth['strain']):12.3e} {rmse(m['tilt_lr'], truth['tilt_lr']):14.3e} "
                     f"{rmse(m['tilt_ud'], truth['tilt_ud']):14.3e} "
                     f"{crosstalk(m['tilt_lr'], truth['tilt_lr'], truth['strain']):12.3f} "
                     f"{crosstalk(m['strain'], truth['strain'], truth['tilt_lr']):12.3f} "
                     f"{int(r.valid.sum()):>5d}/{r.valid.size:<5d}")
    return "\n".join(lines)


def plot_parity(results, truth, names=None):
    """Estimate against truth per parameter (valid pixels), the identity line dashed."""
    results = _as_list(results)
    names = names or [n for n in PARAMETERS if n in truth and all(n in r.maps for r in results)
                      and np.std(truth[n]) > 0]
    fig, axes = _grid(len(names), size=3.4)
    for ax, n in zip(axes, names):
        t = truth[n]
        for r in results:
            ok = r.valid & np.isfinite(r.maps[n])
            ax.scatter(t[ok], r.maps[n][ok], s=2, alpha=0.4, label=f"{r.name} (RMSE {rmse(r.maps[n][ok], t[ok]):.2e})")
        lo, hi = np.nanmin(t), np.nanmax(t)
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
        u = truth_units(n)
        ax.set_xlabel("true " + label(n, u))
        ax.set_ylabel("estimated " + label(n, u))
        ax.legend(fontsize="x-small", markerscale=4)
    fig.suptitle("parity against ground truth")
    return fig


def plot_error_maps(results, truth, names=None):
    """Estimate − truth maps, one row per result, limits shared per parameter and centred on 0."""
    results = _as_list(results)
    names = names or [n for n in ("strain", "tilt_lr", "tilt_ud") if n in truth]
    errors = {(i, n): np.where(r.valid, r.maps[n] - truth[n], np.nan) for i, r in enumerate(results) for n in names}
    lims = {n: robust_limits(np.concatenate([errors[i, n].ravel() for i in range(len(results))]), True) for n in names}
    fig, axes = plt.subplots(len(results), len(names), figsize=(4.7 * len(names), 3.6 * len(results)),
                             squeeze=False, layout="constrained")
    for i, r in enumerate(results):
        for j, n in enumerate(names):
            draw_map(axes[i, j], errors[i, n], x=r.x, y=r.y, axis_label=r.axis_label, name=n,
                     units=truth_units(n), limits=lims[n], title=f"{r.name}\n{n} error")
    fig.suptitle("error maps (estimate − truth)")
    return fig


def plot_crosstalk(results, truth):
    """The DONUT paper's crosstalk comparison: tilt_lr error against true strain, and strain
    error against true tilt_lr, one colour per method, |r| in the legend."""
    results = _as_list(results)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    for r in results:
        ok = r.valid & np.isfinite(r.maps["strain"]) & np.isfinite(r.maps["tilt_lr"])
        ew = r.maps["tilt_lr"] - truth["tilt_lr"]
        es = r.maps["strain"] - truth["strain"]
        axes[0].scatter(truth["strain"][ok], ew[ok], s=2, alpha=0.4,
                        label=f"{r.name} |r| = {crosstalk(r.maps['tilt_lr'][ok], truth['tilt_lr'][ok], truth['strain'][ok]):.2f}")
        axes[1].scatter(truth["tilt_lr"][ok], es[ok], s=2, alpha=0.4,
                        label=f"{r.name} |r| = {crosstalk(r.maps['strain'][ok], truth['strain'][ok], truth['tilt_lr'][ok]):.2f}")
    for ax in axes:
        ax.axhline(0, color="k", lw=0.8)
        ax.legend(fontsize="small", markerscale=4)
    axes[0].set_xlabel("true strain ε")
    axes[0].set_ylabel("tilt_lr error (°)")
    axes[1].set_xlabel("true tilt_lr ω (°)")
    axes[1].set_ylabel("strain error")
    fig.suptitle("crosstalk: errors in one parameter following another")
    return fig


def plot_comparison(results, truth, names=("strain", "tilt_lr", "tilt_ud")):
    """The paper's Fig. 2 layout: one row per parameter, truth then each method, colour limits
    shared along a row: ±max |truth| (the truth's full range, centred on 0)."""
    results = _as_list(results)
    names = [n for n in names if n in truth]
    ncol = 1 + len(results)
    fig, axes = plt.subplots(len(names), ncol, figsize=(3.9 * ncol, 3.4 * len(names)), squeeze=False,
                             layout="constrained")
    r0 = results[0]
    for i, n in enumerate(names):
        m = float(np.nanmax(np.abs(truth[n]))) or 1e-12
        lim = (-m, m) if n in SIGNED else (float(np.nanmin(truth[n])), float(np.nanmax(truth[n])))
        u = truth_units(n)
        draw_map(axes[i, 0], truth[n], x=r0.x, y=r0.y, axis_label=r0.axis_label, name=n, units=u, limits=lim,
                 title=f"truth\n{n}", colorbar=False)
        for j, r in enumerate(results):
            im = draw_map(axes[i, j + 1], r.maps[n], x=r.x, y=r.y, axis_label=r.axis_label, name=n, units=u,
                          limits=lim, valid=r.valid, colorbar=False,
                          title=f"{r.name}\n{n}, RMSE {rmse(np.where(r.valid, r.maps[n], np.nan), truth[n]):.2g}")
        fig.colorbar(im, ax=list(axes[i]), shrink=0.9).set_label(label(n, u))
    return fig


# MARK: - Training curves and sweeps

def read_loss_log(path: str) -> dict:
    """Columns of a <model>.loss.csv as float arrays (step, epoch, train_loss, validation_loss, …)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path}: no records")
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}


def plot_loss_curves(logs):
    """Training and validation loss against step (log scale), and the two MAE terms.
    `logs`: a loss-log path, a dict from read_loss_log, or {label: either}."""
    if isinstance(logs, (str, os.PathLike)) or (isinstance(logs, dict) and "step" in logs):
        logs = {"": logs}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for name, log in logs.items():
        log = read_loss_log(log) if isinstance(log, (str, os.PathLike)) else log
        pre = f"{name} " if name else ""
        axes[0].plot(log["step"], log["train_loss"], label=pre + "train")
        v = np.isfinite(log["validation_loss"])
        if v.any():
            axes[0].plot(log["step"][v], log["validation_loss"][v], "o-", ms=3, label=pre + "validation")
        axes[1].plot(log["step"], log["decoder_mae"], label=pre + "decoder MAE")
        axes[1].plot(log["step"], log["physics_mae"], label=pre + "physics MAE")
    for ax in axes:
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.legend(fontsize="small")
    axes[0].set_ylabel("loss (w_d·MAE_decoder + w_f·MAE_physics)")
    axes[1].set_ylabel("mean absolute error")
    fig.suptitle("training curves")
    return fig


def read_sweep(folder: str):
    """(keys, rows): the sweep plan's keys and, per run with a finished loss log, its values
    and final validation loss. Runs without a log are skipped (listed in rows as missing)."""
    with open(os.path.join(folder, "points.tsv")) as f:
        lines = [l.rstrip("\n").split("\t") for l in f if l.strip()]
    keys, rows = lines[0][1:], []
    for fields in lines[1:]:
        log = os.path.join(folder, f"run-{int(fields[0]):03d}", "model.loss.csv")
        value = float("nan")
        if os.path.exists(log):
            v = read_loss_log(log)["validation_loss"]
            v = v[np.isfinite(v)]
            value = float(v[-1]) if v.size else float("nan")
        rows.append({"index": int(fields[0]), "values": fields[1:], "validation_loss": value})
    return keys, rows


def plot_sweep(folder: str, metric="validation_loss"):
    """The sweep's final metric against each swept key (numeric keys on a log axis when they
    span more than a decade, others as categories)."""
    keys, rows = read_sweep(folder)
    fig, axes = _grid(len(keys), size=3.2)
    y = np.array([r[metric] for r in rows])
    for j, (ax, k) in enumerate(zip(axes, keys)):
        vals = [r["values"][j] for r in rows]
        try:
            xv = np.array([float(v) for v in vals])
            ax.scatter(xv, y)
            if xv.min() > 0 and xv.max() / xv.min() > 10:
                ax.set_xscale("log")
        except ValueError:
            cats = sorted(set(vals))
            ax.scatter([cats.index(v) for v in vals], y)
            ax.set_xticks(range(len(cats)), cats)
        ax.set_xlabel(k)
        ax.set_ylabel(metric.replace("_", " "))
    fig.suptitle(f"sweep {os.path.basename(os.path.normpath(folder))}: {sum(np.isfinite(y))}/{len(rows)} runs finished")
    return fig


# MARK: - Frames: measured beside the forward model

class Geometry:
    """Port of DonutPhysics' DiffractionGeometry + ForwardModel (docs/design.md, "The forward
    model") for drawing a model frame next to a measured one:

        qx(x,u) = DQx(x) + G·ω − OQx(u)     qy(y,v) = DQy(y) + G·χ − OQy(v)
        qz(x,u) = DQz(x) − G − OQz(u)       G = 2πl / (c(1+ε))
        A(x,u) = t·sinc²(t·qz/2π)·Px(qx)    B(y,v) = Py(qy)      I = B·M·Aᵀ

    Px, Py: box [|q| < h] (the published library, `donut fit`) or smooth exp(−q²/σ²) (DONUT's
    physics layer). Tested against the golden box patterns in Tests/Fixtures/reference and
    against `donut simulate library` (notebooks-export/test_donutplot.py)."""

    def __init__(self, config: dict):
        ins, zp, s, m = config["instrument"], config["zone_plate"], config["sample"], config["model"]
        n = int(m["frame_size"])
        mm = n * int(zp["upsampling"])
        lam = 12.398 / ins["energy_keV"]
        self.k = k = 2 * np.pi / lam
        theta_b = np.arcsin(lam * s["reflection_l"] / (2 * s["lattice_c_A"]))
        self.theta = theta = theta_b + np.deg2rad(ins.get("delta_theta_deg", 0.0))
        gamma0 = 2 * theta_b - theta
        self.g0 = 2 * np.pi * s["reflection_l"] / s["lattice_c_A"]
        p, d = ins["pixel_size_m"] * ins["binning"], ins["detector_distance_m"]
        i = np.arange(n) - (n - 1) / 2
        gamma = np.arcsin((i + ins["Xcen"] - ins["X0"]) * p / d) + gamma0
        self.dqx = k * (np.cos(theta) - np.cos(gamma))
        self.dqz = k * (np.sin(gamma) + np.sin(theta))
        self.dqy = k * i * p / d
        step = p / (d * zp["upsampling"])
        u = np.arange(mm) - (mm - 1) / 2
        self.oqx, self.oqz, self.oqy = -u * step * k * np.sin(theta), u * step * k * np.cos(theta), u * step * k
        r = np.hypot(u[None, :], u[:, None]) * step
        outer, inner = zp["diameter_m"] / (2 * zp["focal_length_m"]), zp["central_stop_diameter_m"] / (2 * zp["focal_length_m"])
        self.mask = ((r > inner) & (r < outer)).astype(float)
        self.box_half_width = m["box_half_width_invA"]
        self.smooth_sigma = m["smooth_sigma_invA"]
        self.thickness = s["thickness_A"]
        self.frame_size = n

    def _profile(self, q, profile):
        if profile == "box":
            return (np.abs(q) < self.box_half_width).astype(float)
        r2 = (q / self.smooth_sigma) ** 2
        return np.where(r2 > 36.0, 0.0, np.exp(-np.minimum(r2, 36.0)))

    def pattern(self, strain, tilt_lr_deg, tilt_ud_deg, thickness_A=None, profile="box"):
        """One model frame (frame_size × frame_size, model units), index [y, x]."""
        t = self.thickness if thickness_A is None or not np.isfinite(thickness_A) else thickness_A
        g = self.g0 / (1 + strain)
        qx = self.dqx[:, None] + g * np.deg2rad(tilt_lr_deg) - self.oqx[None, :]
        qz = self.dqz[:, None] - g - self.oqz[None, :]
        a = t * np.sinc(t * qz / (2 * np.pi)) ** 2 * self._profile(qx, profile)
        qy = self.dqy[:, None] + g * np.deg2rad(tilt_ud_deg) - self.oqy[None, :]
        b = self._profile(qy, profile)
        return b @ self.mask @ a.T


def model_profile(r: Result) -> str:
    """The forward-model profile behind a result: box for the correlation fit (the published
    library), smooth for the networks' physics layer."""
    return "box" if r.method.startswith("correlation-fit") else "smooth"


def read_frames(scan_path: str, pixels, dataset="/entry/data/data"):
    """Measured frames at scan pixels [(row, col), …] from a scan at model size (rows, cols, n, n)."""
    with h5py.File(scan_path, "r") as f:
        d = f[dataset]
        if d.ndim != 4:
            raise ValueError(f"{scan_path}:{dataset}: expected (rows, cols, H, W), got shape {d.shape}")
        return [d[r, c].astype(float) for r, c in pixels]


def choose_pixels(r: Result, count=3):
    """A few telling pixels: the worst goodness of fit (or largest residual), the median one,
    and the largest |strain|, all valid — distinct (row, col) pairs."""
    valid = r.valid & np.isfinite(r.maps["strain"])
    picks = []
    score = r.maps.get("goodness_of_fit", r.maps.get("residual"))
    if score is not None:
        s = np.where(valid & np.isfinite(score), score, np.nan)
        if np.isfinite(s).any():
            picks.append(np.unravel_index(np.nanargmax(s), s.shape))
            med = np.nanmedian(s)
            picks.append(np.unravel_index(np.nanargmin(np.abs(s - med)), s.shape))
    a = np.where(valid, np.abs(r.maps["strain"]), np.nan)
    if np.isfinite(a).any():
        picks.append(np.unravel_index(np.nanargmax(a), a.shape))
        picks.append(np.unravel_index(np.nanargmin(a), a.shape))
    out = []
    for p in picks:
        p = (int(p[0]), int(p[1]))
        if p not in out:
            out.append(p)
    return out[:count]


def plot_frames(r: Result, scan_path: str, pixels=None, profile=None, config=None):
    """For each chosen pixel: the measured frame, the forward model's frame at the result's
    parameters, and measured − model. The model is scaled to the measured counts by the
    Poisson maximum-likelihood factor a = Σ counts / Σ model (Donut's fit is scale-free)."""
    pixels = pixels or choose_pixels(r)
    geo = Geometry(config or r.config)
    profile = profile or model_profile(r)
    measured = read_frames(scan_path, pixels)
    fig, axes = plt.subplots(len(pixels), 3, figsize=(12, 3.6 * len(pixels)), squeeze=False, layout="constrained")
    for i, ((row, col), frame) in enumerate(zip(pixels, measured)):
        p = {n: r.maps[n][row, col] for n in PARAMETERS if n in r.maps}
        model = geo.pattern(p["strain"], p["tilt_lr"], p["tilt_ud"], p.get("thickness"), profile)
        scale = frame.sum() / model.sum() if model.sum() > 0 else 0.0
        model = model * scale
        vmax = max(frame.max(), model.max(), 1e-12)
        for j, (img, title) in enumerate([(frame, "measured"), (model, f"model ({profile})")]):
            im = axes[i, j].imshow(img, cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
            axes[i, j].set_title(f"({row}, {col}) {title}")
        fig.colorbar(im, ax=axes[i, :2].tolist(), shrink=0.85).set_label("counts")
        diff = frame - model
        m = max(np.abs(diff).max(), 1e-12)
        im = axes[i, 2].imshow(diff, cmap=DIVERGING, vmin=-m, vmax=m, interpolation="nearest")
        gof = r.maps.get("goodness_of_fit")
        extra = f", GoF {gof[row, col]:.2f}" if gof is not None else ""
        axes[i, 2].set_title(f"measured − model (ε {p['strain']:.2e}, ω {p['tilt_lr']:.3f}°, χ {p['tilt_ud']:.3f}°{extra})",
                             fontsize="small")
        fig.colorbar(im, ax=axes[i, 2], shrink=0.85).set_label("counts")
        for ax in axes[i]:
            ax.set_xlabel("detector x (px)")
            ax.set_ylabel("detector y (px)")
    fig.suptitle(f"{r.name}: frames against the forward model")
    return fig
