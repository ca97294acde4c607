"""mIoU and pixel accuracy on hand-made examples; the network's shapes and save/load."""

import math

import pytest
import torch

from beyondgd.segmentation.metrics import confusion_matrix, iou_per_class, mean_iou, pixel_accuracy
from beyondgd.segmentation.networks import SegNet, load_segnet, save_segnet


def test_miou_on_a_hand_made_example():
    target = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 0], [2, 2, 1, 0]])
    conf = confusion_matrix(pred, target, 3)
    # rows = ground truth: gt 0 -> predicted (0, 1, 0, 0); gt 1 -> (1, 1, 1, 0); gt 2 -> (2, 2, 1)
    assert conf.tolist() == [[3, 1, 0], [1, 3, 0], [0, 1, 2]]
    # IoU0 = 3 / (4 + 4 - 3) = 0.6; IoU1 = 3 / (4 + 5 - 3) = 0.5; IoU2 = 2 / (3 + 2 - 2) = 2/3
    assert iou_per_class(conf).tolist() == pytest.approx([0.6, 0.5, 2 / 3])
    assert mean_iou(conf) == pytest.approx((0.6 + 0.5 + 2 / 3) / 3)
    assert pixel_accuracy(conf) == pytest.approx(8 / 11)  # the 255 pixel is ignored


def test_absent_class_is_left_out_of_the_mean():
    target = torch.tensor([[0, 0], [1, 1]])
    conf = confusion_matrix(target.clone(), target, 4)
    iou = iou_per_class(conf)
    assert math.isnan(iou[2]) and math.isnan(iou[3])
    assert mean_iou(conf) == 1.0


def test_metric_input_errors():
    with pytest.raises(ValueError, match="same shape"):
        confusion_matrix(torch.zeros(2, 2, dtype=torch.long), torch.zeros(3, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="target labels"):
        confusion_matrix(torch.zeros(2, dtype=torch.long), torch.tensor([0, 5]), 2)
    with pytest.raises(ValueError, match="pred labels"):
        confusion_matrix(torch.tensor([0, 3]), torch.zeros(2, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="empty"):
        mean_iou(torch.zeros(2, 2, dtype=torch.long))


def test_segnet_shapes_odd_sizes_and_round_trip(tmp_path):
    torch.manual_seed(0)
    net = SegNet(3, 5, width=4)
    for h, w in ((32, 32), (33, 47)):
        assert net(torch.rand(2, 3, h, w)).shape == (2, 5, h, w)
    save_segnet(tmp_path / "m.pt", net, class_names=list("abcde"), lam=3.0)
    net.eval()
    loaded, info = load_segnet(tmp_path / "m.pt")
    x = torch.rand(1, 3, 20, 20)
    assert torch.equal(net(x), loaded(x))
    assert info["class_names"] == list("abcde") and info["meta"]["lam"] == 3.0


def test_group_norm_segnet_is_per_image_and_round_trips(tmp_path):
    torch.manual_seed(0)
    net = SegNet(3, 3, width=4, norm="group").train()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    x = torch.rand(4, 3, 16, 16)
    # training mode: an image's output does not depend on the rest of the batch (batch norm's
    # does), which is what lets data-parallel ranks skip synchronising the normalisation
    torch.testing.assert_close(net(x)[:2], net(x[:2]))
    bn = SegNet(3, 3, width=4).train()
    assert not torch.allclose(bn(x)[:2], bn(x[:2]))
    save_segnet(tmp_path / "g.pt", net)
    loaded, _ = load_segnet(tmp_path / "g.pt")
    net.eval()
    assert loaded.norm == "group" and torch.equal(net(x), loaded(x))
    state = torch.load(tmp_path / "g.pt", weights_only=True)
    del state["norm"]  # a file written before the option: batch norm
    save = {**state, "state_dict": SegNet(3, 3, width=4).state_dict()}
    torch.save(save, tmp_path / "old.pt")
    assert load_segnet(tmp_path / "old.pt")[0].norm == "batch"


def test_segnet_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="n_classes"):
        SegNet(3, 1)
    with pytest.raises(ValueError, match="width"):
        SegNet(3, 2, width=0)
    with pytest.raises(ValueError, match="norm"):
        SegNet(3, 2, norm="layer")
    with pytest.raises(ValueError, match="images must have shape"):
        SegNet(3, 2, width=2)(torch.rand(3, 8, 8))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_segnet(tmp_path / "missing.pt")
    torch.save({"x": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a model written by beyondgd"):
        load_segnet(tmp_path / "other.pt")
