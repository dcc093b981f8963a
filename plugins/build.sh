#!/usr/bin/env bash
# Configure and build vseg's CUDA kernels (and, with TensorRT headers, its plugins) into
# plugins/build/.
#
#   plugins/build.sh                      libvseg_kernels.so for sm_87, sm_89, sm_90
#   plugins/build.sh --trt /opt/tensorrt  also libvseg_plugins.so (needs include/NvInfer.h)
#   plugins/build.sh --arch native        only the GPU of this machine (faster)
#   plugins/build.sh --build-dir DIR      somewhere else than plugins/build
# Extra arguments after -- go to cmake's configure step.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
build_dir="$here/build"
trt=""
arch=""
extra=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --trt) trt="$2"; shift 2 ;;
        --arch) arch="$2"; shift 2 ;;
        --build-dir) build_dir="$2"; shift 2 ;;
        --) shift; extra=("$@"); break ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "build.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

args=(-S "$here" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release)
[[ -n "$trt" ]] && args+=("-DTENSORRT_ROOT=$trt")
[[ -n "$arch" ]] && args+=("-DCMAKE_CUDA_ARCHITECTURES=$arch")
# nvcc is often installed without being on PATH
if ! command -v nvcc >/dev/null 2>&1 && [[ -x /usr/local/cuda/bin/nvcc ]]; then
    args+=("-DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc")
fi

cmake "${args[@]}" "${extra[@]}"
cmake --build "$build_dir" -j "$(nproc)"
echo "built into $build_dir:"
ls -1 "$build_dir"/*.so
