"""Result tables: per-seed metrics -> mean/std, written as CSV and Markdown."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from msa_lightning.errors import MSAError

#: column order of tables (whatever else a run logged comes after, alphabetically)
PREFERRED = (
    "acc2_has0",
    "f1_has0",
    "acc2_non0",
    "f1_non0",
    "acc2",
    "f1",
    "acc2_weak",
    "acc3",
    "acc5",
    "acc7",
    "mae",
    "corr",
    "loss",
)


def _order(names) -> list[str]:
    names = set(names)
    return [n for n in PREFERRED if n in names] + sorted(names - set(PREFERRED))


def strip_prefix(metrics: dict, prefix: str = "test/") -> dict[str, float]:
    return {k[len(prefix) :] if k.startswith(prefix) else k: float(v) for k, v in metrics.items()}


def summarise(rows: list[dict[str, float]]) -> dict[str, tuple[float, float]]:
    """``{metric: (mean, sample std)}`` over runs (std 0 for a single run; NaNs skipped)."""
    out = {}
    for name in _order({k for r in rows for k in r}):
        vals = [r[name] for r in rows if name in r and not math.isnan(r[name])]
        if not vals:
            out[name] = (math.nan, math.nan)
            continue
        mean = sum(vals) / len(vals)
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
        out[name] = (mean, std)
    return out


def markdown_table(rows: dict[str, dict[str, float]] | dict[str, dict[str, tuple[float, float]]]) -> str:
    """Rows keyed by run name; cells are floats or (mean, std) pairs."""
    cols = _order({k for r in rows.values() for k in r})

    def cell(v) -> str:
        if isinstance(v, tuple):
            return f"{v[0]:.4f} ± {v[1]:.4f}"
        return "" if v is None else f"{v:.4f}"

    lines = ["| run | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(cell(r.get(c)) for c in cols) + " |" for name, r in rows.items()]
    return "\n".join(lines)


def write_seed_tables(per_seed: dict[int, dict[str, float]], out_dir: str | Path, name: str = "run") -> dict:
    """Write ``per_seed.csv``, ``summary.csv`` and ``summary.md`` (each atomically: ``msa seeds`` rewrites
    them after every seed, and a reader or a crash never sees half a table); returns the summary."""
    from msa_lightning.store import atomic_write

    out_dir = Path(out_dir)
    summary = summarise(list(per_seed.values()))
    cols = list(summary)

    def per_seed_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["seed", *cols])
            for seed, r in per_seed.items():
                w.writerow([seed, *(r.get(c, "") for c in cols)])

    def summary_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["run", "n_seeds", *(f"{c}_{s}" for c in cols for s in ("mean", "std"))])
            w.writerow([name, len(per_seed), *(x for c in cols for x in summary[c])])

    md = markdown_table({f"{name} (seed {s})": r for s, r in per_seed.items()})
    md += "\n\n" + markdown_table({f"{name} (mean ± std, n={len(per_seed)})": summary})
    atomic_write(out_dir / "per_seed.csv", per_seed_csv)
    atomic_write(out_dir / "summary.csv", summary_csv)
    atomic_write(out_dir / "summary.md", lambda tmp: tmp.write_text(md + "\n", encoding="utf-8"))
    return summary


def summary_rows(path: Path) -> list[tuple[str, int, dict[str, tuple[float, float]]]]:
    """``(run name, n_seeds, {metric: (mean, std)})`` of each row of a ``summary.csv`` as
    :func:`write_seed_tables` writes it; anything else is one :class:`MSAError` naming the file and line."""
    from msa_lightning.textfiles import open_text

    expected = "a summary.csv written by `msa seeds`: header run, n_seeds, <metric>_mean, <metric>_std, ..."
    rows = list(csv.reader(open_text(path, "summary file")))
    if not rows or not any(cell.strip() for cell in rows[0]):
        raise MSAError(f"{path}: empty; expected {expected}")
    header = [h.strip() for h in rows[0]]
    if header[:2] != ["run", "n_seeds"]:
        raise MSAError(
            f"{path}, line 1: columns {header[:6]}{' ...' if len(header) > 6 else ''}; expected {expected} "
            "(another tool's CSV?)"
        )
    metrics = [h[: -len("_mean")] for h in header[2:] if h.endswith("_mean")]
    odd = [
        h
        for h in header[2:]
        if not (h.endswith("_mean") and h[:-5] in metrics or h.endswith("_std") and h[:-4] in metrics)
    ]
    odd += [f"{m}_std" for m in metrics if f"{m}_std" not in header]
    if odd:
        raise MSAError(f"{path}, line 1: unknown or unpaired columns {odd[:6]}; expected {expected}")
    out = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise MSAError(f"{path}, line {line}: {len(row)} values under {len(header)} columns")
        values = dict(zip(header, row))
        try:
            n_seeds = int(values["n_seeds"])
            numbers = {k: float(v) if v.strip() else math.nan for k, v in values.items() if k not in ("run", "n_seeds")}
        except ValueError as error:
            raise MSAError(f"{path}, line {line}: not a number ({error})") from None
        out.append((values["run"], n_seeds, {m: (numbers[f"{m}_mean"], numbers[f"{m}_std"]) for m in metrics}))
    if not out:
        raise MSAError(f"{path}: a header and no results (no seed has finished: rerun `msa seeds` or wait for it)")
    return out


def read_summary_csv(path: str | Path) -> tuple[str, dict[str, tuple[float, float]]]:
    """The run name and ``{metric: (mean, std)}`` of a ``summary.csv`` (its first row)."""
    name, _, summary = summary_rows(Path(path))[0]
    return name, summary


def report(paths: list[str | Path]) -> str:
    """Markdown comparison of several ``summary.csv`` files (or folders holding one)."""
    rows = {}
    for p in paths:
        p = Path(p)
        file = p / "summary.csv" if p.is_dir() else p
        if not file.is_file():
            raise MSAError(f"{p}: no summary.csv there (give a folder written by `msa seeds`, or its summary.csv)")
        for name, n_seeds, summary in summary_rows(file):
            rows[f"{name} ({p.parent.name if p.is_file() else p.name}, n={n_seeds})"] = summary
    return markdown_table(rows)


# ---------------------------------------------------------------------------------------------- paired t-test
def read_per_seed_csv(folder: str | Path) -> dict[int, dict[str, float]]:
    """``{seed: {metric: value}}`` from a ``per_seed.csv`` (as :func:`write_seed_tables` writes it), or the
    folder holding one; empty cells are left out."""
    path = Path(folder)
    file = path / "per_seed.csv" if path.is_dir() else path
    if not path.exists():
        raise MSAError(f"{path}: no such file or folder (give a folder written by `msa seeds`, or its per_seed.csv)")
    if not file.is_file():
        raise MSAError(f"{path}: no per_seed.csv there (give a folder written by `msa seeds`, or its per_seed.csv)")
    from msa_lightning.textfiles import open_text

    rows = list(csv.DictReader(open_text(file, "per-seed table")))
    if not rows or "seed" not in rows[0]:
        raise MSAError(
            f"{file}: expected a header starting with 'seed' and one row per seed, found "
            + (f"columns {list(rows[0])}" if rows else "no rows")
        )
    out = {}
    for line, row in enumerate(rows, start=2):
        try:
            seed = int(row.pop("seed"))
            out[seed] = {k: float(v) for k, v in row.items() if k and v not in ("", None)}
        except ValueError as error:
            raise MSAError(f"{file}, line {line}: not a number ({error})") from None
    return out


def paired_ttest(a: str | Path, b: str | Path) -> dict:
    """Paired t-test (``scipy.stats.ttest_rel``, two-sided) of every metric both runs logged, over the seeds
    both ran, paired by seed number. Returns ``{"seeds": [...], "metrics": {name: {mean_a, mean_b,
    mean_diff, t, p}}}`` with ``mean_diff`` = mean of (a - b)."""
    from scipy.stats import ttest_rel

    runs_a, runs_b = read_per_seed_csv(a), read_per_seed_csv(b)
    seeds = sorted(set(runs_a) & set(runs_b))
    if len(seeds) < 2:
        raise MSAError(
            f"paired t-test: {a} (seeds {', '.join(map(str, sorted(runs_a))) or 'none'}) and {b} (seeds "
            f"{', '.join(map(str, sorted(runs_b))) or 'none'}) share {len(seeds)} seed(s); "
            "it needs at least 2 seeds run in both"
        )
    metrics = {}
    shared = set.intersection(*(set(runs_a[s]) & set(runs_b[s]) for s in seeds))
    for name in _order(shared):
        x = [runs_a[s][name] for s in seeds]
        y = [runs_b[s][name] for s in seeds]
        if any(math.isnan(v) for v in x + y):
            continue  # an undefined metric (e.g. corr of a constant prediction) has nothing to compare
        result = ttest_rel(x, y)
        metrics[name] = {
            "mean_a": sum(x) / len(x),
            "mean_b": sum(y) / len(y),
            "mean_diff": sum(u - v for u, v in zip(x, y)) / len(x),
            "t": float(result.statistic),
            "p": float(result.pvalue),
        }
    return {"seeds": seeds, "metrics": metrics}


def ttest_table(a: str | Path, b: str | Path, alpha: float = 0.05) -> str:
    """Markdown of :func:`paired_ttest`: per metric the two means, the mean difference (A - B), t and p."""
    result = paired_ttest(a, b)
    lines = [
        f"Paired t-test over {len(result['seeds'])} seeds ({', '.join(map(str, result['seeds']))}), "
        f"A = {a}, B = {b}; two-sided, df = {len(result['seeds']) - 1}",
        "",
        f"| metric | mean A | mean B | mean A - B | t | p | p < {alpha:g} |",
        "|---" * 7 + "|",
    ]
    for name, m in result["metrics"].items():
        lines.append(
            f"| {name} | {m['mean_a']:.4f} | {m['mean_b']:.4f} | {m['mean_diff']:+.4f} | {m['t']:.3f} | "
            f"{m['p']:.4g} | {'yes' if m['p'] < alpha else 'no'} |"
        )
    return "\n".join(lines)


def _metrics_files(folder: Path) -> list[tuple[Path, dict]]:
    """``(metrics.csv, its config.yaml)`` of every logger folder below a run folder, newest first."""
    import yaml

    found = []
    for file in folder.rglob("metrics.csv"):
        config = file.with_name("config.yaml")
        try:
            cfg = yaml.safe_load(config.read_text()) if config.is_file() else {}
        except yaml.YAMLError:
            cfg = {}
        found.append((file, cfg or {}))
    return sorted(found, key=lambda fc: fc[0].stat().st_mtime_ns, reverse=True)


def _rows(file: Path, prefix: str) -> list[dict[str, str]]:
    with open(file, newline="") as f:
        return [r for r in csv.DictReader(f) if any(k.startswith(prefix) and v for k, v in r.items())]


def _strip(row: dict[str, str], prefix: str) -> dict[str, float]:
    return {k[len(prefix) :]: float(v) for k, v in row.items() if k.startswith(prefix) and v not in ("", None)}


def _checkpoint_epoch(path: str) -> int:
    import torch

    return int(torch.load(path, map_location="cpu", weights_only=False, mmap=True)["epoch"])


def stage_metrics(folder: Path, record: dict, split: str) -> dict[str, float] | None:
    """The metrics of a pipeline stage's best checkpoint on ``split``: ``test`` from an ``msa test`` of
    that checkpoint logged in the stage folder (newer than the checkpoint); ``valid`` from the fit's
    validation at the checkpoint's epoch. None when the stage folder has no such record."""
    best = Path(record.get("best_ckpt", ""))
    if not best.is_file():
        return None
    files = _metrics_files(folder)
    if split == "test":
        for file, cfg in files:
            tested = cfg.get("ckpt_path")
            if (
                tested
                and Path(tested).resolve() == best.resolve()
                and file.stat().st_mtime_ns >= best.stat().st_mtime_ns
            ):
                rows = _rows(file, "test/")
                if rows:
                    return _strip(rows[-1], "test/")
        return None
    epoch = _checkpoint_epoch(str(best))
    for file, _config in files:
        rows = [r for r in _rows(file, "val/") if r.get("epoch") not in (None, "") and int(r["epoch"]) == epoch]
        if rows and not _rows(file, "test/"):
            return _strip(rows[-1], "val/")
    return None
