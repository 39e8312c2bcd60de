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
from ndsnn_triton.graphs import GraphCaptureError, StepGraph
from ndsnn_triton.kernels.work import executed_macs
from ndsnn_triton.models import build_model, resnet19, small_snn, vgg16
from ndsnn_triton.nn import LIF, SpikeConv2d, from_spikingjelly
from ndsnn_triton.profiler.claim import Assumptions, lth_cost, setup_model
from ndsnn_triton.profiler.cost import step_cost
from ndsnn_triton.profiler.layers import trace_layers
from ndsnn_triton.sparse import attach, build_method, erk_densities, load_masks
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


def _attach(method="rigl", sparsity=0.9, model=None, **kw):
    """attach() to a fresh small model and SGD (``model``: another one, with the same optimizer)."""
    snn = small_snn(10, T=2)
    optimizer = torch.optim.SGD(snn.parameters(), lr=0.1, momentum=0.9)
    return attach(snn if model is None else model, optimizer, method, sparsity, 10, **kw)


def _masks_file(tmp):
    (tmp / "m.pt").write_bytes(b"\x00\x01 broken")
    return load_masks(tmp / "m.pt")


def _sj_lif_net():
    """A tiny SpikingJelly net (skips the test where SpikingJelly is absent)."""
    layer = pytest.importorskip("spikingjelly.activation_based.layer")
    neuron = pytest.importorskip("spikingjelly.activation_based.neuron")
    return torch.nn.Sequential(layer.Linear(4, 4, step_mode="m"), neuron.LIFNode(step_mode="m"))


def _convert_twice(tmp):
    model = from_spikingjelly(_sj_lif_net())
    before = [type(m) for m in model]
    try:
        return from_spikingjelly(model)
    finally:
        assert [type(m) for m in model] == before  # nothing changed


def _convert_plain_torch(tmp):
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU())
    try:
        return from_spikingjelly(model)
    finally:
        assert type(model[0]) is torch.nn.Linear  # nothing changed


def _convert_single_step(tmp):
    model = _sj_lif_net()
    model[1].step_mode = "s"
    try:
        return from_spikingjelly(model)
    finally:
        assert type(model[0]).__module__.startswith("spikingjelly")  # nothing changed


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
        "work: input of rank 5",
        lambda t: executed_macs(S[None], M),
        ValueError,
        r"\[N, C, H, W\] or \[N, F\]",
    ),
    (
        "work: mask channels differ from the input's",
        lambda t: executed_macs(S, M[:, :2]),
        ValueError,
        "does not fit an input of 3 channels",
    ),
    ("work: float mask", lambda t: executed_macs(S, M.float()), TypeError, "mask must be bool"),
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
    (
        "from_spikingjelly: converted twice",
        _convert_twice,
        ValueError,
        "already converted",
    ),
    (
        "from_spikingjelly: no SpikingJelly layer",
        _convert_plain_torch,
        ValueError,
        "no SpikingJelly .* to convert",
    ),
    (
        "from_spikingjelly: single-step neuron",
        _convert_single_step,
        ValueError,
        r"cannot convert 1 module.*\n  1 \(.*LIFNode\): step_mode='s'",
    ),
    (
        "from_spikingjelly: not a module",
        lambda t: from_spikingjelly("vgg16"),
        TypeError,
        "must be a torch.nn.Module",
    ),
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
    *[
        (
            f"cli: report --model {what}",
            lambda t, argv=argv: _cli("report", "--out", str(t / "out"), *argv),
            SystemExit,
            message,
        )
        for what, argv, message in [
            ("without a factory", ["--model", "tests.test_report_model"], "module.path:factory"),
            (
                "module missing",
                ["--model", "tests.no_such_module:net"],
                r"cannot import module 'tests.no_such_module'.*No module named",
            ),
            (
                "attribute missing",
                ["--model", "tests.test_report_model:no_such_net"],
                r"'tests.test_report_model' has no attribute 'no_such_net'",
            ),
            (
                "not callable",
                ["--model", "tests.test_report_model:FACTORY"],
                "is not callable: it is a str",
            ),
            (
                "returning a list",
                ["--model", "tests.test_report_model:not_a_model"],
                "returned a list, not a torch.nn.Module",
            ),
            (
                "kwargs not JSON",
                ["--model", "tests.test_report_model:tiny_cnn", "--model-kwargs", "{width: 8}"],
                "model kwargs are not valid JSON",
            ),
            (
                "kwargs not an object",
                ["--model", "tests.test_report_model:tiny_cnn", "--model-kwargs", "[8]"],
                "must be a JSON object",
            ),
            (
                "kwargs the factory does not take",
                ["--model", "tests.test_report_model:tiny_cnn", "--model-kwargs", '{"depth": 3}'],
                r"calling tests.test_report_model:tiny_cnn\(\*\*\{'depth': 3\}\) failed: TypeError",
            ),
            (
                "with no weight layer",
                ["--model", "tests.test_report_model:no_weight_layer"],
                "no_weight_layer: the model has no weight layer",
            ),
            (
                "on an input it cannot take",
                ["--model", "tests.test_report_model:tiny_cnn", "--input-shape", "1,32,32"],
                r"one forward pass on a zero input of shape \[1, 1, 32, 32\] failed",
            ),
            (
                "with a bad input shape",
                ["--model", "tests.test_report_model:tiny_cnn", "--input-shape", "3,a,32"],
                "input shape must be comma-separated integers",
            ),
        ]
    ],
    (
        "cli: unknown data set",
        lambda t: _cli("train", "--dataset", "mnist", "--out", str(t)),
        SystemExit,
        "invalid choice: 'mnist'",
    ),
    # ---- attach (tests/test_attach.py checks that each leaves model and optimizer untouched)
    (
        "attach: model without masked layers",
        lambda t: _attach(model=torch.nn.Sequential(torch.nn.Linear(4, 3))),
        ValueError,
        "no masked layers",
    ),
    (
        "attach: sparsity 1",
        lambda t: _attach(sparsity=1.0),
        ValueError,
        r"sparsity must lie in \[0, 1\)",
    ),
    ("attach: negative sparsity", lambda t: _attach(sparsity=-0.5), ValueError, r"got -0\.5"),
    (
        "attach: sparsity below the layer floors",
        lambda t: _attach("ndsnn", 0.999),
        ValueError,
        "sparsity 0.999 is unreachable",
    ),
    (
        "attach: floor min_kept_per_output too high",
        lambda t: _attach(min_kept_per_output=100),
        ValueError,
        "unreachable.*min_kept_per_output=100",
    ),
    (
        "attach: unknown method",
        lambda t: _attach("magic"),
        ValueError,
        "unknown sparse-training method 'magic'",
    ),
    (
        "attach: graphed step without warm-up",
        lambda t: _attach().graphed(lambda x: x, warmup=0),
        ValueError,
        "warmup",
    ),
    (
        "graphs: a step that reads a value on the host",
        lambda t: StepGraph(lambda x: x.sum().item(), "cpu")(torch.ones(2)),
        GraphCaptureError,
        "reads a device value on the host during graph capture",
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


REPORT_MODEL_ENTRIES = [entry for entry in CATALOGUE if entry[0].startswith("cli: report --model")]


@pytest.mark.parametrize(
    "action", [entry[1] for entry in REPORT_MODEL_ENTRIES], ids=[e[0] for e in REPORT_MODEL_ENTRIES]
)
def test_bad_report_model_writes_nothing(tmp_path, action):
    with pytest.raises(SystemExit):
        action(tmp_path)
    assert not (tmp_path / "out").exists()


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
