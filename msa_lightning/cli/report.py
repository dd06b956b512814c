"""``msa report DIR ...``: result tables of several runs, a paired t-test, FmlMSN's Tables 7-8."""

from __future__ import annotations

import argparse

from msa_lightning.cli.parsing import add_command


def add_parser(subparsers) -> None:
    from msa_lightning.experiments.paper_tables import PAPERS

    p = add_command(
        subparsers, "report", help="compare multi-seed runs; paired t-test; a paper's table; FmlMSN Tables 7-8"
    )
    p.add_argument("runs", nargs="*", help="folders written by `msa seeds` (or their summary.csv)")
    p.add_argument(
        "--paper",
        choices=list(PAPERS),
        help="that paper's main table: its published numbers, and ours from the result folders given",
    )
    p.add_argument("--table", metavar="ID", help="with --paper: only this table of the paper (e.g. 4)")
    p.add_argument(
        "--ttest",
        action="store_true",
        help="paired t-test over the seeds two folders share (their per_seed.csv): A B --ttest",
    )
    p.add_argument(
        "--fmlmsn",
        action="store_true",
        help="per-stage unimodal/bimodal task metrics and M of FmlMSN `msa pipeline` output folders",
    )
    p.add_argument(
        "--split",
        choices=["auto", "valid", "test"],
        default="auto",
        help="with --fmlmsn: test (an `msa test` of each best checkpoint logged in its stage folder), "
        "valid (the fit's validation at the best epoch), auto: test when every stage has it",
    )


def run(args: argparse.Namespace) -> int:
    from msa_lightning.errors import MSAError
    from msa_lightning.experiments.results import report, ttest_table
    from msa_lightning.papers.fmlmsn.report import fmlmsn_table

    if args.paper:
        from msa_lightning.experiments.paper_tables import paper_table

        print(paper_table(args.paper, args.runs, args.table))
        return 0
    if not args.runs:
        args.parser.error("the following arguments are required: runs (or --paper NAME)")
    if args.ttest:
        if len(args.runs) != 2:
            raise MSAError(f"report --ttest compares two result folders, got {len(args.runs)}: {' '.join(args.runs)}")
        print(ttest_table(*args.runs))
    elif args.fmlmsn:
        print("\n\n".join(fmlmsn_table(run, args.split) for run in args.runs))
    else:
        print(report(args.runs))
    return 0
