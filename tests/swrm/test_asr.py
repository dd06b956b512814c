"""ASR transcripts: reading, id normalisation, missing-id policies, alignment, WER, lexicons,
and the statistics on the real MOSI transcripts of ../shared (skipped when absent)."""

from __future__ import annotations

import pytest
from conftest import REPO, assert_one_line_error, run_msa

from msa_lightning.cli.commands import run_command
from msa_lightning.data.lexicon import load_lexicon
from msa_lightning.data.transcripts import (
    TranscriptError,
    align_words,
    apply_transcripts,
    compare_transcript_files,
    compare_transcripts,
    corpus_wer,
    normalise_words,
    read_transcripts,
    sentiment_substitutions,
    sources_in_folder,
)
from msa_lightning.errors import DataError


def test_read_transcripts_normalises_ids_and_rejects_bad_lines(tmp_path):
    f = tmp_path / "asr.tsv"
    f.write_text("abc$_$1\tI WAS REALLY SET\n\nabc_2\tHELLO\nabc_2\tHELLO\n", encoding="utf-8")
    assert read_transcripts(f) == {"abc_1": "I WAS REALLY SET", "abc_2": "HELLO"}
    f.write_text("abc_1 no tab here\n")
    with pytest.raises(TranscriptError, match=r"asr.tsv:1: expected `id<TAB>text`"):
        read_transcripts(f)
    f.write_text("abc_1\tONE\nabc_1\tTWO\n")
    with pytest.raises(TranscriptError, match="line 1"):
        read_transcripts(f)


def test_missing_policies_report_ids():
    ids, gold = ["v$_$1", "v_2", "v_3"], ["GOLD ONE", "GOLD TWO", "GOLD THREE"]
    asr = {"v_1": "ASR ONE", "v_3": "ASR THREE"}
    with pytest.raises(TranscriptError, match="v_2"):
        apply_transcripts(ids, asr, gold, "error")
    assert apply_transcripts(ids, asr, gold, "gold") == (["ASR ONE", "GOLD TWO", "ASR THREE"], ["v_2"])
    assert apply_transcripts(ids, asr, gold, "empty") == (["ASR ONE", "", "ASR THREE"], ["v_2"])
    with pytest.raises(ValueError, match="missing="):
        apply_transcripts(ids, asr, gold, "skip")


def test_fill_policies_fail_above_the_allowed_share(caplog):
    ids = [f"v_{i}" for i in range(200)]
    asr = {i: "ASR" for i in ids[1:]}  # one id of 200 lacks a transcript: 0.5%
    with caplog.at_level("WARNING"):
        texts, absent = apply_transcripts(ids, asr, ["GOLD"] * 200, "gold", "ibm.tsv", max_missing_share=0.01)
    assert absent == ["v_0"] and texts[0] == "GOLD" and texts[1] == "ASR"
    assert "ibm.tsv: no transcript for 1 of 200 utterances (v_0)" in caplog.text
    del asr["v_1"], asr["v_2"]  # 3 of 200: 1.5%
    for policy in ("gold", "empty"):
        with pytest.raises(
            TranscriptError,
            match=r"ibm.tsv: no transcript for 3 of 200 utterances \(1.5%, more "
            r"than max_missing_share=0.01\): v_0, v_1, v_2",
        ):
            apply_transcripts(ids, asr, ["GOLD"] * 200, policy, "ibm.tsv", max_missing_share=0.01)


@pytest.mark.parametrize("policy", ["error", "gold", "empty"])
def test_a_file_matching_no_id_always_fails(policy):
    ids = ["abc_1", "abc_2"]
    with pytest.raises(TranscriptError) as info:
        apply_transcripts(ids, {"zzz_9": "X", "zzz_8": "Y"}, ["G1", "G2"], policy, "other.tsv", max_missing_share=1.0)
    msg = str(info.value)
    assert msg.startswith("other.tsv: the transcript file matches none of the 2 utterance ids")
    assert "'abc_1'" in msg and "'zzz_9'" in msg and "\n" not in msg


def test_alignment_and_wer_by_hand():
    ref = "AND I WAS REALLY UPSET ABOUT IT".split()
    hyp = "AND I WAS REALLY SET ABOUT IT TODAY".split()
    ops = align_words(ref, hyp)
    assert [op for op, _, _ in ops] == ["C"] * 4 + ["S", "C", "C", "I"]
    assert corpus_wer([ref], [hyp]) == pytest.approx(2 / 7)
    assert corpus_wer([["A", "B"], ["C"]], [["A"], ["C", "D", "E"]]) == pytest.approx(3 / 3)  # 1 D + 2 I
    lexicon = load_lexicon()
    assert sentiment_substitutions(ref, hyp, lexicon) == [("UPSET", "SET")]
    assert [op for op, _, _ in align_words(["A", "B", "C"], [])] == ["D", "D", "D"]


def test_word_normalisation():
    assert normalise_words("don't [UNK] stop, it's GOOD") == ["DON'T", "STOP", "IT'S", "GOOD"]
    assert normalise_words("don't stop", strip_apostrophes=True) == ["DONT", "STOP"]
    assert normalise_words("[UNK]") == []


def test_lexicons(tmp_path):
    vader = load_lexicon("vader")
    assert "upset" in vader and "UPSET" in vader and "set" not in vader and "movie" not in vader
    assert all(len(w) > 1 for w in vader.words)
    words = tmp_path / "pos.txt"
    words.write_text(";; Hu & Liu style header\n\ngood\nGreat\n# comment\n")
    mpqa = tmp_path / "subj.tff"
    mpqa.write_text("type=weaksubj len=1 word1=abandoned pos1=adj stemmed1=n priorpolarity=negative\n")
    mixed = load_lexicon(f"{words},{mpqa}")
    assert mixed.words == {"good", "great", "abandoned"}
    assert mixed.fingerprint == load_lexicon([mpqa, words]).fingerprint
    assert load_lexicon("vader", min_valence=2.0).words < vader.words
    with pytest.raises(FileNotFoundError):
        load_lexicon(str(tmp_path / "nope.txt"))


def test_compare_transcripts_counts(tmp_path):
    gold = {"a": "I WAS REALLY UPSET", "b": "GOOD MOVIE", "c": "THE PLOT"}
    hyp = {"a": "I WAS REALLY SET", "b": "MOVIE"}
    report = compare_transcripts(gold, hyp, load_lexicon(), "toy")
    assert report.missing == ["c"] and report.utterances == 2
    assert (report.substitutions, report.deletions, report.insertions, report.ref_words) == (1, 1, 0, 6)
    assert report.wer == pytest.approx(2 / 6)
    assert report.sentiment_substituted == 1 and report.sentiment_deleted == 1
    assert report.substitution_share == pytest.approx(0.5)


def test_wer_command_on_files(tmp_path, capsys):
    (tmp_path / "gold.tsv").write_text("a\tI WAS REALLY UPSET\nb\tGOOD MOVIE\n")
    (tmp_path / "toy.tsv").write_text("a\tI WAS REALLY SET\nb\tGOOD MOVIE\n")
    comparison = compare_transcript_files(tmp_path / "gold.tsv", sources_in_folder(tmp_path, tmp_path / "gold.tsv"))
    assert "| toy | 2 | 0 | 16.67 |" in comparison.table()
    with pytest.raises(DataError, match="missing.tsv"):  # the msa command prints it as one `msa: error:` line
        compare_transcript_files(tmp_path / "missing.tsv", [("toy", tmp_path / "toy.tsv")])
    assert run_command(["data", "wer", "--dir", str(tmp_path), "--strip-apostrophes"]) == 0  # `msa data wer`
    assert "| toy | 2 | 0 | 16.67 |" in capsys.readouterr().out


def test_real_mosi_transcripts(shared_dir, capsys):
    """The real files: the paper's Table 3 WERs come out exactly; IBM's substitution share is near 17.6%."""
    asr = shared_dir / "data" / "mosi" / "asr"
    gold = read_transcripts(asr / "gold.tsv")
    assert len(gold) == 2198
    lexicon = load_lexicon()
    reports = {
        name: compare_transcripts(gold, read_transcripts(asr / f"{name}.tsv"), lexicon, name)
        for name in ("speechbrain", "ibm", "iflytek")
    }
    assert round(100 * reports["speechbrain"].wer, 2) == 37.54
    assert round(100 * reports["ibm"].wer, 2) == 29.70
    assert round(100 * reports["iflytek"].wer, 2) == 23.91
    # the paper reports 17.6% for IBM with Hu & Liu + MPQA; VADER's lexicon gives a nearby share
    assert 0.14 < reports["ibm"].substitution_share < 0.20
    shares = [reports[n].substitution_share for n in ("speechbrain", "ibm", "iflytek")]
    assert shares == sorted(shares, reverse=True)  # worse ASR, more sentiment substitutions
    # through the command, with labels.csv as gold (it also has the utterance gold.tsv lacks)
    assert (
        run_command(["data", "wer", "--dir", str(asr), "--gold", str(shared_dir / "data" / "mosi" / "labels.csv")]) == 0
    )
    out = capsys.readouterr().out
    assert "| ibm | 2198 | 1 | 29.70 | 29.70 |" in out and "2WGyTLYerpo_44" in out


def test_wer_agrees_with_jiwer(shared_dir):
    """jiwer computes the same corpus WER on the real files. (The suite keeps its own alignment: among
    equally cheap alignments it prefers a substitution, which the sentiment-substitution statistic
    counts; jiwer's tie-breaking gives the same WER but other S/D/I splits.)"""
    import jiwer

    asr = shared_dir / "data" / "mosi" / "asr"
    gold = read_transcripts(asr / "gold.tsv")
    hyp = read_transcripts(asr / "ibm.tsv")
    common = [i for i in gold if i in hyp]
    refs = [" ".join(normalise_words(gold[i])) for i in common]
    hyps = [" ".join(normalise_words(hyp[i])) for i in common]
    ours = compare_transcripts(gold, hyp, load_lexicon(), "ibm").wer
    assert ours == pytest.approx(jiwer.wer(refs, hyps), abs=1e-12)
    assert round(100 * ours, 2) == 29.70


def _asr_module(synthetic_mosi, tmp_path, lines: list[str], **kw):
    from msa_lightning.papers.swrm.data import MOSIASRDataModule

    (tmp_path / "asr.tsv").write_text("\n".join(lines) + "\n")
    return MOSIASRDataModule(
        str(synthetic_mosi),
        asr="toy",
        transcripts=str(tmp_path / "asr.tsv"),
        tokenizer="tiny-bert",
        positions=False,
        cache_dir=str(tmp_path / "cache"),
        **kw,
    )


def test_datamodule_missing_share_and_unmatched_file(synthetic_mosi, tmp_path):
    from msa_lightning.data.reader import read_feature_file
    from msa_lightning.errors import ConfigError

    splits = read_feature_file(synthetic_mosi)
    all_ids = [i for s in splits.values() for i in s.ids]
    dm = _asr_module(synthetic_mosi, tmp_path, [f"{i}\tHELLO" for i in all_ids[1:]], missing="gold")
    with pytest.raises(
        TranscriptError,
        match=r"\(train split of .*\): no transcript for 1 of 64 utterances "
        r"\(1.6%, more than max_missing_share=0.01\): synthtrain0000_0",
    ):
        dm.setup()
    dm = _asr_module(
        synthetic_mosi, tmp_path, [f"{i}\tHELLO" for i in all_ids[1:]], missing="gold", max_missing_share=0.02
    )
    dm.setup()
    assert dm.missing_ids["train"] == ["synthtrain0000_0"] and dm.splits["train"].raw_text[1] == "HELLO"
    dm = _asr_module(synthetic_mosi, tmp_path, ["other_1\tHELLO"], missing="gold", max_missing_share=1.0)
    with pytest.raises(TranscriptError, match="asr.tsv .*matches none of the 64 utterance ids"):
        dm.setup()
    with pytest.raises(ConfigError, match="data.init_args.max_missing_share"):
        _asr_module(synthetic_mosi, tmp_path, [], max_missing_share=2.0)
    with pytest.raises(ConfigError, match="data.init_args.tokenizer"):
        _asr_module(synthetic_mosi, tmp_path, [], missing="gold").__class__(str(synthetic_mosi), tokenizer="")


def test_shipped_asr_configs_bound_the_missing_share():
    import yaml

    for config in sorted((REPO / "configs" / "swrm").glob("*.yaml")):
        data = yaml.safe_load(config.read_text())["data"]["init_args"]
        if data.get("missing", "error") != "error":
            assert data.get("max_missing_share") == 0.01, config.name


def fit_swrm_ibm(feature_file, transcripts, tmp_path):
    """``msa fit`` of the shipped SWRM IBM config on ``transcripts``, with tiny encoders (a subprocess)."""
    return run_msa(
        "fit",
        "--config",
        REPO / "configs" / "swrm" / "mosi_ibm.yaml",
        f"--data.init_args.path={feature_file}",
        f"--data.init_args.transcripts={transcripts}",
        "--data.init_args.tokenizer=tiny-bert",
        "--data.init_args.mlm=tiny-bert",
        "--data.init_args.positions=false",
        "--model.init_args.text_model=tiny-bert",
        "--trainer.logger=false",
        "--trainer.max_epochs=1",
        f"--trainer.default_root_dir={tmp_path}",
        cache=tmp_path / "cache",
    )


def test_msa_fit_with_a_transcript_file_matching_no_id(synthetic_mosi, tmp_path):
    """The shipped IBM config (``missing: gold``) still refuses a transcript file of another dataset."""

    bad = tmp_path / "other.tsv"
    bad.write_text("other_1\tHELLO\nother_2\tWORLD\n")
    result = fit_swrm_ibm(synthetic_mosi, bad, tmp_path)
    assert_one_line_error(result, str(bad), "matches none of the 64 utterance ids", "'synthtrain0000_0'", "'other_1'")


def test_transcript_files_through_msa(synthetic_mosi, tmp_path):
    """`msa data wer` reads a gold file with a BOM and CRLF (its first id is not '\\ufeffa'); `msa fit` with an ASR
    transcript file holding a Latin-1 byte is one error line naming the file and line."""
    (tmp_path / "asr").mkdir()
    (tmp_path / "asr" / "gold.tsv").write_bytes(b"\xef\xbb\xbfa\tI WAS REALLY UPSET\r\nb\tGOOD MOVIE\r\n")
    (tmp_path / "asr" / "toy.tsv").write_bytes(b"a\tI WAS REALLY SET\nb\tGOOD MOVIE\n")
    wer = run_msa("data", "wer", "--dir", tmp_path / "asr", cache=tmp_path / "cache")
    assert wer.returncode == 0, wer.stdout + wer.stderr[-3000:]
    assert "| toy | 2 | 0 | 16.67 |" in wer.stdout  # 2 utterances matched, none missing

    bad = tmp_path / "ibm.tsv"
    bad.write_bytes(b"synthtrain0000_0\tHELLO\nsynthtrain0001_0\tNA\xefVE\n")
    result = fit_swrm_ibm(synthetic_mosi, bad, tmp_path)
    assert_one_line_error(result, f"{bad}, line 2: the transcript file is not UTF-8 (byte 0xef at column 20)")
