"""Spiking modules: masked spike layers, the multi-step LIF neuron and time-first helpers."""

from ndsnn_triton.nn.convert import MaskedConv2d, MaskedLinear, to_masked
from ndsnn_triton.nn.layers import (
    MaskedLayer,
    SpikeConv2d,
    SpikeLinear,
    dense_weight_grads,
    masked_layers,
)
from ndsnn_triton.nn.lif import LIF, compact_spikes, reset_net, set_compact_spikes
from ndsnn_triton.nn.pool import SpikeMaxPool2d
from ndsnn_triton.nn.readout import predict, temporal_cross_entropy
from ndsnn_triton.nn.recompute import SpikingSequential, run_segment, should_recompute
from ndsnn_triton.nn.seq import SeqToANNContainer, flatten_time, unflatten_time
from ndsnn_triton.nn.spikingjelly import from_spikingjelly
from ndsnn_triton.nn.surrogate import ATan, Sigmoid, Surrogate

__all__ = [
    "LIF",
    "ATan",
    "MaskedConv2d",
    "MaskedLayer",
    "MaskedLinear",
    "SeqToANNContainer",
    "Sigmoid",
    "SpikeConv2d",
    "SpikeLinear",
    "SpikeMaxPool2d",
    "SpikingSequential",
    "Surrogate",
    "compact_spikes",
    "dense_weight_grads",
    "flatten_time",
    "from_spikingjelly",
    "masked_layers",
    "predict",
    "reset_net",
    "run_segment",
    "set_compact_spikes",
    "should_recompute",
    "temporal_cross_entropy",
    "to_masked",
    "unflatten_time",
]
