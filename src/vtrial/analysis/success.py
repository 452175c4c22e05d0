"""Trial success per replicate and probability of success across replicates.

A study's ``success`` section is one criterion or a list of them::

    success:
      - {endpoint: orr, compare_to: control, test: fisher_exact, alpha: 0.05, direction: greater}

In every replicate trial, each arm other than the reference (``compare_to``: the
study's ``control_arm`` for ``control``, else an arm name) is compared with the
reference on the criterion's endpoint by :func:`vtrial.analysis.efficacy.efficacy_summary` (the
same estimates, intervals and tests as the efficacy table, with the criterion's
test). The replicate **succeeds** for that arm when the two-sided p-value is below
``alpha`` *and* the effect goes in the declared ``direction``:

* ``greater``: larger values in the arm: mean difference > 0 (continuous),
  difference of proportions > 0 (binary), or longer times to event: hazard ratio
  arm / reference < 1 (time to event);
* ``less``: the opposite (difference < 0, hazard ratio > 1).

This is a two-sided test at ``alpha`` with a directional decision, i.e. a one-sided
test at ``alpha / 2``. With several criteria, ``all`` is the replicate's success on
every criterion (for the arms compared in every one of them).

The **probability of success** of an arm is the share of replicates that succeed, with
a Clopper-Pearson (exact binomial) confidence interval
(``statsmodels.stats.proportion.proportion_confint(method="beta")``): a Monte Carlo
estimate whose interval narrows with ``study.replicates``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "POS_CONFIDENCE",
    "SUCCESS_COLUMNS",
    "TRIAL_COLUMNS",
    "SuccessCriterion",
    "criteria",
    "describe_lines",
    "fill_success_defaults",
    "spec_problems",
    "success_table",
    "success_tables",
    "table_names",
    "trial_table",
]

#: confidence level of the probability-of-success intervals
POS_CONFIDENCE = 0.95
#: name of the combined criterion (every criterion met)
ALL = "all"
#: columns of ``summary/trial.parquet`` (one row per replicate, criterion, compared arm)
TRIAL_COLUMNS = (
    "replicate",
    "criterion",
    "endpoint",
    "kind",
    "arm",
    "reference",
    "test",
    "direction",
    "alpha",
    "n",
    "n_reference",
    "estimate",
    "reference_estimate",
    "diff",
    "diff_ci_low",
    "diff_ci_high",
    "p_value",
    "success",
)
#: columns of ``summary/success.parquet`` (one row per criterion and compared arm)
SUCCESS_COLUMNS = (
    "criterion",
    "arm",
    "reference",
    "n_replicates",
    "n_success",
    "probability",
    "ci_low",
    "ci_high",
    "method",
)


def _as_list(spec: Any) -> list[Any]:
    return [spec] if isinstance(spec, Mapping) else list(spec or [])


def fill_success_defaults(d: dict[str, Any]) -> None:
    """Defaults of the ``success`` criteria (in place): a list of mappings with
    ``name`` (the endpoint), ``compare_to: control``, ``alpha: 0.05`` and ``test``
    (the endpoint's ``test``, else the default of its kind)."""
    if "success" not in d:
        return
    from vtrial.trial.endpoints import DEFAULT_TEST
    from vtrial.trial.spec import endpoint_kind

    items = _as_list(d["success"])
    d["success"] = items
    eps = d.get("endpoints") or {}
    for c in items:
        if not isinstance(c, dict):
            continue
        c.setdefault("name", c.get("endpoint"))
        c.setdefault("compare_to", "control")
        c.setdefault("alpha", 0.05)
        ep = eps.get(c.get("endpoint"))
        if "test" not in c and isinstance(ep, dict) and "type" in ep:
            c["test"] = ep.get("test", DEFAULT_TEST[endpoint_kind(ep)])


def reference_arm(criterion: Mapping[str, Any], data: Mapping[str, Any]) -> str | None:
    """The arm a criterion compares with (``control`` -> ``study.control_arm``)."""
    ref = str(criterion["compare_to"])
    arms = [a["name"] for a in data["arms"]]
    if ref in arms:
        return ref
    if ref == "control":
        ctrl = data["study"].get("control_arm")
        return str(ctrl) if ctrl is not None else None
    return None


def spec_problems(d: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every problem of the ``success`` section of a study with defaults filled."""
    if "success" not in d:
        return []
    from vtrial.trial.endpoints import TESTS
    from vtrial.trial.spec import endpoint_kind

    out: list[tuple[str, str]] = []
    eps = d["endpoints"]
    arms = [a["name"] for a in d["arms"]]
    items = _as_list(d["success"])
    if len(arms) < 2:
        out.append(("success", f"needs at least two arms to compare, got {arms}"))
    seen: dict[str, int] = {}
    for i, c in enumerate(items):
        where = f"success[{i}]"
        name = str(c["name"])
        if name in seen:
            out.append(
                (
                    f"{where}.name",
                    f"repeats success[{seen[name]}]: give each criterion its own name, got "
                    f"{name!r}",
                )
            )
        seen.setdefault(name, i)
        if name == ALL and len(items) > 1:
            out.append((f"{where}.name", f"{ALL!r} names the combined criterion, got {name!r}"))
        ep = eps.get(c["endpoint"])
        if ep is None:
            out.append(
                (f"{where}.endpoint", f"not an endpoint {sorted(eps)}, got {c['endpoint']!r}")
            )
        else:
            kind = endpoint_kind(ep)
            if kind == "categorical":
                out.append(
                    (
                        f"{where}.endpoint",
                        f"{c['endpoint']!r} is a best_response (categories): compare a "
                        "responder of it (e.g. in: [CR, PR])",
                    )
                )
            elif c["test"] not in TESTS[kind]:
                out.append(
                    (
                        f"{where}.test",
                        f"a {kind} endpoint takes {list(TESTS[kind])}, got {c['test']!r}",
                    )
                )
        ref = c["compare_to"]
        if reference_arm(c, d) is None:
            rule = (
                "'control' needs study.control_arm"
                if ref == "control"
                else f"must be 'control' or an arm name {arms}"
            )
            out.append((f"{where}.compare_to", f"{rule}, got {ref!r}"))
    return out


@dataclass(frozen=True)
class SuccessCriterion:
    """One success criterion (typed ``success`` entry, defaults filled): the effect on
    ``endpoint`` of every arm against ``reference`` must be significant by ``test`` at
    level ``alpha`` and in ``direction`` (``greater`` or ``less``)."""

    name: str
    endpoint: str
    reference: str
    test: str
    alpha: float
    direction: str


def criteria(data: Mapping[str, Any]) -> tuple[SuccessCriterion, ...]:
    """The success criteria of a (valid) study, each with ``reference`` resolved."""
    out = []
    for c in _as_list(data.get("success")):
        out.append(
            SuccessCriterion(
                name=str(c["name"]),
                endpoint=str(c["endpoint"]),
                reference=str(reference_arm(c, data)),
                test=str(c["test"]),
                alpha=float(c["alpha"]),
                direction=str(c["direction"]),
            )
        )
    return tuple(out)


def trial_table(
    patients: pd.DataFrame,
    *,
    criteria: Sequence[SuccessCriterion],
    kinds: Mapping[str, str],
    arms: Sequence[str],
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Success of each replicate trial, per criterion and compared arm.

    Parameters
    ----------
    patients : pandas.DataFrame
        The patients table (see :func:`vtrial.analysis.efficacy.efficacy_summary`).
    criteria : sequence of SuccessCriterion
        The criteria (:func:`criteria`).
    kinds : mapping of str to str
        Endpoint -> kind (:meth:`vtrial.study.config.Study.endpoint_kinds`).
    arms : sequence of str
        Arms, in output order.
    confidence : float
        Level of the intervals of the estimates.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`TRIAL_COLUMNS`, one row per (replicate, criterion, arm other
        than the reference), criteria in the given order then ``all`` (with several
        criteria: success on every one, estimates NaN). ``estimate`` /
        ``reference_estimate``: the arms' estimates (mean, proportion or KM median,
        h); ``diff`` and its interval: the efficacy table's (difference, or hazard
        ratio for a time to event); ``success`` (bool): ``p_value < alpha`` and the
        effect in ``direction``.
    """
    from vtrial.analysis.efficacy import efficacy_summary

    parts = []
    for c in criteria:
        ep, ref = c.endpoint, c.reference
        kind = kinds[ep]
        eff = efficacy_summary(
            patients,
            endpoints={ep: kind},  # type: ignore[dict-item]
            arms=arms,
            control=ref,
            confidence=confidence,
            tests={ep: c.test},
        )
        ctrl = eff[eff["arm"] == ref].set_index("replicate")
        rows = eff[eff["arm"] != ref].reset_index(drop=True)
        rep = rows["replicate"].to_numpy()
        diff = rows["diff"].to_numpy(dtype=np.float64)
        p = rows["p_value"].to_numpy(dtype=np.float64)
        if kind == "time_to_event":  # hazard ratio: longer times <-> HR < 1
            greater = diff < 1.0
            less = diff > 1.0
        else:
            greater = diff > 0.0
            less = diff < 0.0
        with np.errstate(invalid="ignore"):
            right = greater if c.direction == "greater" else less
            success = (p < c.alpha) & right
        parts.append(
            pd.DataFrame(
                {
                    "replicate": rep.astype(np.int32),
                    "criterion": c.name,
                    "endpoint": ep,
                    "kind": kind,
                    "arm": rows["arm"].to_numpy(dtype=object),
                    "reference": ref,
                    "test": c.test,
                    "direction": c.direction,
                    "alpha": c.alpha,
                    "n": rows["n"].to_numpy(dtype=np.int64),
                    "n_reference": ctrl.loc[rep, "n"].to_numpy(dtype=np.int64),
                    "estimate": rows["estimate"].to_numpy(dtype=np.float64),
                    "reference_estimate": ctrl.loc[rep, "estimate"].to_numpy(dtype=np.float64),
                    "diff": diff,
                    "diff_ci_low": rows["diff_ci_low"].to_numpy(dtype=np.float64),
                    "diff_ci_high": rows["diff_ci_high"].to_numpy(dtype=np.float64),
                    "p_value": p,
                    "success": success.astype(bool),
                }
            )
        )
    if len(parts) > 1:
        parts.append(_all_rows(parts))
    if not parts:
        return _empty(TRIAL_COLUMNS)
    out = pd.concat(parts, ignore_index=True)
    for col in ("criterion", "endpoint", "kind", "arm", "reference", "test", "direction"):
        out[col] = pd.Series([str(v) for v in out[col]], dtype=object)
    return out[list(TRIAL_COLUMNS)]


def _all_rows(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Success on every criterion, per replicate and arm compared in all of them."""
    keyed = [p.set_index(["replicate", "arm"])["success"] for p in parts]
    both = pd.concat(keyed, axis=1, join="inner")
    first = parts[0].set_index(["replicate", "arm"]).loc[both.index]
    nan = np.full(len(both), np.nan)
    return pd.DataFrame(
        {
            "replicate": both.index.get_level_values(0).to_numpy(dtype=np.int32),
            "criterion": ALL,
            "endpoint": "",
            "kind": "",
            "arm": both.index.get_level_values(1).to_numpy(dtype=object),
            "reference": "",
            "test": "",
            "direction": "",
            "alpha": nan,
            "n": first["n"].to_numpy(dtype=np.int64),
            "n_reference": np.zeros(len(both), dtype=np.int64),
            "estimate": nan,
            "reference_estimate": nan,
            "diff": nan,
            "diff_ci_low": nan,
            "diff_ci_high": nan,
            "p_value": nan,
            "success": both.all(axis=1).to_numpy(dtype=bool),
        }
    )


def success_table(trial: pd.DataFrame, *, confidence: float = POS_CONFIDENCE) -> pd.DataFrame:
    """Probability of success per criterion and compared arm, across replicates.

    Parameters
    ----------
    trial : pandas.DataFrame
        :func:`trial_table`.
    confidence : float
        Level of the Clopper-Pearson interval.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`SUCCESS_COLUMNS`, rows in the order of ``trial`` (criterion,
        then arm): ``n_replicates`` and ``n_success`` (int64), ``probability`` =
        n_success / n_replicates, ``ci_low``/``ci_high`` (Clopper-Pearson) and
        ``method`` (``"clopper_pearson"``).
    """
    from statsmodels.stats.proportion import proportion_confint

    if len(trial) == 0:
        return _empty(SUCCESS_COLUMNS)
    keys = list(dict.fromkeys(zip(trial["criterion"], trial["arm"], strict=True)))
    grouped = trial.groupby(["criterion", "arm"], sort=False)
    n = grouped["success"].size()
    k = grouped["success"].sum()
    ref = grouped["reference"].first()
    n_rep = np.array([int(n[key]) for key in keys], dtype=np.int64)
    n_ok = np.array([int(k[key]) for key in keys], dtype=np.int64)
    low, high = proportion_confint(n_ok, n_rep, alpha=1.0 - confidence, method="beta")
    return pd.DataFrame(
        {
            "criterion": pd.Series([str(c) for c, _ in keys], dtype=object),
            "arm": pd.Series([str(a) for _, a in keys], dtype=object),
            "reference": pd.Series([str(ref[key]) for key in keys], dtype=object),
            "n_replicates": n_rep,
            "n_success": n_ok,
            "probability": n_ok / n_rep,
            "ci_low": np.asarray(low, dtype=np.float64),
            "ci_high": np.asarray(high, dtype=np.float64),
            "method": pd.Series(["clopper_pearson"] * len(keys), dtype=object),
        }
    )


def _empty(columns: Sequence[str]) -> pd.DataFrame:
    dtypes: dict[str, Any] = {
        "replicate": np.int32,
        "n": np.int64,
        "n_reference": np.int64,
        "n_replicates": np.int64,
        "n_success": np.int64,
        "success": bool,
    }
    text = {
        "criterion",
        "endpoint",
        "kind",
        "arm",
        "reference",
        "test",
        "direction",
        "method",
    }
    return pd.DataFrame(
        {
            c: pd.Series([], dtype=object if c in text else dtypes.get(c, np.float64))
            for c in columns
        }
    )


def table_names(criteria: Sequence[SuccessCriterion]) -> list[str]:
    """Summary tables of the success criteria: ``trial`` and ``success`` if any."""
    return ["trial", "success"] if criteria else []


def success_tables(
    criteria: Sequence[SuccessCriterion],
    patients: pd.DataFrame,
    kinds: Mapping[str, str],
    arms: Sequence[str],
) -> dict[str, pd.DataFrame]:
    """``{"trial": trial_table, "success": success_table}`` of a study (empty without
    criteria)."""
    if not criteria:
        return {}
    trial = trial_table(patients, criteria=criteria, kinds=kinds, arms=arms)
    return {"trial": trial, "success": success_table(trial)}


def describe_lines(summary_dir: Path) -> list[str]:
    """Lines of ``vtrial describe`` for ``success.parquet`` in ``summary_dir`` (if any)."""
    path = summary_dir / "success.parquet"
    if not path.exists():
        return []
    pos = pd.read_parquet(path)
    if pos.empty:
        return []
    lines = ["", f"probability of success ({int(pos['n_replicates'].max())} replicate trials):"]
    for _, r in pos.iterrows():
        vs = f" vs {r['reference']}" if r["reference"] else " (every criterion)"
        lines.append(
            f"  {r['criterion']}: {r['arm']}{vs}: {100 * r['probability']:.1f} % "
            f"(95 % CI {100 * r['ci_low']:.1f} to {100 * r['ci_high']:.1f}), "
            f"{r['n_success']} of {r['n_replicates']}"
        )
    return lines
