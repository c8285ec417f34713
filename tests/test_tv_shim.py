"""torchvision on CPU-only torch: `import timm` and torchvision.transforms.v2 must work after `import mega`."""

import subprocess
import sys

import torch


def test_timm_and_transforms_v2_work():
    import timm
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    model = timm.create_model("resnet18", pretrained=False, num_classes=0)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 512)
    img = tv_tensors.Image(torch.rand(3, 64, 48))
    boxes = tv_tensors.BoundingBoxes(
        torch.tensor([[4.0, 4.0, 40.0, 60.0]]), format="XYXY", canvas_size=(64, 48)
    )
    out_img, out_boxes = v2.Compose([v2.RandomHorizontalFlip(p=1.0), v2.Resize((32, 24))])(img, boxes)
    assert out_img.shape == (3, 32, 24)
    # Flipped horizontally then halved: x1' = (48 - 40) / 2.
    torch.testing.assert_close(out_boxes, torch.tensor([[4.0, 2.0, 22.0, 30.0]]))


def test_shim_reports_mode_in_a_fresh_process():
    code = "import mega, mega.tv_shim as s, torchvision, timm; print(s.install())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in {"native", "shim"}
    # Calling install() after torchvision is already imported is harmless and says so.
    late = subprocess.run(
        [
            sys.executable,
            "-c",
            "import torch; import mega.tv_shim as s; s._STATE['mode'] = None; "
            "import sys; sys.modules.setdefault('torchvision', None); print(s.install())",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert late.stdout.strip().endswith("late"), late.stderr
