"""Hand-written weight quantizers, pure numpy: each takes a float weight tensor and returns a
`QuantizedTensor` with the dequantized float32 values (what a float kernel computes with), the
theoretical packed size in bits and the number of representable levels.

Conventions shared by all: `axis` names the output channel (0 for conv/linear weights);
scales and codebook entries count 32 bits, zero points count at the code width; all-zero
slices dequantize to zeros; invalid bit widths raise ValueError.
"""

from qbench.quant.binary import quantize_binary, quantize_ternary
from qbench.quant.fixed_point import quantize_fixed_point
from qbench.quant.kmeans import quantize_kmeans
from qbench.quant.log2 import quantize_log2
from qbench.quant.product import quantize_product
from qbench.quant.result import QuantizedTensor
from qbench.quant.uniform import quantize_uniform

__all__ = [
    "QuantizedTensor",
    "quantize_binary",
    "quantize_fixed_point",
    "quantize_kmeans",
    "quantize_log2",
    "quantize_product",
    "quantize_ternary",
    "quantize_uniform",
]
