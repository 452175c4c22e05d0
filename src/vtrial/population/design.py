"""Trial design: randomization to arms and the twin crossover design.

Randomization (``randomization`` in the study file) allocates each virtual patient of
a parallel-group trial to one arm:

- ``simple``: independent draws, patient ``i`` gets arm ``j`` with probability
  ``ratio_j / sum(ratios)`` (one keyed uniform per patient, purpose ``allocation``).
- ``permuted_block`` (the default): consecutive blocks of ``block`` patients (default
  ``2 * sum(ratios)``, a multiple of ``sum(ratios)``) hold every arm exactly
  ``ratio_j * block / sum(ratios)`` times, in an order shuffled by keyed uniforms
  (purpose ``allocation``, one row of ``block`` uniforms per block). With the default
  block this is the allocation vtrial always used, bit for bit.
- ``stratified``: permuted blocks within each stratum. A stratum is a combination of
  levels of the ``strata`` covariates (a categorical covariate's categories, or the
  intervals ``[-inf, b1), [b1, b2), ..., [bk, inf)`` of a continuous one cut at its
  ``breaks``). The patients of a stratum, in patient order, take the stratum's own
  block sequence, keyed by the purpose ``allocation:<stratum label>``, e.g.
  ``allocation:sex=F,age=[65.0,inf)``; so the allocation of a stratum depends only on
  the seed, the replicate, the arms and the patients of that stratum.

With ``study.design: twin_crossover`` every virtual patient is simulated under every
arm: the population table holds one row per (patient, arm), the rows of a patient
sharing its ``patient_id``, covariates, random effects and individual parameters
(:func:`twin_rows`). Rows are expanded in the population table, not in the simulate
stage, so every shard still simulates a contiguous slice of self-contained rows and
the results stay bit-identical whatever the sharding. Randomization does not apply.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from vtrial.errors import Problem
from vtrial.infra.rng import keyed_uniforms
from vtrial.population.covariates import categories_of
from vtrial.population.resample import resampled_columns
from vtrial.population.spec import Stratum, design_of, resample_of

if TYPE_CHECKING:
    from vtrial.model.spec import Model
    from vtrial.population.spec import PopulationStudy

#: most strata of a stratified randomization (product of the levels of its covariates)
MAX_STRATA = 10_000


def is_twin(study: PopulationStudy) -> bool:
    """Whether the study simulates every patient under every arm."""
    return study.design.twin


def population_rows(study: PopulationStudy) -> int:
    """Rows of the population (and patients) table: patients × arms for a twin design."""
    return study.n_patients * (len(study.arm_names) if is_twin(study) else 1)


def _fmt(x: float) -> str:
    """Text of a break in a stratum label (shortest round-trip repr, ``inf``/``-inf``)."""
    return repr(float(x)) if math.isfinite(x) else ("inf" if x > 0 else "-inf")


def strata_codes(
    strata: Sequence[Stratum],
    covariates: Mapping[str, np.ndarray],
    categories: Mapping[str, Sequence[str]],
) -> tuple[np.ndarray, list[str]]:
    """Stratum of every patient.

    Parameters
    ----------
    strata : sequence of Stratum
        The stratification factors (:attr:`Randomization.strata`).
    covariates : mapping of str to ndarray
        Covariates of the patients of one replicate (sampled and derived), shape (n,).
    categories : mapping of str to sequence of str
        Categories of the categorical covariates, in the study's order.

    Returns
    -------
    codes : ndarray of int64, shape (n,)
        Index of each patient's stratum into ``labels``.
    labels : list of str
        Label of every stratum (all level combinations, first covariate slowest), e.g.
        ``"sex=F,age=[-inf,65.0)"``; intervals are closed on the left.
    """
    n = len(next(iter(covariates.values()))) if covariates else 0
    codes = np.zeros(n, dtype=np.int64)
    labels = [""]
    for s in strata:
        name = s.covariate
        values = np.asarray(covariates[name])
        if s.breaks is None:
            levels = [str(c) for c in categories[name]]
            text = values.astype(str)
            level = np.full(n, -1, dtype=np.int64)
            for k, c in enumerate(levels):
                level[text == c] = k
            names = [f"{name}={c}" for c in levels]
        else:
            edges = list(s.breaks)
            level = np.searchsorted(np.asarray(edges), values.astype(np.float64), side="right")
            bounds = [-math.inf, *edges, math.inf]
            names = [f"{name}=[{_fmt(lo)},{_fmt(hi)})" for lo, hi in itertools.pairwise(bounds)]
        if (level < 0).any():  # pragma: no cover - validation guards the categories
            raise ValueError(f"stratum covariate {name!r}: values outside its categories")
        codes = codes * len(names) + level
        labels = [f"{a},{b}" if a else b for a in labels for b in names]
    return codes, labels


def permuted_blocks(
    seed: int, purpose: str, replicate: int, n: int, ratios: Sequence[int], block: int
) -> np.ndarray:
    """Arm index of ``n`` patients allocated in permuted blocks of ``block``.

    Parameters
    ----------
    seed : int
        Study seed.
    purpose : str
        Purpose of the keyed uniforms (``allocation``, ``allocation:<stratum>``).
    replicate : int
        Replicate trial.
    n : int
        Patients to allocate (the last block may be incomplete).
    ratios : sequence of int
        Allocation ratio of every arm.
    block : int
        Block size, a multiple of ``sum(ratios)``.

    Returns
    -------
    ndarray of int16, shape (n,)
        Each complete block holds arm ``j`` exactly ``ratios[j] * block / sum(ratios)``
        times, in the order of a stable ``argsort`` of the block's ``block`` keyed
        uniforms; entry ``i`` does not depend on ``n``.

    Examples
    --------
    >>> a = permuted_blocks(1, "allocation", 0, 10, [2, 1], 6)
    >>> [int((a[:6] == j).sum()) for j in (0, 1)]
    [4, 2]
    >>> bool((permuted_blocks(1, "allocation", 0, 20, [2, 1], 6)[:10] == a).all())
    True
    """
    per = block // sum(ratios)
    base = np.repeat(np.arange(len(ratios)), [per * int(r) for r in ratios])
    nblocks = -(-n // block)
    u = keyed_uniforms(seed, purpose, replicate, nblocks, block)
    perm = np.argsort(u, axis=1, kind="stable")
    return np.asarray(base[perm].ravel()[:n], dtype=np.int16)


def allocate(
    study: PopulationStudy, replicate: int, covariates: Mapping[str, np.ndarray]
) -> np.ndarray:
    """Allocate the patients of one replicate to arms (``randomization``).

    Parameters
    ----------
    study : PopulationStudy
    replicate : int
        Replicate trial.
    covariates : mapping of str to ndarray
        The replicate's covariates (sampled and derived, shape (size,) each); only
        the ``strata`` covariates of a stratified randomization are used.

    Returns
    -------
    ndarray of int16, shape (size,)
        Arm index of every patient, in patient order (see the module docstring for
        the methods); all zeros for a twin crossover study, whose patients get every
        arm (:func:`twin_rows`).
    """
    n = study.size
    if is_twin(study):
        return np.zeros(n, dtype=np.int16)
    ratios = [a.ratio for a in study.arms]
    spec = study.design.randomization
    if spec.method == "simple":
        u = keyed_uniforms(study.seed, "allocation", replicate, n)[:, 0]
        cum = np.cumsum(ratios) / sum(ratios)
        idx = np.minimum(np.searchsorted(cum, u, side="right"), len(ratios) - 1)
        return np.asarray(idx, dtype=np.int16)
    assert spec.block is not None  # every method but simple has one
    block = spec.block
    if spec.method == "permuted_block":
        return permuted_blocks(study.seed, "allocation", replicate, n, ratios, block)
    codes, labels = strata_codes(spec.strata, covariates, study.population.categories)
    out = np.empty(n, dtype=np.int16)
    for code in np.unique(codes):
        rows = np.flatnonzero(codes == code)
        purpose = f"allocation:{labels[int(code)]}"
        out[rows] = permuted_blocks(study.seed, purpose, replicate, rows.size, ratios, block)
    return out


def twin_rows(study: PopulationStudy, frame: pd.DataFrame) -> pd.DataFrame:
    """Population rows of the study's design.

    Parameters
    ----------
    study : PopulationStudy
    frame : DataFrame
        Population rows of one replicate, one per patient.

    Returns
    -------
    DataFrame
        ``frame`` itself for a parallel study; for a twin crossover study each row
        repeated once per arm (patient-major, arms in study order) with ``arm`` and
        ``arm_index`` set, every other column identical.
    """
    if not is_twin(study):
        return frame
    n_arms = len(study.arm_names)
    out = frame.iloc[np.repeat(np.arange(len(frame)), n_arms)].reset_index(drop=True)
    arm_idx = np.tile(np.arange(n_arms, dtype=np.int16), len(frame))
    out["arm_index"] = arm_idx
    out["arm"] = np.asarray(study.arm_names, dtype=object)[arm_idx]
    return out


def design_problems(
    d: Mapping[str, Any], model: Model | None, src: str, base_dir: str | Path
) -> list[Problem]:
    """Problems of ``study.design``, ``randomization`` and the endpoints' ``better`` and
    ``margin`` (study data with defaults filled; ``base_dir`` is the study file's
    folder, against which a resampled covariate table is found)."""
    del model  # the design does not depend on the model
    out: list[Problem] = []

    def bad(where: str, msg: str) -> None:
        out.append(Problem(src, where, msg))

    arms = d["arms"]
    twin = design_of(d) == "twin_crossover"
    if twin:
        control = d["study"].get("control_arm")
        if len(arms) < 2:
            bad("study.design", f"twin_crossover needs at least 2 arms, got {len(arms)}")
        if control is None:
            bad(
                "study.control_arm",
                "twin_crossover compares every arm with the control arm: name one of "
                f"{[a['name'] for a in arms]}, got null",
            )
        for i, arm in enumerate(arms):
            if int(arm.get("ratio", 1)) != 1:
                bad(
                    f"arms[{i}].ratio",
                    "does not apply to study.design twin_crossover (every patient is "
                    f"simulated under every arm), got {arm['ratio']}",
                )
    spec = d.get("randomization")
    if spec is not None:
        out += _randomization_problems(d, spec, twin, src, base_dir)
    for name, ep in d.get("endpoints", {}).items():
        if ep.get("type") == "best_response":
            for key in ("better", "margin"):
                if key in ep:
                    bad(
                        f"endpoints.{name}.{key}",
                        "does not apply to a best_response endpoint (categories); "
                        f"set it on a responder to it, got {ep[key]!r}",
                    )
    return out


def _randomization_problems(
    d: Mapping[str, Any], spec: Mapping[str, Any], twin: bool, src: str, base_dir: str | Path
) -> list[Problem]:
    out: list[Problem] = []

    def bad(where: str, msg: str) -> None:
        out.append(Problem(src, where, msg))

    method = spec["method"]
    if twin:
        bad(
            "randomization",
            "does not apply to study.design twin_crossover (every patient is simulated "
            f"under every arm), got method {method}",
        )
    ratios = [int(a.get("ratio", 1)) for a in d["arms"]]
    total = sum(ratios)
    if "block" in spec:
        block = spec["block"]
        if method == "simple":
            bad(
                "randomization.block",
                f"only applies to permuted_block and stratified, got {block}",
            )
        elif block % total:
            bad(
                "randomization.block",
                f"must be a multiple of the sum of the arm ratios ({total}, ratios {ratios}), "
                f"got {block}",
            )
    strata = spec.get("strata")
    if method != "stratified":
        if strata is not None:
            bad("randomization.strata", f"only applies to method stratified, got {strata}")
        return out
    if not strata:
        bad("randomization", "method stratified needs 'strata' (covariates), got none")
        return out
    covs: Mapping[str, Any] = d["population"]["covariates"]
    resampled = resampled_columns(
        resample_of(d["population"]), src, base_dir
    ).columns  # population.resample
    names = [*covs, *d["population"]["derived"], *resampled]
    categories = categories_of(d["population"])
    seen: dict[str, int] = {}
    n_strata = 1
    for i, s in enumerate(strata):
        where = f"randomization.strata[{i}]"
        name = s["covariate"] if isinstance(s, Mapping) else s
        if name in seen:
            bad(where, f"repeats strata[{seen[name]}], got {name!r}")
            continue
        seen[name] = i
        if name not in names:
            bad(where, f"must name a covariate {sorted(names)}, got {name!r}")
            continue
        if name in categories:
            if isinstance(s, Mapping):
                bad(f"{where}.breaks", f"{name} is categorical: give its name only, got {s}")
                continue
            n_strata *= len(categories[name])
        elif not isinstance(s, Mapping):
            bad(
                where,
                f"{name} is continuous: cut it at breaks, e.g. "
                f"{{covariate: {name}, breaks: [...]}}, got {name!r}",
            )
        else:
            breaks = list(s["breaks"])
            if any(not a < b for a, b in itertools.pairwise(breaks)):
                bad(f"{where}.breaks", f"must increase strictly, got {breaks}")
            n_strata *= len(breaks) + 1
    if n_strata > MAX_STRATA:
        bad("randomization.strata", f"give {n_strata} strata (limit {MAX_STRATA})")
    return out
