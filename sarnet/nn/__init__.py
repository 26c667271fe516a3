from sarnet.nn.sarnet import REFERENCE_GEOMETRY, SarNet, SarNetVAE, reference_vae_geometry, to_grayscale
from sarnet.nn.semidense import GeometryError, SemiDense, patch_degrees, semidense_mask
from sarnet.nn.vae import ConvEncoder, ConvVAE, Output

__all__ = ["REFERENCE_GEOMETRY", "SarNet", "SarNetVAE", "reference_vae_geometry", "to_grayscale", "GeometryError",
           "SemiDense", "patch_degrees", "semidense_mask", "ConvEncoder", "ConvVAE", "Output"]
