"""OpenFace 2.x CSVs of every real variant (media/openface.py) and the built-in face extractor (media/face.py)."""

from __future__ import annotations

import numpy as np
import pytest

from msa_lightning.errors import ClipError
from msa_lightning.media.openface import (
    header_layout,
    layout_dim,
    read_openface,
    read_openface_csv,
    write_openface_csv,
)


@pytest.mark.parametrize("layout, columns", [("openface2", 713), ("openface2.0", 431)])
@pytest.mark.parametrize("spaced", [False, True])
@pytest.mark.parametrize("face_id", [False, True])
def test_every_spelling_and_layout_is_read_by_name(tmp_path, layout, columns, spaced, face_id):
    rng = np.random.default_rng(0)
    feats = np.round(rng.normal(size=(5, layout_dim(layout))), 3)
    success = np.array([1, 0, 1, 1, 1], bool)
    path = write_openface_csv(tmp_path / "c.csv", feats, success, spaced=spaced, face_id=face_id, layout=layout)
    header = path.read_text().splitlines()[0]
    assert len(header.split(",")) == columns + face_id  # 2.0 releases: 431 columns, no face_id
    assert header_layout(path) == layout
    got = read_openface(path)
    assert got.layout == layout and got.features.shape == (5, layout_dim(layout))
    np.testing.assert_allclose(got.features[success], feats[success], atol=1e-6)
    assert not got.features[~success].any()


def test_layout_sizes_are_the_documented_ones():
    assert layout_dim("openface2") == 709 and layout_dim("openface2.0") == 427


def test_a_run_with_fewer_flags_is_refused_naming_the_group_and_flag(tmp_path):
    feats = np.zeros((3, 709))
    no_aus = write_openface_csv(tmp_path / "no_aus.csv", feats, without=("AU intensities", "AU presence"))
    with pytest.raises(ClipError, match=r"no AU intensities .* and no AU presence: run FeatureExtraction with -aus"):
        read_openface(no_aus)
    no_pose = write_openface_csv(tmp_path / "no_pose.csv", feats, without=("head pose",))
    with pytest.raises(ClipError, match=r"no head pose \(pose_Tx \.\.\.\): run FeatureExtraction with -pose") as err:
        read_openface(no_pose)
    assert err.value.reason == "wrong_columns"
    old = write_openface_csv(tmp_path / "old.csv", np.zeros((3, 427)), layout="openface2.0", face_id=False)
    # SKESL and CH-SIMS need the full 709: a 2.0 file is refused naming what it lacks, not "not OpenFace"
    with pytest.raises(ClipError, match=r"no gaze angles .*-gaze") as err:
        read_openface_csv(old)
    (tmp_path / "other.csv").write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ClipError, match="not an OpenFace 2.x CSV: no column 'frame'"):
        read_openface(tmp_path / "other.csv")


def test_several_faces_per_frame_keep_the_most_confident_tracked_one(tmp_path):
    feats = np.arange(4 * 709, dtype=float).reshape(4, 709) % 97
    path = write_openface_csv(tmp_path / "multi.csv", feats)
    lines = path.read_text().splitlines()
    # frame 1 twice more: a second face of lower confidence, and one that failed tracking
    second = lines[1].split(",")
    second[1], second[3] = "1", "0.5"
    failed = lines[1].split(",")
    failed[1], failed[3], failed[4] = "2", "0.99", "0"
    path.write_text("\n".join([lines[0], ",".join(second), lines[1], ",".join(failed), *lines[2:]]) + "\n")
    got = read_openface(path)
    assert got.features.shape == (4, 709) and got.success.all()
    np.testing.assert_allclose(got.features, feats, atol=1e-4)


def test_no_tracked_face_is_zero_filled_when_allowed(tmp_path):
    path = write_openface_csv(tmp_path / "none.csv", np.ones((3, 709)), success=np.zeros(3, bool))
    with pytest.raises(ClipError, match="success is 0 in all 3 frames"):
        read_openface(path)
    got = read_openface(path, allow_no_face=True)
    assert not got.features.any() and not got.success.any()


# ------------------------------------------------------------------------------------------ built-in face extractor
def test_face_extractor_finds_a_real_face_and_zeros_frames_without_one():
    pytest.importorskip("dlib")
    from msa_lightning.media.face import FACE_DIM, face_features
    from msa_lightning.media.synthetic import portrait

    face = portrait()
    blank = np.full_like(face, 128)
    features, found = face_features(np.stack([face, blank, np.roll(face, 5, axis=1)]))
    assert features.shape == (3, FACE_DIM) and found.tolist() == [True, False, True]
    assert not features[1].any()
    box, xs, ys = features[0, :4], features[0, 4:72], features[0, 72:]
    assert 0.2 < box[0] < 0.8 and 0.2 < box[1] < 0.8 and 0.2 < box[2] < 0.9  # a centred face, a third of the frame
    assert (np.abs(xs - 0.5) < 0.8).all() and (np.abs(ys - 0.5) < 0.8).all()  # landmarks on the face box
    # iBUG markup: the person's right eye (36-41) lies left of the left eye (42-47) in the image, the mouth below both
    assert xs[36:42].mean() < xs[42:48].mean() and ys[48:68].mean() > ys[36:48].mean()
    # moving the picture 5 pixels moves the box, not the landmarks relative to it
    assert features[2, 0] > features[0, 0] and np.abs(features[2, 4:] - features[0, 4:]).mean() < 0.05
