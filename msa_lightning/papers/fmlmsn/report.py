"""FmlMSN's Tables 7-8 from a pipeline's output folder: one row per stage (unimodal, bimodal, multimodal and
the meta-learner), the metrics of the checkpoint each stage tested (``msa report --fmlmsn DIR``).

A paper's report reads what :mod:`msa_lightning.experiments` wrote (stage records, metrics files), so it
sits above that layer: only the command layer imports it."""

from __future__ import annotations

import json
from pathlib import Path

from msa_lightning.errors import MSAError
from msa_lightning.experiments.results import stage_metrics

# ---------------------------------------------------------------------------------------------- FmlMSN tables
#: column order of Tables 7-8 (Acc-2, Acc-3, Acc-5, F1, MAE, Corr); other families' names fit in
TABLE_ORDER = (
    "acc2",
    "acc2_has0",
    "acc2_non0",
    "acc2_weak",
    "acc3",
    "acc5",
    "acc7",
    "f1",
    "f1_has0",
    "f1_non0",
    "mae",
    "corr",
)


_NOT_IN_TABLE = ("loss", "mae_vs_M", "eq8_")


def _columns(rows: list[dict[str, float]]) -> list[str]:
    # T_mae etc. belong to the unimodal task rows
    names = {k for r in rows for k in r if not k.startswith(_NOT_IN_TABLE) and not (k[1:2] == "_" and k[0].isupper())}
    return [n for n in TABLE_ORDER if n in names] + sorted(names - set(TABLE_ORDER))


def fmlmsn_results(folder: str | Path, split: str = "auto") -> dict:
    """The rows of the paper's Tables 7-8 from an ``msa pipeline`` output folder of FmlMSN.

    For each stage folder (``stage.json``) of an :class:`~msa_lightning.papers.fmlmsn.module.FmlMSNStage`: its two
    unimodal tasks and its bimodal task (each on the label it learns), then M of the
    :class:`~msa_lightning.papers.fmlmsn.module.FmlMSNMeta` folder, all of the best checkpoints. ``split``:
    ``test`` (needs an ``msa test`` of each best checkpoint logged in its stage folder), ``valid`` (the
    fit's validation at the best epoch), or ``auto`` (test when every stage has it, else valid).
    Returns ``{"split", "rows": [(group, task, metrics)], "columns", "eq8", "label_source"}``.
    """
    import yaml

    from msa_lightning.experiments.pipeline import read_record

    folder = Path(folder)
    if not folder.is_dir():
        raise MSAError(f"{folder}: no such folder (give the `out` folder of an FmlMSN `msa pipeline` run)")
    stages, meta = {}, None
    for record_file in sorted(folder.glob("*/stage.json")):
        sub = record_file.parent
        record = read_record(sub)
        if record is None or record.get("status") != "finished" or record.get("fold"):
            continue  # a fold run of K-fold stacking is no row of the tables
        found = sorted(sub.rglob("hparams.yaml"), key=lambda p: p.stat().st_mtime_ns)
        hparams = (yaml.safe_load(found[-1].read_text()) if found else None) or {}
        if hparams.get("pair") in ("AV", "AT", "VT"):
            stages[hparams["pair"]] = (sub, record, hparams)
        elif "stages" in hparams and "retrain_threshold" in hparams:
            meta = (sub, record, hparams)
    if not stages and meta is None:
        raise MSAError(
            f"{folder}: no finished FmlMSN stage or meta-learner there (expected <stage>/stage.json "
            "written by `msa pipeline` with a FmlMSNStage or FmlMSNMeta run)"
        )
    parts = [(p, *stages[p]) for p in ("AV", "AT", "VT") if p in stages]
    if meta is not None:
        parts.append(("M", *meta))
    if split not in ("auto", "test", "valid"):
        raise MSAError(f"split {split!r}: expected auto, test or valid")
    chosen = split
    if split == "auto":
        chosen = "test" if all(stage_metrics(sub, rec, "test") is not None for _, sub, rec, _ in parts) else "valid"
    rows = []
    for name, sub, record, _hparams in parts:
        metrics = stage_metrics(sub, record, chosen)
        if metrics is None:
            how = (
                (
                    f"test its best checkpoint into the stage folder: msa test <the stage's fit arguments> "
                    f"--ckpt_path={record.get('best_ckpt')} --trainer.default_root_dir={sub}"
                )
                if chosen == "test"
                else "its fit logged no validation at the best checkpoint's epoch"
            )
            raise MSAError(f"{sub}: no {chosen} metrics of the best checkpoint ({how})")
        if name == "M":
            rows.append(("M", "A+V+T", metrics))
            continue
        alpha, beta = name
        for task in (alpha, beta):
            rows.append((name, task, {k[2:]: v for k, v in metrics.items() if k.startswith(f"{task}_")}))
        rows.append((name, f"{alpha}+{beta}", metrics))
    eq8 = None
    if meta is not None:
        found = sorted(meta[0].rglob("eq8.json"), key=lambda p: p.stat().st_mtime_ns)
        eq8 = json.loads(found[-1].read_text()) if found else None
    sources = {h.get("label_source") for _, _, _, h in parts if "pair" in h}
    return {
        "split": chosen,
        "rows": rows,
        "columns": _columns([m for _, _, m in rows]),
        "eq8": eq8,
        "label_source": sources.pop() if len(sources) == 1 else ("mixed" if sources else None),
        "folder": folder,
    }


def fmlmsn_table(folder: str | Path, split: str = "auto") -> str:
    """Markdown in the layout of Tables 7-8 (stage group, task, metrics), then the Eq. 8 decision."""
    res = fmlmsn_results(folder, split)
    labels = {
        "fine": "each task on its own label (Table 7)",
        "multimodal": "every task on M (FmlMSN-m)",
        "multimodal_bimodal": "M for the bimodal tasks, T/A/V for the unimodal ones (FmlMSN-m, Table 8's caption)",
    }.get(res["label_source"], "")
    lines = [
        f"FmlMSN results, {res['split']} split of the best checkpoints: {res['folder']}"
        + (f"; {labels}" if labels else ""),
        "",
        "| stage | task | " + " | ".join(res["columns"]) + " |",
        "|---" * (len(res["columns"]) + 2) + "|",
    ]
    previous = None
    for group, task, metrics in res["rows"]:
        shown = group if group != previous else ""
        if shown and group != "M":
            shown = ", ".join(group)
        previous = group
        lines.append(
            f"| {shown} | {task} | "
            + " | ".join(f"{metrics[c]:.4f}" if c in metrics else "" for c in res["columns"])
            + " |"
        )
    if res["eq8"]:
        e = res["eq8"]
        lines += [
            "",
            f"Eq. 8: p = {e['p']:.3f} (mean 2-class accuracy over {e['draws']} draws of {e['total']} "
            f"validation samples, epoch {e['epoch']}), threshold {e['threshold']:g} -> {e['decision']}",
        ]
    return "\n".join(lines)
