"""svilm: structured video-language pretraining (S-ViLM) and video grounding in JAX/Flax."""

import setuptools

# One known-good stack, installed and `pip check`-clean together on Python 3.11 (CPU). Bump
# these together: orbax, flax and jax move in lock step, and tensorflow-cpu must stay the only
# TensorFlow wheel (tensorboard and tensorflow-datasets would otherwise pull the full one).
INSTALL_REQUIRES = [
  "jax==0.10.2",
  "jaxlib==0.10.2",
  "flax==0.12.8",
  "optax==0.2.8",
  "orbax-checkpoint==0.12.8",
  "tensorflow-cpu==2.21.0",
  "tensorflow-datasets==4.9.10",
  "tensorboard==2.21.0",
  "sentencepiece==0.2.3",
  "ml-collections==1.1.0",
  "clu==0.0.12",
  "av==18.1.0",
  "pillow>=10",
  "numpy>=1.26",
  "absl-py>=2.1",
]

setuptools.setup(
  name="svilm",
  version="0.1.0",
  description="Structured video-language pretraining (S-ViLM) and video grounding in JAX/Flax",
  python_requires=">=3.11",
  packages=setuptools.find_packages(include=["svilm*", "data_pipelines*", "configs*", "launch*"]),
  install_requires=INSTALL_REQUIRES,
  extras_require={
    # ruff: the formatter and linter that tests/test_style.py enforces (pyproject.toml).
    "test": ["pytest>=8", "pytest-xdist==3.8.0", "ruff==0.17.5"],
    # Only benchmarks/vs_pytorch.py uses it (the CPU build, from this machine's local
    # wheel); never a test or runtime dependency.
    "pytorch_reference": ["torch==2.13.0"],
  },
)
