"""analysis.ml.fast: parallel decode and the ONNX Runtime predictor give the worker's results."""

from __future__ import annotations

import io

import numpy as np
import pytest

from analysis.ml import fast
from analysis.ml.infer import Predictor
from analysis.ml.transforms import eval_resize_pil


def _png(img) -> bytes:  # noqa: ANN001
    buffer = io.BytesIO()
    img.save(buffer, "PNG")
    return buffer.getvalue()


def test_decode_many_matches_the_serial_decode_and_resize(synthetic_images) -> None:  # noqa: ANN001
    datas = [_png(im) for im in synthetic_images]
    parallel = fast.decode_many(datas, 64)
    for data, got in zip(datas, parallel, strict=True):
        from PIL import Image

        expected = eval_resize_pil(Image.open(io.BytesIO(data)), 64)
        assert np.array_equal(np.asarray(got), np.asarray(expected))


def test_onnx_predictor_gives_the_same_scores_findings_and_boxes(
    random_artifact, synthetic_images, tmp_path, monkeypatch
) -> None:  # noqa: ANN001
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("DENTALSCAN_ONNX_CACHE", str(tmp_path))
    torch_predictor = Predictor(random_artifact, device="cpu")
    onnx_predictor = fast.OnnxPhotoPredictor(torch_predictor, threads=1)
    expected = torch_predictor.predict(synthetic_images, explain=True, min_probability=0.05)
    got = onnx_predictor.predict(synthetic_images, explain=True, min_probability=0.05, batch_size=2)
    for e, g in zip(expected, got, strict=True):
        assert e["scores"].keys() == g["scores"].keys()
        assert max(abs(e["scores"][k] - g["scores"][k]) for k in e["scores"]) < 1e-4
        assert [f["condition"] for f in e["findings"]] == [f["condition"] for f in g["findings"]]
        for fe, fg in zip(e["findings"], g["findings"], strict=True):
            assert np.allclose(fe["box"], fg["box"], atol=0.05)
            assert np.abs(fe["heatmap"] - fg["heatmap"]).max() < 1e-3
    assert list(tmp_path.glob("*.onnx"))  # exported once, cached
    assert fast.maybe_onnx(torch_predictor).__class__ is fast.OnnxPhotoPredictor
