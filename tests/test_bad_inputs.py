"""The bad-input catalogue: every bad input tried, with the exception and the message it must give.

Each entry is (id, action, exception type, regex the message must match). An action takes the
test's temporary folder. None may reach a Triton compilation error or a silent wrong result: the
op entries also run on backend "triton" (the interpreter on CPU).
"""

import contextlib
import gzip
import io
import pickle
import struct

import pytest
import torch

import ndsnn_triton
from ndsnn_triton import lif_multistep, masked_conv2d, masked_linear
from ndsnn_triton.cli import main
from ndsnn_triton.models import build_model, resnet19, small_snn, vgg16
from ndsnn_triton.nn import LIF, SpikeConv2d
from ndsnn_triton.profiler.claim import Assumptions, lth_cost, setup_model
from ndsnn_triton.profiler.cost import step_cost
from ndsnn_triton.profiler.layers import trace_layers
from ndsnn_triton.sparse import build_method, erk_densities, load_masks
from ndsnn_triton.sparse.masks import layer_shapes
from ndsnn_triton.train import CheckpointError, DataError, TrainConfig, Trainer, load_dataset
from ndsnn_triton.train.data import load_cifar10, load_fashion_mnist, load_tiny_imagenet

S = (torch.rand(2, 3, 6, 6) < 0.3).float()  # binary spikes
W = torch.randn(4, 3, 3, 3)
M = torch.ones(4, 3, 3, 3, dtype=torch.bool)
L_X, L_W, L_M = torch.ones(5, 6), torch.randn(3, 6), torch.ones(3, 6, dtype=torch.bool)


def _cifar_with(tmp, corrupt: str):
    folder = tmp / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump(
                {b"data": torch.zeros(2, 3072, dtype=torch.uint8).numpy(), b"labels": [0, 1]}, f
            )
    (folder / corrupt).write_bytes(b"\x80\x04 not a pickle")
    return load_cifar10(tmp)


def _idx_with_wrong_magic(tmp):
    (tmp / "train-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(struct.pack(">IIII", 0x801, 1, 28, 28) + bytes(784))
    )
    return load_fashion_mnist(tmp)


def _tiny_with_bad_jpeg(tmp):
    root = tmp / "tiny-imagenet-200"
    (root / "train" / "n01" / "images").mkdir(parents=True)
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("n01\n")
    (root / "train" / "n01" / "images" / "a.JPEG").write_bytes(b"garbage")
    (root / "val" / "val_annotations.txt").write_text("")
    return load_tiny_imagenet(tmp)


def _trainer(tmp, **cfg):
    model = small_snn(10, T=2)
    return Trainer(
        model,
        build_method("static", density=0.5),
        load_dataset("digits"),
        TrainConfig(epochs=1, batch_size=256, progress=False, **cfg),
        tmp,
    )


def _fit_twice(tmp):
    _trainer(tmp, max_steps=1).fit()
    _trainer(tmp).fit()


def _cli(*argv):
    """Run the CLI; a usage error re-raises as SystemExit carrying argparse's message."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return main(list(argv))
    except SystemExit as exit_:
        raise SystemExit(f"{exit_.code} {err.getvalue().strip()}") from None


def _masks_file(tmp):
    (tmp / "m.pt").write_bytes(b"\x00\x01 broken")
    return load_masks(tmp / "m.pt")


CATALOGUE = [
    # ---- ops
    ("conv: x of rank 3", lambda t: masked_conv2d(S[0], W, M), ValueError, r"\[N, C, H, W\]"),
    (
        "conv: channel mismatch",
        lambda t: masked_conv2d(S[:, :2], W, M),
        ValueError,
        "2 input channels but weight expects 3",
    ),
    ("conv: mask shape", lambda t: masked_conv2d(S, W, M[:2]), ValueError, "mask shape"),
    (
        "conv: float mask",
        lambda t: masked_conv2d(S, W, M.float()),
        TypeError,
        "mask must be a bool",
    ),
    ("conv: dtype mismatch", lambda t: masked_conv2d(S, W.double(), M), TypeError, "weight dtype"),
    ("conv: integer input", lambda t: masked_conv2d(S.long(), W, M), TypeError, "floating"),
    (
        "conv: non-binary spikes",
        lambda t: masked_conv2d(S * 0.5, W, M),
        ValueError,
        "binary spikes",
    ),
    (
        "conv: map smaller than kernel",
        lambda t: masked_conv2d(S[..., :1, :1], W, M),
        ValueError,
        "too small",
    ),
    (
        "conv: bias shape",
        lambda t: masked_conv2d(S, W, M, torch.zeros(5)),
        ValueError,
        "bias shape",
    ),
    ("conv: stride 0", lambda t: masked_conv2d(S, W, M, stride=0), ValueError, "stride >= 1"),
    (
        "conv: groups not dividing",
        lambda t: masked_conv2d(S, W, M, groups=3),
        ValueError,
        "groups=3",
    ),
    (
        "conv: numpy input",
        lambda t: masked_conv2d(S.numpy(), W, M),
        TypeError,
        "x must be a torch.Tensor",
    ),
    ("linear: x of rank 3", lambda t: masked_linear(L_X[None], L_W, L_M), ValueError, "2-D"),
    (
        "linear: feature mismatch",
        lambda t: masked_linear(L_X[:, :4], L_W, L_M),
        ValueError,
        "4 features but weight expects 6",
    ),
    (
        "linear: non-binary spikes",
        lambda t: masked_linear(L_X * 2, L_W, L_M),
        ValueError,
        "binary spikes",
    ),
    (
        "lif: v_init shape",
        lambda t: lif_multistep(torch.randn(3, 2, 4), torch.zeros(4, 2)),
        ValueError,
        "v_init shape",
    ),
    (
        "lif: tau below 1",
        lambda t: lif_multistep(torch.randn(3, 4), torch.zeros(4), tau=0.5),
        ValueError,
        "tau",
    ),
    (
        "lif: unknown surrogate",
        lambda t: lif_multistep(torch.randn(3, 4), torch.zeros(4), surrogate="relu"),
        ValueError,
        "unknown surrogate",
    ),
    (
        "lif: zero timesteps",
        lambda t: lif_multistep(torch.randn(0, 4), torch.zeros(4)),
        ValueError,
        "T=0",
    ),
    # ---- modules
    (
        "SpikeConv2d: input without time",
        lambda t: SpikeConv2d(3, 4, 3)(S),
        ValueError,
        r"\[T, B, C, H, W\]",
    ),
    (
        "SpikeConv2d: reflect padding",
        lambda t: SpikeConv2d(3, 4, 3, padding_mode="reflect"),
        ValueError,
        "padding_mode",
    ),
    (
        "set_mask: wrong shape",
        lambda t: SpikeConv2d(3, 4, 3).set_mask(M[:, :2]),
        ValueError,
        "mask shape",
    ),
    ("set_mask: not bool", lambda t: SpikeConv2d(3, 4, 3).set_mask(M.int()), TypeError, "bool"),
    (
        "LIF: batch changed without reset",
        lambda t: [lif := LIF(), lif(torch.randn(2, 3, 4)), lif(torch.randn(2, 5, 4))],
        ValueError,
        "reset_net",
    ),
    ("LIF: surrogate as a string", lambda t: LIF(surrogate="atan"), TypeError, "ATan"),
    # ---- models
    (
        "vgg16: T mismatch",
        lambda t: vgg16(T=5)(torch.randn(3, 1, 3, 32, 32)),
        ValueError,
        "T=3 steps but the model was built with T=5",
    ),
    (
        "vgg16: image size",
        lambda t: vgg16()(torch.randn(1, 3, 64, 64)),
        ValueError,
        "built for 32x32",
    ),
    (
        "resnet19: grey images",
        lambda t: resnet19()(torch.randn(1, 1, 32, 32)),
        ValueError,
        "1 channels, the model expects 3",
    ),
    ("build_model: unknown name", lambda t: build_model("alexnet"), ValueError, "unknown model"),
    (
        "resnet19: unknown variant",
        lambda t: resnet19(variant="wide"),
        ValueError,
        "unknown variant",
    ),
    # ---- methods and masks
    (
        "method: unknown name",
        lambda t: build_method("prune-all"),
        ValueError,
        "unknown sparse-training method",
    ),
    ("method: density 0", lambda t: build_method("rigl", density=0.0), ValueError, r"\(0, 1\]"),
    (
        "method: density above 1",
        lambda t: build_method("set", density=1.5),
        ValueError,
        r"\(0, 1\]",
    ),
    (
        "method: unknown distribution",
        lambda t: build_method("static", density=0.5, distribution="normal"),
        ValueError,
        "distribution",
    ),
    (
        "ndsnn: d_init below target",
        lambda t: build_method("ndsnn", density=0.5, d_init=0.1),
        ValueError,
        "d_init",
    ),
    (
        "lth: rewind past the round",
        lambda t: build_method("lth", density=0.5, rewind_epoch=9).phases(5),
        ValueError,
        "rewind_epoch",
    ),
    (
        "erk: unknown dense layer",
        lambda t: erk_densities(layer_shapes(small_snn()), 0.1, {"fc9"}),
        ValueError,
        "not maskable",
    ),
    ("masks: corrupt file", _masks_file, ValueError, "not a readable mask file"),
    # ---- trainer
    (
        "trainer: negative epochs",
        lambda t: TrainConfig(epochs=-1),
        ValueError,
        "epochs must be a positive integer",
    ),
    ("trainer: zero lr", lambda t: TrainConfig(lr=0.0), ValueError, "lr must be positive"),
    (
        "trainer: resume without checkpoint",
        lambda t: _trainer(t).fit(resume=True),
        CheckpointError,
        "no checkpoint",
    ),
    ("trainer: new run over an old one", _fit_twice, FileExistsError, "--resume"),
    # ---- data
    (
        "cifar: missing folder",
        lambda t: load_cifar10(t / "nowhere"),
        FileNotFoundError,
        "data_batch_1",
    ),
    (
        "cifar: corrupt pickle",
        lambda t: _cifar_with(t, "data_batch_4"),
        DataError,
        "data_batch_4: not a readable CIFAR pickle",
    ),
    ("fashion-mnist: wrong IDX magic", _idx_with_wrong_magic, DataError, "IDX magic"),
    (
        "tiny-imagenet: empty folder",
        lambda t: load_tiny_imagenet(t),
        FileNotFoundError,
        "wnids.txt",
    ),
    ("tiny-imagenet: corrupt JPEG", _tiny_with_bad_jpeg, DataError, "not a readable image"),
    (
        "dataset: unknown name",
        lambda t: load_dataset("imagenet-21k"),
        ValueError,
        "unknown data set",
    ),
    # ---- CLI
    (
        "cli: sparsity 1.5",
        lambda t: _cli("train", "--sparsity", "1.5", "--out", str(t)),
        SystemExit,
        r"sparsity must lie in \[0, 1\)",
    ),
    (
        "cli: unknown method",
        lambda t: _cli("train", "--method", "magic", "--out", str(t)),
        SystemExit,
        "invalid choice: 'magic'",
    ),
    (
        "cli: option of another method",
        lambda t: _cli("train", "--method", "rigl", "--rewind-epoch", "3", "--out", str(t)),
        SystemExit,
        "does not apply to method rigl",
    ),
    (
        "cli: profile of a non-run folder",
        lambda t: _cli("profile", str(t)),
        SystemExit,
        "config.json is missing",
    ),
    (
        "cli: report with negative epochs",
        lambda t: _cli("report", "--epochs", "-1", "--out", str(t)),
        SystemExit,
        "epochs must be a positive integer",
    ),
    (
        "cli: unknown data set",
        lambda t: _cli("train", "--dataset", "mnist", "--out", str(t)),
        SystemExit,
        "invalid choice: 'mnist'",
    ),
    # ---- profiler
    (
        "profiler: unknown protocol",
        lambda t: lth_cost(
            setup_model("resnet19", Assumptions(epochs=2, rewind_epoch=1)),
            "some-imp",
            0.1,
            [0.1],
            "uniform",
            "rigl",
            Assumptions(epochs=2, rewind_epoch=1),
        ),
        ValueError,
        "unknown LTH protocol",
    ),
    (
        "profiler: unknown convention",
        lambda t: step_cost(trace_layers(small_snn(), (1, 1, 8, 8)), None, 0.1, 1, "macs"),
        ValueError,
        "unknown cost convention",
    ),
    (
        "profiler: spike rate above 1",
        lambda t: step_cost(trace_layers(small_snn(), (1, 1, 8, 8)), None, 1.5, 1, "snn"),
        ValueError,
        "spike rate",
    ),
    (
        "profiler: negative epochs",
        lambda t: Assumptions(epochs=-3),
        ValueError,
        "epochs must be a positive integer",
    ),
    (
        "profiler: density outside (0, 1]",
        lambda t: step_cost(trace_layers(small_snn(), (1, 1, 8, 8)), [2.0, 1, 1, 1], 0.1, 1, "snn"),
        ValueError,
        "densities must lie in",
    ),
]


def test_catalogue_is_large_and_unique():
    ids = [entry[0] for entry in CATALOGUE]
    assert len(ids) >= 30 and len(set(ids)) == len(ids)


@pytest.mark.parametrize(
    ("action", "exc", "match"),
    [entry[1:] for entry in CATALOGUE],
    ids=[entry[0] for entry in CATALOGUE],
)
def test_bad_input_gives_a_clear_error(tmp_path, action, exc, match):
    with pytest.raises(exc, match=match):
        action(tmp_path)


OP_ENTRIES = [entry for entry in CATALOGUE if entry[0].startswith(("conv:", "linear:", "lif:"))]


@pytest.mark.parametrize(
    ("action", "exc", "match"),
    [entry[1:] for entry in OP_ENTRIES],
    ids=[entry[0] for entry in OP_ENTRIES],
)
def test_bad_op_input_is_caught_before_any_triton_kernel(tmp_path, action, exc, match):
    with ndsnn_triton.use_backend("triton"), pytest.raises(exc, match=match):
        action(tmp_path)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_non_contiguous_and_overlapping_inputs_are_computed_correctly(backend):
    """Not errors: strided and stride-0 (expanded) inputs give the same result as contiguous ones."""
    base = (torch.rand(1, 3, 6, 6) < 0.4).float()
    expanded = base.expand(3, 3, 6, 6)  # overlapping memory
    transposed = torch.rand(3, 3, 6, 6).lt(0.4).float().transpose(2, 3)  # non-contiguous
    mask = torch.rand(4, 3, 3, 3) < 0.5
    with ndsnn_triton.use_backend(backend):
        for x in (expanded, transposed):
            got = masked_conv2d(x, W, mask, padding=1)
            want = torch.nn.functional.conv2d(x.contiguous(), W * mask, padding=1)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
