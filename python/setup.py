"""Builds talkconv_torch: talkconv's TaLK convolution for PyTorch (CPU always; CUDA when PyTorch has it).

    python -m pip install --no-build-isolation ./python        (any environment that has torch)
    cd python && python setup.py build -b ../build/torch       (what scripts/test-torch.sh does)

--no-build-isolation: the extension must be built against the torch it will run with, not a fresh one
from PyPI. Environment:
    TALKCONV_TORCH_CUDA=0|1   CUDA sources off / required (default: when torch.version.cuda and CUDA_HOME)
    TALKCONV_TORCH_OPENMP=0   no -fopenmp (the CPU path then runs on the calling thread)
    TALKCONV_INCLUDE, EIGEN3_INCLUDE_DIR   where talkconv's and Eigen's headers are, if not found below
    TORCH_CUDA_ARCH_LIST      PyTorch's own: the CUDA architectures (default: the visible GPU's)
"""
import glob
import os

import torch
from setuptools import setup
from torch.utils import cpp_extension

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)


def include_dirs():
    dirs = [os.environ.get("TALKCONV_INCLUDE") or os.path.join(root, "include")]
    candidates = [
        os.environ.get("EIGEN3_INCLUDE_DIR"),
        # scripts/gpu-deps-bundle.sh's copy (Eigen and Random123 for a machine without network)
        os.path.join(root, "build", "deps", "usr", "include", "eigen3"),
        os.path.join(root, "build", "deps", "usr", "include"),
        "/usr/include/eigen3",
        "/usr/local/include/eigen3",
    ]
    dirs += [d for d in candidates if d and os.path.isdir(d)]
    return dirs


def want_cuda():
    flag = os.environ.get("TALKCONV_TORCH_CUDA", "")
    possible = torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None
    if flag == "1" and not possible:
        raise RuntimeError("TALKCONV_TORCH_CUDA=1 but torch has no CUDA or no CUDA toolkit was found (CUDA_HOME)")
    return possible if flag == "" else flag == "1"


torch_major = int(torch.__version__.split(".")[0])
# torch 1.x's cpp_extension adds -std=c++14 unless told; talkconv needs C++17. torch 2.x picks a
# standard its own headers accept (C++17 or later): leave it to it.
std = ["-std=c++17"] if torch_major < 2 else []
openmp = os.environ.get("TALKCONV_TORCH_OPENMP", "1") != "0"
# -g0: Debian's python adds -g; torch 1.13's headers use std::iterator (deprecated in C++17)
cxx = ["-O2", "-g0", "-Wno-deprecated-declarations"] + std + (["-fopenmp"] if openmp else [])
link = ["-fopenmp"] if openmp else []
sources = [os.path.join("csrc", "talkconv_torch.cpp")]
# Rebuild when talkconv's headers change (ninja tracks them itself; plain setuptools needs the list).
depends = [os.path.join("csrc", "bridge.hpp")] + sorted(
    glob.glob(os.path.join(include_dirs()[0], "talkconv", "**", "*.*"), recursive=True))
cuda = want_cuda()
if cuda:
    nvcc = ["-O3", "--expt-relaxed-constexpr"] + std + [
        # torch's defaults hide the 16-bit types' operators and conversions; talkconv's CUDA headers use them
        "-U__CUDA_NO_HALF_OPERATORS__",
        "-U__CUDA_NO_HALF_CONVERSIONS__",
        "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
        "-U__CUDA_NO_HALF2_OPERATORS__",
    ]
    ext = cpp_extension.CUDAExtension(
        "talkconv_torch._C",
        sources + [os.path.join("csrc", "talkconv_torch_cuda.cu")],
        include_dirs=include_dirs(),
        depends=depends,
        define_macros=[("TALKCONV_TORCH_WITH_CUDA", "1")],
        extra_compile_args={"cxx": cxx, "nvcc": nvcc},
        extra_link_args=link,
    )
else:
    ext = cpp_extension.CppExtension(
        "talkconv_torch._C",
        sources,
        include_dirs=include_dirs(),
        depends=depends,
        extra_compile_args={"cxx": cxx},
        extra_link_args=link,
    )

setup(
    name="talkconv_torch",
    version="0.1.0",
    description="talkconv's TaLK convolutions (Lioutas & Guo, ICML 2020) for PyTorch: function, module, decoder",
    packages=["talkconv_torch"],
    ext_modules=[ext],
    cmdclass={"build_ext": cpp_extension.BuildExtension},
    python_requires=">=3.8",
    zip_safe=False,
)
