import numpy as np

from analysis.ml.data import (
    MultiLabelDataset,
    read_image_folder,
    read_manifest,
    read_records,
    read_yolo_split,
    yolo_to_xyxy,
)
from analysis.ml.transforms import eval_transform, train_transform


def test_manifest_dataset_and_transforms(tmp_path, manifest_writer):
    manifest = manifest_writer(tmp_path / "m", n_groups=6, with_images=True)
    records = read_manifest(manifest)
    assert all(r.path.exists() for r in records)
    healthy = [r for r in records if r.label_key == "healthy"]
    assert all(r.labels == () for r in healthy)
    ds = MultiLabelDataset(records, train_transform(32))
    x, y = ds[0]
    assert tuple(x.shape) == (3, 32, 32) and float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    assert y.shape == (4,)
    x2, _ = MultiLabelDataset(records, eval_transform(40))[0]
    assert tuple(x2.shape) == (3, 40, 40)


def test_image_folder_merges_duplicates(tmp_path, make_image):
    root = tmp_path / "folder"
    for label in ("calculus", "gingivitis", "healthy"):
        (root / label).mkdir(parents=True)
    img = make_image(1)
    img.save(root / "calculus" / "a.jpg")
    (root / "gingivitis" / "a_copy.jpg").write_bytes((root / "calculus" / "a.jpg").read_bytes())
    make_image(2).save(root / "healthy" / "b.png")
    records = read_records(root)
    assert len(records) == 2
    labels = sorted(r.labels for r in records)
    assert labels == [(), ("gingivitis", "calculus")]
    assert len({r.group for r in read_image_folder(root)}) == 2


def test_yolo_reader(tmp_path, make_image):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    make_image(0, (64, 64)).save(tmp_path / "images" / "x.jpg")
    make_image(1, (64, 64)).save(tmp_path / "images" / "y.jpg")
    (tmp_path / "labels" / "x.txt").write_text("0 0.5 0.5 0.2 0.4\n3 0.1 0.2 0.1 0.1\n")
    samples = read_yolo_split(tmp_path)
    assert [s.image.name for s in samples] == ["x.jpg", "y.jpg"]
    assert samples[0].boxes.shape == (2, 4) and samples[0].classes.tolist() == [0, 3]
    assert samples[1].boxes.shape == (0, 4)
    xyxy = yolo_to_xyxy(samples[0].boxes, 100, 200)
    assert np.allclose(xyxy[0], [40, 60, 60, 140])
