"""The helpers notebooks 05 and 06 look inside a model with: per-channel standardised feature
maps and the gradient of one prediction with respect to the input pixels."""
import pytest
import torch
from torch import nn

from segformer_lite.course.features import prediction_gradient, standardised_channels


def test_standardised_channels_pick_the_most_varying_channels_each_on_its_own_scale():
    torch.manual_seed(0)
    feature = torch.randn(1, 5, 6, 7) * torch.tensor([1.0, 30.0, 0.1, 5.0, 2.0])[None, :, None, None] + 4.0
    maps = standardised_channels(feature, k=3)
    assert maps.shape == (3, 6, 7)
    for m, channel in zip(maps, (1, 3, 4)):  # by spread, largest first
        raw = feature[0, channel]
        torch.testing.assert_close(m, (raw - raw.mean()) / raw.std())
    torch.testing.assert_close(maps.mean(dim=(1, 2)), torch.zeros(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(maps.std(dim=(1, 2)), torch.ones(3))


@pytest.mark.parametrize("feature, k", [(torch.zeros(2, 3, 4, 4), 1), (torch.zeros(3, 4, 4), 1),
                                        (torch.zeros(1, 3, 4, 4), 4), (torch.zeros(1, 3, 4, 4), 0)])
def test_standardised_channels_refuse_bad_input(feature, k):
    with pytest.raises(ValueError):
        standardised_channels(feature, k)


class TwoPixelModel(nn.Module):
    """Logits (1, 2, 1, 2) from a (1, 1, 1, 2) image: class scores linear in the pixels."""

    def forward(self, x):
        a, b = x[0, 0, 0]
        logits = torch.stack([torch.stack([2 * a + b, a]), torch.stack([-a, 3 * b])])  # (classes, w)
        return logits[None, :, None, :]


def test_prediction_gradient_is_that_of_the_predicted_class_log_probability():
    image = torch.tensor([[[[1.0, 0.5]]]])  # at column 0 the scores are (2.5, -1): class 0 wins
    got = prediction_gradient(TwoPixelModel(), image, (0, 0))

    def log_p0(x):  # written out: log softmax of (2a + b, -a), class 0
        a, b = x[0, 0, 0]
        return (2 * a + b) - torch.logsumexp(torch.stack([2 * a + b, -a]), 0)

    expected = torch.autograd.functional.jacobian(log_p0, image)[0].abs().sum(0)
    torch.testing.assert_close(got, expected)
    assert got.shape == (1, 2) and (got > 0).all()


def test_prediction_gradient_refuses_a_query_outside_the_logits():
    with pytest.raises(ValueError, match="outside the 1x2 logit grid"):
        prediction_gradient(TwoPixelModel(), torch.ones(1, 1, 1, 2), (0, 2))
