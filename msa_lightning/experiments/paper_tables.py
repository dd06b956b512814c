"""``msa report --paper NAME [RESULT DIRS...]``: a paper's main table, its published numbers beside ours.

Each paper keeps its published numbers in ``msa_lightning/papers/<name>/published.yaml``: the citation, and per
table its column groups (``datasets``, side by side unless ``layout: rows`` stacks them as the paper does), its
columns (the paper's metric name, the suite's metric, the ``scale`` and ``unit`` the paper prints it in) and
its rows. A row holds the numbers as printed per dataset (one string, ``-`` where the paper has none), the
table row it comes from, a status (``config``: a shipped config reproduces it; ``needs data``: a shipped
config runs it on data we cannot ship; ``not built``: the model is not in the suite) with the reason, and
``runs``: per dataset, the config files (or ``PIPELINE.yaml:STAGE``) whose result folders fill it.

A result folder is one that ``msa seeds`` or ``msa pipeline --seeds`` wrote: its ``seeds.json`` names the
configs it ran (matched by their trailing path, e.g. ``configs/skesl/mosi_bert.yaml``) and ``summary.csv``
holds mean and std over its seeds. Our cells show ``mean ± std`` in the paper's unit; a row we did not run
stays empty.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from msa_lightning.errors import MSAError

PAPERS = ("skesl", "fmlmsn", "twostep", "swrm", "hybrid_shift")
STATUSES = ("config", "needs data", "not built")


@dataclass
class Column:
    name: str
    metric: str
    scale: float = 1.0
    unit: str = ""
    digits: int = 3

    @property
    def header(self) -> str:
        return f"{self.name} ({self.unit})" if self.unit else self.name


@dataclass
class Row:
    name: str
    source: str
    published: dict[str, list[str | None]]
    status: str
    why: str = ""
    section: str = ""
    runs: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Table:
    id: str
    title: str
    datasets: list[str]
    columns: list[Column]
    rows: list[Row]
    layout: str = "columns"
    note: str = ""


@dataclass
class Result:
    """One result folder: where, its seeds, ``{metric: (mean, std)}`` and the overrides it ran with."""

    folder: Path
    n_seeds: int
    summary: dict[str, tuple[float, float]]
    overrides: list[str]


def published_file(paper: str) -> Path:
    return Path(__file__).resolve().parents[1] / "papers" / paper / "published.yaml"


def load_published(paper: str) -> tuple[str, list[Table]]:
    """The citation and tables of ``papers/<paper>/published.yaml``; a malformed file is one MSAError naming the
    table and row."""
    if paper not in PAPERS:
        raise MSAError(f"--paper {paper!r}: expected one of {', '.join(PAPERS)}")
    path = published_file(paper)
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    tables = []
    for t in spec["tables"]:
        where = f"{path}: table {t['id']}"
        columns = [Column(**c) for c in t["columns"]]
        rows = []
        for r in t["rows"]:
            published = {}
            for dataset, text in r["published"].items():
                values = [None if v == "-" else v for v in str(text).split()]
                if dataset not in t["datasets"] or len(values) != len(columns):
                    raise MSAError(f"{where}, row {r['name']}: {dataset} needs {len(columns)} values, found {text!r}")
                for v in values:
                    if v is not None:
                        float(v)  # a number as printed
                published[dataset] = values
            if r["status"] not in STATUSES or (r["status"] != "config" and not r.get("why")):
                raise MSAError(f"{where}, row {r['name']}: status must be one of {STATUSES}, with a why unless config")
            rows.append(Row(**{**r, "published": published}))
        tables.append(Table(**{**t, "columns": columns, "rows": rows}))
    return spec["paper"], tables


# ---------------------------------------------------------------------------------------------- result folders
def _identity(folder: Path) -> tuple[list[str], list[str]]:
    """What a result folder ran (``[PIPELINE:STAGE]`` or its config files) and its overrides, from seeds.json."""
    try:
        record = json.loads((folder / "seeds.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MSAError(
            f"{folder}: no seeds.json (written by `msa seeds` and `msa pipeline --seeds`), so the table row it "
            "belongs to is unknown"
        ) from None
    except ValueError as error:
        raise MSAError(f"{folder / 'seeds.json'}: not JSON ({error})") from None
    if record.get("pipeline"):
        return [f"{record['pipeline']}:{record.get('stage', '')}"], list(record.get("overrides") or [])
    return [c["path"] for c in record.get("configs") or []], list(record.get("overrides") or [])


def _matches(ran: list[str], spec: str) -> bool:
    """Whether the configs a folder ran are those of ``spec`` (``a.yaml + b.yaml``, or ``PIPELINE.yaml:STAGE``),
    each compared by its trailing path."""
    wanted = [w.strip() for w in spec.split(" + ")]
    if len(wanted) != len(ran):
        return False
    for have, want in zip(ran, wanted):
        (have_path, _, have_stage), (want_path, _, want_stage) = have.partition(":"), want.partition(":")
        want_parts = Path(want_path).parts
        if have_stage != want_stage or Path(have_path).parts[-len(want_parts) :] != want_parts:
            return False
    return True


def read_result(folder: str | Path) -> Result:
    from msa_lightning.experiments.results import summary_rows

    folder = Path(folder)
    file = folder / "summary.csv"
    if not file.is_file():
        raise MSAError(f"{folder}: no summary.csv there (give a folder of `msa seeds` or `msa pipeline --seeds`)")
    _, n_seeds, summary = summary_rows(file)[0]
    return Result(folder, n_seeds, summary, _identity(folder)[1])


def place_results(table: Table, folders: list[str | Path]) -> dict[tuple[int, str], Result]:
    """``{(row index, dataset): result}`` of the folders that fill cells of ``table``; two folders for one cell
    are one MSAError."""
    placed: dict[tuple[int, str], Result] = {}
    for folder in map(Path, folders):
        ran, _ = _identity(folder)
        cells = [
            (i, dataset)
            for i, row in enumerate(table.rows)
            for dataset, specs in row.runs.items()
            if any(_matches(ran, spec) for spec in specs)
        ]
        for cell in cells:
            if cell in placed:
                raise MSAError(
                    f"{placed[cell].folder} and {folder} both fill row {table.rows[cell[0]].name!r}, {cell[1]}, "
                    f"of Table {table.id}: give one of them"
                )
            placed[cell] = read_result(folder)
    return placed


def _belongs(table: Table, folder: Path) -> bool:
    ran, _ = _identity(folder)
    return any(_matches(ran, s) for row in table.rows for specs in row.runs.values() for s in specs)


# ---------------------------------------------------------------------------------------------- the table
def _ours(result: Result | None, columns: list[Column]) -> list[str]:
    cells = []
    for c in columns:
        mean, std = result.summary.get(c.metric, (math.nan, math.nan)) if result else (math.nan, math.nan)
        cells.append("" if math.isnan(mean) else f"{mean * c.scale:.{c.digits}f} ± {std * c.scale:.{c.digits}f}")
    return cells


def _reproduce(row: Row, datasets: list[str]) -> str:
    """The first config of each shown dataset's cell (or the row's status)."""
    if row.status == "not built":
        return "not built"
    specs = [row.runs[d][0] for d in datasets if row.runs.get(d)]
    if not specs:
        return row.status
    shown = ", ".join(s.removeprefix("configs/") for s in specs)
    return f"{shown} (needs data)" if row.status == "needs data" else shown


def paper_table(paper: str, folders: list[str | Path] = (), table_id: str | None = None) -> str:
    """Markdown of the paper's tables (or of ``table_id``): per paper row its published numbers, then, for rows
    a shipped config runs, ours (mean ± std over the seeds of the result folder that ran it, empty where none
    did); under each table the reason for each row not reproduced and the folders read."""
    citation, tables = load_published(paper)
    if table_id is not None:
        chosen = [t for t in tables if t.id == str(table_id)]
        if not chosen:
            raise MSAError(f"--table {table_id}: {paper} has tables {', '.join(t.id for t in tables)}")
        tables = chosen
    folders = [Path(f) for f in folders]
    for folder in folders:
        if not folder.is_dir():
            raise MSAError(f"{folder}: no such folder (give folders written by `msa seeds` or `msa pipeline --seeds`)")
    for folder in folders:
        if not any(_belongs(t, folder) for t in tables):
            known = sorted({s for t in tables for row in t.rows for specs in row.runs.values() for s in specs})
            raise MSAError(
                f"{folder}: it ran {' + '.join(_identity(folder)[0]) or 'no recorded config'}, which fills no row "
                f"of {paper}'s {'table' if len(tables) == 1 else 'tables'} (their rows run: {', '.join(known)})"
            )
    parts = []
    for table in tables:
        placed = place_results(table, [f for f in folders if _belongs(table, f)])
        parts.append(_render(citation, table, placed))
    return "\n\n".join(parts)


def _render(citation: str, table: Table, placed: dict[tuple[int, str], Result]) -> str:
    side_by_side = table.layout != "rows"
    groups = table.datasets if side_by_side else [None]
    columns = [
        (f"{d} {c.header}" if len(table.datasets) > 1 and side_by_side else c.header)
        for d in groups
        for c in table.columns
    ]
    lead = ["dataset"] if not side_by_side else []
    lead += ["model"] + (["section"] if any(r.section for r in table.rows) else []) + ["from"]
    lines = [
        f"{citation}, {table.title}",
        "",
        "paper: the numbers as printed; ours: mean ± std over the seeds of a result folder, test split, in the "
        "paper's units; empty: not run (or not reported).",
        "",
        "| " + " | ".join(lead + columns + ["reproduce"]) + " |",
        "|---" * (len(lead) + len(columns) + 1) + "|",
    ]
    blocks = [(None, table.rows)]
    if not side_by_side:  # the paper stacks its datasets: one block of rows each
        blocks = [(d, [r for r in table.rows if d in r.published]) for d in table.datasets]
    for dataset, rows in blocks:
        for row in rows:
            i = table.rows.index(row)
            label = [dataset] if dataset else []
            label += [row.name] + ([row.section] if "section" in lead else [])
            datasets = table.datasets if dataset is None else [dataset]
            paper_cells = [v or "" for d in datasets for v in row.published.get(d, [None] * len(table.columns))]
            lines.append("| " + " | ".join(label + ["paper"] + paper_cells + [_reproduce(row, datasets)]) + " |")
            if row.status != "not built" and any(d in row.runs for d in datasets):
                results = [placed.get((i, d)) for d in datasets]
                n = sorted({r.n_seeds for r in results if r})
                ours = [c for r, d in zip(results, datasets) for c in _ours(r, table.columns)]
                name = "ours" + (f" (n={', '.join(map(str, n))})" if n else "")
                lines.append("| " + " | ".join(label + [name] + ours + [""]) + " |")
    lines += ["", table.note.strip()] if table.note else []
    explained = [r for r in table.rows if r.why]
    if explained:
        lines += ["", "Rows (status, why):"]
        lines += [f"- {r.name}{f' ({r.section})' if r.section else ''}: {r.status}, {r.why}" for r in explained]
    if placed:
        lines += ["", "Result folders:"]
        for (i, dataset), r in sorted(placed.items(), key=lambda kv: kv[0]):
            extra = f"; overrides: {' '.join(r.overrides)}" if r.overrides else ""
            lines.append(f"- {table.rows[i].name}, {dataset}: {r.folder} ({r.n_seeds} seeds{extra})")
    return "\n".join(lines)


def row_notes(paper: str) -> str:
    """Markdown for ``configs/<paper>/README.md``: per table, every row's status, config and reason (the
    README's copy is checked against this in the tests, so the two cannot drift apart)."""
    _, tables = load_published(paper)
    lines = [
        f"`msa report --paper {paper} [RESULT DIRS]` prints {'these tables' if len(tables) > 1 else 'this table'} "
        f"with the published numbers (`msa_lightning/papers/{paper}/published.yaml`, each row citing the paper's "
        "table row) and ours beside them. Each row is one of: **config** (a shipped config reproduces it from the "
        "field's public files), **needs data** (a shipped config runs it, on data we cannot ship), **not built** "
        "(the model or setting is not in the suite).",
    ]
    for table in tables:
        lines += ["", f"**{table.title}**", "", "| row | status | config | why |", "|---|---|---|---|"]
        for row in table.rows:
            configs = dict.fromkeys(specs[0] for specs in row.runs.values() if specs)  # in dataset order, once
            shown = ", ".join(f"`{c.removeprefix('configs/')}`" for c in configs)
            section = f" ({row.section})" if row.section else ""
            lines.append(f"| {row.name}{section} | {row.status} | {shown} | {row.why} |")
    return "\n".join(lines)
