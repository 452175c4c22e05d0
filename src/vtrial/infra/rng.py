"""Keyed random streams.

Every random draw in vtrial is keyed by ``(study seed, purpose, replicate)`` and the
patient's position in that replicate: the stream of a (seed, purpose, replicate) is a
Philox generator whose key comes from :class:`numpy.random.SeedSequence`, and patient
``i`` receives the ``i``-th block of ``k`` uniforms. So a patient's draws never depend on
shards, workers, threads, chunk sizes, other replicates, or on the study's arms.
Uniforms are turned into other distributions by inverse CDFs, which keeps the
position of every draw fixed.

Purposes are named by strings hashed with SHA-256 (never Python's ``hash()``).
"""

from __future__ import annotations

import hashlib
from typing import cast

import numpy as np
from numpy.typing import ArrayLike


def purpose_code(purpose: str) -> int:
    """Stable 64-bit code of a purpose string."""
    return int.from_bytes(hashlib.sha256(purpose.encode()).digest()[:8], "little")


def stream(seed: int, purpose: str, replicate: int) -> np.random.Generator:
    """The generator of one (seed, purpose, replicate)."""
    ss = np.random.SeedSequence([int(seed), purpose_code(purpose), int(replicate)])
    key = ss.generate_state(2, dtype=np.uint64)
    return np.random.Generator(np.random.Philox(key=key))


def keyed_uniforms(seed: int, purpose: str, replicate: int, n: int, k: int = 1) -> np.ndarray:
    """Uniforms in (0, 1) for patients ``0..n-1`` of a replicate, shape (n, k).

    Row ``i`` is the same whatever ``n`` is (the stream is consumed in patient order,
    ``k`` doubles per patient), so adding patients does not change earlier ones.

    Examples
    --------
    >>> a = keyed_uniforms(1, "eta", 0, 3, 2)
    >>> b = keyed_uniforms(1, "eta", 0, 5, 2)
    >>> bool((a == b[:3]).all())
    True
    """
    if n < 0 or k < 0:
        raise ValueError(f"n and k must be >= 0, got n={n}, k={k}")
    u = stream(seed, purpose, replicate).random((n, k))
    # random() is in [0, 1); map an exact 0 to the smallest positive double so
    # inverse CDFs stay finite.
    return np.where(u == 0.0, np.finfo(np.float64).tiny, u)


def keyed_uniform_rows(
    seed: int, purpose: str, replicate: int, start: int, stop: int, k: int = 1
) -> np.ndarray:
    """Rows ``start..stop-1`` of :func:`keyed_uniforms`, shape (stop - start, k).

    Equal to ``keyed_uniforms(seed, purpose, replicate, stop, k)[start:stop]`` but
    skips the rows before ``start`` by advancing the Philox counter (each counter
    step gives four 64-bit words, one per double), so a chunk of patients far into a
    large replicate costs only its own draws.

    Examples
    --------
    >>> a = keyed_uniforms(1, "ae:x", 0, 10, 3)
    >>> b = keyed_uniform_rows(1, "ae:x", 0, 5, 10, 3)
    >>> bool((a[5:] == b).all())
    True
    """
    if not 0 <= start <= stop or k < 0:
        raise ValueError(f"need 0 <= start <= stop and k >= 0, got {start}, {stop}, {k}")
    gen = stream(seed, purpose, replicate)
    skip, offset = divmod(start * k, 4)
    cast(np.random.Philox, gen.bit_generator).advance(skip)
    u = gen.random(offset + (stop - start) * k)[offset:].reshape(stop - start, k)
    return np.where(u == 0.0, np.finfo(np.float64).tiny, u)


def patient_uniforms(
    seed: int, purpose: str, replicate: ArrayLike, patient_id: ArrayLike, k: int | None = None
) -> np.ndarray:
    """Keyed uniforms of given patients, possibly from several replicates.

    Row ``i`` is row ``patient_id[i] - 1`` of ``keyed_uniforms(seed, purpose,
    replicate[i], ...)``: the same whatever other patients are asked for with it
    (chunks, shards), computed from the rows the patients need only.

    Parameters
    ----------
    seed : int
    purpose : str
    replicate, patient_id : array_like of int, shape (n,)
        The patients (``patient_id`` 1-based within its replicate).
    k : int, optional
        Uniforms per patient; ``None`` gives shape (n,), otherwise (n, k).

    Examples
    --------
    >>> u = patient_uniforms(1, "x", [0, 0, 1], [3, 1, 2])
    >>> bool(u[0] == keyed_uniforms(1, "x", 0, 3)[2, 0])
    True
    """
    rep = np.asarray(replicate, dtype=np.int64)
    pid = np.asarray(patient_id, dtype=np.int64)
    if rep.shape != pid.shape or rep.ndim != 1:
        raise ValueError(f"replicate and patient_id must be 1-D of one shape, got {rep.shape}")
    if pid.size and pid.min() < 1:
        raise ValueError(f"patient_id must be >= 1, got {int(pid.min())}")
    width = 1 if k is None else int(k)
    out = np.empty((pid.size, width), dtype=np.float64)
    for r in np.unique(rep):
        sel = rep == r
        ids = pid[sel]
        lo, hi = int(ids.min()) - 1, int(ids.max())
        out[sel] = keyed_uniform_rows(seed, purpose, int(r), lo, hi, width)[ids - 1 - lo]
    return out[:, 0] if k is None else out
